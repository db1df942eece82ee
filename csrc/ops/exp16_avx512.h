// exp16: exp_approx (rowops.inc's scalar exponential) on 16 lanes, shared by the AVX-512 row ops and the BF16
// attention's softmax; included inside translation units compiled with the AVX-512 flags.
#pragma once
#include <immintrin.h>

namespace tf {
namespace avx512 {
namespace {

// exp_approx of 16 lanes (same range reduction, polynomial and underflow to exactly 0)
inline __m512 exp16(__m512 x_in) {
  const __m512 x = _mm512_min_ps(_mm512_max_ps(x_in, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
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
  // p * 2^n in one vscalefps: n is in [-126, 127] after the clamp, where it equals the scalar loop's multiply by
  // the exponent bits built from n (one op instead of convert, add, shift, multiply)
  const __m512 y = _mm512_scalef_ps(p, n);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x_in, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ), y);
}

}  // namespace
}  // namespace avx512
}  // namespace tf
