// 8-lane epilogue pieces for translation units compiled with the avx2 flags (rowops_avx2.cpp and the avx2 sparse
// kernels): GELU (erf) and the u8 requantization in registers. Each does the same float ops as its row-loop
// counterpart in rowops.inc (gelu_erf, quantize_u8), so fused and unfused paths give identical results.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "gelu_table.h"

namespace tf {
namespace avx2 {
namespace {

// gelu_erf on 8 lanes from the 8-segment degree-6 table (gelu_table.h): one vpermps per coefficient, 21 ops where
// the avx512 level's 32-cubic lookup took four vpermps and three blends per coefficient here (37 ops). Same FMAs in
// the same order as rowops.inc's gelu_erf at this level: the same bits.
inline __m256 gelu_erf8(__m256 v) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 k = _mm256_set1_ps(kGelu8K), two23 = _mm256_set1_ps(8388608.0f);
  const __m256 ac = _mm256_min_ps(_mm256_and_ps(v, abs_mask), _mm256_set1_ps(kGelu8AMax));  // NaN -> kGelu8AMax
  const __m256 t = _mm256_fmadd_ps(ac, k, two23);  // segment index in the low mantissa bits
  const __m256i idx = _mm256_castps_si256(t);
  const __m256 u = _mm256_fmsub_ps(ac, k, _mm256_sub_ps(t, two23));
  const auto coef = [&](int j) { return _mm256_permutevar8x32_ps(_mm256_load_ps(kGelu8C[j]), idx); };
  // Estrin's scheme (gelu_erf's order): three FMA latencies after u where Horner's chain took six
  static_assert(kGelu8Degree == 6, "the Estrin form below is written for degree 6");
  const __m256 u2 = _mm256_mul_ps(u, u), u4 = _mm256_mul_ps(u2, u2);
  const __m256 p01 = _mm256_fmadd_ps(coef(1), u, coef(0)), p23 = _mm256_fmadd_ps(coef(3), u, coef(2));
  const __m256 p46 = _mm256_fmadd_ps(coef(6), u2, _mm256_fmadd_ps(coef(5), u, coef(4)));
  const __m256 p = _mm256_fmadd_ps(p46, u4, _mm256_fmadd_ps(p23, u2, p01));
  return _mm256_sub_ps(_mm256_max_ps(_mm256_setzero_ps(), v), p);  // max(0, NaN) = NaN: NaN stays NaN
}

// quantize_u8 of 8 lanes before the narrowing: clamp(nearbyint(y * inv_scale) + zp, 0, 255) as int32, the same
// float ops as the row loop (a NaN clamps to 0 there through INT_MIN; vmaxps(NaN, 0) gives 0 here)
inline __m256i quant_u8_i32_8(__m256 y, __m256 inv_scale, __m256 zp) {
  const __m256 r = _mm256_add_ps(_mm256_round_ps(_mm256_mul_ps(y, inv_scale), _MM_FROUND_TO_NEAREST_INT |
                                                 _MM_FROUND_NO_EXC), zp);
  return _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(255.0f)));
}

// Four vectors of int32 in 0..255 as 32 bytes (the saturating packs change nothing there), in the packs' order:
// per 128-bit lane a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7, i.e. dword 4L + j = lanes 4L .. 4L + 3 of input j
inline __m256i pack_u8_4x8(__m256i a, __m256i b, __m256i c, __m256i d) {
  return _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
}

}  // namespace
}  // namespace avx2
}  // namespace tf
