// BF16 GEMM on AVX512-BF16: bf16 weights x bf16 activations with fp32 accumulation (vdpbf16ps: two products per
// 32-bit lane). B is packed in panels of 64 columns as [k/2][64][2] bf16, so one 64-byte load holds 16 columns x
// 2 consecutive k, multiplied against a broadcast bf16 pair of one activation row. Micro-tile 6 x 64 (24 zmm
// accumulators). Compiled with -mavx512bf16 and only ever called when CPUID reports AVX512_BF16.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "../sparse/avx512_lanes.h"
#include "../ops/softmax_avx512.h"

namespace tf {
namespace avx512 {

namespace {
constexpr int64_t NR = 64;
constexpr int MR = 6;

inline int64_t k2(int64_t k) { return (k + 1) / 2; }

// acc += a.b over bf16 pairs; inline asm for the same reason as vpdpbusd (GCC 12 spills around the intrinsic)
#define TF_DPBF16(acc, a, b) asm("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

template <int R>
inline void micro(const uint16_t* a, int64_t lda, const uint16_t* b, int64_t kp, float* c, int64_t ldc,
                  int64_t cols) {
  __m512 a0[R], a1[R], a2[R], a3[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) a0[i] = a1[i] = a2[i] = a3[i] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < kp; ++kk) {
    const uint16_t* bk = b + kk * NR * 2;
    const __m512 b0 = _mm512_castsi512_ps(_mm512_load_si512(bk));
    const __m512 b1 = _mm512_castsi512_ps(_mm512_load_si512(bk + 32));
    const __m512 b2 = _mm512_castsi512_ps(_mm512_load_si512(bk + 64));
    const __m512 b3 = _mm512_castsi512_ps(_mm512_load_si512(bk + 96));
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      int32_t pair;
      std::memcpy(&pair, a + i * lda + kk * 2, 4);
      const __m512 av = _mm512_castsi512_ps(_mm512_set1_epi32(pair));
      TF_DPBF16(a0[i], av, b0);
      TF_DPBF16(a1[i], av, b1);
      TF_DPBF16(a2[i], av, b2);
      TF_DPBF16(a3[i], av, b3);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    const __m512 row[4] = {a0[i], a1[i], a2[i], a3[i]};
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __mmask16 mk = first(cols - 16 * j);
      _mm512_mask_storeu_ps(c + i * ldc + 16 * j, mk, row[j]);
    }
  }
}

using MicroFn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t, float*, int64_t, int64_t);
const MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};

// Writes the [panel of 64][k/2][64][2] layout; bits(col, kidx) gives the bf16 of W[col][kidx] (in range only).
template <class Bits>
void pack_pairs(int64_t n, int64_t k, uint16_t* dst, Bits bits) {
  const int64_t kp = k2(k);
  for (int64_t p = 0; p < n; p += NR) {
    for (int64_t j = 0; j < NR; ++j) {
      uint16_t* d = dst + j * 2;
      const int64_t col = p + j;
      for (int64_t kk = 0; kk < kp; ++kk)
        for (int64_t t = 0; t < 2; ++t) {
          const int64_t kidx = kk * 2 + t;
          d[kk * NR * 2 + t] = (col < n && kidx < k) ? bits(col, kidx) : uint16_t{0};
        }
    }
    dst += kp * NR * 2;
  }
}
}  // namespace

const int64_t kBf16Nr = NR;

size_t pack_bf16_size(int64_t n, int64_t k) { return static_cast<size_t>((n + NR - 1) / NR * NR * k2(k) * 2 * 2); }

void pack_bf16(const uint16_t* w, int64_t n, int64_t k, void* out) {
  pack_pairs(n, k, static_cast<uint16_t*>(out), [&](int64_t col, int64_t kidx) { return w[col * k + kidx]; });
}

// B given as X[k][n] (attention's V): pairs of rows become the [k/2][64][2] panel words directly
void pack_bf16_kn(const float* x, int64_t ldx, int64_t n, int64_t k, void* out) {
  uint16_t* dst = static_cast<uint16_t*>(out);
  const int64_t kp = k2(k), padded = (n + NR - 1) / NR * NR;
  for (int64_t c = 0; c < padded; c += 16) {
    const __mmask16 mk = first(n - c);
    uint16_t* panel = dst + (c / NR) * kp * NR * 2 + (c % NR) * 2;
    for (int64_t kk = 0; kk < kp; ++kk) {
      const __m512 r0 = _mm512_maskz_loadu_ps(mk, x + (2 * kk) * ldx + c);
      const __m512 r1 = 2 * kk + 1 < k ? _mm512_maskz_loadu_ps(mk, x + (2 * kk + 1) * ldx + c) : _mm512_setzero_ps();
      const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(r0));
      const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(r1));
      _mm512_store_si512(panel + kk * NR * 2, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

// B given as W[n][k] (attention's K) in float: converted (round to nearest even, vcvtne2ps2bf16) and packed in
// one pass, 16 columns x 16 pairs at a time: each column's 32 floats become 16 dwords of bf16 pairs, and a 16x16
// dword transpose turns them into 16 panel rows (one per pair) of 16 columns. Columns past n and k past its end
// are zero, as pack_pairs writes them.
void pack_bf16_nk_f32(const float* w, int64_t ldw, int64_t n, int64_t k, void* out) {
  uint16_t* dst = static_cast<uint16_t*>(out);
  const int64_t kp = k2(k), padded = (n + NR - 1) / NR * NR;
  for (int64_t c = 0; c < padded; c += 16) {
    uint16_t* panel = dst + (c / NR) * kp * NR * 2 + (c % NR) * 2;
    for (int64_t g = 0; g < kp; g += 16) {  // pairs g .. g + 15: k from 2g
      const __mmask16 lo_mask = first(k - 2 * g), hi_mask = first(k - 2 * g - 16);
      __m512i r[16];
      for (int64_t i = 0; i < 16; ++i) {
        if (c + i >= n) {
          r[i] = _mm512_setzero_si512();
          continue;
        }
        const float* row = w + (c + i) * ldw + 2 * g;
        r[i] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi_mask, row + 16),
                                            _mm512_maskz_loadu_ps(lo_mask, row));
      }
      transpose16(r);
      for (int64_t t = 0; t < 16 && g + t < kp; ++t) _mm512_store_si512(panel + (g + t) * NR * 2, r[t]);
    }
  }
}

// softmax_rows with its scaling pass fused into the conversion: the exponentials (exp16_bf16: bf16 precision is
// all they need) stored in place with their sum, R rows side by side (exp_rows_inv_sum), then each row scaled and
// rounded to bf16 (nearest even) into y (row stride ldy, zero padded to ldy); x is scratch afterwards.
template <int R>
void softmax_bf16_rows_r(float* x, int64_t cols, int64_t ld, uint16_t* y, int64_t ldy) {
  float inv_sum[R];
  exp_rows_inv_sum<R, exp16_bf16>(x, ld, cols, inv_sum);
  for (int64_t jj = 0; jj < ldy; jj += 32)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const float* xr = x + i * ld;
      const __m512 inv = _mm512_set1_ps(inv_sum[i]);
      const __m512 e0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(first(cols - jj), xr + jj), inv);
      const __m512 e1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(first(cols - jj - 16), xr + jj + 16), inv);
      const __mmask32 sk = ldy - jj >= 32 ? 0xFFFFFFFFu : static_cast<__mmask32>((1ull << (ldy - jj)) - 1);
      _mm512_mask_storeu_epi16(y + i * ldy + jj, sk, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    }
}

void softmax_bf16_rows(float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) softmax_bf16_rows_r<4>(x + r * ld, cols, ld, y + r * ldy, ldy);
  for (; r < rows; ++r) softmax_bf16_rows_r<1>(x + r * ld, cols, ld, y + r * ldy, ldy);
}

void to_bf16_rows(const float* x, int64_t ldx, uint16_t* y, int64_t ldy, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    uint16_t* yr = y + r * ldy;
    int64_t j = 0;
    for (; j + 32 <= cols; j += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xr + j + 16), _mm512_loadu_ps(xr + j));
      _mm512_storeu_si512(yr + j, (__m512i)v);
    }
    for (; j < cols; ++j) {  // round to nearest even, as vcvtne2ps2bf16 does
      uint32_t u;
      std::memcpy(&u, xr + j, 4);
      yr[j] = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }
    for (; j < ldy; ++j) yr[j] = 0;
  }
}

// gemm_bf16_amx.cpp (compiled with AMX-TILE / AMX-BF16): the same packing on tiles
void gemm_bf16_amx(const uint16_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c,
                   int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi);

// A tile multiplies 16 rows whatever is in them: calls of fewer rows stay on vdpbf16ps
constexpr int64_t kAmxMinRows = 16;

void gemm_bf16(const uint16_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
               int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  if (m1 - m0 >= kAmxMinRows && cpu_has_amx_bf16()) {
    gemm_bf16_amx(a, lda, packed_b, n, k, c, ldc, m0, m1, n0, n1, epi);
    return;
  }
  const uint16_t* pb = static_cast<const uint16_t*>(packed_b);
  const int64_t kp = k2(k);
  for (int64_t p = n0; p < n1; p += NR) {
    const int64_t cols = (n1 - p < NR ? n1 - p : NR);
    const uint16_t* bp = pb + p * kp * 2;
    for (int64_t m = m0; m < m1; m += MR) {
      const int rows = static_cast<int>(m1 - m < MR ? m1 - m : MR);
      kMicro[rows](a + m * lda, lda, bp, kp, c + m * ldc + p, ldc, cols);
      epilogue_f32(c + m * ldc + p, ldc, rows, cols, m, p, epi);
    }
  }
  (void)n;
}

}  // namespace avx512
}  // namespace tf
