// Fused float attention for one (sequence, head) at the avx2 level: for each block of 6 query rows, the scores
// against every key (alpha * q.k + mask bias, one 6 x 16 FMA tile per 16 keys), their softmax, and the product
// with V, with the 1 / sum folded into the output store. The block's scores (6 rows x seq) stay in L1 between
// the three steps; the unfused path (gemm_f32, an epilogue call per tile, softmax_rows over the whole
// seq x seq matrix, gemm_f32) wrote and re-read them from L2. Design note: docs/kernels.md, "Fused attention".
#define TF_ISA_NS avx2
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "../gemm/f32_tile_avx2.h"
#include "ymm_util.h"

namespace tf {
namespace avx2 {
namespace {
constexpr int MR = 6;       // query rows per block: 12 ymm accumulators in both products
constexpr int64_t NR = 16;  // keys per K panel, channels per V panel (pack_f32_nk / pack_f32_kn's panels)

inline int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }
inline size_t align64(size_t b) { return (b + 63) / 64 * 64; }

// 2^x on 8 lanes for x <= 0 (the softmax's scores less their row max, in log2 units): n = round(x), 2^(x - n) by
// its degree-6 Taylor polynomial on [-1/2, 1/2] (relative error < 2e-7, as rowops.inc's exp_approx), 2^n added to
// the exponent bits. Exactly 0 below -125 (a masked key; -inf for the panel's padding keys, whose NaN r is masked
// too), so that the results never go subnormal.
inline __m256 exp2_8(__m256 x) {
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(1.5403530393381606e-4f);  // ln2^6 / 6!
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3333558146428443e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.6181291076284772e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.5504108664821580e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.4022650695910071e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(6.9314718055994531e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256 y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-125.0f), _CMP_LT_OQ), y);
}

// s[i][0..15] = alpha * (q_i . panel's keys) + bias[0..15] for the block's R rows: kp is one K panel [d][16]
template <int R>
inline void scores_tile(const float* q, int64_t ld, const float* kp, int64_t d, __m256 alpha, const float* bias,
                        float* s, int64_t lds, float* row_max) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  fma_tile<R>(q, ld, kp, d, c0, c1);
  const __m256 bias0 = _mm256_load_ps(bias), bias1 = _mm256_load_ps(bias + 8);
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    const __m256 s0 = _mm256_fmadd_ps(c0[i], alpha, bias0), s1 = _mm256_fmadd_ps(c1[i], alpha, bias1);
    _mm256_store_ps(s + i * lds, s0);
    _mm256_store_ps(s + i * lds + 8, s1);
    _mm256_store_ps(row_max + 8 * i, _mm256_max_ps(_mm256_load_ps(row_max + 8 * i), _mm256_max_ps(s0, s1)));
  }
}

// out_i[0..cols) = inv_i * sum_j p_i[j] v_j over the block's R rows: vp is one V panel [seq][16]
template <int R>
inline void context_tile(const float* p, int64_t ldp, const float* vp, int64_t seq, const float* inv, float* out,
                         int64_t ldo, int64_t cols) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  fma_tile<R>(p, ldp, vp, seq, c0, c1);
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    const __m256 sc = _mm256_broadcast_ss(inv + i);
    c0[i] = _mm256_mul_ps(c0[i], sc);
    c1[i] = _mm256_mul_ps(c1[i], sc);
  }
  store_tile<R>(out, ldo, cols, c0, c1);
}

// The head's K rows sit 3H floats apart in the QKV output, which a sequence's tokens spread over more than L2
// (1.2 MB for BERT-base at 128 tokens): rows arrive from L3, and a stride of several KB crosses a page per row,
// where the hardware prefetchers stop. So the packers prefetch rows kAhead tokens ahead.
constexpr int64_t kAhead = 8;
inline void prefetch_row(const float* row, int64_t d) {
  for (int64_t c = 0; c < d; c += 16) _mm_prefetch(reinterpret_cast<const char*>(row + c), _MM_HINT_T0);
}

// K^T in panels of 16 keys ([panel][t][16], pack_f32_nk's layout) by 8 x 8 transposes (d a multiple of 8)
void pack_keys(const float* k, int64_t ld, int64_t seq, int64_t d, float* out) {
  const int64_t full = seq / 8 * 8;
  for (int64_t j = 0; j < kAhead && j < seq; ++j) prefetch_row(k + j * ld, d);
  for (int64_t j = 0; j < full; j += 8) {
    for (int64_t r = 0; r < 8 && j + kAhead + r < seq; ++r) prefetch_row(k + (j + kAhead + r) * ld, d);
    float* dst = out + (j / NR) * NR * d + j % NR;
    const float* src = k + j * ld;
    for (int64_t t = 0; t < d; t += 8) {
      __m256 r[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld + t);
      transpose8(r);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) _mm256_store_ps(dst + (t + i) * NR, r[i]);
    }
  }
  const int64_t sp = round16(seq);
  for (int64_t j = full; j < sp; ++j) {  // tail keys, then the padding keys' zeros
    float* dst = out + (j / NR) * NR * d + j % NR;
    for (int64_t t = 0; t < d; ++t) dst[t * NR] = j < seq ? k[j * ld + t] : 0.0f;
  }
}

// V in panels of 16 channels ([panel][seq][16], pack_f32_kn's layout; d a multiple of 16)
void pack_values(const float* v, int64_t ld, int64_t seq, int64_t d, float* out) {
  for (int64_t j = 0; j < kAhead && j < seq; ++j) prefetch_row(v + j * ld, d);
  for (int64_t j = 0; j < seq; ++j) {
    if (j + kAhead < seq) prefetch_row(v + (j + kAhead) * ld, d);
    const float* src = v + j * ld;
    for (int64_t c = 0; c < d; c += NR) {
      _mm256_store_ps(out + c * seq + j * NR, _mm256_loadu_ps(src + c));
      _mm256_store_ps(out + c * seq + j * NR + 8, _mm256_loadu_ps(src + c + 8));
    }
  }
}

// one block of R query rows: scores, softmax (each row's probabilities left unnormalized, inv = 1 / sum), context
template <int R>
void row_block(const float* q, int64_t ld, const float* kpack, const float* vpack, const float* bias, int64_t seq,
               int64_t d, __m256 alpha, float* s, float* out, int64_t ldo) {
  const int64_t sp = round16(seq);
  alignas(32) float row_max[8 * MR];
  for (int i = 0; i < 8 * R; ++i) row_max[i] = -INFINITY;
  for (int64_t p = 0; p < sp; p += NR)
    scores_tile<R>(q, ld, kpack + p * d, d, alpha, bias + p, s + p, sp, row_max);
  alignas(32) float inv[MR];
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  for (int i = 0; i < R; ++i) {
    float* row = s + i * sp;
    const __m256 m = _mm256_mul_ps(_mm256_set1_ps(hmax8(_mm256_load_ps(row_max + 8 * i))), log2e);
    __m256 sum = _mm256_setzero_ps();
    for (int64_t j = 0; j < sp; j += 8) {
      const __m256 e = exp2_8(_mm256_fmsub_ps(_mm256_load_ps(row + j), log2e, m));
      _mm256_store_ps(row + j, e);
      sum = _mm256_add_ps(sum, e);
    }
    inv[i] = 1.0f / hsum8(sum);
  }
  for (int64_t c = 0; c < d; c += NR)
    context_tile<R>(s, sp, vpack + c * seq, seq, inv, out + c, ldo, d - c < NR ? d - c : NR);
}

using RowBlockFn = void (*)(const float*, int64_t, const float*, const float*, const float*, int64_t, int64_t,
                            __m256, float*, float*, int64_t);
const RowBlockFn kRowBlock[MR + 1] = {nullptr,       row_block<1>, row_block<2>, row_block<3>,
                                      row_block<4>, row_block<5>, row_block<6>};
}  // namespace

size_t attention_f32_scratch(int64_t seq, int64_t d) {
  return align64(pack_f32_size(seq, d)) + align64(pack_f32_size(d, seq)) + align64(round16(seq) * 4) +
         align64(MR * round16(seq) * 4) + 64;
}

void attention_f32_packed(const float* q, int64_t ldq, const float* kpack, const float* vpack, int64_t seq,
                          int64_t d, float alpha, const float* bias, float* out, int64_t ldo, void* scratch) {
  // scratch: the mask bias with the panel's padding keys, then a block's scores (attention_f32_scratch's tail)
  char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  const int64_t sp = round16(seq);
  float* bias_p = reinterpret_cast<float*>(base);
  float* s = bias_p + align64(sp * 4) / 4;
  std::memcpy(bias_p, bias, seq * 4);
  for (int64_t j = seq; j < sp; ++j) bias_p[j] = -INFINITY;  // padding keys: exp gives exactly 0
  const __m256 a = _mm256_set1_ps(alpha);
  for (int64_t i = 0; i < seq; i += MR) {
    const int rows = static_cast<int>(seq - i < MR ? seq - i : MR);
    kRowBlock[rows](q + i * ldq, ldq, kpack, vpack, bias_p, seq, d, a, s, out + i * ldo, ldo);
  }
}

void attention_f32(const float* q, const float* k, const float* v, int64_t ld, int64_t seq, int64_t d, float alpha,
                   const float* bias, float* out, int64_t ldo, void* scratch) {
  char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  float* kpack = reinterpret_cast<float*>(base);
  float* vpack = reinterpret_cast<float*>(base + align64(pack_f32_size(seq, d)));
  // K^T in panels of 16 keys (padding keys zero), V in panels of 16 channels
  if (d % 8 == 0) pack_keys(k, ld, seq, d, kpack);
  else pack_f32_nk(k, ld, seq, d, kpack);
  if (d % 16 == 0) pack_values(v, ld, seq, d, vpack);
  else pack_f32_kn(v, ld, d, seq, vpack);
  attention_f32_packed(q, ld, kpack, vpack, seq, d, alpha, bias, out, ldo,
                       vpack + align64(pack_f32_size(d, seq)) / 4);
}

}  // namespace avx2
}  // namespace tf
