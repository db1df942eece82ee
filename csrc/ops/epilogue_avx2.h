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

// gelu_erf on 8 lanes: the avx512 level's gelu_erf16 with the 32-entry coefficient lookup as four 8-entry vpermps
// picked by index bits 3 and 4 (blendv reads sign bits). The plain row loop compiles to scalar loads and inserts per
// coefficient at this level (no gather), which made GELU a tenth of a 90% block-sparse INT8 BERT-base pass. Same
// FMAs in the same order as gelu_erf: the same bits.
inline __m256 gelu_erf8(__m256 v) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 ac = _mm256_min_ps(_mm256_and_ps(v, abs_mask), _mm256_set1_ps(kGeluAMax));  // NaN -> kGeluAMax
  const __m256i idx = _mm256_castps_si256(_mm256_fmadd_ps(ac, _mm256_set1_ps(kGeluK), _mm256_set1_ps(8388608.0f)));
  const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  const __m256 bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27));
  const auto coef = [&](int j) {
    const auto quarter = [&](int q) { return _mm256_permutevar8x32_ps(_mm256_load_ps(kGeluC[j] + 8 * q), idx); };
    const __m256 lo = _mm256_blendv_ps(quarter(0), quarter(1), bit3);
    const __m256 hi = _mm256_blendv_ps(quarter(2), quarter(3), bit3);
    return _mm256_blendv_ps(lo, hi, bit4);
  };
  __m256 p = _mm256_fmadd_ps(coef(3), ac, coef(2));
  p = _mm256_fmadd_ps(p, ac, coef(1));
  p = _mm256_fmadd_ps(p, ac, coef(0));
  return _mm256_sub_ps(_mm256_max_ps(_mm256_setzero_ps(), v), p);  // max(0, NaN) = NaN: NaN stays NaN
}

// quantize_u8 of 8 lanes before the narrowing: clamp(nearbyint(y * inv_scale) + zp, 0, 255) as int32, the same
// float ops as the row loop (a NaN clamps to 0 there through INT_MIN; vmaxps(NaN, 0) gives 0 here)
inline __m256i quant_u8_i32_8(__m256 y, __m256 inv_scale, __m256 zp) {
  const __m256 r = _mm256_add_ps(_mm256_round_ps(_mm256_mul_ps(y, inv_scale), _MM_FROUND_TO_NEAREST_INT |
                                                 _MM_FROUND_NO_EXC), zp);
  return _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(255.0f)));
}

}  // namespace
}  // namespace avx2
}  // namespace tf
