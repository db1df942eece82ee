// The encoder executor: BERT / DistilBERT / RoBERTa forward pass (embeddings, N post-LN layers, optional head)
// run entirely in native code over pre-packed weights and activation buffers reused across calls.
#pragma once
#include <cstdint>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../core/isa.h"
#include "../sparse/jit_f32.h"

namespace tf {

// 64-byte aligned, grow-only scratch / weight storage.
class AlignedBuf {
 public:
  AlignedBuf() = default;
  explicit AlignedBuf(size_t bytes) { reserve(bytes); }
  ~AlignedBuf();
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  AlignedBuf(AlignedBuf&& o) noexcept : ptr_(o.ptr_), size_(o.size_) { o.ptr_ = nullptr; o.size_ = 0; }
  void reserve(size_t bytes);  // grows only; contents are not preserved
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// A tensor handed over from Python (borrowed for the duration of the constructor).
struct HostTensor {
  const void* data = nullptr;
  std::vector<int64_t> shape;
  char dtype = 'f';  // 'f' float32, 'b' int8, 'i' int32, 'h' uint16 (bf16 bits or small indices), 'u' uint8
};

// How a Linear's weight is stored in memory and which kernel runs it.
enum class LinearKind : int {
  F32 = 0,        // packed dense float32 panels (gemm_f32)
  Bf16 = 1,       // packed dense bf16 (gemm_bf16)
  Int8 = 2,       // packed dense INT8 (gemm_s8)
  BsrS8 = 3,      // INT8 in R x 4 blocks (gemm_bsr_s8): block-int8, and csr-int8 / nm-int8 as 1x4 input quads
  SparseF32 = 4,  // float32 entries per row (R = 1, csr-f32) or per 4x1 block (R = 4, block-f32) (gemm_spf32)
  NmF32 = 5,      // float32 N:M groups with in-group indices (gemm_nm_f32)
  PermS8 = 6,     // INT8 as permuted quads (gemm_perm_s8): nm-int8 (and csr-int8) where the CPU has VBMI
};
const char* linear_kind_name(LinearKind kind);
// What runs a loaded Linear, in words: the kind plus the load-time form of a sparse weight (gathered quads, row
// pairs, pair records, permuted quads, generated code and its size)
std::string linear_kernel(const struct Linear& L);
// Whether an encoder's dense bf16 weights run on the level's BF16 GEMM rather than widened to float32 (the float32
// GEMM; the decoder keeps bf16 wherever it can, its decode being bound by the weights' bytes):
// always with AMX tiles; with vdpbf16ps only where it measures faster than the float32 GEMM on a layer-sized
// product (on Sapphire Rapids vdpbf16ps issues at a quarter of the FMA rate, bench/results/dot_rates.md; with AMX
// off, a dense bf16 BERT-base pass took 0.73x the time widened: bf16_linear_kernel_noamx.md). Measured once per
// process (encoder.cpp).
bool bf16_gemm_preferred(const KernelTable& kt);
// SparseF32::chunk_ptr for chunks of chunk_k inputs (entries within a row block sorted by input)
std::vector<int32_t> build_chunk_pointers(const std::vector<int32_t>& rowptr, const int32_t* cols, int64_t k,
                                          int64_t chunk_k);

struct Linear {
  std::string name;
  int64_t n = 0, k = 0;
  bool int8 = false;
  bool bf16 = false;  // bf16 weights run by the BF16 kernel (else bf16 weights are widened to float32 at load)
  LinearKind kind = LinearKind::F32;
  std::vector<int32_t> bsr_rowptr, bsr_cols;  // BsrS8 and SparseF32 row (block) pointers and input indices
  std::vector<int8_t> bsr_values;
  std::vector<int16_t> bsr_values16;  // bsr_values widened, in their place, where the level wants them
  int64_t bsr_rows = 1;
  int64_t bsr_pair_slots = 0;  // BsrS8 as pair records (BsrS8::pair_slots; pairs_from_rows)
  bool bsr_narrow = false;     // BsrS8::narrow: 4x4 values in [-64, 64] kept 8-bit (KernelTable::bsr_narrow_values)
  // BsrS8 row pairs (BsrS8::pair_tile .. pair_voff; build_row_pairs): set, bsr_cols and bsr_values are dropped
  std::vector<int32_t> bsr_pair_tile, bsr_pair_ptr, bsr_pair_cols, bsr_pair_voff;
  std::vector<uint16_t> bsr_pair_rows;
  std::vector<int8_t> bsr_pair_values;
  // BsrS8 gathered quads (BsrS8::gq_ptr .. gq_values; build_gathered_quads): set, bsr_cols and bsr_values are dropped
  std::vector<int32_t> bsr_gq_ptr;
  std::vector<uint16_t> bsr_gq_inputs;
  std::vector<int8_t> bsr_gq_values;
  bool gathered() const { return !bsr_gq_ptr.empty(); }
  // PermS8 (records in `packed`): each panel's byte offset and the steps per (panel, chunk)
  std::vector<int64_t> perm_panel_off;
  std::vector<uint8_t> perm_steps;
  // csr-f32 as generated code (EncoderEngine::build_jit; KernelTable::spf32_jit), set after every Linear is loaded
  std::unique_ptr<JitF32Code> spf32_jit;
  std::vector<float> sp_values;  // SparseF32 / NmF32 values
  std::vector<int32_t> sp_chunk_ptr;  // SparseF32 entry ranges per input chunk (levels that walk chunks)
  std::vector<uint8_t> nm_idx;   // NmF32 in-group index of every value
  int64_t nm_keep = 0, nm_group = 0;
  // output columns that form equal groups (3 for the fused Q, K, V projection): threads that split the columns
  // take the same share of every group, so each one computes the Q, K and V of the heads it will attend with
  int64_t col_groups = 1;
  // bytes the weight occupies in memory (packed panels or sparse arrays)
  size_t weight_bytes() const;
  // flush the weight's arrays from every cache level (timing as in a pass, where a layer's weights come from
  // beyond L2)
  void evict() const;
  AlignedBuf packed;
  std::vector<float> bias;
  std::vector<float> w_scale;
  std::vector<int32_t> col_sum;
  bool static_act = false;
  float a_scale = 1.0f;
  int32_t a_zp = 0;
  // calibration observer over the layer's input
  float obs_min = 0.0f, obs_max = 0.0f;
  bool obs_seen = false;
  // histogram observer (second calibration pass): counts of input values over [hist_lo, hist_hi]
  float hist_lo = 0.0f, hist_hi = 0.0f;
  std::vector<double> hist;
};

// Where a Linear reads and writes: float in/out, or u8 already quantized with the layer's static parameters
// (in_q), or u8 requantized for the `next` layer's static parameters (out_q).
struct LinearIO {
  const float* in = nullptr;
  const uint8_t* in_q = nullptr;
  float* out = nullptr;
  uint8_t* out_q = nullptr;
  uint8_t* out_at = nullptr;       // block-sparse INT8 to block-sparse INT8: the next layer's re-layout (out_q's)
  const uint8_t* in_at = nullptr;  // a re-layout written by the previous layer's epilogue (bsr_pack_at skipped)
  bool at_bytes = false;           // out_at / in_at as byte rows (gathered quads: bsr_pack_bytes' layout)
  float* out_at_f32 = nullptr;       // sparse FP32 to sparse FP32: the next layer's re-layout (Epilogue::out_at_f32)
  const float* in_at_f32 = nullptr;  // a re-layout written by the previous layer's epilogue (spf32_pack_at skipped)
  const Linear* next = nullptr;
  Act act = Act::None;
  const float* residual = nullptr;
  // LayerNorm of the finished output rows, in place (ln_beta beside it), inside the Linear's parallel region: each
  // thread normalizes rows it computed itself where the split is by rows (no barrier, the rows still in its
  // cache), after a barrier otherwise
  const float* ln_gamma = nullptr;
  const float* ln_beta = nullptr;
  // block-sparse INT8 QKV before BF16 attention, with qkv.q set: the attention's bf16 operands instead of float rows
  // in `out` (Epilogue::qkv; EncoderEngine::qkv_bf16_operands)
  QkvBf16 qkv;
  // block-sparse INT8 QKV before INT8 attention, with qkv_s8.q set: Q's and K's quantized operands and V's floats by
  // channel instead of float rows in `out` (Epilogue::qkv_s8; EncoderEngine::qkv_s8_operands)
  QkvS8 qkv_s8;
  // sparse FP32 QKV before the fused float attention, with qkv_f32.base set: the attention's operands instead of
  // float rows in `out` (Epilogue::qkv_f32; EncoderEngine::attention_f32_ops reads them)
  QkvF32 qkv_f32;
  // Inside the pass's one parallel region (EncoderEngine::run): the next op reads only the rows this thread wrote,
  // split the same way (EncoderEngine::splits_tokens), and re-lays its input as the ops since the last barrier did
  // (run_group's `stays`), so the threads go on without a barrier
  bool rows_stay = false;
};

struct EncoderLayer {
  Linear qkv, attn_out, ffn1, ffn2;
  std::vector<float> ln1_g, ln1_b, ln2_g, ln2_b;
};

struct EncoderConfig {
  int64_t hidden = 0, heads = 0, layers = 0, intermediate = 0, vocab = 0, max_positions = 0, type_vocab = 0;
  // per-head size; 0: hidden / heads. With attention heads pruned (the same number in every layer) the attention
  // width heads * head_dim is smaller than hidden: qkv is [3 * heads * head_dim, hidden], attn_out [hidden, that]
  int64_t head_dim = 0;
  int64_t pad_token_id = 0;
  int position_mode = 0;  // 0: 0..S-1 (BERT, DistilBERT); 1: RoBERTa (pad + 1 + running count of non-pad)
  float ln_eps = 1e-12f;
  Act act = Act::GeluErf;
  int head_pool = 0;  // 0: per token, 1: first token ([CLS])
  int attention_mode = 0;  // 0: float32; 1: INT8 (u8 x s8 GEMMs); 2: BF16 GEMMs with float32 accumulation;
                           // 3: by sequence length, BF16 up to bf16_attention_max_seq tokens and INT8 beyond
  int64_t bf16_attention_max_seq = 0;
  int64_t chunk_rows = 0;  // > 0: a batch's sequences pass the layer stack in groups of about this many tokens
  std::vector<Act> head_acts;
  // csr-f32 Linears (by name) that run the plain row walk instead of generated code: the planner times both per
  // layer and keeps the faster (on Ice Lake the walk, on Zen 4 the code: docs/kernels.md)
  std::vector<std::string> csr_f32_walk;
};

struct RunResult {
  std::vector<float> hidden;  // [B, S, H]
  std::vector<float> head;    // [B, out] or [B, S, out]
  int64_t head_dim = 0;
  std::vector<float> pooled;  // [B, H] when pooling was asked for
};

// The activation buffers one stream of layer ops works in. The engine has one per thread: the whole team uses the
// first, and when a batch is split into groups of sequences run side by side (one thread each) every thread uses
// its own.
struct Workspace {
  AlignedBuf x1, qkv, ctx, ff, q8, q8b, bf, at, at_next, row_scale, row_zp;
  AlignedBuf qkv_bf;  // the BF16 attention operands written by a block-sparse QKV (LinearIO::qkv)
  AlignedBuf qkv_s8;  // the INT8 attention's Q, K and V written by a block-sparse QKV (LinearIO::qkv_s8)
  std::vector<AlignedBuf> scratch;  // attention scratch, one per thread of the ops' team
  int64_t cap_tokens = 0, cap_seq = 0;
};

class EncoderEngine {
 public:
  EncoderEngine(const EncoderConfig& cfg, const std::map<std::string, HostTensor>& tensors, Isa isa, int threads);
  // A Linear-only engine: the single Linear stored under `name` in `tensors`, loaded, validated and dispatched
  // exactly as inside an encoder. The planner times candidate formats with it; tests run formats through it.
  // csr_f32_code false: a csr-f32 weight runs the plain row walk, not generated code.
  EncoderEngine(const std::map<std::string, HostTensor>& tensors, const std::string& name, Isa isa, int threads,
                bool csr_f32_code = true);
  // y [m, n] = act(x [m, k] . W^T + bias) + residual, on the Linear-only engine
  // u8_input (a Linear with static activation parameters, INT8 formats): x arrives quantized with them, as FFN2's
  // input does in a static INT8 pass (requantized by FFN1's epilogue), and for block-sparse quad or byte rows also
  // re-laid, as FFN1's epilogue writes it there (linear_input): the call runs the GEMM and its epilogue only
  void run_linear(const float* x, int64_t m, float* y, Act act, const float* residual, bool u8_input = false);
  // Best seconds per call of the only Linear over `iters` calls timed as in a pass: the calls share one parallel
  // region and each ends at the team's barrier, as a pass's ops do (no fork or join per call); region_per_call:
  // each call opens its own, as a lone run_linear does. cold: the weight is evicted before each call (untimed)
  // u8_input: as run_linear's, the quantization (and re-layout) made once before the timed calls.
  // warm_call: one untimed call first (in the region), so that each thread has read its own share of the input, as
  // in a pass, where a thread's input was written by that thread; the input prepared here was written by the master
  // thread alone, and (by our reading) a first call read the other thread's share from the master's cache: with u8
  // input it took up to 1.5x a later call's time on 2 Ice Lake cores (bench/results/icelake_first_call_u8.md)
  double time_linear(const float* x, int64_t m, float* y, int iters, bool cold, bool region_per_call = false,
                     bool u8_input = false, bool warm_call = true);
  const Linear& only_linear() const;
  // ids/mask/types: [B, S] int64 (mask and types may be null). Fills result; thread-safe against nothing:
  // one run at a time per engine (the Python wrapper holds a lock).
  // pooling: 0 none, 1 first token ([CLS]), 2 mean over unmasked tokens; normalize: L2-normalize pooled rows
  void run(const int64_t* ids, const int64_t* mask, const int64_t* types, int64_t batch, int64_t seq,
           RunResult* out, int pooling = 0, bool normalize = false);
  Isa isa() const { return kt_->isa; }
  int threads() const { return threads_; }
  void set_threads(int t) { threads_ = t > 0 ? t : 1; }
  void set_observe(bool on) { observe_ = on; }
  // histogram mode: per-Linear [lo, hi] ranges (from a min/max pass) and the number of bins
  void set_histograms(const std::map<std::string, std::pair<float, float>>& ranges, int bins);
  std::map<std::string, std::vector<double>> histograms() const;
  // name -> (min, max) of every Linear input seen while observing
  std::map<std::string, std::pair<float, float>> observed_ranges() const;
  void reset_observers();
  size_t packed_bytes() const;
  // every Linear's name and linear_kernel(), in layer order
  std::vector<std::pair<std::string, std::string>> linear_kernels() const;
  // per-op wall time (ms) accumulated over runs while profiling is on
  void set_profile(bool on) { profile_ = on; if (on) profile_ms_.clear(); }
  const std::map<std::string, double>& profile() const { return profile_ms_; }
  // layer passes whose block-sparse QKV wrote the INT8 attention's operands (qkv_s8_operands), since construction
  int64_t qkv_s8_layers() const { return qkv_s8_layers_.load(std::memory_order_relaxed); }

 private:
  void load_linear(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t);
  void load_block_sparse(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t);
  void load_csr(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t);
  void load_block_f32(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t);
  void load_nm(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t);
  void quads_from_rows(Linear* L, const std::vector<int8_t>& dense_rows);
  void pairs_from_rows(Linear* L, const std::vector<int8_t>& dense_rows, int64_t slots);
  void perm_quads_from_rows(Linear* L, const std::vector<int8_t>& dense_rows);
  // a csr-f32 Linear's generated code (where the level runs it, TRIMFORMER_JIT is not 0 and the config does not name
  // the Linear in csr_f32_walk), its blocks cut where
  // the column splits of up to threads_ threads fall (col_groups set)
  void build_jit(Linear* L);
  void build_all_jit();
  // unstructured (slots 2) or N:M (slots 6 for 2:4, 2 for 4:8) INT8 rows: permuted quads for N:M rows where
  // perm_s8_available, else pair records where the level has bsr_pack_pairs, else quads
  void sparse_int8_rows(Linear* L, const std::vector<int8_t>& dense_rows, int64_t slots, bool nm);
  void load_static_activation(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t);
  void linear(Linear& L, const float* in, int64_t m, float* out, Act act, const float* residual);
  void linear(Linear& L, const LinearIO& io, int64_t m);
  // The Linear-only engine's call on float rows x; with u8_input, x quantized into q with the layer's static
  // parameters and, where a previous layer's epilogue would write it, re-laid into the workspace by one call (the
  // workspace must be set: tl_ws)
  LinearIO linear_input(Linear& L, const float* x, int64_t m, float* y, Act act, const float* residual,
                        bool u8_input, AlignedBuf& q);
  // the Linear-only engine's workspace for m rows, as this thread's (tl_ws), outside any team
  void use_linear_workspace(int64_t m);
  int64_t q_stride(int64_t k) const;
  void attention(const float* qkv, const float* mask_bias, int64_t batch, int64_t seq, float* ctx);
  // the fused float attention over the operands a sparse FP32 QKV wrote (QkvF32's layout at ops)
  void attention_f32_ops(const float* ops, const float* mask_bias, int64_t batch, int64_t seq, float* ctx);
  // ops: Q, K and V as a block-sparse QKV wrote them (qkv_s8_operands), or null for qkv's float rows
  void attention_s8(const float* qkv, const QkvS8* ops, const float* mask_bias, int64_t batch, int64_t seq,
                    float* ctx);
  // ops: the bf16 operands a block-sparse QKV wrote (qkv_bf16_operands), or null for qkv's float rows
  void attention_bf16(const float* qkv, const QkvBf16* ops, const float* mask_bias, int64_t batch, int64_t seq,
                      float* ctx);
  // Where a block-sparse QKV writes the BF16 attention's operands for nb sequences (w.qkv_bf, the packings' padding
  // zeroed), or q null where it cannot (another attention precision, seq or head_dim not a multiple of 16)
  QkvBf16 qkv_bf16_operands(Workspace& w, int64_t nb, int64_t seq) const;
  // Where a block-sparse QKV writes the INT8 attention's Q, K and V for nb sequences (w.qkv_s8), or q null where it
  // cannot (another attention precision, seq not a multiple of 64, head_dim not one of 16 up to 64;
  // TRIMFORMER_QKV_S8_OFF=1)
  QkvS8 qkv_s8_operands(Workspace& w, int64_t nb, int64_t seq) const;
  bool qkv_whole_heads(const Linear& L, int64_t m) const;
  // the INT8 and unfused float attention's query rows per chunk (scores, softmax and P.V a chunk at a time)
  int64_t attention_rows(int64_t seq) const;
  size_t attention_scratch_bytes(int64_t seq) const;
  void embed(const int64_t* ids, const int64_t* mask, const int64_t* types, int64_t batch, int64_t seq, float* x);
  void ensure_buffers(int64_t batch, int64_t seq);
  // L splits m tokens between the threads by whole rows (the same rows for every such Linear, its LayerNorm and the
  // next one's input preparation): a block-sparse INT8 Linear under a token split
  bool splits_tokens(const Linear& L, int64_t m) const;
  // the multiple of tokens at which such a split cuts (gathered quads: whole re-layout tiles); ops that split alike
  // and cut alike hand each thread the same rows
  int64_t token_align(const Linear& L, int64_t m) const;

  EncoderConfig cfg_;
  const KernelTable* kt_;
  int threads_;
  bool observe_ = false;
  bool profile_ = false;
  std::atomic<int64_t> qkv_s8_layers_{0};
  // a parallel region per op instead of one per pass (TRIMFORMER_REGION_PER_OP=1 at construction: for A/B runs)
  bool region_per_op_ = false;
  // TRIMFORMER_QKV_TOKEN_SPLIT=1 at construction: a block-sparse QKV under the team splits its tokens, not its
  // heads' output rows (splits_tokens; for A/B runs)
  bool qkv_token_split_ = false;
  // side-by-side groups taken from a shared counter as threads free up (TRIMFORMER_SIDE_STATIC=1: fixed halves)
  bool side_static_ = false;
  // TRIMFORMER_QKV_ROWS=1 at construction: a sparse FP32 QKV writes float rows for the attention to pack (A/B runs)
  bool qkv_ops_off_ = false;
  // TRIMFORMER_FFN_BYTE_ROWS_OFF=1 at construction: a gathered FFN1 writes u8 rows that FFN2 re-lays (A/B runs)
  bool bytes_direct_off_ = false;
  // tokens per FFN1 -> FFN2 round of a side-by-side group with sparse FP32 FFNs (a multiple of the re-layout's
  // 64-token tile; 0: the whole group); TRIMFORMER_FFN_PIECE at construction
  int64_t ffn_piece_ = 64;
  int attention_now_ = 0;  // the pass in progress's attention mode (0-2: attention_mode, or mode 3's pick)
  // the Linear settings both constructors read (read_linear_settings)
  bool fused_rows_off_ = false;  // TRIMFORMER_DYNAMIC_U8_ROWS: dynamic INT8 block-sparse inputs via u8 rows
  bool bsr_pieces_off_ = false;  // TRIMFORMER_BSR_PIECES_OFF: a long token split prepares its whole share first
  bool bsr_few_off_ = false;  // TRIMFORMER_BSR_FEW_TOKENS_OFF: calls of a few tokens re-lay them as longer ones
  // whether a block-sparse INT8 call of m tokens may run over its u8 rows (KernelTable::bsr_few_tokens: no re-layout,
  // no transposes), given that its input does not come re-laid nor its output go into a re-layout or attention
  // operands; where it may, FFN1 does not write FFN2's re-layout either
  bool few_tokens_call(const Linear& L, int64_t m) const;
  // whether a block-sparse INT8 call of m tokens can take its input re-laid by the previous layer's epilogue (quad
  // rows at a level with a re-layout, or gathered quads' byte rows): not pair records, which re-lay their u8 rows
  // themselves, nor a call of a few tokens, which runs over them
  bool takes_relaid_input(const Linear& L, int64_t m) const;
  int bsr_tile_vecs_ = 0;  // TRIMFORMER_BSR_TILE_VECS (Epilogue::tile_vecs)
  bool bsr_transpose16_ = false;  // TRIMFORMER_BSR_TRANSPOSE16 (Epilogue::bsr_transpose16)
  bool bsr_pieces_v2_ = false;    // TRIMFORMER_BSR_PIECES_V2 (Epilogue::bsr_pieces_v2)
  bool qkv_s8_off_ = false;  // TRIMFORMER_QKV_S8_OFF (qkv_s8_operands)
  int64_t attn_rows_ = 0;  // TRIMFORMER_ATTN_ROWS=N at construction: the attention's query rows per chunk
  void read_linear_settings();
  std::map<std::string, double> profile_ms_;
  std::vector<float> word_, pos_, type_, emb_g_, emb_b_;
  std::vector<EncoderLayer> layers_;
  std::vector<Linear> head_;
  // activation buffers, sized for the largest batch x seq seen so far
  int64_t cap_tokens_ = 0, cap_batch_ = 0;
  AlignedBuf x_, mask_bias_, head_in_, head_tmp_;
  std::vector<Workspace> ws_;  // [0] for the whole team; [t] for thread t when sequence groups run side by side
  void ensure_workspace(Workspace& w, int64_t rows, int64_t seq, int scratch_count);
  int64_t widest_linear() const;  // the largest Linear input or output width: sizes the per-row buffers
  // FFN1 and FFN2 both sparse FP32 at a level whose kernels write the next layer's re-layout: FFN1's epilogue then
  // fills FFN2's At (Epilogue::out_at_f32)
  bool ffn_f32_at_direct(const EncoderLayer& L) const {
    const auto sparse = [](const Linear& l) { return l.kind == LinearKind::SparseF32 || l.kind == LinearKind::NmF32; };
    return kt_->spf32_fills_next_at && sparse(L.ffn1) && sparse(L.ffn2) && L.ffn1.n == L.ffn2.k;
  }
  size_t pair_at_bytes(int64_t rows) const;  // the largest pair re-layout (BsrS8::pair_slots) of `rows` tokens
  int team() const;               // threads of the ops the calling thread runs (1 inside side-by-side groups)
};

}  // namespace tf
