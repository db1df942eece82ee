// FMA issue rate of the avx2 nm-f32 inner loop (csrc/sparse/spmm_f32_avx2.cpp, nm_entries) against register
// layouts that share a weight's broadcast between rows (experiment, not a runtime kernel). Everything lies in L1:
// one 48-input chunk of At (48 x 64 tokens, 12 KB) and the values, indices and accumulators of 12 rows of a 2:4
// weight, walked as the kernel walks them, so the figure is the loop's own ceiling, without the misses of a real
// pass. Layout "R x V": R rows at a time, V 8-token vectors each (V = 8: a whole 64-token tile in one pass; V < 8:
// the tile in 8 / V passes, each re-reading the rows' weights). Cycles are those of the clock measured by a
// dependent ymm vpaddd chain. Results: bench/results/nm_f32_rows_avx2.md.
//
//   g++ -O2 -mavx2 -mfma -o /tmp/nm_f32_rows bench/micro/nm_f32_rows.cpp && /tmp/nm_f32_rows
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "micro_common.h"

namespace {

constexpr int kTile = 64, kChunk = 48, kGroups = kChunk / 4, kPerRow = 2 * kGroups, kRows = 12;

alignas(64) float at[kChunk * kTile];
alignas(64) float vals[kRows * kPerRow];
alignas(64) float acc[kRows * kTile];
uint8_t idx[kRows * kPerRow];

// R rows x V vectors of the tile from vector v0: every kept weight broadcast once and FMA'd into its row's V
// accumulators, an At load per FMA (the kernel's loop is R = 1, V = 8)
template <int R, int V>
__attribute__((noinline)) void rows(int v0, int r0) {
  __m256 a[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) a[r][v] = _mm256_load_ps(acc + (r0 + r) * kTile + 8 * (v0 + v));
  for (int g = 0; g < kGroups; ++g) {
    const float* gp = at + g * 4 * kTile + 8 * v0;
#pragma GCC unroll 2
    for (int q = 0; q < 2; ++q)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int j = (r0 + r) * kPerRow + 2 * g + q;
        const __m256 w = _mm256_broadcast_ss(vals + j);
        const float* p = gp + idx[j] * kTile;
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) a[r][v] = _mm256_fmadd_ps(w, _mm256_load_ps(p + 8 * v), a[r][v]);
      }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm256_store_ps(acc + (r0 + r) * kTile + 8 * (v0 + v), a[r][v]);
}

template <int R, int V>
double run(long reps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < reps; ++i)
    for (int r0 = 0; r0 < kRows; r0 += R)
      for (int v0 = 0; v0 < 8; v0 += V) rows<R, V>(v0, r0);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <int R, int V>
void report(double ghz) {
  const long reps = 200000;
  const double fmas = static_cast<double>(reps) * kRows * kPerRow * 8;  // 8 vectors per kept weight
  std::printf("| %d x %d | %.2f |\n", R, V, fmas / (best_of_5(run<R, V>, reps) * ghz * 1e9));
}

}  // namespace

int main() {
  std::srand(1);
  for (int i = 0; i < kChunk * kTile; ++i) at[i] = 1e-3f * static_cast<float>(i % 7);
  for (int i = 0; i < kRows * kPerRow; ++i) vals[i] = 0.5f;
  for (int i = 0; i < kRows * kGroups; ++i) {  // two increasing in-group indices per group, at random
    int a = std::rand() % 4, b = std::rand() % 3;
    if (b >= a) ++b;
    idx[2 * i] = static_cast<uint8_t>(a < b ? a : b);
    idx[2 * i + 1] = static_cast<uint8_t>(a < b ? b : a);
  }
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent ymm vpaddd chain): %.2f GHz\n\n| rows x vectors | FMAs per cycle |\n|---|---|\n", ghz);
  report<1, 8>(ghz);
  report<1, 4>(ghz);
  report<2, 4>(ghz);
  report<3, 4>(ghz);
  report<2, 2>(ghz);
  report<4, 2>(ghz);
  report<6, 2>(ghz);
  float sum = 0;
  for (float x : acc) sum += x;
  std::printf("\n(checksum %g)\n", static_cast<double>(sum));
  return 0;
}
