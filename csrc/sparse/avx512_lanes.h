// 16-lane helpers shared by the AVX-512 kernels (the sparse kernels, rowops_avx512.cpp, gemm_s8_avx512vnni.cpp);
// included inside namespace tf::avx512 by translation units compiled with the AVX-512 flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace tf {
namespace avx512 {
namespace {

// r[i][j] <- r[j][i] for a 16x16 matrix of 32-bit lanes
inline void transpose16(__m512i* r) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

inline __mmask16 first(int64_t count) {
  return count >= 16 ? 0xFFFF : (count <= 0 ? 0 : static_cast<__mmask16>((1u << count) - 1));
}

inline void transpose16(__m512* r) { transpose16(reinterpret_cast<__m512i*>(r)); }

// the first `count` of 64 byte lanes
inline __mmask64 first64(int64_t count) {
  return count >= 64 ? ~__mmask64{0} : (count <= 0 ? 0 : (__mmask64{1} << count) - 1);
}

// Four vectors of int32 (q[j]: 16 consecutive values) saturated to 64 bytes in their order (u8, or s8 with
// Signed): two rounds of packs and one dword permute that undoes their lane interleave. Values must lie in int16
// for the first pack to saturate right.
template <bool Signed = false>
inline __m512i packed_bytes64(const __m512i* q) {
  const __m512i bytes = Signed ? _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]))
                               : _mm512_packus_epi16(_mm512_packus_epi32(q[0], q[1]), _mm512_packus_epi32(q[2], q[3]));
  // dword 4L + j of `bytes` holds q[j]'s values 4L .. 4L + 3; it belongs at dword 4j + L
  return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), bytes);
}

// Attention reads one head's slice of each token row (64 floats, rows 3 x hidden apart: a stride past the 4 KiB
// page, which the hardware prefetchers do not follow): a row loop over such rows asks for the row a few ahead.
inline void prefetch_row_ahead(const float* x, int64_t ldx, int64_t r, int64_t rows, int64_t cols) {
  constexpr int64_t kAhead = 6;
  if (ldx <= cols || r + kAhead >= rows) return;
  const char* p = reinterpret_cast<const char*>(x + (r + kAhead) * ldx);
  for (int64_t b = 0; b < cols * 4; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
}

}  // namespace
}  // namespace avx512
}  // namespace tf
