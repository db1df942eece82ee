// The avx2 FP32 micro-tile, shared by the GEMM (gemm_f32_avx2.cpp) and the fused attention (attention_avx2.cpp):
// R rows x 16 columns in 2R ymm accumulators. Every loop over the rows is unrolled: a rolled one lets GCC keep the
// accumulator arrays in memory and store them on every k step (test_codegen checks the GEMM).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tf {
namespace avx2 {
namespace {

// c0[i], c1[i] += sum over kk < k of A[i][kk] * B[kk][0..16): A rows at stride lda, B packed 16 floats per step
template <int R>
__attribute__((always_inline)) inline void fma_tile(const float* a, int64_t lda, const float* b, int64_t k, __m256* c0, __m256* c1) {
  for (int64_t kk = 0; kk < k; ++kk) {
    const __m256 b0 = _mm256_load_ps(b + kk * 16);
    const __m256 b1 = _mm256_load_ps(b + kk * 16 + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * lda + kk);
      c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
    }
  }
}

// the R x 16 tile's first `cols` columns stored at c (row stride ldc)
template <int R>
__attribute__((always_inline)) inline void store_tile(float* c, int64_t ldc, int64_t cols, const __m256* c0, const __m256* c1) {
  if (cols == 16) {
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      _mm256_storeu_ps(c + i * ldc, c0[i]);
      _mm256_storeu_ps(c + i * ldc + 8, c1[i]);
    }
  } else {
    alignas(32) float tmp[16];
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      _mm256_store_ps(tmp, c0[i]);
      _mm256_store_ps(tmp + 8, c1[i]);
      std::memcpy(c + i * ldc, tmp, cols * 4);
    }
  }
}

}  // namespace
}  // namespace avx2
}  // namespace tf
