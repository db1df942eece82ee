// Which vector instructions compete with vpdpbusd for issue ports (experiment, not a runtime kernel). A loop of D
// independent vpdpbusd (16 accumulator chains) then S instructions of one kind (8 independent chains), all in
// registers; prints the time per repetition for D alone, S alone and both, in cycles of the clock measured by a
// dependent vpaddd chain. Where both take about the sum of the two alone, that instruction kind takes issue slots the
// dot products need: a block-sparse tile's epilogue (shuffles, float ops) then adds to its dot products' time
// instead of overlapping with them. Results: bench/results/port_contention.md.
//
//   g++ -O2 -march=native -o /tmp/port_contention bench/micro/port_contention.cpp && /tmp/port_contention
#include <immintrin.h>

#include <chrono>
#include <cstdio>

#include "micro_common.h"

namespace {

#define TF_OP_LOOP(NAME, OP)                                                                                        \
  __attribute__((noinline)) double NAME(long reps, int d, int s, __m512i* io) {                                     \
    __m512i a0 = io[0], a1 = io[1], a2 = io[2], a3 = io[3], a4 = io[4], a5 = io[5], a6 = io[6], a7 = io[7];         \
    __m512i a8 = io[8], a9 = io[9], a10 = io[10], a11 = io[11], a12 = io[12], a13 = io[13], a14 = io[14];           \
    __m512i a15 = io[15];                                                                                           \
    __m512i b0 = io[16], b1 = io[17], b2 = io[18], b3 = io[19], b4 = io[20], b5 = io[21], b6 = io[22], b7 = io[23]; \
    const __m512i x = _mm512_set1_epi32(3), y = _mm512_set1_epi32(5);                                              \
    const auto t0 = std::chrono::steady_clock::now();                                                               \
    for (long r = 0; r < reps; ++r) {                                                                               \
      for (int i = 0; i < d; i += 16) {                                                                             \
        DOT(a0) DOT(a1) DOT(a2) DOT(a3) DOT(a4) DOT(a5) DOT(a6) DOT(a7)                                             \
        DOT(a8) DOT(a9) DOT(a10) DOT(a11) DOT(a12) DOT(a13) DOT(a14) DOT(a15)                                       \
      }                                                                                                             \
      for (int i = 0; i < s; i += 8) {                                                                              \
        asm volatile(OP : "+v"(b0) : "v"(x));                                                                       \
        asm volatile(OP : "+v"(b1) : "v"(x));                                                                       \
        asm volatile(OP : "+v"(b2) : "v"(x));                                                                       \
        asm volatile(OP : "+v"(b3) : "v"(x));                                                                       \
        asm volatile(OP : "+v"(b4) : "v"(x));                                                                       \
        asm volatile(OP : "+v"(b5) : "v"(x));                                                                       \
        asm volatile(OP : "+v"(b6) : "v"(x));                                                                       \
        asm volatile(OP : "+v"(b7) : "v"(x));                                                                       \
      }                                                                                                             \
    }                                                                                                               \
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();                \
    io[0] = sum8(a0, a1, a2, a3, a4, a5, a6, a7);                                                                   \
    io[1] = sum8(a8, a9, a10, a11, a12, a13, a14, a15);                                                             \
    io[2] = sum8(b0, b1, b2, b3, b4, b5, b6, b7);                                                                   \
    return sec;                                                                                                     \
  }

#define DOT(acc) asm volatile("vpdpbusd %1, %2, %0" : "+v"(acc) : "v"(x), "v"(y));

TF_OP_LOOP(run_unpack, "vpunpckldq %1, %0, %0")
TF_OP_LOOP(run_permd, "vpermd %1, %0, %0")
TF_OP_LOOP(run_shuf128, "vshufi32x4 $0x88, %1, %0, %0")
TF_OP_LOOP(run_addps, "vaddps %1, %0, %0")
TF_OP_LOOP(run_paddd, "vpaddd %1, %0, %0")
TF_OP_LOOP(run_cvt, "vcvtdq2ps %0, %0")
TF_OP_LOOP(run_unpack_ymm, "vpunpckldq %t1, %t0, %t0")

using Loop = double (*)(long, int, int, __m512i*);

double cycles_per_rep(Loop f, int d, int s, double ghz) {
  alignas(64) __m512i io[24];
  for (int i = 0; i < 24; ++i) io[i] = _mm512_set1_epi32(i);
  const long reps = 40000000L / (d + s);
  return best_of_5([&](long r) { return f(r, d, s, io); }, reps) * ghz * 1e9 / reps;
}

}  // namespace

int main() {
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent vpaddd chain): %.2f GHz\n", ghz);
  const int d = 1280, s = 1280;
  const double dots = cycles_per_rep(run_unpack, d, 0, ghz);  // the dot products alone (no other instruction)
  std::printf("%d vpdpbusd zmm alone: %.0f cycles (%.2f per cycle)\n", d, dots, d / dots);
  const struct {
    const char* name;
    Loop f;
  } kinds[] = {{"vpunpckldq zmm", run_unpack}, {"vpermd zmm", run_permd},   {"vshufi32x4 zmm", run_shuf128},
               {"vaddps zmm", run_addps},      {"vpaddd zmm", run_paddd},   {"vcvtdq2ps zmm", run_cvt},
               {"vpunpckldq ymm", run_unpack_ymm}};
  std::printf("| instruction (%d, 8 chains) | alone, cycles | with %d vpdpbusd | sum of the two alone |\n", s, d);
  std::printf("|---|---|---|---|\n");
  for (const auto& k : kinds) {
    const double alone = cycles_per_rep(k.f, 0, s, ghz), both = cycles_per_rep(k.f, d, s, ghz);
    std::printf("| %s | %.0f | %.0f | %.0f |\n", k.name, alone, both, alone + dots);
  }
  return 0;
}
