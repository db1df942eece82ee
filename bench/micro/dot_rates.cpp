// Throughput of the three vector dot-product instructions a sparse float / bf16 / INT8 kernel could be built on
// (experiment, not a runtime kernel): 16 independent accumulator chains in registers per instruction kind, timed
// in cycles of the clock measured by a dependent vpaddd chain. It decides whether an N:M BF16 kernel is worth
// writing: the two kept inputs of a 2:4 group form exactly one bf16 pair, so with the activations pre-paired for
// the 6 possible patterns one vdpbf16ps would do a group's work for 16 tokens where nm-f32 needs two FMAs; that
// only pays if vdpbf16ps issues at least half as often as vfmadd231ps. Results: bench/results/dot_rates.md.
// Also vpermb alone and a vpermb + vpdpbusd pair (nm-int8's permuted quads: one pair per 4 stored codes, where the
// dense GEMM spends two vpdpbusd): where vpdpbusd issues twice per cycle and vpermb shares one of its ports, the
// pair costs what the two dense dot products do. vdpbf16ps is skipped on CPUs without AVX512-BF16 (it would be an
// illegal instruction there), vpermb on CPUs without AVX512-VBMI.
//
//   g++ -O2 -march=native -o /tmp/dot_rates bench/micro/dot_rates.cpp && /tmp/dot_rates
#include <immintrin.h>

#include <chrono>
#include <cstdio>

#include "micro_common.h"

namespace {

#define TF_DOT_LOOP(NAME, OP)                                                                                    \
  __attribute__((noinline)) double NAME(long reps, __m512i* io) {                                                \
    __m512i a0 = io[0], a1 = io[1], a2 = io[2], a3 = io[3], a4 = io[4], a5 = io[5], a6 = io[6], a7 = io[7];      \
    __m512i a8 = io[8], a9 = io[9], a10 = io[10], a11 = io[11], a12 = io[12], a13 = io[13], a14 = io[14];        \
    __m512i a15 = io[15];                                                                                        \
    const __m512i x = _mm512_set1_epi32(0x3f803f80), y = _mm512_set1_epi32(0x3c003c00);                         \
    const auto t0 = std::chrono::steady_clock::now();                                                            \
    for (long r = 0; r < reps; ++r) {                                                                            \
      D(a0) D(a1) D(a2) D(a3) D(a4) D(a5) D(a6) D(a7) D(a8) D(a9) D(a10) D(a11) D(a12) D(a13) D(a14) D(a15)     \
    }                                                                                                            \
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();             \
    io[0] = sum8(a0, a1, a2, a3, a4, a5, a6, a7);                                                                \
    io[1] = sum8(a8, a9, a10, a11, a12, a13, a14, a15);                                                          \
    return sec;                                                                                                  \
  }

#define D(acc) asm volatile(OP : "+v"(acc) : "v"(x), "v"(y));
#define OP "vfmadd231ps %1, %2, %0"
TF_DOT_LOOP(run_fma, OP)
#undef OP
#define OP "vdpbf16ps %1, %2, %0"
TF_DOT_LOOP(run_dpbf16, OP)
#undef OP
#define OP "vpdpbusd %1, %2, %0"
TF_DOT_LOOP(run_dpbusd, OP)
#undef OP
#define OP "vpermb %1, %2, %0"
TF_DOT_LOOP(run_permb, OP)
#undef OP
#undef D
// the permuted quads' step: a token's bytes permuted into a scratch register, then added against the codes
#define D(acc) asm volatile("vpermb %1, %2, %%zmm31\n\tvpdpbusd %%zmm31, %2, %0" : "+v"(acc) : "v"(x), "v"(y) : "xmm31");
TF_DOT_LOOP(run_permb_dpbusd, "")
#undef D

// instructions per cycle, best of 5 runs of 16 chains x reps
double per_cycle(double (*f)(long, __m512i*), double ghz) {
  alignas(64) __m512i io[16];
  for (int i = 0; i < 16; ++i) io[i] = _mm512_setzero_si512();  // normal floats throughout: no denormal assists
  const long reps = 5000000;
  return 16.0 * reps / (best_of_5([&](long r) { return f(r, io); }, reps) * ghz * 1e9);
}

}  // namespace

int main() {
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent vpaddd chain): %.2f GHz\n", ghz);
  const struct {
    const char* name;
    double (*f)(long, __m512i*);
    int macs;  // multiply-adds per instruction (per pair for the last row)
    bool runs;
  } kinds[] = {{"vfmadd231ps zmm (fp32)", run_fma, 16, true},
               {"vdpbf16ps zmm (bf16 pairs)", run_dpbf16, 32, __builtin_cpu_supports("avx512bf16") != 0},
               {"vpdpbusd zmm (u8 x s8 quads)", run_dpbusd, 64, true},
               {"vpermb zmm (no multiply-adds)", run_permb, 0, __builtin_cpu_supports("avx512vbmi") != 0},
               {"vpermb + vpdpbusd pairs", run_permb_dpbusd, 64, __builtin_cpu_supports("avx512vbmi") != 0}};
  std::printf("| instruction (16 chains) | per cycle | multiply-adds per cycle |\n|---|---|---|\n");
  for (const auto& k : kinds) {
    if (!k.runs) {
      std::printf("| %s | not on this CPU | - |\n", k.name);
      continue;
    }
    const double ipc = per_cycle(k.f, ghz);
    std::printf("| %s | %.2f | %.1f |\n", k.name, ipc, ipc * k.macs);
  }
  return 0;
}
