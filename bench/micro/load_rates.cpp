// L1 load throughput by width, and what it leaves an FMA that takes its operand from memory (experiment, not a
// runtime kernel). nm-f32 puts 16 tokens along each vector and reads one 64-byte At vector per FMA (a kept weight
// times its input's tokens); the dense FP32 GEMM reads one weight vector per 6+ FMAs and broadcasts the rest. Where
// a core loads one 64-byte vector per cycle, nm-f32's FMAs cannot issue faster than that, half the dense GEMM's FMA
// rate for half its FMAs: a tie. Each loop keeps 8 independent chains and loads from a 16 KiB block that stays in
// L1; cycles are those of the clock measured by a dependent vpaddd chain. Results: bench/results/load_rates_*.md.
//
//   g++ -O2 -march=native -o /tmp/load_rates bench/micro/load_rates.cpp && /tmp/load_rates
#include <immintrin.h>

#include <chrono>
#include <cstdio>

#include "micro_common.h"

namespace {

alignas(64) float block[4096];  // 16 KiB

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 8 loads per step of the given asm load (offsets 0, 64, ..., 448 bytes from a pointer that walks the block), each
// folded into an xor chain so the loads must complete; returns seconds for `reps` steps
#define TF_LOAD_LOOP(NAME, LOAD)                                                                             \
  __attribute__((noinline)) double NAME(long reps) {                                                             \
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;            \
    const auto t0 = std::chrono::steady_clock::now();                                                            \
    for (long r = 0; r < reps; ++r) {                                                                            \
      const float* p = block + (r & 31) * 128;                                                                   \
      asm volatile(LOAD("0", "0") LOAD("64", "1") LOAD("128", "2") LOAD("192", "3") LOAD("256", "4")            \
                   LOAD("320", "5") LOAD("384", "6") LOAD("448", "7")                                            \
                   : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7)             \
                   : "r"(p)                                                                                      \
                   : "memory");                                                                                  \
    }                                                                                                            \
    const double sec = seconds_since(t0);                                                                        \
    _mm512_store_ps(block, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),          \
                                         _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))));         \
    return sec;                                                                                                  \
  }

// chain K (operand %K) takes the load at byte offset OFF from %8
#define ZXOR(OFF, K) "vpxord " OFF "(%8), %" K ", %" K "\n\t"
#define YXOR(OFF, K) "vpxor " OFF "(%8), %t" K ", %t" K "\n\t"
#define BFMA(OFF, K) "vfmadd231ps " OFF "(%8)%{1to16%}, %" K ", %" K "\n\t"
#define MFMA(OFF, K) "vfmadd231ps " OFF "(%8), %" K ", %" K "\n\t"
TF_LOAD_LOOP(run_zmm_loads, ZXOR)
TF_LOAD_LOOP(run_ymm_loads, YXOR)
TF_LOAD_LOOP(run_bcast_fma, BFMA)
TF_LOAD_LOOP(run_mem_fma, MFMA)

}  // namespace

int main() {
  for (int i = 0; i < 4096; ++i) block[i] = 1e-3f * static_cast<float>(i % 97);
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent vpaddd chain): %.2f GHz\n", ghz);
  std::printf("| loop (8 chains, operands from L1) | instructions per cycle |\n|---|---|\n");
  struct Kind {
    const char* name;
    double (*run)(long);
  } kinds[] = {{"vpxord zmm, [64-byte load]", run_zmm_loads},
               {"vpxor ymm, [32-byte load]", run_ymm_loads},
               {"vfmadd231ps zmm, [4-byte broadcast]", run_bcast_fma},
               {"vfmadd231ps zmm, [64-byte load] (nm-f32's step)", run_mem_fma}};
  const long reps = 20000000;
  for (const Kind& k : kinds) {
    const double sec = best_of_5(k.run, reps);
    std::printf("| %s | %.2f |\n", k.name, 8.0 * reps / (sec * ghz * 1e9));
  }
}
