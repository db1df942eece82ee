// 16-lane helpers shared by the AVX-512 kernels (the sparse kernels, rowops_avx512.cpp, gemm_s8_avx512vnni.cpp);
// included inside namespace tf::avx512 by translation units compiled with the AVX-512 flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace tf {
namespace avx512 {
namespace {

// r[i][j] <- r[j][i] for a 16x16 matrix of 32-bit lanes. Always inlined, as load_transposed16: called out of line
// (gcc's choice once finish_piece had both forms), the 16 rows went through the stack on their way to the caller's
// finishing loop, 16 stores and 16 reloads per piece.
__attribute__((always_inline)) inline void transpose16(__m512i* r) {
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

// x with 128-bit lane L replaced by the 16 bytes at p, the insert reading memory: written as the intrinsic over a
// load, gcc may hoist the loads into registers (spilling some when they are many) and insert from there, a
// shuffle-port uop, which undoes what load_transposed16 is for
template <int L>
__attribute__((always_inline)) inline __m512i insert_lane_from(__m512i x, const void* p) {
  asm("vinserti32x4 %2, %1, %0, %0" : "+v"(x) : "m"(*static_cast<const __m128i*>(p)), "i"(L));
  return x;
}

// r[j] = (t[0][j], t[ld][j], ..., t[15 ld][j]) for j < 16: transpose16 of the 16 rows at t, ld floats apart (rows
// on 16-byte boundaries), done on the way in from memory. Register s[p] of column block J gathers in its 128-bit lane I the
// 4 columns 4J .. 4J + 3 of row 4I + p (a 16-byte load and three inserts from memory, which issue on the two vector
// ALU ports and a load port, not on the shuffle port); a 4 x 4 transpose within the lanes (8 unpacks) finishes
// them: 32 shuffle-port uops where transpose16 spends 64.
__attribute__((always_inline)) inline void load_transposed16(const float* t, int64_t ld, __m512i* r) {
  const auto at = [&](int row, int J) { return t + row * ld + 4 * J; };
#pragma GCC unroll 4
  for (int J = 0; J < 4; ++J) {
    __m512i s[4];
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      __m512i x = _mm512_castsi128_si512(_mm_load_si128(reinterpret_cast<const __m128i*>(at(p, J))));
      x = insert_lane_from<1>(x, at(4 + p, J));
      x = insert_lane_from<2>(x, at(8 + p, J));
      s[p] = insert_lane_from<3>(x, at(12 + p, J));
    }
    const __m512i u0 = _mm512_unpacklo_epi32(s[0], s[1]), u1 = _mm512_unpackhi_epi32(s[0], s[1]);
    const __m512i u2 = _mm512_unpacklo_epi32(s[2], s[3]), u3 = _mm512_unpackhi_epi32(s[2], s[3]);
    r[4 * J] = _mm512_unpacklo_epi64(u0, u2);
    r[4 * J + 1] = _mm512_unpackhi_epi64(u0, u2);
    r[4 * J + 2] = _mm512_unpacklo_epi64(u1, u3);
    r[4 * J + 3] = _mm512_unpackhi_epi64(u1, u3);
  }
}

__attribute__((always_inline)) inline void load_transposed16(const float* t, int64_t ld, __m512* r) {
  load_transposed16(t, ld, reinterpret_cast<__m512i*>(r));
}

inline __mmask16 first(int64_t count) {
  return count >= 16 ? 0xFFFF : (count <= 0 ? 0 : static_cast<__mmask16>((1u << count) - 1));
}

__attribute__((always_inline)) inline void transpose16(__m512* r) { transpose16(reinterpret_cast<__m512i*>(r)); }

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
