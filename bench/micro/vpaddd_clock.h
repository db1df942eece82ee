// The core clock as the micro experiments count cycles: GHz of a dependent vpaddd chain (one instruction per
// cycle). Shared by port_contention.cpp and dot_rates.cpp (header-only: each is built by one g++ command).
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
