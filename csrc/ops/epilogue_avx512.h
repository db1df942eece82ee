// 16-lane epilogue pieces for translation units compiled with the AVX-512 flags (rowops_avx512.cpp and the avx512
// sparse kernels): GELU (erf), the activation of one piece and the u8 requantization, in registers, so a kernel can
// finish a 16-wide piece of its output without a call per piece. Each does the same float ops as its row-loop counterpart in rowops.inc
// (act_row<GeluErf>, quantize_u8), so fused and unfused paths give identical results.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../core/isa.h"
#include "erf_coeffs.h"

namespace tf {
namespace avx512 {
void activation(float* x, int64_t n, Act act);  // rowops.inc (decl.inc): the row loop, for the tanh forms

namespace {

// GELU (erf) with erf_approx's rational; its one division done as a reciprocal estimate plus a Newton step
// (vrcp14ps: 14 bits, squared to ~2^-28 relative) instead of zmm vdivps, which was most of the activation's cost.
inline __m512 gelu_erf16(__m512 v) {
  const __m512 c = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)),
                                               _mm512_set1_ps(-4.0f)),
                                 _mm512_set1_ps(4.0f));
  const __m512 z = _mm512_mul_ps(c, c);
  __m512 p = _mm512_set1_ps(kErfP[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(kErfP[i]));
  __m512 q = _mm512_set1_ps(kErfQ[0]);
  for (int i = 1; i < 6; ++i) q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(kErfQ[i]));
  __m512 r = _mm512_rcp14_ps(q);  // q >= 1 on [-4, 4]: no zero or denormal to guard
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));
  __m512 e = _mm512_mul_ps(_mm512_mul_ps(c, p), r);
  e = _mm512_min_ps(_mm512_max_ps(e, _mm512_set1_ps(-1.0f)), _mm512_set1_ps(1.0f));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// activation of one 16-lane piece (the first `cols` lanes matter): GELU (erf) and ReLU in registers, the tanh forms
// through the row loop on a stack copy
inline __m512 act16(__m512 y, Act act, int64_t cols) {
  if (act == Act::None) return y;
  if (act == Act::GeluErf) return gelu_erf16(y);
  if (act == Act::Relu) return _mm512_max_ps(y, _mm512_setzero_ps());  // max(NaN, 0) = 0, as v > 0 ? v : 0
  alignas(64) float piece[16];
  _mm512_store_ps(piece, y);
  activation(piece, cols, act);
  return _mm512_load_ps(piece);
}

// quantize_u8 of 16 lanes: clamp(nearbyint(y * inv_scale) + zp, 0, 255), stored under `mask`
inline void store_u8_16(uint8_t* dst, __mmask16 mask, __m512 y, __m512 inv_scale, __m512 zp) {
  __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(y, inv_scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zp), _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
  _mm_mask_storeu_epi8(dst, mask, _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(v)));
}

}  // namespace
}  // namespace avx512
}  // namespace tf
