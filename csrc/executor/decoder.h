// The decoder executor: Llama-family (RMSNorm, rotary, grouped-query attention, SwiGLU) and GPT-2 causal LMs with
// a KV cache. One `forward` call runs every layer for a batch of new tokens (a prompt prefill or one decode step)
// inside ONE OpenMP parallel region (barriers between dependent ops), so a decode step of a small model pays no
// per-op thread start-up.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../core/decoder_kernels.h"
#include "../core/isa.h"
#include "encoder.h"  // AlignedBuf, HostTensor

namespace tf {

struct DecoderConfig {
  int arch = 0;  // 0 llama, 1 gpt2
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0,
          max_positions = 0;
  float norm_eps = 1e-5f, rope_theta = 10000.0f;
  int act = 0;  // 0 silu (SwiGLU), 1 gelu tanh, 2 gelu erf
  bool embed_from_head = false;  // tied embeddings: rows are dequantized from the (k-bit) lm_head on lookup
};

// A decoder Linear in one of the runtime's formats (the stored suffixes are listed in decoder.cpp).
struct DecLinear {
  enum Kind { F32 = 0, BF16 = 1, S8 = 2, KBIT = 3, BITMASK_F32 = 4, BITMASK_S8 = 5 };
  std::string name;
  Kind kind = F32;
  int64_t n = 0, k = 0;
  AlignedBuf packed;                  // F32 / BF16 / S8 panels for this ISA
  std::vector<float> w_scale;         // S8: per output row
  std::vector<int32_t> col_sum;       // S8: per output row
  std::vector<uint8_t> codes;         // KBIT
  std::vector<float> scales, offsets; // KBIT
  KbitWeight kw;                      // KBIT: views into the vectors above
  bool a8 = false;                    // KBIT: activations quantized to int8 per token (W4A8 integer dots)
  // BITMASK_F32 / BITMASK_S8 (S8 also uses w_scale and col_sum): mask words, row offsets, packed non-zeros
  std::vector<uint64_t> bm_mask;
  std::vector<int64_t> bm_rowptr;
  std::vector<float> bm_values;
  std::vector<int8_t> bm_qvalues;
  BitmaskWeight bw;                   // views into the vectors above
  std::vector<float> bias;
  // LLM.int8() decomposition (S8 only): these input features run in float32 against `outlier_packed`
  std::vector<int32_t> outlier_idx;
  AlignedBuf outlier_packed;
  size_t bytes() const;
};

struct DecoderLayerW {
  DecLinear qkv, o, up, down;  // llama: up = fused gate_up [2I, H]
  std::vector<float> ln1_g, ln1_b, ln2_g, ln2_b;
};

class DecoderEngine {
 public:
  DecoderEngine(const DecoderConfig& cfg, const std::map<std::string, HostTensor>& tensors, Isa isa, int threads);
  // Start `batch` new sequences with room for `capacity` tokens each (prompt + generated); clears the cache.
  void begin(int64_t batch, int64_t capacity);
  int64_t length() const { return len_; }
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return cap_; }
  // Append T tokens to every sequence. mask[b, t] = 0 marks padding (left padding of shorter prompts): such a
  // slot is never attended to and does not advance the row's position.
  // mode 0: logits of each row's last token -> out [B, V]; 1: logits of every token -> [B, T, V];
  // 2: log-probability of targets[b, t] after token t -> [B, T] (no [T, V] logits kept: perplexity).
  void forward(const int64_t* ids, const int64_t* mask, int64_t B, int64_t T, int mode, const int64_t* targets,
               std::vector<float>* out);
  Isa isa() const { return kt_->isa; }
  int threads() const { return threads_; }
  void set_threads(int t) { threads_ = t > 0 ? t : 1; }
  size_t weight_bytes() const;
  size_t cache_bytes() const { return kcache_.size() + vcache_.size(); }

 private:
  void load_linear(DecLinear* L, const std::string& name, const std::map<std::string, HostTensor>& t);
  void ensure_buffers(int64_t rows);
  // all threads call these inside the parallel region (tid, nt): they split the work and synchronise
  void linear_mt(DecLinear& L, const float* in, int64_t m, float* out, Act act, const float* residual, int tid,
                 int nt);
  void attention_mt(int64_t layer, float* qkv, int64_t B, int64_t T, float* ctx, int tid, int nt);
  void rope_and_cache(int64_t layer, float* qkv, int64_t T, int64_t r0, int64_t r1, int64_t g0, int64_t g1);
  void norm_rows(const float* x, float* y, int64_t r0, int64_t r1, const std::vector<float>& g,
                 const std::vector<float>& b) const;
  struct Private {  // one thread's buffers for few-row (decode) calls
    uint8_t* q8;
    uint16_t* bf;
    float *rs, *rz, *xsum, *hn, *act;
  };
  Private private_buffers(int tid) const;
  const float* rope_table(int64_t pos);

  DecoderConfig cfg_;
  const KernelTable* kt_;
  const DecoderKernels* dk_;
  bool a8_gemv_only_ = false;  // TRIMFORMER_A8_GEMV_ONLY=1: W4A8 Linears run the GEMV at every row count (A/B runs)
  // TRIMFORMER_ATTN_ROWS=N at construction: the prefill attention's query rows per chunk (A/B runs, tests)
  int64_t attn_rows_ = 0;
  int64_t attention_chunk_rows(int64_t T, int64_t S) const;
  int threads_;
  std::vector<float> tok_, pos_emb_, final_g_, final_b_;
  std::vector<DecoderLayerW> layers_;
  DecLinear head_;
  // KV cache: K transposed per (layer, row, kv head) as [d][cap]; V as [cap][d]
  AlignedBuf kcache_, vcache_;
  std::vector<uint8_t> valid_;     // [B][cap]: slot holds a real token
  std::vector<int64_t> next_pos_;  // [B]: position of the row's next real token
  int64_t batch_ = 0, cap_ = 0, len_ = 0;
  std::vector<float> rope_cs_;  // [positions][d]: cos | sin halves
  int64_t rope_rows_ = 0;
  // activations
  int64_t cap_rows_ = 0;
  AlignedBuf x_, h_, qkv_, ctx_, ff_, act_, q8_, rs_, rz_, xsum_, bf_, sel_, logit_, head_in_;
  std::vector<AlignedBuf> scratch_;  // per thread
  std::vector<AlignedBuf> priv_;     // per thread (Private)
  int64_t priv_ldq_ = 0;
  size_t scratch_bytes_ = 0;
  std::vector<int64_t> row_pos_;     // [B*T] positions of this call's tokens
  std::vector<int64_t> limits_;      // [B*T] attention limit of each query row
};

}  // namespace tf
