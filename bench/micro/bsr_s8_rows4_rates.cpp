// The 4x4 block-sparse INT8 inner loop in isolation, AVX-512 VNNI: vpdpbusd per cycle for the row blocks of a 90%
// block-pruned BERT-base weight over one 64-token At tile, as the kernel walks them (bsr_s8_avx512vnni.cpp:
// rows4_dot: per block 4 weight broadcasts, 4 At loads and 16 vpdpbusd into 16 accumulators), and variants that
// show what bounds it. One pass = every row block of the weight once over the tile, as a token tile of a call does;
// the walk is repeated, so the weight (its blocks' indices and values) comes from L1 or L2 as its size allows.
//
//   rows4     the kernel's walk: a row block's blocks in input order, each at its own quad of At (random quads)
//   seq_at    the same loop, but block j reads At quad j % 32 (8 KiB of At, in L1, read in order): the loop
//             without At's misses
//   no_at     no At loads (one register for every product): the loop's issue rate with its weight loads
//   regs      no loads at all (fixed registers, 16 accumulators): the vpdpbusd issue rate alone
//
//   g++ -O2 -march=native -o /tmp/bsr_s8_rows4_rates bench/micro/bsr_s8_rows4_rates.cpp && /tmp/bsr_s8_rows4_rates
//
// The clock is measured with a dependent vpaddd chain (1 cycle each: micro_common.h); where 512-bit work
// runs at a lower clock than that chain, every rate here reads low by the same factor.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "micro_common.h"

#define DP(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

namespace {
constexpr int V = 4;            // token vectors (64 tokens)
constexpr int64_t kQuad = 256;  // bytes of At per quad (64 tokens x 4)

struct Blocks {  // 4x4 blocks per row block of 4 output rows: the quad (4 inputs) each covers, 16 values
  std::vector<int32_t> ptr{0}, cols;
  std::vector<int8_t> vals;
};

inline __m512i bcast_quad(const int8_t* p) {
  __m512i r;
  asm("vpbroadcastd %1, %0" : "=v"(r) : "m"(*reinterpret_cast<const int32_t*>(p)));
  return r;
}

template <int Mode>  // 0 rows4, 1 seq_at, 2 no_at, 3 regs
__attribute__((noinline)) void walk(const uint8_t* at, const Blocks& w, int32_t* out) {
  const __m512i x = _mm512_set1_epi32(0x01020304);
  const int blocks_rows = static_cast<int>(w.ptr.size()) - 1;
  const int32_t* ptr = w.ptr.data();
  const int32_t* cols = w.cols.data();
  const int8_t* vals = w.vals.data();
  for (int b = 0; b < blocks_rows; ++b) {
    __m512i a[4][V];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) a[r][v] = _mm512_setzero_si512();
    for (int32_t j = ptr[b]; j < ptr[b + 1]; ++j) {
      __m512i w0 = x, w1 = x, w2 = x, w3 = x;
      if (Mode != 3) {
        w0 = bcast_quad(vals + 16 * j);
        w1 = bcast_quad(vals + 16 * j + 4);
        w2 = bcast_quad(vals + 16 * j + 8);
        w3 = bcast_quad(vals + 16 * j + 12);
      }
      const int64_t q = Mode == 1 ? (j & 31) : cols[j];
      const uint8_t* ap = at + q * kQuad;
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) {
        const __m512i xv = Mode >= 2 ? x : _mm512_load_si512(ap + 64 * v);
        DP(a[0][v], xv, w0);
        DP(a[1][v], xv, w1);
        DP(a[2][v], xv, w2);
        DP(a[3][v], xv, w3);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) _mm512_store_si512(out + 256 * b + 64 * r + 16 * v, a[r][v]);
  }
}

}  // namespace

int main() {
  vpaddd_clock_ghz();  // the core's clock ramps up first
  const double hz = vpaddd_clock_ghz() * 1e9;
  std::printf("clock (dependent vpaddd chain): %.2f GHz\n\n", hz / 1e9);
  std::printf("| shape (outputs x inputs) | At tile KiB | weight KiB | rows4 | seq_at | no_at | regs |\n"
              "|---|---|---|---|---|---|---|\n");
  std::mt19937 rng(0);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  struct Shape {
    const char* name;
    int n, k;
  } shapes[] = {{"attn_out 768 x 768", 768, 768}, {"qkv 2304 x 768", 2304, 768}, {"ffn1 3072 x 768", 3072, 768},
                {"ffn2 768 x 3072", 768, 3072}};
  for (const Shape& s : shapes) {
    const int kq = s.k / 4;
    Blocks w;
    for (int b = 0; b < s.n / 4; ++b) {
      for (int q = 0; q < kq; ++q)
        if (uni(rng) < 0.1) {  // 90% of the 4x4 blocks empty
          w.cols.push_back(q);
          for (int i = 0; i < 16; ++i) w.vals.push_back(static_cast<int8_t>(rng()));
        }
      w.ptr.push_back(static_cast<int32_t>(w.cols.size()));
    }
    uint8_t* at = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(kq) * kQuad));
    for (int64_t i = 0; i < kq * kQuad; ++i) at[i] = static_cast<uint8_t>(rng());
    int32_t* out = static_cast<int32_t*>(std::aligned_alloc(64, static_cast<size_t>(s.n) * 64 * 4));
    const double dps = static_cast<double>(w.cols.size()) * 16;
    const auto rate = [&](double sec) { return dps / sec / hz; };
    const double r0 = rate(best_call_seconds([&] { walk<0>(at, w, out); }, 200));
    const double r1 = rate(best_call_seconds([&] { walk<1>(at, w, out); }, 200));
    const double r2 = rate(best_call_seconds([&] { walk<2>(at, w, out); }, 200));
    const double r3 = rate(best_call_seconds([&] { walk<3>(at, w, out); }, 200));
    std::printf("| %s | %lld | %.0f | %.2f | %.2f | %.2f | %.2f |\n", s.name, static_cast<long long>(kq) * kQuad / 1024,
                (w.cols.size() * 20.0 + w.ptr.size() * 4.0) / 1024, r0, r1, r2, r3);
    std::free(at);
    std::free(out);
  }
  std::printf("\nvpdpbusd per cycle, 1 thread (best of 200 passes over every row block)\n");
  return 0;
}
