#include "decoder.h"

#include "host_tensors.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace tf {

// Stored tensors of a decoder Linear NAME (the registry's suffixes, formats/registry.py):
//   NAME.weight  f32 [n, k]                      dense float32
//   NAME.bweight u16 [n, k]                      bfloat16 bits (BF16 GEMM; widened to float32 without AVX512_BF16)
//   NAME.qweight s8 [n, k] + NAME.wscale [n]      W8A8: INT8 per-channel weights, u8 activations quantized per token
//     (+ NAME.outlier_idx i32 [n_o] + NAME.outlier_weight f32 [n, n_o]: LLM.int8() features kept in float32)
//   NAME.kcodes u8 [n, row_bytes] + NAME.kscales f32 [n, G] (+ NAME.koffsets f32 [n, G])
//     + NAME.kmeta i32 [3] = (mode, k, group) + NAME.klut f32 [16]   weight-only k-bit (KbitWeight)
//   NAME.bm_shape i32 [2] = (n, k) + NAME.bm_mask u8 [n, 8 * ceil(k / 64)] + NAME.bm_values f32 [nnz]
//     (bitmask-f32) or NAME.bm_qvalues s8 [nnz] + NAME.wscale f32 [n] (bitmask-int8, W8A8)   bitmask sparse
//   NAME.bias f32 [n] (optional)

namespace {

const HostTensor* find_t(const std::map<std::string, HostTensor>& t, const std::string& name) {
  auto it = t.find(name);
  return it == t.end() ? nullptr : &it->second;
}

constexpr int64_t kKbitGemvMaxRows = 8;  // up to this many tokens the k-bit GEMV beats dequantize + GEMM
constexpr int64_t kKbitChunkRows = 64;   // rows dequantized (and packed) at a time by the prefill path
// from this many tokens a W4A8 Linear runs the GEMM (codes expanded once per 16 rows) instead of the GEMV, where
// the kernel exists (avx512). SmolLM2 on Zen 4, 2 threads (bench/results/zen4_a8_gemm_ab.md): decode at batch 4
// 0.69-0.72x the GEMV's rate, 6 0.97-0.99x, 8 1.01-1.11x, 16 1.30-1.32x; a 512-token prefill 1.77-2.39x
constexpr int64_t kKbitA8GemmMinRows = 8;
constexpr int64_t kAttnGemmMinRows = 16; // from this many query rows per head, attention runs on the GEMM kernels

// Query rows per chunk of the prefill attention (DecoderEngine::attention_chunk_rows): a chunk's scores take at
// most kAttnScoreBytes (isa.h). With each chunk over the keys its rows may see, SmolLM2-135M's W4A8 prefill took
// 0.893x the time at 512 tokens and 0.733x at 1024 on the Ice Lake Xeon
// (bench/results/icelake_llm_prefill_attention_chunks_ab_a8.md; float activations 0.926x / 0.839x)
constexpr int64_t kAttnMinRows = 32;  // (a chunk of fewer rows than this may pass kAttnScoreBytes)
constexpr int64_t kLogitChunk = 32;      // rows of logits materialised at a time for log-probabilities
// Up to this many token rows (decode steps), every thread normalises / quantizes all rows into its own buffers
// instead of splitting them and meeting at a barrier: a decode step then synchronises only after each GEMM and
// after attention (5 barriers per layer), which is what a small model's step time is made of.
constexpr int64_t kPrivateRows = 8;

// Prefill of a Linear stored compressed (k-bit, bitmask): this thread's output rows in chunks of about
// kKbitChunkRows; pack(c0, rows) writes rows c0 .. c0 + rows - 1 as FP32 GEMM panels into pk, then the FP32 GEMM
// runs all m tokens against them (the unpacking is amortised over the tokens).
template <class Pack>
void f32_chunks(const KernelTable* kt, const DecLinear& L, const float* in, int64_t m, float* out,
                const Epilogue& epi, int tid, int nt, const float* pk, Pack&& pack) {
  const int64_t nr = kt->f32_nr;
  const int64_t chunk = std::max(nr, kKbitChunkRows / nr * nr);
  int64_t n0, n1;
  split_range(L.n, chunk, nt, tid, &n0, &n1);
  for (int64_t c0 = n0; c0 < n1; c0 += chunk) {
    const int64_t rows = std::min(chunk, n1 - c0);
    pack(c0, rows);
    Epilogue ec = epi;
    if (ec.bias) ec.bias += c0;
    if (ec.residual) ec.residual += c0;
    kt->gemm_f32(in, L.k, pk, rows, L.k, out + c0, L.n, 0, m, 0, rows, ec);
  }
}

// rows of a bitmask-int8 prefill chunk: about kKbitChunkRows, a multiple of the INT8 panel width
inline int64_t s8_chunk_rows(const KernelTable* kt) {
  return std::max(kt->s8_nr, kKbitChunkRows / kt->s8_nr * kt->s8_nr);
}

}  // namespace

size_t DecLinear::bytes() const {
  return packed.size() + codes.size() + 4 * (scales.size() + offsets.size() + w_scale.size()) +
         outlier_packed.size() + 8 * (bm_mask.size() + bm_rowptr.size()) + 4 * bm_values.size() +
         bm_qvalues.size();
}

// Bitmask sparse: validates the mask (no bits past k) and that the stored non-zeros match its popcount, so a
// corrupt file is an error here, never a read past the values in a kernel.
static void load_bitmask(DecLinear* L, const std::string& name, const std::map<std::string, HostTensor>& t) {
  const std::vector<int32_t> sh = copy_tensor<int32_t>(t, name + ".bm_shape", 'i', {2});
  L->n = sh[0];
  L->k = sh[1];
  if (L->n <= 0 || L->k <= 0) throw std::invalid_argument("'" + name + "': bad bitmask shape");
  const int64_t words = (L->k + 63) / 64;
  const HostTensor& mk = need(t, name + ".bm_mask", 'u', {L->n, 8 * words});
  L->bm_mask.resize(L->n * words);
  std::memcpy(L->bm_mask.data(), mk.data, L->n * words * 8);  // little-endian words, as written
  L->bm_rowptr.assign(L->n + 1, 0);
  const uint64_t tail = (L->k % 64) ? ~((uint64_t{1} << (L->k % 64)) - 1) : 0;
  for (int64_t r = 0; r < L->n; ++r) {
    const uint64_t* row = L->bm_mask.data() + r * words;
    if (row[words - 1] & tail) throw std::invalid_argument("'" + name + "': bitmask has bits past in_features");
    int64_t c = 0;
    for (int64_t w = 0; w < words; ++w) c += __builtin_popcountll(row[w]);
    L->bm_rowptr[r + 1] = L->bm_rowptr[r] + c;
  }
  const int64_t nnz = L->bm_rowptr[L->n];
  BitmaskWeight& b = L->bw;
  if (t.count(name + ".bm_qvalues")) {
    L->kind = DecLinear::BITMASK_S8;
    L->bm_qvalues = copy_tensor<int8_t>(t, name + ".bm_qvalues", 'b', {nnz});
    L->bm_qvalues.resize(nnz + 64, 0);  // expand-loads may touch bytes past the last row's values
    L->w_scale = copy_tensor<float>(t, name + ".wscale", 'f', {L->n});
    L->col_sum.assign(L->n, 0);
    for (int64_t r = 0; r < L->n; ++r)
      for (int64_t j = L->bm_rowptr[r]; j < L->bm_rowptr[r + 1]; ++j) L->col_sum[r] += L->bm_qvalues[j];
    b.qvalues = L->bm_qvalues.data();
    b.w_scale = L->w_scale.data();
    b.col_sum = L->col_sum.data();
  } else {
    L->kind = DecLinear::BITMASK_F32;
    L->bm_values = copy_tensor<float>(t, name + ".bm_values", 'f', {nnz});
    L->bm_values.resize(nnz + 16, 0.0f);
    b.values = L->bm_values.data();
  }
  b.n = L->n;
  b.k = L->k;
  b.words = words;
  b.mask = L->bm_mask.data();
  b.rowptr = L->bm_rowptr.data();
}

void DecoderEngine::load_linear(DecLinear* L, const std::string& name, const std::map<std::string, HostTensor>& t) {
  L->name = name;
  if (find_t(t, name + ".bm_shape")) {
    load_bitmask(L, name, t);
  } else if (const HostTensor* w = find_t(t, name + ".weight")) {
    if (w->dtype != 'f' || w->shape.size() != 2) throw std::invalid_argument("bad weight '" + name + "'");
    L->kind = DecLinear::F32;
    L->n = w->shape[0];
    L->k = w->shape[1];
    L->packed.reserve(kt_->pack_f32_size(L->n, L->k));
    kt_->pack_f32_nk(static_cast<const float*>(w->data), L->k, L->n, L->k, L->packed.as<float>());
  } else if (const HostTensor* b = find_t(t, name + ".bweight")) {
    if (b->dtype != 'h' || b->shape.size() != 2) throw std::invalid_argument("bad bweight '" + name + "'");
    L->n = b->shape[0];
    L->k = b->shape[1];
    const uint16_t* bits = static_cast<const uint16_t*>(b->data);
    // kept on the BF16 GEMM wherever it exists (unlike the encoder's bf16_gemm_preferred): decoding streams the
    // weights once per token, so their bytes, halved by bf16, matter more than the dot product's issue rate
    if (kt_->gemm_bf16 && cpu_has_avx512_bf16()) {
      L->kind = DecLinear::BF16;
      L->packed.reserve(kt_->pack_bf16_size(L->n, L->k));
      kt_->pack_bf16(bits, L->n, L->k, L->packed.as<void>());
    } else {  // no BF16 instructions at this level: the same bf16 values computed in float32
      L->kind = DecLinear::F32;
      const std::vector<float> wide = widen_bf16(bits, L->n * L->k);
      L->packed.reserve(kt_->pack_f32_size(L->n, L->k));
      kt_->pack_f32_nk(wide.data(), L->k, L->n, L->k, L->packed.as<float>());
    }
  } else if (const HostTensor* q = find_t(t, name + ".qweight")) {
    if (q->dtype != 'b' || q->shape.size() != 2) throw std::invalid_argument("bad qweight '" + name + "'");
    L->kind = DecLinear::S8;
    L->n = q->shape[0];
    L->k = q->shape[1];
    const int8_t* qw = static_cast<const int8_t*>(q->data);
    L->packed.reserve(kt_->pack_s8_size(L->n, L->k));
    kt_->pack_s8(qw, L->k, L->n, L->k, L->packed.as<void>());
    L->w_scale = copy_tensor<float>(t, name + ".wscale", 'f', {L->n});
    L->col_sum.assign(L->n, 0);
    for (int64_t j = 0; j < L->n; ++j) {
      int32_t s = 0;
      for (int64_t kk = 0; kk < L->k; ++kk) s += qw[j * L->k + kk];
      L->col_sum[j] = s;
    }
    if (const HostTensor* oi = find_t(t, name + ".outlier_idx")) {
      if (oi->dtype != 'i' || oi->shape.size() != 1) throw std::invalid_argument("bad outlier_idx '" + name + "'");
      const int64_t no = oi->shape[0];
      L->outlier_idx = copy_tensor<int32_t>(t, name + ".outlier_idx", 'i', {no});
      for (int64_t i = 0; i < no; ++i)
        if (L->outlier_idx[i] < 0 || L->outlier_idx[i] >= L->k || (i && L->outlier_idx[i] <= L->outlier_idx[i - 1]))
          throw std::invalid_argument("'" + name + "': outlier indices must be increasing input features");
      const HostTensor& ow = need(t, name + ".outlier_weight", 'f', {L->n, no});
      if (no > 0) {
        L->outlier_packed.reserve(kt_->pack_f32_size(L->n, no));
        kt_->pack_f32_nk(static_cast<const float*>(ow.data), no, L->n, no, L->outlier_packed.as<float>());
      }
    }
  } else if (const HostTensor* c = find_t(t, name + ".kcodes")) {
    if (c->dtype != 'u' || c->shape.size() != 2) throw std::invalid_argument("bad kcodes '" + name + "'");
    const std::vector<int32_t> meta = copy_tensor<int32_t>(t, name + ".kmeta", 'i', {3});
    const int mode = meta[0];
    L->kind = DecLinear::KBIT;
    L->n = c->shape[0];
    L->k = meta[1];
    const int64_t group = meta[2];
    if (mode < 0 || mode > 4 || L->k <= 0 || group <= 0 || group > L->k)
      throw std::invalid_argument("'" + name + "': bad k-bit metadata (mode, k, group)");
    const KbitMode km = static_cast<KbitMode>(mode);
    const int64_t row_bytes = km == KbitMode::Lut4 ? (L->k + 31) / 32 * 16 : L->k;
    if (c->shape[1] != row_bytes) throw std::invalid_argument("'" + name + "': k-bit code rows have the wrong size");
    L->codes.assign(static_cast<const uint8_t*>(c->data), static_cast<const uint8_t*>(c->data) + L->n * row_bytes);
    L->codes.resize(L->codes.size() + 64, 0);  // vector loads may touch bytes just past the last row
    const int64_t G = (L->k + group - 1) / group;
    L->scales = copy_tensor<float>(t, name + ".kscales", 'f', {L->n, G});
    if (find_t(t, name + ".koffsets")) L->offsets = copy_tensor<float>(t, name + ".koffsets", 'f', {L->n, G});
    const std::vector<float> lut = copy_tensor<float>(t, name + ".klut", 'f', {16});
    KbitWeight& w = L->kw;
    w.mode = km;
    w.n = L->n;
    w.k = L->k;
    w.group = group;
    w.row_bytes = row_bytes;
    w.codes = L->codes.data();
    w.scales = L->scales.data();
    w.offsets = L->offsets.empty() ? nullptr : L->offsets.data();
    std::copy(lut.begin(), lut.end(), w.lut);
    if (find_t(t, name + ".kact8")) {
      // W4A8: integer codes whose values are code + lut[0] (int2/3/4, symmetric or affine)
      bool integer_lut = true;
      for (int i = 1; i < 4; ++i) integer_lut &= w.lut[i] == w.lut[0] + static_cast<float>(i);
      if (!integer_lut || !a8_vector_layout(km, L->k, group))
        throw std::invalid_argument("'" + name + "': int8 activations need 4-bit integer codes, in_features a "
                                    "multiple of 64 and group 32 or a multiple of 64");
      L->a8 = true;
    }
  } else {
    throw std::invalid_argument("missing tensor '" + name + ".weight' (or .bweight / .qweight / .kcodes / .bm_shape)");
  }
  if (find_t(t, name + ".bias")) L->bias = copy_tensor<float>(t, name + ".bias", 'f', {L->n});
}

// Query rows per chunk of the prefill attention over S keys: kAttnScoreBytes of scores, in multiples of 16 rows, at
// least kAttnMinRows (TRIMFORMER_ATTN_ROWS=N: N)
int64_t DecoderEngine::attention_chunk_rows(int64_t T, int64_t S) const {
  const int64_t rows =
      attn_rows_ > 0 ? attn_rows_ : std::max(kAttnMinRows, kAttnScoreBytes / (4 * std::max<int64_t>(S, 1)) / 16 * 16);
  return std::min(T, rows);
}

DecoderEngine::DecoderEngine(const DecoderConfig& cfg, const std::map<std::string, HostTensor>& t, Isa isa,
                             int threads)
    : cfg_(cfg), kt_(&kernels_for(isa)), dk_(&decoder_kernels_for(isa)), threads_(threads > 0 ? threads : 1) {
  a8_gemv_only_ = env_flag("TRIMFORMER_A8_GEMV_ONLY");
  if (const char* v = std::getenv("TRIMFORMER_ATTN_ROWS")) attn_rows_ = std::max(0, std::atoi(v));
  const int64_t H = cfg.hidden, d = cfg.head_dim;
  if (H <= 0 || cfg.layers <= 0 || cfg.heads <= 0 || cfg.kv_heads <= 0 || d <= 0 || cfg.heads % cfg.kv_heads != 0 ||
      d % 2 != 0 || cfg.vocab <= 0 || cfg.intermediate <= 0)
    throw std::invalid_argument("bad decoder config (heads must be a multiple of kv_heads, head_dim even)");
  const bool llama = cfg.arch == 0;
  if (!cfg.embed_from_head) tok_ = copy_tensor<float>(t, "emb.tok", 'f', {cfg.vocab, H});
  if (!llama) pos_emb_ = copy_tensor<float>(t, "emb.pos", 'f', {cfg.max_positions, H});
  final_g_ = copy_tensor<float>(t, "final_ln.g", 'f', {H});
  if (!llama) final_b_ = copy_tensor<float>(t, "final_ln.b", 'f', {H});
  const int64_t qkv_rows = (cfg.heads + 2 * cfg.kv_heads) * d;
  layers_.resize(cfg.layers);
  for (int64_t i = 0; i < cfg.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    DecoderLayerW& L = layers_[i];
    load_linear(&L.qkv, p + "qkv", t);
    load_linear(&L.o, p + "o", t);
    load_linear(&L.up, p + (llama ? "gate_up" : "up"), t);
    load_linear(&L.down, p + "down", t);
    const int64_t up_rows = (llama ? 2 : 1) * cfg.intermediate;
    if (L.qkv.n != qkv_rows || L.qkv.k != H || L.o.n != H || L.o.k != cfg.heads * d || L.up.n != up_rows ||
        L.up.k != H || L.down.n != H || L.down.k != cfg.intermediate)
      throw std::invalid_argument("layer " + std::to_string(i) + " weight shapes do not match the config");
    L.ln1_g = copy_tensor<float>(t, p + "ln1.g", 'f', {H});
    L.ln2_g = copy_tensor<float>(t, p + "ln2.g", 'f', {H});
    if (!llama) {
      L.ln1_b = copy_tensor<float>(t, p + "ln1.b", 'f', {H});
      L.ln2_b = copy_tensor<float>(t, p + "ln2.b", 'f', {H});
    }
  }
  load_linear(&head_, "lm_head", t);
  if (head_.n != cfg.vocab || head_.k != H) throw std::invalid_argument("lm_head shape does not match the config");
  if (cfg.embed_from_head && head_.kind != DecLinear::KBIT)
    throw std::invalid_argument("embed_from_head needs a k-bit lm_head (tied embeddings stored once)");
}

size_t DecoderEngine::weight_bytes() const {
  size_t b = head_.bytes() + 4 * (tok_.size() + pos_emb_.size());
  for (const auto& L : layers_) b += L.qkv.bytes() + L.o.bytes() + L.up.bytes() + L.down.bytes();
  return b;
}

void DecoderEngine::begin(int64_t batch, int64_t capacity) {
  if (batch <= 0 || capacity <= 0) throw std::invalid_argument("batch and capacity must be positive");
  if (cfg_.arch == 1 && capacity > cfg_.max_positions)
    throw std::invalid_argument("capacity " + std::to_string(capacity) + " exceeds the model's " +
                                std::to_string(cfg_.max_positions) + " positions");
  const int64_t per = cfg_.layers * batch * cfg_.kv_heads * capacity * cfg_.head_dim;
  if (per > (int64_t{1} << 34)) throw std::invalid_argument("KV cache request too large");
  kcache_.reserve(per * 4);
  vcache_.reserve(per * 4);
  batch_ = batch;
  cap_ = capacity;
  len_ = 0;
  valid_.assign(batch * capacity, 0);
  next_pos_.assign(batch, 0);
}

const float* DecoderEngine::rope_table(int64_t pos) {
  const int64_t d = cfg_.head_dim, h2 = d / 2;
  if (pos >= rope_rows_) {
    const int64_t rows = std::max<int64_t>(pos + 1, std::max<int64_t>(2 * rope_rows_, 256));
    rope_cs_.resize(rows * d);
    for (int64_t p = rope_rows_; p < rows; ++p)
      for (int64_t i = 0; i < h2; ++i) {
        // as Hugging Face computes it: float32 inverse frequencies and angles
        const float inv = static_cast<float>(1.0 / std::pow(static_cast<double>(cfg_.rope_theta),
                                                            static_cast<double>(2 * i) / static_cast<double>(d)));
        const float ang = static_cast<float>(p) * inv;
        rope_cs_[p * d + i] = static_cast<float>(std::cos(static_cast<double>(ang)));
        rope_cs_[p * d + h2 + i] = static_cast<float>(std::sin(static_cast<double>(ang)));
      }
    rope_rows_ = rows;
  }
  return rope_cs_.data() + pos * d;
}

void DecoderEngine::ensure_buffers(int64_t rows) {
  const int64_t H = cfg_.hidden, d = cfg_.head_dim;
  const int64_t R = (cfg_.heads + 2 * cfg_.kv_heads) * d;
  const int64_t up_rows = (cfg_.arch == 0 ? 2 : 1) * cfg_.intermediate;
  const int64_t max_k = std::max(std::max(H, cfg_.intermediate), cfg_.heads * d);
  if (rows > cap_rows_) {
    x_.reserve(rows * H * 4);
    h_.reserve(rows * H * 4);
    sel_.reserve(rows * H * 4);
    head_in_.reserve(rows * H * 4);
    qkv_.reserve(rows * R * 4);
    ctx_.reserve(rows * cfg_.heads * d * 4);
    ff_.reserve(rows * up_rows * 4);
    act_.reserve(rows * std::max(cfg_.intermediate, H) * 4);
    q8_.reserve(rows * ((max_k + 63) / 64 * 64 + 64) + 64);
    bf_.reserve(rows * ((max_k + 1) / 2 * 2) * 2 + 64);
    rs_.reserve(rows * 4 + 64);
    rz_.reserve(rows * 4 + 64);
    xsum_.reserve(rows * max_k * 4 + 64);  // group sums: at most one per input feature
    logit_.reserve(std::min<int64_t>(rows, std::max(kLogitChunk, batch_)) * cfg_.vocab * 4 + 64);
    cap_rows_ = rows;
  }
  // per-thread scratch: k-bit prefill chunk (dequantized + packed), attention (scores + packed K and V)
  size_t need = 0;
  auto kbit_bytes = [&](int64_t k) {
    return static_cast<size_t>(kKbitChunkRows * k * 4) + kt_->pack_f32_size(kKbitChunkRows, k) + 128;
  };
  need = std::max(need, kbit_bytes(max_k));
  const int64_t s8_rows = s8_chunk_rows(kt_);  // bitmask-int8 prefill chunk (codes + packed)
  need = std::max(need, static_cast<size_t>((s8_rows * max_k + 63) / 64 * 64) + kt_->pack_s8_size(s8_rows, max_k) +
                            128);
  // attention: the scores of one chunk of query rows over up to cap_ keys, then K and V packed. A chunk over S <= cap_
  // keys (attention_chunk_rows) takes at most kAttnScoreBytes, or kAttnMinRows rows of S, whatever S
  const int64_t S = cap_;
  const int64_t T = std::min(rows, cap_);
  const int64_t score_bytes =
      std::min(T * S * 4, attn_rows_ > 0 ? attn_rows_ * S * 4 : std::max(kAttnScoreBytes, kAttnMinRows * S * 4));
  need = std::max(need, static_cast<size_t>(score_bytes) + kt_->pack_f32_size(S, d) + kt_->pack_f32_size(d, S) + 320);
  const int64_t ldq = (max_k + 63) / 64 * 64;
  const size_t priv_bytes = static_cast<size_t>(kPrivateRows) *
                            (ldq + 4 * (2 + max_k + H + cfg_.intermediate) + 2 * ldq) + 6 * 64;
  if (static_cast<int>(priv_.size()) < threads_) priv_.resize(threads_);
  for (auto& b : priv_) b.reserve(priv_bytes);
  priv_ldq_ = ldq;
  if (need > scratch_bytes_ || static_cast<int>(scratch_.size()) < threads_) {
    scratch_bytes_ = std::max(need, scratch_bytes_);
    if (static_cast<int>(scratch_.size()) < threads_) scratch_.resize(threads_);
    for (auto& s : scratch_) s.reserve(scratch_bytes_);
  }
}

DecoderEngine::Private DecoderEngine::private_buffers(int tid) const {
  // carve [q8 | bf16 | rs | rz | xsum | hn | act], 64-byte aligned pieces, out of this thread's buffer
  char* p = priv_[tid].as<char>();
  auto take = [&p](size_t bytes) {
    char* r = p;
    p += (bytes + 63) / 64 * 64;
    return r;
  };
  const int64_t max_k = std::max(std::max(cfg_.hidden, cfg_.intermediate), cfg_.heads * cfg_.head_dim);
  Private v;
  v.q8 = reinterpret_cast<uint8_t*>(take(kPrivateRows * priv_ldq_));
  v.bf = reinterpret_cast<uint16_t*>(take(kPrivateRows * priv_ldq_ * 2));
  v.rs = reinterpret_cast<float*>(take(kPrivateRows * 4));
  v.rz = reinterpret_cast<float*>(take(kPrivateRows * 4));
  v.xsum = reinterpret_cast<float*>(take(kPrivateRows * max_k * 4));
  v.hn = reinterpret_cast<float*>(take(kPrivateRows * cfg_.hidden * 4));
  v.act = reinterpret_cast<float*>(take(kPrivateRows * cfg_.intermediate * 4));
  return v;
}

void DecoderEngine::linear_mt(DecLinear& L, const float* in, int64_t m, float* out, Act act,
                              const float* residual, int tid, int nt) {
  Epilogue epi;
  epi.bias = L.bias.empty() ? nullptr : L.bias.data();
  epi.act = act;
  epi.residual = residual;
  epi.ld_residual = L.n;
  const KernelTable* kt = kt_;
  int64_t lo, hi;
  split_range(m, 1, nt, tid, &lo, &hi);
  const bool priv = m <= kPrivateRows;  // every thread prepares all rows for itself: no barrier
  const Private pv = private_buffers(tid);
  if (priv) {
    lo = 0;
    hi = m;
  }
  switch (L.kind) {
    case DecLinear::F32: {
      const int64_t nr = kt->f32_nr;
      if (L.n / nr >= 2 * nt || m < 2 * nt) {
        int64_t n0, n1;
        split_range(L.n, nr, nt, tid, &n0, &n1);
        if (n0 < n1) kt->gemm_f32(in, L.k, L.packed.as<float>(), L.n, L.k, out, L.n, 0, m, n0, n1, epi);
      } else if (lo < hi) {
        kt->gemm_f32(in, L.k, L.packed.as<float>(), L.n, L.k, out, L.n, lo, hi, 0, L.n, epi);
      }
      break;
    }
    case DecLinear::BF16: {
      const int64_t ldb = (L.k + 1) / 2 * 2;
      uint16_t* a = priv ? pv.bf : bf_.as<uint16_t>();
      if (lo < hi) kt->to_bf16_rows(in + lo * L.k, L.k, a + lo * ldb, ldb, hi - lo, L.k);
      if (!priv) {
#pragma omp barrier
      }
      const int64_t nr = kt->bf16_nr;
      if (L.n / nr >= 2 * nt || m < 2 * nt) {
        int64_t n0, n1;
        split_range(L.n, nr, nt, tid, &n0, &n1);
        if (n0 < n1) kt->gemm_bf16(a, ldb, L.packed.as<void>(), L.n, L.k, out, L.n, 0, m, n0, n1, epi);
      } else if (lo < hi) {
        kt->gemm_bf16(a, ldb, L.packed.as<void>(), L.n, L.k, out, L.n, lo, hi, 0, L.n, epi);
      }
      break;
    }
    case DecLinear::S8: {
      const int64_t ldq = (L.k + kt->s8_k_align - 1) / kt->s8_k_align * kt->s8_k_align;
      uint8_t* q = priv ? pv.q8 : q8_.as<uint8_t>();
      float* rs = priv ? pv.rs : rs_.as<float>();
      float* rz = priv ? pv.rz : rz_.as<float>();
      const int64_t no = static_cast<int64_t>(L.outlier_idx.size());
      float* xo = priv ? pv.xsum : xsum_.as<float>();  // outlier features [m][no] (no group sums in this format)
      if (lo < hi) {
        if (no == 0) {
          kt->quantize_rows_u8(in + lo * L.k, L.k, q + lo * ldq, ldq, hi - lo, L.k, rs + lo, rz + lo);
        } else {
          // LLM.int8(): outlier features leave the INT8 product (zeroed before quantizing so they do not widen
          // the row's range) and are multiplied in float32
          std::vector<float> row(L.k);
          for (int64_t r = lo; r < hi; ++r) {
            std::memcpy(row.data(), in + r * L.k, L.k * 4);
            for (int64_t i = 0; i < no; ++i) {
              xo[r * no + i] = row[L.outlier_idx[i]];
              row[L.outlier_idx[i]] = 0.0f;
            }
            kt->quantize_rows_u8(row.data(), L.k, q + r * ldq, ldq, 1, L.k, rs + r, rz + r);
          }
        }
      }
      if (!priv) {
#pragma omp barrier
      }
      epi.w_scale = L.w_scale.data();
      epi.col_sum = L.col_sum.data();
      epi.row_scale = rs;
      epi.row_zp = rz;
      Epilogue e8 = epi;
      if (no > 0) {  // the INT8 part first, raw; bias, activation and residual after the float32 part
        e8.bias = nullptr;
        e8.act = Act::None;
        e8.residual = nullptr;
      }
      int64_t n0 = 0, n1 = L.n, m0 = 0, m1 = m;
      const int64_t nr = kt->s8_nr;
      if (L.n / nr >= 2 * nt || m < 2 * nt) {
        split_range(L.n, nr, nt, tid, &n0, &n1);
      } else {
        m0 = lo;
        m1 = hi;
      }
      if (n0 < n1 && m0 < m1) {
        kt->gemm_s8(q, ldq, L.packed.as<void>(), L.n, L.k, out, L.n, m0, m1, n0, n1, e8);
        if (no > 0) {
          // the same rows and columns in float32 over the outlier features, added to the INT8 result; then bias,
          // activation and residual. n0 / n1 are multiples of the INT8 panel width, itself a multiple of the FP32 one
          std::vector<float> part((m1 - m0) * L.n);
          kt->gemm_f32(xo + m0 * no, no, L.outlier_packed.as<float>(), L.n, no, part.data(), L.n, 0, m1 - m0, n0, n1,
                       Epilogue{});
          for (int64_t r = m0; r < m1; ++r)
            for (int64_t j = n0; j < n1; ++j) out[r * L.n + j] += part[(r - m0) * L.n + j];
          Epilogue ef;
          ef.bias = epi.bias;
          ef.act = act;
          ef.residual = residual;
          ef.ld_residual = L.n;
          kt->epilogue_f32(out + m0 * L.n + n0, L.n, m1 - m0, n1 - n0, m0, n0, ef);
        }
      }
      break;
    }
    case DecLinear::KBIT: {
      const KbitWeight& w = L.kw;
      const int64_t G = (w.k + w.group - 1) / w.group;
      if (L.a8) {
        // W4A8 at every row count: per-token int8 activations (prefill, decode and perplexity see the same integers;
        // the prefill GEMM sums their float parts in another order)
        const int64_t ldxq = (L.k + 63) / 64 * 64;
        int8_t* xq = reinterpret_cast<int8_t*>(priv ? pv.q8 : q8_.as<uint8_t>());
        float* ax = priv ? pv.rs : rs_.as<float>();
        float* xs = priv ? pv.xsum : xsum_.as<float>();
        if (lo < hi) dk_->quantize_a8(in + lo * L.k, L.k, hi - lo, L.k, w.group, xq + lo * ldxq, ldxq, ax + lo,
                                      xs + lo * G);
        if (!priv) {
#pragma omp barrier
        }
        int64_t n0, n1;
        split_range(L.n, 16, nt, tid, &n0, &n1);
        // (the load refused W4A8 Linears of other layouts than a8_vector_layout's, so the GEMM never throws here)
        if (dk_->kbit_gemm_a8 && m >= kKbitA8GemmMinRows && !a8_gemv_only_) {
          if (n0 < n1) dk_->kbit_gemm_a8(xq, ldxq, ax, m, w, xs, out, L.n, n0, n1);
        } else {
          for (int64_t b0 = n0; b0 < n1; b0 += 16) {  // 16 weight rows stay in L1 while every token row uses them
            const int64_t b1 = std::min(b0 + 16, n1);
            dk_->kbit_gemv_a8(xq, ldxq, ax, m, w, xs, out, L.n, b0, b1);
          }
        }
        if (n0 < n1 && (epi.bias || epi.act != Act::None || epi.residual))
          kt->epilogue_f32(out + n0, L.n, m, n1 - n0, 0, n0, epi);
      } else if (m <= kKbitGemvMaxRows) {
        float* xs = priv ? pv.xsum : xsum_.as<float>();
        // group input sums: the offsets' term, and the AVX2 integer-grid GEMV's lut[0] term (kept for every Lut4)
        if ((w.offsets || w.mode == KbitMode::Lut4) && lo < hi)
          dk_->group_sums(in + lo * L.k, L.k, hi - lo, L.k, w.group, xs + lo * G);
        if (!priv) {
#pragma omp barrier
        }
        int64_t n0, n1;
        split_range(L.n, 16, nt, tid, &n0, &n1);
        if (n0 < n1) {
          dk_->kbit_gemv(in, L.k, m, w, xs, out, L.n, n0, n1);
          if (epi.bias || epi.act != Act::None || epi.residual)
            kt->epilogue_f32(out + n0, L.n, m, n1 - n0, 0, n0, epi);
        }
      } else {
        // prefill: dequantize a chunk of weight rows, pack it as a small FP32 panel matrix, run the FP32 GEMM
        // over all m tokens; the dequantization is amortised over the tokens
        char* scratch = scratch_[tid].as<char>();
        float* deq = reinterpret_cast<float*>(scratch);
        float* pk = reinterpret_cast<float*>(scratch + ((kKbitChunkRows * L.k * 4 + 63) / 64 * 64));
        f32_chunks(kt, L, in, m, out, epi, tid, nt, pk, [&](int64_t c0, int64_t rows) {
          dk_->kbit_dequant(w, c0, c0 + rows, deq);
          kt->pack_f32_nk(deq, L.k, rows, L.k, pk);
        });
      }
      break;
    }
    case DecLinear::BITMASK_F32: {
      const BitmaskWeight& w = L.bw;
      const bool epi_needed = epi.bias || epi.act != Act::None || epi.residual;
      if (m <= kKbitGemvMaxRows) {  // decode: stream the bits and the non-zeros
        int64_t n0, n1;
        split_range(L.n, 16, nt, tid, &n0, &n1);
        if (n0 < n1) {
          dk_->bitmask_gemv_f32(in, L.k, m, w, out, L.n, n0, n1);
          if (epi_needed) kt->epilogue_f32(out + n0, L.n, m, n1 - n0, 0, n0, epi);
        }
      } else {  // prefill: a chunk of rows scattered straight into FP32 panels, FP32 GEMM over all m tokens
        float* pk = scratch_[tid].as<float>();
        f32_chunks(kt, L, in, m, out, epi, tid, nt, pk, [&](int64_t c0, int64_t rows) {
          kt->pack_f32_bitmask(w.mask + c0 * w.words, w.words, w.values + w.rowptr[c0], rows, L.k, pk);
        });
      }
      break;
    }
    case DecLinear::BITMASK_S8: {
      // u8 activations quantized per token exactly as the dense W8A8 path does, so the results match it
      const BitmaskWeight& w = L.bw;
      const int64_t ldq = (L.k + kt->s8_k_align - 1) / kt->s8_k_align * kt->s8_k_align;
      uint8_t* q = priv ? pv.q8 : q8_.as<uint8_t>();
      float* rs = priv ? pv.rs : rs_.as<float>();
      float* rz = priv ? pv.rz : rz_.as<float>();
      if (lo < hi) kt->quantize_rows_u8(in + lo * L.k, L.k, q + lo * ldq, ldq, hi - lo, L.k, rs + lo, rz + lo);
      if (!priv) {
#pragma omp barrier
      }
      if (m <= kKbitGemvMaxRows) {
        int64_t n0, n1;
        split_range(L.n, 16, nt, tid, &n0, &n1);
        if (n0 < n1) {
          dk_->bitmask_gemv_s8(q, ldq, m, w, rs, rz, out, L.n, n0, n1);
          if (epi.bias || epi.act != Act::None || epi.residual)
            kt->epilogue_f32(out + n0, L.n, m, n1 - n0, 0, n0, epi);
        }
      } else {  // prefill: expand a chunk of rows to dense int8 codes, pack them, INT8 GEMM over all m tokens
        const int64_t chunk = s8_chunk_rows(kt);
        int64_t n0, n1;
        split_range(L.n, chunk, nt, tid, &n0, &n1);
        char* scratch = scratch_[tid].as<char>();
        int8_t* codes = reinterpret_cast<int8_t*>(scratch);
        void* pk = scratch + ((chunk * L.k + 63) / 64 * 64);
        for (int64_t c0 = n0; c0 < n1; c0 += chunk) {
          const int64_t rows = std::min(chunk, n1 - c0);
          dk_->bitmask_expand_s8(w, c0, c0 + rows, codes);
          kt->pack_s8(codes, L.k, rows, L.k, pk);
          Epilogue ec = epi;
          ec.w_scale = L.w_scale.data() + c0;
          ec.col_sum = L.col_sum.data() + c0;
          ec.row_scale = rs;
          ec.row_zp = rz;
          if (ec.bias) ec.bias += c0;
          if (ec.residual) ec.residual += c0;
          kt->gemm_s8(q, ldq, pk, rows, L.k, out + c0, L.n, 0, m, 0, rows, ec);
        }
      }
      break;
    }
  }
#pragma omp barrier
}

// Rotary embedding and K / V into the cache for rows [r0, r1) of one kv head group (q heads of the group and
// the group's k head are rotated in place); padding slots hold zeros.
void DecoderEngine::rope_and_cache(int64_t layer, float* qkv, int64_t T, int64_t r0, int64_t r1, int64_t g0,
                                   int64_t g1) {
  const int64_t d = cfg_.head_dim, Hq = cfg_.heads, Hkv = cfg_.kv_heads, R = (Hq + 2 * Hkv) * d;
  const int64_t B = batch_, group = Hq / Hkv;
  const bool llama = cfg_.arch == 0;
  float* kc = kcache_.as<float>() + layer * B * Hkv * d * cap_;
  float* vc = vcache_.as<float>() + layer * B * Hkv * cap_ * d;
  for (int64_t r = r0; r < r1; ++r) {
    float* row = qkv + r * R;
    const int64_t b = r / T, slot = len_ + r % T;
    const bool real = valid_[b * cap_ + slot] != 0;
    const float* cs = rope_cs_.data() + row_pos_[r] * d;
    for (int64_t g = g0; g < g1; ++g) {
      float* kr = row + (Hq + g) * d;
      const float* vr = row + (Hq + Hkv + g) * d;
      if (llama) {
        dk_->rope(row + g * group * d, group, d, cs);
        dk_->rope(kr, 1, d, cs);
      }
      float* kt_base = kc + (b * Hkv + g) * d * cap_;
      float* v_dst = vc + ((b * Hkv + g) * cap_ + slot) * d;
      for (int64_t i = 0; i < d; ++i) kt_base[i * cap_ + slot] = real ? kr[i] : 0.0f;
      if (real) std::memcpy(v_dst, vr, d * 4);
      else std::memset(v_dst, 0, d * 4);
    }
  }
}

void DecoderEngine::attention_mt(int64_t layer, float* qkv, int64_t B, int64_t T, float* ctx, int tid, int nt) {
  const int64_t d = cfg_.head_dim, Hq = cfg_.heads, Hkv = cfg_.kv_heads, R = (Hq + 2 * Hkv) * d;
  const int64_t S = len_ + T, group = Hq / Hkv, Hd = Hq * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float* kc = kcache_.as<float>() + layer * B * Hkv * d * cap_;
  const float* vc = vcache_.as<float>() + layer * B * Hkv * cap_ * d;
  char* scratch = scratch_[tid].as<char>();
  if (T < kAttnGemmMinRows) {
    // few query rows (decode): one work item per (row, kv head) does its rotary + cache writes and then attends
    // with every q head of the group, so no barrier separates the cache update from attention
    for (int64_t it = tid; it < B * Hkv; it += nt) {
      const int64_t b = it / Hkv, g = it % Hkv;
      rope_and_cache(layer, qkv, T, b * T, (b + 1) * T, g, g + 1);
      for (int64_t h = g * group; h < (g + 1) * group; ++h)
        dk_->attend(qkv + (b * T) * R + h * d, R, T, kc + (b * Hkv + g) * d * cap_, cap_,
                    vc + (b * Hkv + g) * cap_ * d, d, d, limits_.data() + b * T, valid_.data() + b * cap_, scale,
                    ctx + (b * T) * Hd + h * d, Hd, reinterpret_cast<float*>(scratch));
    }
#pragma omp barrier
    return;
  }
  int64_t lo, hi;
  split_range(B * T, 1, nt, tid, &lo, &hi);
  rope_and_cache(layer, qkv, T, lo, hi, 0, Hkv);
#pragma omp barrier
  for (int64_t it = tid; it < B * Hq; it += nt) {
    const int64_t b = it / Hq, h = it % Hq, kvh = h / group;
    const float* kt_base = kc + (b * Hkv + kvh) * d * cap_;
    const float* v_base = vc + (b * Hkv + kvh) * cap_ * d;
    const float* q = qkv + (b * T) * R + h * d;
    float* out = ctx + (b * T) * Hd + h * d;
    const int64_t* lim = limits_.data() + b * T;
    const uint8_t* valid = valid_.data() + b * cap_;
    const int64_t chunk = attention_chunk_rows(T, S);
    // this row's padding slots among the S keys, in order (none without a mask): masked in every query row
    thread_local std::vector<int32_t> pad;
    pad.clear();
    for (int64_t s = 0; s < S; ++s)
      if (!valid[s]) pad.push_back(static_cast<int32_t>(s));
    float* sc = reinterpret_cast<float*>(scratch);
    float* pk = reinterpret_cast<float*>(scratch + (chunk * S * 4 + 63) / 64 * 64);
    float* pvp = pk + kt_->pack_f32_size(S, d) / 4;
    kt_->pack_f32_kn(kt_base, cap_, S, d, pk);
    kt_->pack_f32_kn(v_base, d, d, S, pvp);
    Epilogue es;
    es.alpha = scale;
    // Query rows a chunk at a time, each over the keys its rows may see (below the largest of their limits: the
    // causal mask leaves a chunk the keys up to its last row), so a prompt's attention computes about half the
    // products of the whole square and its scores stay in L2. Keys the chunk computes past a row's own limit are
    // masked as before; they add exact zeros to P.V.
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t rows = std::min(chunk, T - t0);
      int64_t keys = 0;
      for (int64_t t = t0; t < t0 + rows; ++t) keys = std::max(keys, std::min(lim[t], S));
      if (keys == 0) {  // every row fully masked: zero weights, zero output
        for (int64_t t = t0; t < t0 + rows; ++t) std::fill(out + t * Hd, out + t * Hd + d, 0.0f);
        continue;
      }
      kt_->gemm_f32(q + t0 * R, R, pk, S, d, sc, keys, 0, rows, 0, keys, es);
      for (int64_t t = t0; t < t0 + rows; ++t) {
        float* row = sc + (t - t0) * keys;
        // masked: the keys from the row's limit on, and the padding slots below it
        const int64_t seen = std::max<int64_t>(0, std::min(lim[t], keys));
        const int64_t padded = std::lower_bound(pad.begin(), pad.end(), seen) - pad.begin();
        for (int64_t i = 0; i < padded; ++i) row[pad[i]] = -INFINITY;
        std::fill(row + seen, row + keys, -INFINITY);
        if (padded == seen) std::fill(row, row + keys, 0.0f);  // a fully padded query row: zero weights, zero output
        else kt_->softmax_rows(row, 1, keys, keys);
      }
      // P.V over the chunk's keys: V's packing holds S keys per panel of f32_nr channels, so one call per panel
      for (int64_t p = 0; p < d; p += kt_->f32_nr) {
        const int64_t cols = std::min(kt_->f32_nr, d - p);
        kt_->gemm_f32(sc, keys, pvp + p * S, cols, keys, out + t0 * Hd + p, Hd, 0, rows, 0, cols, Epilogue{});
      }
    }
  }
#pragma omp barrier
}

void DecoderEngine::norm_rows(const float* x, float* y, int64_t r0, int64_t r1, const std::vector<float>& g,
                              const std::vector<float>& b) const {
  const int64_t H = cfg_.hidden;
  if (r0 >= r1) return;
  if (cfg_.arch == 0) dk_->rmsnorm(x + r0 * H, H, y + r0 * H, H, r1 - r0, H, g.data(), cfg_.norm_eps);
  else kt_->layernorm(x + r0 * H, y + r0 * H, r1 - r0, H, H, g.data(), b.data(), cfg_.norm_eps);
}

void DecoderEngine::forward(const int64_t* ids, const int64_t* mask, int64_t B, int64_t T, int mode,
                            const int64_t* targets, std::vector<float>* out) {
  if (batch_ == 0) throw std::invalid_argument("call begin(batch, capacity) before forward");
  if (B != batch_) throw std::invalid_argument("batch " + std::to_string(B) + " differs from the cache's " +
                                               std::to_string(batch_));
  if (T <= 0) throw std::invalid_argument("no tokens to run");
  if (len_ + T > cap_)
    throw std::invalid_argument("sequence length " + std::to_string(len_ + T) + " exceeds the cache capacity " +
                                std::to_string(cap_));
  if (mode < 0 || mode > 2) throw std::invalid_argument("bad logits mode");
  if (mode == 2 && !targets) throw std::invalid_argument("mode 2 needs targets");
  const int64_t M = B * T, H = cfg_.hidden, V = cfg_.vocab, d = cfg_.head_dim;
  const int64_t Hkv = cfg_.kv_heads, Hq = cfg_.heads, R = (Hq + 2 * Hkv) * d;
  for (int64_t i = 0; i < M; ++i) {
    if (ids[i] < 0 || ids[i] >= V) throw std::invalid_argument("token id " + std::to_string(ids[i]) + " out of range");
    if (mode == 2 && (targets[i] < -1 || targets[i] >= V)) throw std::invalid_argument("target id out of range");
  }
  // positions, validity and attention limits (serial: B*T integers)
  row_pos_.resize(M);
  limits_.resize(M);
  std::vector<int64_t> pos_after(next_pos_);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const bool real = !mask || mask[b * T + t] != 0;
      row_pos_[b * T + t] = pos_after[b];
      if (real) ++pos_after[b];
      limits_[b * T + t] = len_ + t + 1;
    }
  const bool llama = cfg_.arch == 0;
  for (int64_t b = 0; b < B; ++b)
    if (pos_after[b] > cfg_.max_positions && !llama)
      throw std::invalid_argument("position " + std::to_string(pos_after[b]) + " exceeds the model's " +
                                  std::to_string(cfg_.max_positions));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) valid_[b * cap_ + len_ + t] = (!mask || mask[b * T + t] != 0) ? 1 : 0;
  if (llama) rope_table(*std::max_element(pos_after.begin(), pos_after.end()));
  ensure_buffers(M);
  const int64_t out_rows = mode == 0 ? B : M;
  out->assign(mode == 2 ? M : out_rows * V, 0.0f);
  float* x = x_.as<float>();
  float* x2 = h_.as<float>();  // residual ping-pong partner of x
  float* hn = sel_.as<float>();
  float* qkv = qkv_.as<float>();
  float* ctx = ctx_.as<float>();
  float* ff = ff_.as<float>();
  float* act = act_.as<float>();
  const Act mlp_act = cfg_.act == 1 ? Act::GeluTanh : (cfg_.act == 2 ? Act::GeluErf : Act::None);
  const int nt_req = threads_;
  const bool small = M <= kPrivateRows;
  float* result = out->data();
  float* head_in = head_in_.as<float>();  // final-normed rows whose logits are wanted (<= M rows)

#pragma omp parallel num_threads(nt_req)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const Private pv = private_buffers(tid);
    int64_t lo, hi;
    split_range(M, 1, nt, tid, &lo, &hi);
    for (int64_t r = lo; r < hi; ++r) {
      if (cfg_.embed_from_head) dk_->kbit_dequant(head_.kw, ids[r], ids[r] + 1, x + r * H);  // tied, stored once
      else std::memcpy(x + r * H, tok_.data() + ids[r] * H, H * 4);
      if (!llama) {
        const float* pe = pos_emb_.data() + std::min(row_pos_[r], cfg_.max_positions - 1) * H;
        for (int64_t j = 0; j < H; ++j) x[r * H + j] += pe[j];
      }
    }
#pragma omp barrier
    for (int64_t li = 0; li < cfg_.layers; ++li) {
      DecoderLayerW& Lw = layers_[li];
      float* hin = small ? pv.hn : hn;
      if (small) {
        norm_rows(x, hin, 0, M, Lw.ln1_g, Lw.ln1_b);
      } else {
        norm_rows(x, hn, lo, hi, Lw.ln1_g, Lw.ln1_b);
#pragma omp barrier
      }
      linear_mt(Lw.qkv, hin, M, qkv, Act::None, nullptr, tid, nt);
      attention_mt(li, qkv, B, T, ctx, tid, nt);
      linear_mt(Lw.o, ctx, M, x2, Act::None, x, tid, nt);
      if (small) {
        norm_rows(x2, hin, 0, M, Lw.ln2_g, Lw.ln2_b);
      } else {
        norm_rows(x2, hn, lo, hi, Lw.ln2_g, Lw.ln2_b);
#pragma omp barrier
      }
      if (llama) {
        const int64_t I = cfg_.intermediate;
        linear_mt(Lw.up, hin, M, ff, Act::None, nullptr, tid, nt);
        float* a = small ? pv.act : act;
        if (small) {
          dk_->silu_mul(ff, 2 * I, a, I, M, I);
        } else {
          if (lo < hi) dk_->silu_mul(ff + lo * 2 * I, 2 * I, act + lo * I, I, hi - lo, I);
#pragma omp barrier
        }
        linear_mt(Lw.down, a, M, x, Act::None, x2, tid, nt);
      } else {
        linear_mt(Lw.up, hin, M, ff, mlp_act, nullptr, tid, nt);
        linear_mt(Lw.down, ff, M, x, Act::None, x2, tid, nt);
      }
    }
    // final norm of the rows whose logits are wanted
    int64_t olo, ohi;
    split_range(out_rows, 1, nt, tid, &olo, &ohi);
    for (int64_t r = olo; r < ohi; ++r) {
      const float* src = x + (mode == 0 ? r * T + (T - 1) : r) * H;
      if (llama) dk_->rmsnorm(src, H, head_in + r * H, H, 1, H, final_g_.data(), cfg_.norm_eps);
      else kt_->layernorm(src, head_in + r * H, 1, H, H, final_g_.data(), final_b_.data(), cfg_.norm_eps);
    }
#pragma omp barrier
    if (mode != 2) {
      linear_mt(head_, head_in, out_rows, result, Act::None, nullptr, tid, nt);
    } else {
      float* lg = logit_.as<float>();
      for (int64_t c0 = 0; c0 < M; c0 += kLogitChunk) {
        const int64_t rows = std::min(kLogitChunk, M - c0);
        linear_mt(head_, head_in + c0 * H, rows, lg, Act::None, nullptr, tid, nt);
        int64_t a0, a1;
        split_range(rows, 1, nt, tid, &a0, &a1);
        for (int64_t r = a0; r < a1; ++r) {
          const int64_t tg = targets[c0 + r];
          result[c0 + r] = tg < 0 ? 0.0f : lg[r * V + tg] - dk_->logsumexp(lg + r * V, V);
        }
#pragma omp barrier
      }
    }
  }
  next_pos_ = pos_after;
  len_ += T;
}

}  // namespace tf
