// Pieces shared by the instruction-rate experiments (port_contention.cpp, dot_rates.cpp, avx2_rates.cpp,
// bsr_s8_rows4_rates.cpp, ...)
// (header-only: each is built by one g++ command): the clock they count cycles in, the best-of-5 timing, and the
// fold that keeps their accumulators live.
#pragma once
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

// GHz of a dependent vpaddd chain (one cycle per add), on the widest vectors the build has (zmm with AVX-512, so
// a frequency license of zmm code shows in the clock too; ymm for the avx2 experiment)
inline double vpaddd_clock_ghz() {
#if defined(__AVX512F__)
  __m512i a = _mm512_set1_epi32(1);
  const __m512i b = _mm512_set1_epi32(2);
#else
  __m256i a = _mm256_set1_epi32(1);
  const __m256i b = _mm256_set1_epi32(2);
#endif
  const long n = 100000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i)
    asm volatile("vpaddd %1, %0, %0\n\tvpaddd %1, %0, %0\n\tvpaddd %1, %0, %0\n\tvpaddd %1, %0, %0" : "+v"(a) : "v"(b));
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 4.0 * n / sec / 1e9;
}

// the fastest of 5 calls run(reps) (each returns its seconds), after one warm-up call of a twentieth of the steps
template <class Run>
double best_of_5(Run run, long reps) {
  run(reps / 20);
  double best = 1e30;
  for (int t = 0; t < 5; ++t) {
    const double sec = run(reps);
    if (sec < best) best = sec;
  }
  return best;
}

// the fastest of `times` calls f() (no arguments), in seconds
template <class F>
double best_call_seconds(F f, int times) {
  double best = 1e30;
  for (int t = 0; t < times; ++t) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sec < best) best = sec;
  }
  return best;
}

#if defined(__AVX512F__)
// the sum of 8 accumulators (stored after a timed loop, so the compiler keeps every chain)
inline __m512i sum8(__m512i a0, __m512i a1, __m512i a2, __m512i a3, __m512i a4, __m512i a5, __m512i a6, __m512i a7) {
  return _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                          _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
}

inline __m512i as_epi32(__m512i v) { return v; }
inline __m512i as_epi32(__m512 v) { return _mm512_castps_si512(v); }

// the accumulators' bits summed and stored after a timed loop (int or float vectors), so that the compiler keeps
// every chain (nm_split_rates.cpp, nm_s8_split_rates.cpp)
template <class... Acc>
void keep_live(Acc... acc) {
  __m512i s = _mm512_setzero_si512();
  ((s = _mm512_add_epi32(s, as_epi32(acc))), ...);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
}
#endif

// A random CSR weight (csr_f32_chunk_rates.cpp, csr_f32_jit_rates.cpp): each of n x k weights kept with
// probability `density`, values in [-0.5, 0.5)
struct Csr {
  int64_t n, k;
  std::vector<int32_t> rowptr, cols;
  std::vector<float> vals;
};

inline Csr random_csr(int64_t n, int64_t k, double density, uint32_t seed) {
  Csr w{n, k, {0}, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c)
      if (u(rng) < density) {
        w.cols.push_back(static_cast<int32_t>(c));
        w.vals.push_back(u(rng) - 0.5f);
      }
    w.rowptr.push_back(static_cast<int32_t>(w.cols.size()));
  }
  return w;
}
