// Bitmask-sparse INT8 kernels on AVX-512 VNNI + VBMI2 (see bitmask.inc): per 64 inputs, one vpexpandb puts the
// row's next popcount(mask) int8 codes into their input lanes (zeros elsewhere) and one vpdpbusd multiplies them
// with the u8 activations (loaded under the same mask: inputs past k are never read). Compiled with
// -mavx512vbmi2 in its own translation unit; bitmask_gemv_s8 calls it only when the CPU reports VBMI2.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include <cstdint>

#include "../core/decoder_kernels.h"

namespace tf {
namespace avx512 {

namespace {
// NR output rows at once (independent expand-load chains: each row's next address waits on a popcount), MT token
// rows sharing every expanded weight vector
// no SLP vectorization: GCC otherwise packs the NR value pointers into one vector register and moves every
// popcount through inserts / extracts (seen in the disassembly), a long dependency chain per 64 inputs
template <int NR, int MT>
__attribute__((optimize("no-tree-slp-vectorize"))) inline void gemv_block(const uint8_t* q, int64_t ldq, const BitmaskWeight& w, const float* rs, const float* zp,
                       float* y, int64_t ldy, int64_t n) {
  const uint64_t* mk[NR];
  const int8_t* v[NR];
  __m512i acc[NR][MT];
  for (int i = 0; i < NR; ++i) {
    mk[i] = w.mask + (n + i) * w.words;
    v[i] = w.qvalues + w.rowptr[n + i];
    for (int r = 0; r < MT; ++r) acc[i][r] = _mm512_setzero_si512();
  }
  // activations past k are never read (the last word loads under the k-tail mask); inside k they meet zeros
  // wherever a weight is absent (integer products: no per-row masking needed)
  const __mmask64 tail = (w.k % 64) ? ((__mmask64{1} << (w.k % 64)) - 1) : ~__mmask64{0};
  for (int64_t c = 0; c < w.words; ++c) {
    const __mmask64 in = c + 1 < w.words ? ~__mmask64{0} : tail;
    __m512i xv[MT];
#pragma GCC unroll 8
    for (int r = 0; r < MT; ++r) xv[r] = _mm512_maskz_loadu_epi8(in, q + r * ldq + 64 * c);
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      const uint64_t bits = mk[i][c];
      // the expand-load form: a plain load + register expand is no faster (bench/micro/expand_load.cpp)
      const __m512i wv = _mm512_maskz_expandloadu_epi8(bits, v[i]);
      v[i] += __builtin_popcountll(bits);
#pragma GCC unroll 8
      for (int r = 0; r < MT; ++r) acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], xv[r], wv);
    }
  }
  for (int i = 0; i < NR; ++i) {
    const float cs = static_cast<float>(w.col_sum[n + i]), ws = w.w_scale[n + i];
    for (int r = 0; r < MT; ++r)
      y[r * ldy + n + i] = (static_cast<float>(_mm512_reduce_add_epi32(acc[i][r])) - zp[r] * cs) * (rs[r] * ws);
  }
}

template <int MT>
void gemv_rows(const uint8_t* q, int64_t ldq, const BitmaskWeight& w, const float* rs, const float* zp, float* y,
               int64_t ldy, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) gemv_block<4, MT>(q, ldq, w, rs, zp, y, ldy, n);
  for (; n < n1; ++n) gemv_block<1, MT>(q, ldq, w, rs, zp, y, ldy, n);
}
}  // namespace

void bitmask_gemv_s8_vbmi2(const uint8_t* q, int64_t ldq, int64_t m, const BitmaskWeight& w, const float* rs,
                           const float* zp, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) gemv_rows<4>(q + r * ldq, ldq, w, rs + r, zp + r, y + r * ldy, ldy, n0, n1);
  for (; r + 2 <= m; r += 2) gemv_rows<2>(q + r * ldq, ldq, w, rs + r, zp + r, y + r * ldy, ldy, n0, n1);
  for (; r < m; ++r) gemv_rows<1>(q + r * ldq, ldq, w, rs + r, zp + r, y + r * ldy, ldy, n0, n1);
}

void bitmask_expand_s8_vbmi2(const BitmaskWeight& w, int64_t r0, int64_t r1, int8_t* out) {
  for (int64_t n = r0; n < r1; ++n) {
    int8_t* o = out + (n - r0) * w.k;
    const uint64_t* mk = w.mask + n * w.words;
    const int8_t* v = w.qvalues + w.rowptr[n];
    for (int64_t c = 0; c < w.words; ++c) {
      const int64_t j = 64 * c, left = w.k - j;
      const __mmask64 in = left >= 64 ? ~__mmask64{0} : ((__mmask64{1} << left) - 1);
      _mm512_mask_storeu_epi8(o + j, in, _mm512_maskz_expandloadu_epi8(mk[c], v));
      v += __builtin_popcountll(mk[c]);
    }
  }
}

}  // namespace avx512
}  // namespace tf
