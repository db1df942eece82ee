// INT8 GEMM for AVX2 (no VNNI): weights are widened to s16 at pack time and multiplied with vpmaddwd, which is
// exact (vpmaddubsw would saturate u8*s8 pair sums above 32767). B panels of 16 columns as [k/2][16][2] s16;
// micro-tile 6 rows x 16 columns (12 ymm accumulators). The tile loops are unrolled so the accumulators stay in
// registers (a rolled store loop spilled them on every k step). Broadcasting the pair by unpacking a broadcast word
// (no scalar shifts) was tried and was slower on Zen 1 in a development timing (not kept).
#define TF_ISA_NS avx2
#include <immintrin.h>

#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace avx2 {

const int64_t kS8Nr = 16;
namespace {
constexpr int64_t NR = 16;
constexpr int MR = 6;

inline int64_t k2(int64_t k) { return (k + 3) / 4 * 2; }  // pairs, k padded to the common multiple of 4

template <int R>
inline void micro(const uint8_t* a, int64_t lda, const int16_t* b, int64_t kp, float* c, int64_t ldc, int64_t cols,
                  const float* colsum, const float* wscale, const float* rscale, const float* rzp) {
  __m256i acc0[R], acc1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm256_setzero_si256();
  for (int64_t kk = 0; kk < kp; ++kk) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + kk * NR * 2));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + kk * NR * 2 + 16));
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const uint8_t* ap = a + i * lda + kk * 2;
      const __m256i av = _mm256_set1_epi32(static_cast<int32_t>(ap[0]) | (static_cast<int32_t>(ap[1]) << 16));
      acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(av, b0));
      acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(av, b1));
    }
  }
  alignas(32) int32_t tmp[NR];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), acc0[i]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 8), acc1[i]);
    float* row = c + i * ldc;
    for (int64_t j = 0; j < cols; ++j)
      row[j] = (static_cast<float>(tmp[j]) - rzp[i] * colsum[j]) * (rscale[i] * wscale[j]);
  }
}

using MicroFn = void (*)(const uint8_t*, int64_t, const int16_t*, int64_t, float*, int64_t, int64_t, const float*,
                         const float*, const float*, const float*);
const MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};
}  // namespace

size_t pack_s8_size(int64_t n, int64_t k) { return static_cast<size_t>((n + NR - 1) / NR * NR * k2(k) * 2 * 2); }

void pack_s8(const int8_t* w, int64_t ldw, int64_t n, int64_t k, void* out) {
  int16_t* dst = static_cast<int16_t*>(out);
  const int64_t kp = k2(k);
  for (int64_t p = 0; p < n; p += NR)
    for (int64_t kk = 0; kk < kp; ++kk)
      for (int64_t j = 0; j < NR; ++j)
        for (int64_t t = 0; t < 2; ++t) {
          const int64_t col = p + j, kidx = kk * 2 + t;
          *dst++ = (col < n && kidx < k) ? w[col * ldw + kidx] : 0;
        }
}

void gemm_s8(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
             int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  const int16_t* pb = static_cast<const int16_t*>(packed_b);
  const int64_t kp = k2(k);
  Epilogue rest = epi;
  rest.alpha = 1.0f;
  float colsum[NR];
  for (int64_t p = n0; p < n1; p += NR) {
    const int64_t cols = (n1 - p < NR ? n1 - p : NR);
    for (int64_t j = 0; j < cols; ++j) colsum[j] = static_cast<float>(epi.col_sum[p + j]);
    const int16_t* bp = pb + p * kp * 2;
    alignas(32) float tile[MR * NR];
    for (int64_t m = m0; m < m1; m += MR) {
      const int rows = static_cast<int>(m1 - m < MR ? m1 - m : MR);
      float* dst = epi.out_u8 ? tile : c + m * ldc + p;
      const int64_t ldd = epi.out_u8 ? NR : ldc;
      kMicro[rows](a + m * lda, lda, bp, kp, dst, ldd, cols, colsum, epi.w_scale + p, epi.row_scale + m,
                   epi.row_zp + m);
      epilogue_f32(dst, ldd, rows, cols, m, p, rest);
      if (epi.out_u8)
        for (int i = 0; i < rows; ++i)
          quantize_u8(tile + i * NR, NR, epi.out_u8 + (m + i) * epi.ld_out_u8 + p, cols, 1, cols, epi.out_inv_scale,
                      epi.out_zp);
    }
  }
  (void)n;
}

}  // namespace avx2
}  // namespace tf
