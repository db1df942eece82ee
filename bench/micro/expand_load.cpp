// vpexpandb forms for the bitmask-int8 GEMV (csrc/sparse/bitmask_s8_avx512vbmi2.cpp): the expand-load (memory
// operand) against a plain 64-byte load + the register-form expand, and plain loads (a dense GEMV's stream), each
// followed by vpdpbusd, 4 independent value streams, for a buffer that fits in cache and one that streams from DRAM.
//
//   g++ -O2 -mavx512f -mavx512bw -mavx512vnni -mavx512vbmi2 bench/micro/expand_load.cpp -o /tmp/expand_load
//   /tmp/expand_load > bench/results/expand_load.txt
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

static void run(int n, int reps) {
  std::vector<uint8_t> buf(static_cast<size_t>(n) * 64 * 4 + 256, 1);
  std::vector<uint64_t> masks(static_cast<size_t>(n) * 4);
  for (size_t i = 0; i < masks.size(); ++i) masks[i] = 0x5555555555555555ull ^ (i * 0x9E3779B97F4A7C15ull);
  const __m512i x = _mm512_set1_epi8(3);
  const char* names[] = {"expand-load (memory form)", "load + register expand", "plain load (dense)"};
  for (int variant = 0; variant < 3; ++variant) {
    __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    const auto t0 = std::chrono::steady_clock::now();
    for (int rep = 0; rep < reps; ++rep) {
      const uint8_t* v[4];
      for (int s = 0; s < 4; ++s) v[s] = buf.data() + static_cast<size_t>(s) * n * 64;
      for (int i = 0; i < n; ++i) {
        for (int s = 0; s < 4; ++s) {
          const uint64_t m = masks[4 * static_cast<size_t>(i) + s];
          __m512i w;
          if (variant == 0) {
            w = _mm512_maskz_expandloadu_epi8(m, v[s]);
          } else if (variant == 1) {
            __m512i raw = _mm512_loadu_si512(v[s]);
            __asm__("" : "+v"(raw));  // keep the register form
            w = _mm512_maskz_expand_epi8(m, raw);
          } else {
            w = _mm512_loadu_si512(v[s]);
          }
          v[s] += variant == 2 ? 32 : __builtin_popcountll(m);
          a[s] = _mm512_dpbusd_epi32(a[s], x, w);
        }
      }
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
    std::printf("%8.1f MiB  %-28s %.2f ns per 64-input word  (checksum %d)\n", buf.size() / 1048576.0,
                names[variant], sec * 1e9 / (4.0 * n * reps), _mm512_reduce_add_epi32(sum));
  }
}

int main() {
  run(1 << 12, 400);  // 1 MiB: cache-resident
  run(1 << 20, 3);    // 256 MiB: streams from DRAM
}
