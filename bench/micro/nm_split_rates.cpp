// Whether a 2:4 FP32 kernel could split each row's inputs between two forms whose bounds are different resources
// (experiment, not a runtime kernel; docs/kernels.md, "Not built (an idea ...)" under nm-f32): FMAs per cycle for
//
//   walk     nm-f32's step: tokens along the lanes, per kept value a broadcast of it and 4 FMAs that each take a
//            64-byte vector of At from memory (4 token vectors; At in L1): bound by the loads
//   perm     output rows along the lanes: per group of 4 inputs (its 16 rows' 2 kept values and their in-group
//            indices loaded once, 4 vectors) and token, the token's 4 inputs broadcast to every 128-bit lane (a
//            16-byte load), two vpermilps pick each row's 2 kept inputs (port 5), two FMAs with the kept values (4 or
//            8 tokens): bound by port 5 and the FMA ports. Its input is the token rows as they are (no re-layout)
//            and its sums come out as token rows (no transpose)
//   split    both in one loop, independent accumulators: W walk steps (4 FMAs each) for every P perm tokens (2
//            FMAs each); where the two bounds are different resources the sum can pass either alone
//   regs     FMAs on registers only (the dense GEMM's ceiling)
//
// Every FMA counted is a useful one (a kept 2:4 value times its input): the dense kernel needs twice as many for
// the same outputs. Cycles are those of a dependent vpaddd chain (micro_common.h).
//
//   g++ -O2 -march=native -o /tmp/nm_split_rates bench/micro/nm_split_rates.cpp && /tmp/nm_split_rates
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "micro_common.h"

namespace {
#define FMA_MEM(acc, w, p) asm("vfmadd231ps %2, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const __m512*>(p)))
#define FMA_REG(acc, a, b) asm("vfmadd231ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#define PERM(dst, idx, src) asm("vpermilps %2, %1, %0" : "=v"(dst) : "v"(src), "v"(idx))

constexpr int kSteps = 4096;     // kept values (walk) and groups (perm) per pass
constexpr int kAtRows = 48;      // walk: At rows of 64 tokens (12 KiB, in L1)
constexpr int kPermTokens = 8;   // perm: token accumulators
constexpr int kGroups = 64;      // perm: groups of 4 inputs per token row (256 inputs: 8 KiB of x for 8 tokens)

struct Data {
  alignas(64) float at[kAtRows][64];
  alignas(64) float x[kPermTokens][kGroups * 4];
  std::vector<int32_t> rows;   // walk: the At row of each kept value
  std::vector<float> vals;     // walk: the kept values
  alignas(64) float v[kGroups][2][16];  // perm: per group, the 16 rows' two kept values
  alignas(64) int32_t idx[kGroups][2][16];  // and their inputs within the group (0-3)
};

// the accumulators' sum, stored after the timed loop so that the compiler keeps every chain
// W walk steps and P perm tokens (P <= 8) per unit, kSteps units per pass; returns seconds. Accumulators are
// named variables: in arrays gcc kept them in memory around each asm statement.
#define PERM_TOKEN(T, BT)                                                                    \
  if (P > T) {                                                                               \
    const __m512 xb = _mm512_broadcast_f32x4(_mm_load_ps(&d.x[T][4 * (g & (kGroups - 1))])); \
    __m512 p0, p1;                                                                           \
    PERM(p0, i0, xb);                                                                        \
    PERM(p1, i1, xb);                                                                        \
    FMA_REG(BT, v0, p0);                                                                     \
    FMA_REG(BT, v1, p1);                                                                     \
  }
template <int W, int P>
__attribute__((noinline)) double run(const Data& d, int passes) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;  // walk accumulators (4 token vectors)
  __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0, b7 = a0;  // perm: one per token
  const int32_t* rows = d.rows.data();
  const float* vals = d.vals.data();
  const auto t0 = std::chrono::steady_clock::now();
  for (int pass = 0; pass < passes; ++pass) {
    int g = 0, j = 0;
    for (int u = 0; u < kSteps; ++u) {
#pragma GCC unroll 8
      for (int s = 0; s < W; ++s, ++j) {
        const __m512 w = _mm512_set1_ps(vals[j & (kSteps - 1)]);
        const float* ap = d.at[rows[j & (kSteps - 1)]];
        FMA_MEM(a0, w, ap);
        FMA_MEM(a1, w, ap + 16);
        FMA_MEM(a2, w, ap + 32);
        FMA_MEM(a3, w, ap + 48);
      }
      // the group's values and indices, loaded once for its P tokens (a real kernel's 16-row block)
      const int gi = g & (kGroups - 1);
      const __m512 v0 = _mm512_load_ps(d.v[gi][0]), v1 = _mm512_load_ps(d.v[gi][1]);
      const __m512 i0 = _mm512_castsi512_ps(_mm512_load_si512(d.idx[gi][0]));
      const __m512 i1 = _mm512_castsi512_ps(_mm512_load_si512(d.idx[gi][1]));
      PERM_TOKEN(0, b0) PERM_TOKEN(1, b1) PERM_TOKEN(2, b2) PERM_TOKEN(3, b3)
      PERM_TOKEN(4, b4) PERM_TOKEN(5, b5) PERM_TOKEN(6, b6) PERM_TOKEN(7, b7)
      if (P) ++g;
    }
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  keep_live(a0, a1, a2, a3, b0, b1, b2, b3, b4, b5, b6, b7);
  return sec;
}

__attribute__((noinline)) double run_regs(int passes) {
  __m512 a0 = _mm512_set1_ps(0.001f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
         a9 = a0, a10 = a0, a11 = a0;
  const __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  const auto t0 = std::chrono::steady_clock::now();
  for (long r = 0; r < static_cast<long>(passes) * kSteps / 3; ++r) {
    FMA_REG(a0, x, y); FMA_REG(a1, x, y); FMA_REG(a2, x, y); FMA_REG(a3, x, y);
    FMA_REG(a4, x, y); FMA_REG(a5, x, y); FMA_REG(a6, x, y); FMA_REG(a7, x, y);
    FMA_REG(a8, x, y); FMA_REG(a9, x, y); FMA_REG(a10, x, y); FMA_REG(a11, x, y);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  keep_live(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11);
  return sec;
}
}  // namespace

int main() {
  static Data d;
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  for (auto& row : d.at) for (float& f : row) f = u(rng);
  for (auto& row : d.x) for (float& f : row) f = u(rng);
  for (int j = 0; j < kSteps; ++j) {
    d.rows.push_back(static_cast<int32_t>(rng() % kAtRows));
    d.vals.push_back(u(rng));
  }
  for (int gi = 0; gi < kGroups; ++gi)
    for (int l = 0; l < 16; ++l) {  // a row keeps inputs i0 < i1 of its group (any of the 6 pairs)
      const int a = static_cast<int>(rng() % 3), b = a + 1 + static_cast<int>(rng() % (3 - a));
      d.idx[gi][0][l] = a;
      d.idx[gi][1][l] = b;
      d.v[gi][0][l] = u(rng);
      d.v[gi][1][l] = u(rng);
    }
  vpaddd_clock_ghz();
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent vpaddd chain): %.2f GHz\n\n| loop | useful FMAs per cycle |\n|---|---|\n", ghz);
  const int passes = 400;
  const auto rate = [&](double fmas_per_unit, double sec) { return fmas_per_unit * kSteps * passes / (sec * ghz * 1e9); };
  struct Row {
    const char* name;
    double fmas;
    double (*fn)(const Data&, int);
  } rows[] = {{"walk (4 FMAs per step)", 4, run<1, 0>},
              {"perm (2 FMAs + 2 vpermilps per token, 8 tokens)", 16, run<0, 8>},
              {"perm, 4 tokens", 8, run<0, 4>},
              {"split: 1 walk step + 4 perm tokens", 12, run<1, 4>},
              {"split: 2 walk steps + 4 perm tokens", 16, run<2, 4>},
              {"split: 3 walk steps + 4 perm tokens", 20, run<3, 4>},
              {"split: 4 walk steps + 4 perm tokens", 24, run<4, 4>},
              {"split: 2 walk steps + 8 perm tokens", 24, run<2, 8>},
              {"split: 4 walk steps + 8 perm tokens", 32, run<4, 8>},
              {"split: 6 walk steps + 8 perm tokens", 40, run<6, 8>}};
  for (const Row& r : rows) {
    double sec = 1e30;
    for (int t = 0; t < 5; ++t) sec = std::min(sec, r.fn(d, passes));
    std::printf("| %s | %.2f |\n", r.name, rate(r.fmas, sec));
  }
  double best = 1e30;
  for (int t = 0; t < 5; ++t) best = std::min(best, run_regs(passes));
  std::printf("| regs (12 chains, no loads) | %.2f |\n", rate(4, best));
  std::printf("\nA 2:4 FP32 step is worth twice its FMAs in dense ones: split rows above half of `regs` would beat the "
              "dense GEMM's ceiling.\n");
  return 0;
}
