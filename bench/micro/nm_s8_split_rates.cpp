// Whether a 2:4 INT8 kernel could keep both of its possible bounds busy at once (experiment, not a runtime kernel;
// docs/kernels.md, "Not built (an idea ...)" under the permuted quads): useful vpdpbusd per cycle for
//
//   dense    our dense VNNI GEMM's loop (gemm_s8_avx512vnni.cpp): 6 tokens x 64 output rows, per input quad 4
//            weight loads and 6 activation broadcasts for 24 vpdpbusd
//   perm     nm-int8's permuted quads (perm_s8_avx512vbmi.cpp): output rows along the lanes, per step 2 index and 2
//            code vectors loaded, then per token one vpermb + one vpdpbusd per 16 rows: bound by port 5 (vpermb)
//   table    tokens along the lanes, per 8 inputs a table of the 36 ways a 2:4 row keeps 2 of each 4 (built once per
//            call, shared by every row); per kept quad of a row one broadcast of its 4 codes and, per 16 tokens, one
//            64-byte table load and one vpdpbusd: bound by the load ports
//   split    both in one loop on independent accumulators: T table steps for every perm step of P tokens
//   regs     vpdpbusd on registers only
//
// A perm or table vpdpbusd multiplies 4 kept 2:4 codes, worth 2 of the dense loop's (8 inputs of the row); the
// table prints "dense-equivalent vpdpbusd per cycle" (dense: 1 each, 2:4: 2 each). Every operand is in L1.
// Cycles are those of a dependent vpaddd chain (micro_common.h).
//
//   g++ -O2 -march=native -o /tmp/nm_s8_split_rates bench/micro/nm_s8_split_rates.cpp && /tmp/nm_s8_split_rates
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "micro_common.h"

namespace {
#define DP(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#define PERMB(dst, idx, src) asm("vpermb %2, %1, %0" : "=v"(dst) : "v"(idx), "v"(src))
// a 64-byte load the compiler may not fold into (or duplicate for) the instruction that uses it
#define LOAD(dst, p) asm("vmovdqa64 %1, %0" : "=v"(dst) : "m"(*reinterpret_cast<const __m512i*>(p)))
#define BCAST(dst, p) asm("vpbroadcastd %1, %0" : "=v"(dst) : "m"(*reinterpret_cast<const int32_t*>(p)))

constexpr int kUnits = 4096;    // loop units per pass
constexpr int kTable = 128;     // table: entries of 2 x 64 bytes (16 KiB; one octet's 36 combinations, 2 token vectors)
constexpr int kPermSteps = 32;  // perm: steps of 256 bytes (8 KiB of records)
constexpr int kDenseQuads = 32; // dense: weight quads of 4 vectors (8 KiB)

struct Data {
  alignas(64) uint8_t table[kTable][2][64];
  alignas(64) uint8_t rec[kPermSteps][4][64];   // index 0, codes 0, index 1, codes 1
  alignas(64) uint8_t x[8][64];                 // perm: 8 tokens' 64 inputs
  alignas(64) int8_t wd[kDenseQuads][4][64];    // dense: weights
  alignas(64) uint8_t ad[6][kDenseQuads * 4];   // dense: 6 tokens' activations
  std::vector<int32_t> entry;                   // table: the entry each step reads
  std::vector<int32_t> codes;                   // table: the step's 4 codes
};

#define TABLE_STEP(A0, A1)                                               \
  {                                                                      \
    const int jj = j & (kUnits - 1);                                     \
    __m512i w, t0, t1;                                                   \
    BCAST(w, &codes[jj]);                                                \
    LOAD(t0, d.table[entry[jj]][0]);                                     \
    LOAD(t1, d.table[entry[jj]][1]);                                     \
    DP(A0, t0, w);                                                       \
    DP(A1, t1, w);                                                       \
    ++j;                                                                 \
  }
// a perm step's two index and two code vectors (256 bytes of records)
#define LOAD_STEP(r)  \
  LOAD(i0, r);        \
  LOAD(w0, r + 64);   \
  LOAD(i1, r + 128);  \
  LOAD(w1, r + 192);
#define PERM_TOKEN(T, B0, B1)    \
  if (P > T) {                   \
    __m512i p0, p1;              \
    PERMB(p0, i0, x##T);         \
    PERMB(p1, i1, x##T);         \
    DP(B0, p0, w0);              \
    DP(B1, p1, w1);              \
  }

// T table steps (2 token vectors each) and one perm step of P tokens (P <= 4) per unit; returns seconds.
// Accumulators are named variables: in arrays gcc kept them in memory around each asm statement.
template <int T, int P>
__attribute__((noinline)) double run(const Data& d, int passes) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;  // table: 4 rows
  __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0, b7 = a0;  // perm: 4 tokens x 2 row tiles
  const __m512i x0 = _mm512_load_si512(d.x[0]), x1 = _mm512_load_si512(d.x[1]);
  const __m512i x2 = _mm512_load_si512(d.x[2]), x3 = _mm512_load_si512(d.x[3]);
  const int32_t* entry = d.entry.data();
  const int32_t* codes = d.codes.data();
  const auto t0 = std::chrono::steady_clock::now();
  for (int pass = 0; pass < passes; ++pass) {
    int j = 0;
    for (int u = 0; u < kUnits; ++u) {
      if (T > 0) TABLE_STEP(a0, a1)
      if (T > 1) TABLE_STEP(a2, a3)
      if (T > 2) TABLE_STEP(a4, a5)
      if (T > 3) TABLE_STEP(a6, a7)
      if (T > 4) TABLE_STEP(a0, a1)
      if (T > 5) TABLE_STEP(a2, a3)
      if (T > 6) TABLE_STEP(a4, a5)
      if (T > 7) TABLE_STEP(a6, a7)
      if (P > 0) {
        const uint8_t* r = d.rec[u & (kPermSteps - 1)][0];
        __m512i i0, w0, i1, w1;
        LOAD_STEP(r)
        PERM_TOKEN(0, b0, b1) PERM_TOKEN(1, b2, b3) PERM_TOKEN(2, b4, b5) PERM_TOKEN(3, b6, b7)
      }
    }
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  keep_live(a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7);
  return sec;
}

// the perm kernel's own micro-tile: 8 tokens x 2 row tiles per step
__attribute__((noinline)) double run_perm8(const Data& d, int passes) {
  __m512i b0 = _mm512_setzero_si512(), b1 = b0, b2 = b0, b3 = b0, b4 = b0, b5 = b0, b6 = b0, b7 = b0;
  __m512i c0 = b0, c1 = b0, c2 = b0, c3 = b0, c4 = b0, c5 = b0, c6 = b0, c7 = b0;
  const __m512i x0 = _mm512_load_si512(d.x[0]), x1 = _mm512_load_si512(d.x[1]);
  const __m512i x2 = _mm512_load_si512(d.x[2]), x3 = _mm512_load_si512(d.x[3]);
  const __m512i x4 = _mm512_load_si512(d.x[4]), x5 = _mm512_load_si512(d.x[5]);
  const __m512i x6 = _mm512_load_si512(d.x[6]), x7 = _mm512_load_si512(d.x[7]);
  constexpr int P = 8;
  const auto t0 = std::chrono::steady_clock::now();
  for (int pass = 0; pass < passes; ++pass)
    for (int u = 0; u < kUnits; ++u) {
      const uint8_t* r = d.rec[u & (kPermSteps - 1)][0];
      __m512i i0, w0, i1, w1;
      LOAD_STEP(r)
      PERM_TOKEN(0, b0, c0) PERM_TOKEN(1, b1, c1) PERM_TOKEN(2, b2, c2) PERM_TOKEN(3, b3, c3)
      PERM_TOKEN(4, b4, c4) PERM_TOKEN(5, b5, c5) PERM_TOKEN(6, b6, c6) PERM_TOKEN(7, b7, c7)
    }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  keep_live(b0, b1, b2, b3, b4, b5, b6, b7, c0, c1, c2, c3, c4, c5, c6, c7);
  return sec;
}

// the dense GEMM's loop: 6 tokens x 4 vectors of 16 output rows per input quad
#define DENSE_TOKEN(T, A0, A1, A2, A3)      \
  {                                         \
    __m512i av;                             \
    BCAST(av, &d.ad[T][4 * q]);             \
    DP(A0, av, v0);                         \
    DP(A1, av, v1);                         \
    DP(A2, av, v2);                         \
    DP(A3, av, v3);                         \
  }
__attribute__((noinline)) double run_dense(const Data& d, int passes) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
          a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0, a16 = a0, a17 = a0, a18 = a0,
          a19 = a0, a20 = a0, a21 = a0, a22 = a0, a23 = a0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int pass = 0; pass < passes; ++pass)
    for (int u = 0; u < kUnits; ++u) {
      const int q = u & (kDenseQuads - 1);
      __m512i v0, v1, v2, v3;
      LOAD(v0, d.wd[q][0]);
      LOAD(v1, d.wd[q][1]);
      LOAD(v2, d.wd[q][2]);
      LOAD(v3, d.wd[q][3]);
      DENSE_TOKEN(0, a0, a1, a2, a3) DENSE_TOKEN(1, a4, a5, a6, a7) DENSE_TOKEN(2, a8, a9, a10, a11)
      DENSE_TOKEN(3, a12, a13, a14, a15) DENSE_TOKEN(4, a16, a17, a18, a19) DENSE_TOKEN(5, a20, a21, a22, a23)
    }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  keep_live(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21,
            a22, a23);
  return sec;
}

__attribute__((noinline)) double run_regs(const Data&, int passes) {
  __m512i a0 = _mm512_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
          a9 = a0, a10 = a0, a11 = a0;
  const __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(5);
  const auto t0 = std::chrono::steady_clock::now();
  for (long r = 0; r < static_cast<long>(passes) * kUnits / 3; ++r) {
    DP(a0, x, y); DP(a1, x, y); DP(a2, x, y); DP(a3, x, y); DP(a4, x, y); DP(a5, x, y);
    DP(a6, x, y); DP(a7, x, y); DP(a8, x, y); DP(a9, x, y); DP(a10, x, y); DP(a11, x, y);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  keep_live(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11);
  return sec;
}
}  // namespace

int main() {
  static Data d;
  std::mt19937 rng(0);
  for (auto& e : d.table) for (auto& v : e) for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  for (auto& s : d.rec)
    for (int v = 0; v < 4; ++v)
      for (int l = 0; l < 64; ++l) s[v][l] = static_cast<uint8_t>(v % 2 == 0 ? rng() % 64 : rng());
  for (auto& t : d.x) for (uint8_t& b : t) b = static_cast<uint8_t>(rng());
  for (auto& q : d.wd) for (auto& v : q) for (int8_t& b : v) b = static_cast<int8_t>(rng());
  for (auto& t : d.ad) for (uint8_t& b : t) b = static_cast<uint8_t>(rng());
  for (int j = 0; j < kUnits; ++j) {
    d.entry.push_back(static_cast<int32_t>(rng() % kTable));
    d.codes.push_back(static_cast<int32_t>(rng()));
  }
  vpaddd_clock_ghz();
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent vpaddd chain): %.2f GHz\n\n", ghz);
  std::printf("| loop | vpdpbusd per cycle | dense-equivalent vpdpbusd per cycle |\n|---|---|---|\n");
  const int passes = 400;
  struct Row {
    const char* name;
    double dots;   // vpdpbusd per unit
    double worth;  // dense vpdpbusd each is worth
    double (*fn)(const Data&, int);
  } rows[] = {{"regs (12 chains, no loads)", 4, 1, run_regs},
              {"dense (6 tokens x 4 vectors per quad)", 24, 1, run_dense},
              {"perm (8 tokens x 2 row tiles per step)", 16, 2, run_perm8},
              {"perm, 4 tokens", 8, 2, run<0, 4>},
              {"table (2 token vectors per broadcast)", 2, 2, run<1, 0>},
              {"table, 4 steps per unit", 8, 2, run<4, 0>},
              {"split: 1 table step + perm of 4 tokens", 10, 2, run<1, 4>},
              {"split: 2 table steps + perm of 4 tokens", 12, 2, run<2, 4>},
              {"split: 3 table steps + perm of 4 tokens", 14, 2, run<3, 4>},
              {"split: 4 table steps + perm of 4 tokens", 16, 2, run<4, 4>},
              {"split: 6 table steps + perm of 4 tokens", 20, 2, run<6, 4>},
              {"split: 8 table steps + perm of 4 tokens", 24, 2, run<8, 4>},
              {"split: 1 table step + perm of 2 tokens", 6, 2, run<1, 2>},
              {"split: 2 table steps + perm of 2 tokens", 8, 2, run<2, 2>}};
  for (const Row& r : rows) {
    double sec = 1e30;
    for (int t = 0; t < 5; ++t) sec = std::min(sec, r.fn(d, passes));
    const double per_cycle = r.dots * kUnits * passes / (sec * ghz * 1e9);
    std::printf("| %s | %.2f | %.2f |\n", r.name, per_cycle, per_cycle * r.worth);
  }
  return 0;
}
