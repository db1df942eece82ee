// Cycles per 4x4 block and 8 tokens of the avx2 block-sparse INT8 inner loop (csrc/sparse/bsr_s8_avx2.cpp,
// rows4_dot on 16-bit weights) against what its instructions alone allow, and against a pair-major layout of 16-token
// passes (an alternative that was prototyped in the runtime and not kept). Written as inline asm so that the
// register allocation is fixed (the compiler's spills would be measured otherwise). Everything lies in L1: one
// 192-quad slice of At (two 8-token tiles) and the blocks' weights and column indices, walked as the kernel walks a
// row block, so the figures are the loop's own ceiling, without misses, row-block set-up, dequantization or
// write-back. Cycles are those of the clock measured by a dependent ymm vpaddd chain.
// Results: bench/results/bsr_s8_loop_avx2.md.
//
//   g++ -O2 -mavx2 -o /tmp/bsr_s8_loop bench/micro/bsr_s8_loop_avx2.cpp && /tmp/bsr_s8_loop
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>

#include "micro_common.h"

namespace {

constexpr long kQuads = 192;        // input quads of a 768-input row: one 8-token tile of At is 192 x 32 bytes
constexpr long kTileBytes = kQuads * 32;
alignas(64) uint8_t at[2 * kTileBytes];
alignas(64) int16_t vals[1024 * 16];  // 16-bit weights of up to 1024 blocks, 4 rows x 4 inputs each
int32_t cols[1024];

#define TF_CLOBBER                                                                                                  \
  "rax", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
      "xmm12", "xmm13", "xmm14", "xmm15"
#define TF_ZERO8                                                                                 \
  "vpxor %%ymm0,%%ymm0,%%ymm0\n vpxor %%ymm1,%%ymm1,%%ymm1\n vpxor %%ymm2,%%ymm2,%%ymm2\n"     \
  "vpxor %%ymm3,%%ymm3,%%ymm3\n vpxor %%ymm4,%%ymm4,%%ymm4\n vpxor %%ymm5,%%ymm5,%%ymm5\n"     \
  "vpxor %%ymm6,%%ymm6,%%ymm6\n vpxor %%ymm7,%%ymm7,%%ymm7\n"
#define TF_MA(W, X, T, A) "vpmaddwd %%" W ", %%" X ", %%" T "\n vpaddd %%" T ", %%" A ", %%" A "\n"
// the 8 products and sums of one block and 8 tokens: weight rows ymm8..11, token vectors ymm12 (0-3), ymm15 (4-7)
#define TF_BLOCK_PRODUCTS                                                                                      \
  TF_MA("ymm8", "ymm12", "ymm13", "ymm0") TF_MA("ymm9", "ymm12", "ymm14", "ymm1")                              \
  TF_MA("ymm10", "ymm12", "ymm13", "ymm2") TF_MA("ymm11", "ymm12", "ymm14", "ymm3")                            \
  TF_MA("ymm8", "ymm15", "ymm13", "ymm4") TF_MA("ymm9", "ymm15", "ymm14", "ymm5")                              \
  TF_MA("ymm10", "ymm15", "ymm13", "ymm6") TF_MA("ymm11", "ymm15", "ymm14", "ymm7")

// the 16 multiply-adds alone, on registers (n steps)
double products_only(long n) {
  const auto t0 = std::chrono::steady_clock::now();
  asm volatile("1:\n" TF_BLOCK_PRODUCTS "dec %[n]\n jnz 1b\n" : [n] "+r"(n) : : TF_CLOBBER);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// the products plus the two activation widenings from memory (one fixed quad)
double products_widen(long n) {
  const uint8_t* a = at;
  const auto t0 = std::chrono::steady_clock::now();
  asm volatile("1:\n vpmovzxbw (%[a]), %%ymm12\n vpmovzxbw 16(%[a]), %%ymm15\n" TF_BLOCK_PRODUCTS
               "dec %[n]\n jnz 1b\n"
               : [n] "+r"(n)
               : [a] "r"(a)
               : TF_CLOBBER);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// seconds for `reps` walks of a row block of nb blocks, walk(cols, vals, nb) running one
template <class Walk>
double time_walks(long nb, long reps, Walk walk) {
  const auto t0 = std::chrono::steady_clock::now();
  for (long r = 0; r < reps; ++r) walk(cols, vals, nb);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// the kernel's loop: per block, its column index, the quad's address, 4 weight-row broadcasts (vpbroadcastq from
// memory), 2 widenings and the 16 products
double quad_loop(long nb, long reps) {
  return time_walks(nb, reps, [](const int32_t* c, const int16_t* w, long n) {
    asm volatile(TF_ZERO8
                 "1:\n movslq (%[c]), %%rax\n shl $5, %%rax\n add %[at], %%rax\n"
                 "vpbroadcastq 0(%[w]), %%ymm8\n vpbroadcastq 8(%[w]), %%ymm9\n"
                 "vpbroadcastq 16(%[w]), %%ymm10\n vpbroadcastq 24(%[w]), %%ymm11\n"
                 "vpmovzxbw (%%rax), %%ymm12\n vpmovzxbw 16(%%rax), %%ymm15\n" TF_BLOCK_PRODUCTS
                 "add $4, %[c]\n add $32, %[w]\n dec %[n]\n jnz 1b\n"
                 : [c] "+r"(c), [w] "+r"(w), [n] "+r"(n)
                 : [at] "r"(at)
                 : TF_CLOBBER);
  });
}

// pair-major quads (a tile's 32 bytes of a quad: its 8 tokens' inputs 0, 1, then inputs 2, 3), 16-token passes:
// 4 widenings (two tiles x two halves), per weight row two dword broadcasts (inputs 0, 1 and 2, 3) and 4 products
// into the row's two 8-token accumulators, one token per lane (no horizontal add at the end). With `broadcast`
// false the weight registers are left as they are: the loop without its 8 weight loads.
#define TF_PAIR_ROW(A0, A1)                                                                            \
  "vpmaddwd %%ymm12, %%ymm8, %%ymm14\n vpmaddwd %%ymm13, %%ymm9, %%ymm15\n vpaddd %%ymm14, %%" A0 ", %%" A0 \
  "\n vpaddd %%ymm15, %%" A0 ", %%" A0 "\n vpmaddwd %%ymm12, %%ymm10, %%ymm14\n"                            \
  "vpmaddwd %%ymm13, %%ymm11, %%ymm15\n vpaddd %%ymm14, %%" A1 ", %%" A1 "\n vpaddd %%ymm15, %%" A1 ", %%" A1 "\n"
#define TF_PAIR_BCAST(OFF) "vpbroadcastd " #OFF "(%[w]), %%ymm12\n vpbroadcastd " #OFF "+4(%[w]), %%ymm13\n"
// the pair loop's text, B0 .. B3 before each weight row's products (its broadcasts, or nothing)
#define TF_PAIR_LOOP(B0, B1, B2, B3)                                                                         \
  TF_ZERO8 "1:\n movslq (%[c]), %%rax\n shl $5, %%rax\n add %[at], %%rax\n"                               \
           "vpmovzxbw (%%rax), %%ymm8\n vpmovzxbw 16(%%rax), %%ymm9\n"                                      \
           "vpmovzxbw (%%rax,%[tb]), %%ymm10\n vpmovzxbw 16(%%rax,%[tb]), %%ymm11\n" B0                    \
           TF_PAIR_ROW("ymm0", "ymm1") B1 TF_PAIR_ROW("ymm2", "ymm3") B2 TF_PAIR_ROW("ymm4", "ymm5") B3        \
           TF_PAIR_ROW("ymm6", "ymm7") "add $4, %[c]\n add $32, %[w]\n dec %[n]\n jnz 1b\n"
template <bool broadcast>
double pair_loop(long nb, long reps) {
  return time_walks(nb, reps, [](const int32_t* c, const int16_t* w, long n) {
    if constexpr (broadcast)
      asm volatile(TF_PAIR_LOOP(TF_PAIR_BCAST(0), TF_PAIR_BCAST(8), TF_PAIR_BCAST(16), TF_PAIR_BCAST(24))
                   : [c] "+r"(c), [w] "+r"(w), [n] "+r"(n)
                   : [at] "r"(at), [tb] "r"(kTileBytes)
                   : TF_CLOBBER);
    else
      asm volatile(TF_PAIR_LOOP("", "", "", "")
                   : [c] "+r"(c), [w] "+r"(w), [n] "+r"(n)
                   : [at] "r"(at), [tb] "r"(kTileBytes)
                   : TF_CLOBBER);
  });
}

}  // namespace

int main() {
  std::srand(3);
  for (auto& b : at) b = static_cast<uint8_t>(std::rand());
  for (auto& v : vals) v = static_cast<int16_t>(std::rand() % 255 - 127);
  for (auto& c : cols) c = std::rand() % kQuads;
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent ymm vpaddd chain): %.2f GHz\n\n", ghz);
  const long steps = 20000000;
  const double per_step = ghz * 1e9 / steps;
  std::printf("| loop | cycles per block and 8 tokens |\n|---|---|\n");
  std::printf("| 8 vpmaddwd + 8 vpaddd (registers only) | %.2f |\n", best_of_5(products_only, steps) * per_step);
  std::printf("| + 2 vpmovzxbw from memory | %.2f |\n", best_of_5(products_widen, steps) * per_step);
  for (long nb : {19L, 96L, 1000L}) {  // blocks per row block: 90% and 50% of a 768-input row, and a long run
    const long reps = 4000000 / nb;
    const double blocks = static_cast<double>(reps) * nb, cyc = ghz * 1e9 / blocks;
    std::printf("| kernel loop, quads, 8-token passes, %ld blocks per row block | %.2f |\n", nb,
                best_of_5([&](long) { return quad_loop(nb, reps); }, 20) * cyc);
    std::printf("| pair-major, 16-token passes, %ld blocks (per 8 tokens) | %.2f |\n", nb,
                best_of_5([&](long) { return pair_loop<true>(nb, reps); }, 20) * cyc / 2);
    std::printf("| pair-major without the weight broadcasts, %ld blocks (per 8 tokens) | %.2f |\n", nb,
                best_of_5([&](long) { return pair_loop<false>(nb, reps); }, 20) * cyc / 2);
  }
}
