// Small 8-lane (ymm) helpers for translation units compiled with AVX2 or wider flags: an 8 x 8 float transpose
// (the block-sparse kernels' Y^T tiles back to token rows, store_transposed; the fused attention's K packing;
// the sparse FP32 kernels' re-layout) and horizontal sum and max (the attention's softmax, the decoder's GEMVs).
// Internal linkage: each level's TU keeps its own copy, built with its own flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace tf {
namespace {

// 8 floats in each of 8 registers transposed (row i of the result = element i of every input)
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// the 8 x 8 floats at src (row stride lds) transposed to dst (row stride ldd): row j of dst = column j of src
inline void transpose8_block(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 v[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(src + i * lds);
  transpose8(v);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + j * ldd, v[j]);
}

// Y^T rows acc[row][token] (row stride ld) to token rows out[token][row] (row stride ldo): 8 x 8 transposes,
// whole 8-row vectors per token row, element by element at the edges
inline void store_transposed(const float* acc, int64_t ld, int64_t rows, int64_t tokens, float* out, int64_t ldo) {
  int64_t n = 0;
  for (; n + 8 <= rows; n += 8) {
    int64_t t = 0;
    for (; t + 8 <= tokens; t += 8) transpose8_block(acc + n * ld + t, ld, out + t * ldo + n, ldo);
    for (; t < tokens; ++t)
      for (int64_t i = 0; i < 8; ++i) out[t * ldo + n + i] = acc[(n + i) * ld + t];
  }
  for (; n < rows; ++n)
    for (int64_t t = 0; t < tokens; ++t) out[t * ldo + n] = acc[n * ld + t];
}

inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

inline float hmax8(__m256 v) {
  const __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(t, _mm_movehdup_ps(t)));
}

}  // namespace
}  // namespace tf
