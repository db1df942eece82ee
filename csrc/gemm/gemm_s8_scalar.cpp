// INT8 GEMM reference level: s32 dot products over the unpacked [n][k] weights (k padded to 4 with zeros).
#define TF_ISA_NS scalar
#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace scalar {

const int64_t kS8Nr = 16;
namespace {
inline int64_t kpad(int64_t k) { return (k + 3) / 4 * 4; }
}  // namespace

size_t pack_s8_size(int64_t n, int64_t k) { return static_cast<size_t>(n * kpad(k)); }

void pack_s8(const int8_t* w, int64_t ldw, int64_t n, int64_t k, void* out) {
  int8_t* dst = static_cast<int8_t*>(out);
  const int64_t kp = kpad(k);
  for (int64_t col = 0; col < n; ++col)
    for (int64_t kk = 0; kk < kp; ++kk) dst[col * kp + kk] = kk < k ? w[col * ldw + kk] : 0;
}

void gemm_s8(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
             int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  const int8_t* pb = static_cast<const int8_t*>(packed_b);
  const int64_t kp = kpad(k);
  Epilogue rest = epi;
  rest.alpha = 1.0f;
  float* tmp = epi.out_u8 ? new float[n1] : nullptr;  // one row, when requantizing
  for (int64_t m = m0; m < m1; ++m) {
    const uint8_t* ar = a + m * lda;
    float* row = epi.out_u8 ? tmp : c + m * ldc;
    for (int64_t col = n0; col < n1; ++col) {
      const int8_t* wr = pb + col * kp;
      int32_t acc = 0;
      for (int64_t kk = 0; kk < kp; ++kk) acc += static_cast<int32_t>(ar[kk]) * static_cast<int32_t>(wr[kk]);
      row[col] = (static_cast<float>(acc) - epi.row_zp[m] * static_cast<float>(epi.col_sum[col])) *
                 (epi.row_scale[m] * epi.w_scale[col]);
    }
    epilogue_f32(row + n0, ldc, 1, n1 - n0, m, n0, rest);
    if (epi.out_u8)
      quantize_u8(row + n0, n1 - n0, epi.out_u8 + m * epi.ld_out_u8 + n0, n1 - n0, 1, n1 - n0, epi.out_inv_scale,
                  epi.out_zp);
  }
  delete[] tmp;
  (void)n;
}

}  // namespace scalar
}  // namespace tf
