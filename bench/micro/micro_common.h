// Pieces shared by the instruction-rate experiments port_contention.cpp and dot_rates.cpp (header-only: each is
// built by one g++ command): the clock they count cycles in, and the fold that keeps their accumulators live.
#pragma once
#include <immintrin.h>

#include <chrono>

inline double vpaddd_clock_ghz() {
  __m512i a = _mm512_set1_epi32(1);
  const __m512i b = _mm512_set1_epi32(2);
  const long n = 100000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i)
    asm volatile("vpaddd %1, %0, %0\n\tvpaddd %1, %0, %0\n\tvpaddd %1, %0, %0\n\tvpaddd %1, %0, %0" : "+v"(a) : "v"(b));
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 4.0 * n / sec / 1e9;
}

// the sum of 8 accumulators (stored after a timed loop, so the compiler keeps every chain)
inline __m512i sum8(__m512i a0, __m512i a1, __m512i a2, __m512i a3, __m512i a4, __m512i a5, __m512i a6, __m512i a7) {
  return _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                          _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
}
