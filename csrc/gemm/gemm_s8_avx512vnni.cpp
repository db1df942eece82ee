// INT8 GEMM on AVX-512 VNNI: u8 activations x s8 weights -> s32 with vpdpbusd (4-way dot product per lane).
// B is packed in panels of 64 columns as [k/4][64][4] bytes so that one 64-byte load feeds 16 output columns
// with their 4 consecutive k values. Micro-tile 6 rows x 64 columns = 24 zmm accumulators; each k step costs
// 4 loads + 6 broadcasts for 24 vpdpbusd. Dequantization, bias, activation and residual run on the tile while hot.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "../ops/epilogue_avx512.h"  // s8_row_scale, quant_s8_16 (quantize_rows_s8's arithmetic)
#include "../sparse/avx512_lanes.h"  // prefetch_row_ahead
#include "s8_dequant_avx512.h"

namespace tf {
namespace avx512 {

const int64_t kS8Nr = 64;
namespace {
constexpr int64_t NR = 64;
constexpr int MR = 6;

inline int64_t k4(int64_t k) { return (k + 3) / 4; }

// acc += dot4(u8 a, s8 b) per 32-bit lane. Written as inline asm because GCC 12 treats the intrinsic's
// accumulator as a fresh value and surrounds every vpdpbusd with register copies and stack spills.
#define TF_DPBUSD(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

using s8::lane_mask;

template <int R>
inline void store_row(const __m512i (&acc)[4], float* c, int64_t cols, const __m512* colsum, const __m512* wscale,
                      float rscale, float rzp) {
  const __m512 zi = _mm512_set1_ps(rzp), si = _mm512_set1_ps(rscale);
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j)
    _mm512_mask_storeu_ps(c + 16 * j, lane_mask(cols, j), s8::dequant(acc[j], zi, si, colsum[j], wscale[j]));
}

template <int R>
inline void micro(const uint8_t* a, int64_t lda, const int8_t* b, int64_t kq, float* c, int64_t ldc, int64_t cols,
                  const __m512* colsum, const __m512* wscale, const float* rscale, const float* rzp) {
  // one 1-D array per column group: GCC keeps these in registers only when every index is a constant
  __m512i a0[R], a1[R], a2[R], a3[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) a0[i] = a1[i] = a2[i] = a3[i] = _mm512_setzero_si512();
  for (int64_t kk = 0; kk < kq; ++kk) {
    const int8_t* bk = b + kk * NR * 4;
    const __m512i b0 = _mm512_load_si512(bk);
    const __m512i b1 = _mm512_load_si512(bk + 64);
    const __m512i b2 = _mm512_load_si512(bk + 128);
    const __m512i b3 = _mm512_load_si512(bk + 192);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      int32_t quad;
      std::memcpy(&quad, a + i * lda + kk * 4, 4);
      const __m512i av = _mm512_set1_epi32(quad);
      TF_DPBUSD(a0[i], av, b0);
      TF_DPBUSD(a1[i], av, b1);
      TF_DPBUSD(a2[i], av, b2);
      TF_DPBUSD(a3[i], av, b3);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    const __m512i row[4] = {a0[i], a1[i], a2[i], a3[i]};
    store_row<R>(row, c + i * ldc, cols, colsum, wscale, rscale[i], rzp[i]);
  }
}

using MicroFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, float*, int64_t, int64_t, const __m512*,
                         const __m512*, const float*, const float*);
const MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};
}  // namespace

size_t pack_s8_size(int64_t n, int64_t k) { return static_cast<size_t>((n + NR - 1) / NR * NR * k4(k) * 4); }

void pack_s8(const int8_t* w, int64_t ldw, int64_t n, int64_t k, void* out) {
  int8_t* dst = static_cast<int8_t*>(out);
  const int64_t kq = k4(k), kfull = k / 4;
  for (int64_t p = 0; p < n; p += NR) {
    const int64_t cols = n - p < NR ? n - p : NR;
    for (int64_t j = 0; j < NR; ++j) {
      int8_t* d = dst + j * 4;
      if (j >= cols) {
        for (int64_t kk = 0; kk < kq; ++kk) std::memset(d + kk * NR * 4, 0, 4);
        continue;
      }
      const int8_t* src = w + (p + j) * ldw;
      for (int64_t kk = 0; kk < kfull; ++kk) std::memcpy(d + kk * NR * 4, src + kk * 4, 4);
      if (kfull < kq)
        for (int64_t t = 0; t < 4; ++t) d[kfull * NR * 4 + t] = kfull * 4 + t < k ? src[kfull * 4 + t] : 0;
    }
    dst += kq * NR * 4;
  }
}

void quant_pack_kn_s8(const float* x, int64_t ldx, int64_t k, int64_t n, void* out, float* scale_out,
                      int32_t* sum_out) {
  // Column ranges: one symmetric scale per output column n (a channel of V), over all k rows. Four 16-column groups
  // at a time: each group's maximum over the k rows is a chain of dependent vmaxps, four chains hide one another's
  // latency (max is exact in any order: the same scales)
  constexpr int kGroups = 4;
  const int64_t nv = (n + 15) / 16;
  for (int64_t v0 = 0; v0 < nv; v0 += kGroups) {
    __m512 am[kGroups];
    __mmask16 mks[kGroups];
#pragma GCC unroll 4
    for (int g = 0; g < kGroups; ++g) {
      am[g] = _mm512_setzero_ps();
      mks[g] = v0 + g < nv ? lane_mask(n - 16 * (v0 + g), 0) : 0;
    }
    for (int64_t r = 0; r < k; ++r) {
      if (v0 == 0) prefetch_row_ahead(x, ldx, r, k, n);  // the first pass fetches the rows (one head's V slice)
#pragma GCC unroll 4
      for (int g = 0; g < kGroups; ++g)
        am[g] = _mm512_max_ps(am[g], _mm512_abs_ps(_mm512_maskz_loadu_ps(mks[g], x + r * ldx + 16 * (v0 + g))));
    }
    for (int64_t v = v0; v < v0 + kGroups && v < nv; ++v) {
      const __mmask16 mk = mks[v - v0];
      const __m512 amax = am[v - v0];
      const __m512 scale = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ),
                                                _mm512_set1_ps(1.0f), _mm512_div_ps(amax, _mm512_set1_ps(127.0f)));
      _mm512_mask_storeu_ps(scale_out + 16 * v, mk, scale);
      const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), scale);
      __m512i sum = _mm512_setzero_si512();
      // 4 rows at a time become one 32-bit word per column: exactly the [k/4][64][4] VNNI panel layout
      int8_t* panel = static_cast<int8_t*>(out) + (16 * v / NR) * k4(k) * NR * 4 + (16 * v % NR) * 4;
      for (int64_t r = 0; r < k; r += 4) {
        __m512i word = _mm512_setzero_si512();
        for (int t = 0; t < 4; ++t) {
          if (r + t >= k) break;
          const __m512 y = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + (r + t) * ldx + 16 * v), inv);
          __m512i q = _mm512_cvtps_epi32(_mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
          q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
          sum = _mm512_add_epi32(sum, q);
          word = _mm512_or_si512(word, _mm512_slli_epi32(_mm512_and_si512(q, _mm512_set1_epi32(0xFF)), 8 * t));
        }
        _mm512_store_si512(panel + (r / 4) * NR * 4, word);
      }
      _mm512_mask_storeu_epi32(sum_out + 16 * v, mk, sum);
    }
  }
  // columns of the last panel past n stay zero
  const int64_t padded = (n + NR - 1) / NR * NR;
  for (int64_t c = (n + 15) / 16 * 16; c < padded; c += 16) {
    int8_t* panel = static_cast<int8_t*>(out) + (c / NR) * k4(k) * NR * 4 + (c % NR) * 4;
    for (int64_t r = 0; r < k; r += 4) _mm512_store_si512(panel + (r / 4) * NR * 4, _mm512_setzero_si512());
  }
}

// quantize_rows_s8 and pack_s8 in one pass (attention's K, W [n][k]: a token per row): per 16 rows, each row's
// symmetric scale from its absolute maximum, then per 64 inputs each row's quantized bytes in one register (16
// quads) and a 16 x 16 dword transpose that turns the 16 rows' quads into pack_s8's [quad][column][4] rows: 16
// columns' 64 bytes per quad, one store. The same arithmetic as quantize_rows_s8 (scale, 1 / scale, round,
// clamp to +-127: s8_row_scale, quant_s8_16) and the same zero padding as pack_s8, so the same bytes.
void quant_pack_nk_s8(const float* w, int64_t ldw, int64_t n, int64_t k, void* out, float* scale_out,
                      int32_t* sum_out) {
  const int64_t kq = k4(k), np = (n + NR - 1) / NR * NR;
  int8_t* base = static_cast<int8_t*>(out);
  for (int64_t c0 = 0; c0 < np; c0 += 16) {  // 16 columns (rows of W) of one panel
    const int64_t rows = n - c0 < 16 ? (n - c0 > 0 ? n - c0 : 0) : 16;
    int8_t* panel = base + (c0 / NR) * kq * NR * 4 + (c0 % NR) * 4;
    __m512 inv[16];
    __m512i sum[16];
    for (int64_t i = 0; i < 16; ++i) {
      sum[i] = _mm512_setzero_si512();
      inv[i] = _mm512_setzero_ps();  // rows past n quantize 0.0 to 0 bytes
      if (i >= rows) continue;
      const float* wr = w + (c0 + i) * ldw;
      __m512 am = _mm512_setzero_ps();
      for (int64_t j = 0; j < k; j += 16)
        am = _mm512_max_ps(am, _mm512_abs_ps(_mm512_maskz_loadu_ps(lane_mask(k - j, 0), wr + j)));
      const float scale = s8_row_scale(_mm512_reduce_max_ps(am));
      scale_out[c0 + i] = scale;
      inv[i] = _mm512_set1_ps(1.0f / scale);
    }
    for (int64_t q0 = 0; q0 < kq; q0 += 16) {  // 16 quads = 64 inputs
      __m512i r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        if (i >= rows) {
          r[i] = _mm512_setzero_si512();
          continue;
        }
        const float* wr = w + (c0 + i) * ldw + 4 * q0;
        __m512i iv[4];
#pragma GCC unroll 4
        for (int t = 0; t < 4; ++t) {
          iv[t] = quant_s8_16(_mm512_maskz_loadu_ps(lane_mask(k - 4 * q0 - 16 * t, 0), wr + 16 * t), inv[i]);
          sum[i] = _mm512_add_epi32(sum[i], iv[t]);  // masked-off lanes loaded 0 and stay 0
        }
        r[i] = packed_bytes64<true>(iv);  // the 64 bytes in input order: dword q = quad q0 + q of this row
      }
      transpose16(r);  // r[q]: quad q0 + q of the 16 rows, dword i = row i
      for (int64_t q = 0; q < 16 && q0 + q < kq; ++q) _mm512_storeu_si512(panel + (q0 + q) * NR * 4, r[q]);
    }
    if (sum_out)
      for (int64_t i = 0; i < rows; ++i) sum_out[c0 + i] = _mm512_reduce_add_epi32(sum[i]);
  }
}

// A tile multiplies 16 rows whatever is in them, so calls of fewer rows (decode steps) stay on the VNNI
// micro-kernel; the threshold is that tile height, not a tuned value.
const int64_t kAmxMinRows = 16;

void gemm_s8(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
             int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  if (m1 - m0 >= kAmxMinRows && cpu_has_amx_int8()) {
    gemm_s8_amx(a, lda, packed_b, n, k, c, ldc, m0, m1, n0, n1, epi);
    return;
  }
  const int8_t* pb = static_cast<const int8_t*>(packed_b);
  const int64_t kq = k4(k);
  Epilogue rest = epi;
  rest.alpha = 1.0f;  // dequantization is done in the micro-kernel
  for (int64_t p = n0; p < n1; p += NR) {
    const int64_t cols = (n1 - p < NR ? n1 - p : NR);
    __m512 colsum[4], wscale[4];
    s8::panel_scales<4>(epi, p, cols, colsum, wscale);
    const int8_t* bp = pb + p * kq * 4;
    alignas(64) float tile[MR * NR];
    for (int64_t m = m0; m < m1; m += MR) {
      const int rows = static_cast<int>(m1 - m < MR ? m1 - m : MR);
      float* dst = epi.out_u8 ? tile : c + m * ldc + p;
      const int64_t ldd = epi.out_u8 ? NR : ldc;
      kMicro[rows](a + m * lda, lda, bp, kq, dst, ldd, cols, colsum, wscale, epi.row_scale + m, epi.row_zp + m);
      s8::finish_tile(dst, ldd, rows, cols, m, p, rest, epi);
    }
  }
  (void)n;
}

}  // namespace avx512
}  // namespace tf
