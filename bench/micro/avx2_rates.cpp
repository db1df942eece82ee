// Issue rates of the instructions the avx2 block-sparse INT8 kernel (csrc/sparse/bsr_s8_avx2.cpp) is built from
// (experiment, not a runtime kernel): 8 independent instructions per loop step, timed in cycles of the clock
// measured by a dependent ymm vpaddd chain. It backs two choices of that kernel: weights widened to 16 bits once at
// load (a row broadcast from memory, vpbroadcastq, instead of a per-use vpmovsxbw), and activations zero-extended
// straight from memory (vpmovzxbw ymm, m128). The permutes say what the avx2 GELU's 8-segment table lookup
// (epilogue_avx2.h: one vpermps per coefficient) costs against in-lane vpermilps lookups joined by vblendvps.
// Results: bench/results/avx2_rates.md.
//
//   g++ -O2 -mavx2 -o /tmp/avx2_rates bench/micro/avx2_rates.cpp && /tmp/avx2_rates
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>

#include "micro_common.h"

namespace {

alignas(64) uint8_t buf[4096];

// seconds for `reps` steps of 8 independent instances of one instruction (outputs to 8 registers, never read)
#define TF_RATE_LOOP(NAME, ASM, IN)                                                                              \
  __attribute__((noinline)) double NAME(long reps) {                                                             \
    __m256i o0, o1, o2, o3, o4, o5, o6, o7;                                                                      \
    const __m256i y = _mm256_set1_epi32(5);                                                                      \
    const __m128i xs = _mm_set1_epi32(3);                                                                        \
    (void)y;                                                                                                     \
    (void)xs;                                                                                                    \
    const auto t0 = std::chrono::steady_clock::now();                                                            \
    for (long r = 0; r < reps; ++r) {                                                                            \
      asm volatile(ASM : "=x"(o0) : IN(0));                                                                      \
      asm volatile(ASM : "=x"(o1) : IN(1));                                                                      \
      asm volatile(ASM : "=x"(o2) : IN(2));                                                                      \
      asm volatile(ASM : "=x"(o3) : IN(3));                                                                      \
      asm volatile(ASM : "=x"(o4) : IN(4));                                                                      \
      asm volatile(ASM : "=x"(o5) : IN(5));                                                                      \
      asm volatile(ASM : "=x"(o6) : IN(6));                                                                      \
      asm volatile(ASM : "=x"(o7) : IN(7));                                                                      \
    }                                                                                                            \
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();                         \
  }

#define REGS(i) "x"(y)
#define MEM128(i) "m"(*reinterpret_cast<const __m128i*>(buf + 256 * (i)))
#define MEM64(i) "m"(*reinterpret_cast<const int64_t*>(buf + 8 * (i)))
#define XREG(i) "x"(xs)
TF_RATE_LOOP(run_madd, "vpmaddwd %1, %1, %0", REGS)
TF_RATE_LOOP(run_zx_mem, "vpmovzxbw %1, %0", MEM128)
TF_RATE_LOOP(run_sx_reg, "vpmovsxbw %1, %0", XREG)
TF_RATE_LOOP(run_bcastq_mem, "vpbroadcastq %1, %0", MEM64)
TF_RATE_LOOP(run_vpermps, "vpermps %1, %1, %0", REGS)
TF_RATE_LOOP(run_vpermilps, "vpermilps %1, %1, %0", REGS)
TF_RATE_LOOP(run_blendv, "vblendvps %1, %1, %1, %0", REGS)

double per_cycle(double (*f)(long), double ghz) {
  const long reps = 20000000;
  return 8.0 * reps / (best_of_5(f, reps) * ghz * 1e9);
}

}  // namespace

int main() {
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent ymm vpaddd chain): %.2f GHz\n", ghz);
  const struct {
    const char* name;
    double (*f)(long);
  } kinds[] = {{"vpmaddwd ymm, ymm, ymm", run_madd},
               {"vpmovzxbw ymm, m128", run_zx_mem},
               {"vpmovsxbw ymm, xmm", run_sx_reg},
               {"vpbroadcastq ymm, m64", run_bcastq_mem},
               {"vpermps ymm, ymm, ymm", run_vpermps},
               {"vpermilps ymm, ymm, ymm", run_vpermilps},
               {"vblendvps ymm, ymm, ymm, ymm", run_blendv}};
  std::printf("| instruction (8 independent per step) | per cycle |\n|---|---|\n");
  for (const auto& k : kinds) std::printf("| %s | %.2f |\n", k.name, per_cycle(k.f, ghz));
  return 0;
}
