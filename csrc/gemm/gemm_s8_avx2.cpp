// INT8 GEMM for AVX2 (no VNNI): weights are widened to s16 at pack time and multiplied with vpmaddwd, which is
// exact (vpmaddubsw would saturate u8*s8 pair sums above 32767). B panels of 16 columns as [k/2][16][2] s16;
// micro-tile 5 rows x 16 columns (10 ymm accumulators). The tile loops are unrolled so the accumulators stay in
// registers (a rolled store loop spilled them on every k step). With 6 rows (12 accumulators, as the FP32 tile) gcc
// kept one accumulator on the stack, a load and a store per k step: vpmaddwd needs a register for its product,
// where an FMA accumulates in place (bench/results/kernel_rates_avx2_zen3_mr5.md against kernel_rates_avx2_zen3.md).
// A row's activation pair (a[2kk], a[2kk+1]) reaches every dword zero-extended by one 4-byte broadcast load and one
// vpshufb: 5 vector ops per row and k pair (two vpmaddwd, two vpaddd, the shuffle) where assembling the pair in a
// scalar register (two byte loads, shift, or, vmovd, vpbroadcastd) took 10 (bench/results/gemm_s8_avx2_pairs_ab.md).
// The last pairs, whose 4-byte load would read past the row, are assembled from bytes inside it (zeros past k).
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
constexpr int MR = 5;

inline int64_t k2(int64_t k) { return (k + 3) / 4 * 2; }  // pairs, k padded to the common multiple of 4

// pairs (a[2kk], a[2kk+1]) of a 4-byte broadcast, each zero-extended to the 16-bit halves of a dword
inline __m256i pair_u16(const uint8_t* ap) {
  int32_t four;
  std::memcpy(&four, ap, 4);
  const __m256i lo_pair = _mm256_setr_epi8(0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1, 0, -1,
                                           1, -1, 0, -1, 1, -1, 0, -1, 1, -1);
  return _mm256_shuffle_epi8(_mm256_set1_epi32(four), lo_pair);
}

template <int R>
inline void micro(const uint8_t* a, int64_t lda, const int16_t* b, int64_t k, float* c, int64_t ldc, int64_t cols,
                  const float* colsum, const float* wscale, const float* rscale, const float* rzp) {
  const int64_t kp = k2(k);
  const int64_t kvec = k >= 4 ? (k - 4) / 2 + 1 : 0;  // pairs whose 4-byte load stays inside the row
  __m256i acc0[R], acc1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm256_setzero_si256();
  int64_t kk = 0;
  for (; kk < kvec; ++kk) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + kk * NR * 2));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + kk * NR * 2 + 16));
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256i av = pair_u16(a + i * lda + kk * 2);
      acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(av, b0));
      acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(av, b1));
    }
  }
  for (; kk < kp; ++kk) {  // the row's last pairs (B holds zeros past k)
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + kk * NR * 2));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + kk * NR * 2 + 16));
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const uint8_t* ap = a + i * lda;
      const int32_t lo = 2 * kk < k ? ap[2 * kk] : 0, hi = 2 * kk + 1 < k ? ap[2 * kk + 1] : 0;
      const __m256i av = _mm256_set1_epi32(lo | (hi << 16));
      acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(av, b0));
      acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(av, b1));
    }
  }
  // (acc - zp[row] * colsum[n]) * (scale[row] * w_scale[n]), the scalar level's float ops in its order; colsum and
  // wscale are the panel's 16 columns, zero past `cols`
  const __m256 cs0 = _mm256_load_ps(colsum), cs1 = _mm256_load_ps(colsum + 8);
  const __m256 ws0 = _mm256_load_ps(wscale), ws1 = _mm256_load_ps(wscale + 8);
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    const __m256 zp = _mm256_set1_ps(rzp[i]), rs = _mm256_set1_ps(rscale[i]);
    const __m256 y0 = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(acc0[i]), _mm256_mul_ps(zp, cs0)),
                                    _mm256_mul_ps(rs, ws0));
    const __m256 y1 = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(acc1[i]), _mm256_mul_ps(zp, cs1)),
                                    _mm256_mul_ps(rs, ws1));
    float* row = c + i * ldc;
    if (cols == NR) {
      _mm256_storeu_ps(row, y0);
      _mm256_storeu_ps(row + 8, y1);
    } else {
      alignas(32) float tmp[NR];
      _mm256_store_ps(tmp, y0);
      _mm256_store_ps(tmp + 8, y1);
      std::memcpy(row, tmp, static_cast<size_t>(cols) * sizeof(float));
    }
  }
}

using MicroFn = void (*)(const uint8_t*, int64_t, const int16_t*, int64_t, float*, int64_t, int64_t, const float*,
                         const float*, const float*, const float*);
const MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>};
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
  alignas(32) float colsum[NR], wscale[NR];
  for (int64_t p = n0; p < n1; p += NR) {
    const int64_t cols = (n1 - p < NR ? n1 - p : NR);
    for (int64_t j = 0; j < NR; ++j) {
      colsum[j] = j < cols ? static_cast<float>(epi.col_sum[p + j]) : 0.0f;
      wscale[j] = j < cols ? epi.w_scale[p + j] : 0.0f;
    }
    const int16_t* bp = pb + p * kp * 2;
    alignas(32) float tile[MR * NR];
    for (int64_t m = m0; m < m1; m += MR) {
      const int rows = static_cast<int>(m1 - m < MR ? m1 - m : MR);
      float* dst = epi.out_u8 ? tile : c + m * ldc + p;
      const int64_t ldd = epi.out_u8 ? NR : ldc;
      kMicro[rows](a + m * lda, lda, bp, k, dst, ldd, cols, colsum, wscale, epi.row_scale + m,
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
