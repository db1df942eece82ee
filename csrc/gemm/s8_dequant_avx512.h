// Shared by the avx512 INT8 GEMMs (VNNI and AMX, both in namespace avx512 and compiled with AVX-512): the column
// mask of a 16-lane group and the dequantization of 16 int32 sums. One definition, so the two kernels do the same
// float ops in the same order and their results stay bit-identical.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../core/isa.h"
#include "../kernels/decl.inc"  // epilogue_f32, quantize_u8 (every includer defines TF_ISA_NS as avx512)

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

// The column sums (as floats) and weight scales of the G 16-column groups of a panel starting at column `col`
// with `cols` live columns. static: each translation unit keeps its own copy, compiled with its own flags (the VBMI
// and AMX kernels' units have wider ones than the VNNI GEMM that runs on every avx512 CPU).
template <int G>
static inline void panel_scales(const Epilogue& epi, int64_t col, int64_t cols, __m512 (&colsum)[G],
                                __m512 (&wscale)[G]) {
  for (int j = 0; j < G; ++j) {
    const __mmask16 mk = lane_mask(cols, j);
    colsum[j] = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mk, epi.col_sum + col + 16 * j));
    wscale[j] = _mm512_maskz_loadu_ps(mk, epi.w_scale + col + 16 * j);
  }
}

// The end of a tile of dequantized rows m .. m+rows-1, columns col .. col+cols-1 at dst (row stride ldd): the rest
// of the epilogue (`rest`: bias, activation, residual), then with epi.out_u8 the requantization for the next INT8
// layer (dst is then the kernel's scratch tile)
static inline void finish_tile(float* dst, int64_t ldd, int64_t rows, int64_t cols, int64_t m, int64_t col,
                               const Epilogue& rest, const Epilogue& epi) {
  epilogue_f32(dst, ldd, rows, cols, m, col, rest);
  if (epi.out_u8)
    for (int64_t i = 0; i < rows; ++i)
      quantize_u8(dst + i * ldd, ldd, epi.out_u8 + (m + i) * epi.ld_out_u8 + col, cols, 1, cols,
                  epi.out_inv_scale, epi.out_zp);
}

}  // namespace s8

// gemm_s8_amx.cpp (compiled with AMX-TILE / AMX-INT8): called by gemm_s8 only when cpu_has_amx_int8()
void gemm_s8_amx(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
                 int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi);

}  // namespace avx512
}  // namespace tf
