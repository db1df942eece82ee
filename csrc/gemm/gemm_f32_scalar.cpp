// FP32 GEMM reference level: plain loops over the same panel layout (16 columns), baseline x86-64 flags only.
// It doubles as the reference the wider kernels are tested against.
#define TF_ISA_NS scalar
#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace scalar {

const int64_t kF32Nr = 16;
namespace {
constexpr int64_t NR = 16;
}

#include "pack_f32.inc"

void gemm_f32(const float* a, int64_t lda, const float* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
              int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  float acc[NR];
  for (int64_t p = n0; p < n1; p += NR) {
    const float* bp = packed_b + p * k;
    const int64_t cols = (n1 - p < NR ? n1 - p : NR);
    for (int64_t m = m0; m < m1; ++m) {
      for (int64_t j = 0; j < NR; ++j) acc[j] = 0.0f;
      const float* ar = a + m * lda;
      for (int64_t kk = 0; kk < k; ++kk) {
        const float av = ar[kk];
        for (int64_t j = 0; j < NR; ++j) acc[j] += av * bp[kk * NR + j];
      }
      std::memcpy(c + m * ldc + p, acc, cols * 4);
      epilogue_f32(c + m * ldc + p, ldc, 1, cols, m, p, epi);
    }
  }
  (void)n;
}

}  // namespace scalar
}  // namespace tf
