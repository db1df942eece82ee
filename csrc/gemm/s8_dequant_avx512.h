// Shared by the avx512 INT8 GEMMs (VNNI and AMX, both in namespace avx512 and compiled with AVX-512): the column
// mask of a 16-lane group and the dequantization of 16 int32 sums. One definition, so the two kernels do the same
// float ops in the same order and their results stay bit-identical.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../core/isa.h"

namespace tf {
namespace avx512 {
namespace s8 {

// lanes of column group j (columns 16j .. 16j+15) that lie inside `cols`
inline __mmask16 lane_mask(int64_t cols, int j) {
  const int64_t left = cols - 16 * j;
  if (left >= 16) return 0xFFFF;
  if (left <= 0) return 0;
  return static_cast<__mmask16>((1u << left) - 1);
}

// (acc - zp[row] * colsum[n]) * (scale[row] * w_scale[n]), the same float ops as the scalar reference
inline __m512 dequant(__m512i acc, __m512 row_zp, __m512 row_scale, __m512 colsum, __m512 wscale) {
  const __m512 centered = _mm512_sub_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(row_zp, colsum));
  return _mm512_mul_ps(centered, _mm512_mul_ps(row_scale, wscale));
}

}  // namespace s8

// gemm_s8_amx.cpp (compiled with AMX-TILE / AMX-INT8): called by gemm_s8 only when cpu_has_amx_int8()
void gemm_s8_amx(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
                 int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi);

}  // namespace avx512
}  // namespace tf
