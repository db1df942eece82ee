// The AVX-512 softmax pieces shared by the float, u8 (rowops.inc) and bf16 (gemm_bf16_avx512.cpp) attention
// softmaxes: exp16 (exp_approx, rowops.inc's scalar exponential, on 16 lanes) and the bf16 softmax's cheaper
// exp16_bf16, the row maximum, and the pass that stores rows' exponentials in place with their reciprocal sums.
// Included by translation units compiled with the AVX-512 flags.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "../sparse/avx512_lanes.h"  // first()

namespace tf {
namespace avx512 {
namespace {

// exp_approx's range reduction and polynomial on 16 lanes already clamped to [-87, 88]: p * 2^n in one vscalefps
// (n is in [-126, 127] there, where it equals the scalar loop's multiply by the exponent bits built from n: one op
// instead of convert, add, shift, multiply)
inline __m512 exp16_clamped(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f),
                                    _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x));
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// exp_approx of 16 lanes (same range reduction, polynomial and underflow to exactly 0)
inline __m512 exp16(__m512 x_in) {
  const __m512 y = exp16_clamped(_mm512_min_ps(_mm512_max_ps(x_in, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f)));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x_in, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ), y);
}

// exp16 for the u8 softmax's arguments x = score - row maximum <= 0, in 12 ops instead of 15: no upper clamp
// (x <= 0); below -87 the result is exp16's at -87 (about 1.6e-38) where exp16 gives exactly 0: both quantize to
// byte 0 (x 255), and a row's sum holds its maximum's exp(0) = 1, beside which 1.6e-38 rounds away, so the u8
// softmax's bytes and scales are exp16's.
inline __m512 exp16_le0(__m512 x_in) { return exp16_clamped(_mm512_max_ps(x_in, _mm512_set1_ps(-87.0f))); }

// exp(x) for the bf16 softmax (x = score - row maximum <= 0), to about 4e-5 relative (degree-4 Taylor polynomial
// on the reduced argument |r| <= ln2 / 2): ample for probabilities rounded to bf16 (8 significant bits), in 9 ops
// instead of exp16's 15. Masked keys (mask bias -1e30) give exactly 0: x is clamped at -110, where 2^n lies below
// half the smallest denormal.
inline __m512 exp16_bf16(__m512 x_in) {
  const __m512 x = _mm512_max_ps(x_in, _mm512_set1_ps(-110.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147180559945f), x);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24.0f), r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}
// the row's maximum in all 16 lanes
inline __m512 row_max16(const float* xr, int64_t cols) {
  __m512 mxv = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < cols; j += 16)
    mxv = _mm512_mask_max_ps(mxv, first(cols - j), mxv, _mm512_maskz_loadu_ps(first(cols - j), xr + j));
  return _mm512_set1_ps(_mm512_reduce_max_ps(mxv));
}

// exp(x - max) of R rows (ld apart) stored in place, each with two sum accumulators and then a masked tail, and
// each row's 1 / sum in inv[i]. The R rows go step by step side by side, so one row's chain of dependent
// reductions (max, sum, reciprocal) does not hold up the pass. Exp: exp16 (float and u8 softmaxes) or exp16_bf16.
template <int R, __m512 (*Exp)(__m512)>
inline void exp_rows_inv_sum(float* x, int64_t ld, int64_t cols, float* inv) {
  __m512 mx[R], s0[R], s1[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    mx[i] = row_max16(x + i * ld, cols);
    s0[i] = s1[i] = _mm512_setzero_ps();
  }
  int64_t j = 0;
  for (; j + 32 <= cols; j += 32)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      float* xr = x + i * ld;
      const __m512 e0 = Exp(_mm512_sub_ps(_mm512_loadu_ps(xr + j), mx[i]));
      const __m512 e1 = Exp(_mm512_sub_ps(_mm512_loadu_ps(xr + j + 16), mx[i]));
      _mm512_storeu_ps(xr + j, e0);
      _mm512_storeu_ps(xr + j + 16, e1);
      s0[i] = _mm512_add_ps(s0[i], e0);
      s1[i] = _mm512_add_ps(s1[i], e1);
    }
  for (; j < cols; j += 16)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      float* xr = x + i * ld;
      const __mmask16 k = first(cols - j);
      const __m512 e = _mm512_maskz_mov_ps(k, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + j), mx[i])));
      _mm512_mask_storeu_ps(xr + j, k, e);
      s0[i] = _mm512_add_ps(s0[i], e);
    }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) inv[i] = 1.0f / _mm512_reduce_add_ps(_mm512_add_ps(s0[i], s1[i]));
}

}  // namespace
}  // namespace avx512
}  // namespace tf
