// FP32 GEMM for AVX2+FMA: B packed in panels of 16 columns, micro-tile 6 rows x 16 columns (12 ymm accumulators,
// f32_tile_avx2.h).
// Every loop over the tile's rows is unrolled: a single loop indexing the accumulator arrays by a variable made GCC
// keep them in memory, and the k loop then stored 12 ymm per step.
#define TF_ISA_NS avx2
#include <immintrin.h>

#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "f32_tile_avx2.h"

namespace tf {
namespace avx2 {

const int64_t kF32Nr = 16;
namespace {
constexpr int64_t NR = 16;
constexpr int MR = 6;
constexpr int64_t KC = 256, MC = 192;  // cache blocking (pack_f32.inc): A block 192 KB in L2, B slice 16 KB in L1
constexpr int64_t row_block(int64_t) { return MC; }

template <int R>
inline void micro(const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc, int64_t cols,
                  bool accumulate) {
  __m256 c0[R], c1[R];
  if (!accumulate) {
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  } else if (cols == NR) {
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      c0[i] = _mm256_loadu_ps(c + i * ldc);
      c1[i] = _mm256_loadu_ps(c + i * ldc + 8);
    }
  } else {
    alignas(32) float tmp[NR] = {};
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      std::memcpy(tmp, c + i * ldc, cols * 4);
      c0[i] = _mm256_load_ps(tmp);
      c1[i] = _mm256_load_ps(tmp + 8);
    }
  }
  fma_tile<R>(a, lda, b, k, c0, c1);
  store_tile<R>(c, ldc, cols, c0, c1);
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, bool);
const MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};
}  // namespace

#define TF_F32_DRIVER 1
#include "pack_f32.inc"

}  // namespace avx2
}  // namespace tf
