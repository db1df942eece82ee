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

size_t pack_f32_size(int64_t n, int64_t k) { return static_cast<size_t>((n + NR - 1) / NR * NR * k) * 4; }

void pack_f32_nk(const float* w, int64_t ldw, int64_t n, int64_t k, float* out) {
  for (int64_t p = 0; p < n; p += NR) {
    float* dst = out + p * k;
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t j = 0; j < NR; ++j) dst[kk * NR + j] = p + j < n ? w[(p + j) * ldw + kk] : 0.0f;
  }
}

void pack_f32_kn(const float* b, int64_t ldb, int64_t n, int64_t k, float* out) {
  for (int64_t p = 0; p < n; p += NR) {
    float* dst = out + p * k;
    const int64_t cols = n - p < NR ? n - p : NR;
    for (int64_t kk = 0; kk < k; ++kk) {
      std::memcpy(dst + kk * NR, b + kk * ldb + p, cols * 4);
      for (int64_t j = cols; j < NR; ++j) dst[kk * NR + j] = 0.0f;
    }
  }
}

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
