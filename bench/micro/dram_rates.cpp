// Memory rates a 2048-token call meets (experiment, not a runtime kernel): read-only streams of floats much larger
// than the caches (the dynamic quantization's first pass over a Linear's input), streaming (non-temporal) stores of
// floats (a large float output, Epilogue::stream_out) and both at once, on 1 and 2 threads, each thread on its own
// half. At 2048 tokens FFN2's input is 25.2 MB of floats and its output 6.3 MB: divided by these rates, the time
// those bytes take whatever the kernel does. Best of 5 passes over 256 MiB buffers; GB = 1e9 bytes.
//
//   g++ -O2 -march=native -fopenmp -o /tmp/dram_rates bench/micro/dram_rates.cpp && /tmp/dram_rates
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

constexpr size_t kBytes = size_t{256} << 20;
constexpr size_t kFloats = kBytes / sizeof(float);

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// one pass over [0, kFloats) split between `threads`: read (sum), write (streaming stores) or both; returns seconds
double pass(const float* src, float* dst, int threads, bool read, bool write) {
  double t0 = 0, t1 = 0;
  float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const size_t lo = kFloats / n * t, hi = t + 1 == n ? kFloats : kFloats / n * (t + 1);
#pragma omp barrier
#pragma omp master
    t0 = now_s();
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = lo; i < hi; i += 64) {
      if (read) {
        acc0 = _mm512_add_ps(acc0, _mm512_load_ps(src + i));
        acc1 = _mm512_add_ps(acc1, _mm512_load_ps(src + i + 16));
        acc2 = _mm512_add_ps(acc2, _mm512_load_ps(src + i + 32));
        acc3 = _mm512_add_ps(acc3, _mm512_load_ps(src + i + 48));
      }
      if (write) {
        _mm512_stream_ps(dst + i, read ? acc0 : one);
        _mm512_stream_ps(dst + i + 16, read ? acc1 : one);
        _mm512_stream_ps(dst + i + 32, read ? acc2 : one);
        _mm512_stream_ps(dst + i + 48, read ? acc3 : one);
      }
    }
    _mm_sfence();
    sink += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
#pragma omp barrier
#pragma omp master
    t1 = now_s();
  }
  if (sink == 12345.0f) std::puts("");  // keeps the reads
  return t1 - t0;
}

}  // namespace

int main() {
  float* src = static_cast<float*>(std::aligned_alloc(64, kBytes));
  float* dst = static_cast<float*>(std::aligned_alloc(64, kBytes));
  if (!src || !dst) return 1;
  std::memset(src, 0, kBytes);  // pages mapped before the timing
  std::memset(dst, 0, kBytes);
  std::printf("| threads | read GB/s | streaming write GB/s | read + streaming write GB/s (bytes both ways) |\n");
  std::printf("|---|---|---|---|\n");
  for (int threads = 1; threads <= 2; ++threads) {
    double best[3] = {1e30, 1e30, 1e30};
    for (int rep = 0; rep < 5; ++rep) {
      const double r = pass(src, dst, threads, true, false), w = pass(src, dst, threads, false, true),
                   rw = pass(src, dst, threads, true, true);
      best[0] = r < best[0] ? r : best[0];
      best[1] = w < best[1] ? w : best[1];
      best[2] = rw < best[2] ? rw : best[2];
    }
    std::printf("| %d | %.1f | %.1f | %.1f |\n", threads, kBytes / best[0] / 1e9, kBytes / best[1] / 1e9,
                2.0 * kBytes / best[2] / 1e9);
  }
  std::free(src);
  std::free(dst);
  return 0;
}
