// INT8 weights as permuted quads on AVX-512 VNNI + VBMI (PermS8, docs/kernels.md "Permuted quads"): the dense
// VNNI GEMM's loop with the activations picked per lane. For each 64-input chunk a token's 64 activation bytes sit
// in one register; per step, one vpermb hands each of 16 output rows the 4 activations its 4 stored codes multiply
// and one vpdpbusd adds the products. A 2:4 or 4:8 row holds 4 non-zeros in every 8 inputs, so a chunk takes 8
// steps where the dense kernel takes 16 vpdpbusd; vpermb and vpdpbusd issue side by side on Zen 4 (about 1.4
// cycles per pair against 1 per vpdpbusd). Compiled with -mavx512vbmi in its own translation unit; the loader
// builds PermS8 weights only when cpu_has_avx512_vbmi().
#define TF_ISA_NS avx512
#include <immintrin.h>

#include "../core/isa.h"
#include "../gemm/s8_dequant_avx512.h"
#include "../kernels/decl.inc"

namespace tf {
namespace avx512 {

namespace {
constexpr int MR = 8;  // tokens per micro-tile

// acc += dot4(u8 a, s8 b) per 32-bit lane; inline asm as in gemm_s8_avx512vnni.cpp (GCC 12 otherwise copies and
// spills the accumulator around every intrinsic call)
#define TF_DPBUSD(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

// rows a[0 .. R) x the panel's 32 output columns over every chunk; sums left in acc
template <int R>
inline void micro(const uint8_t* a, int64_t lda, const uint8_t* rec, const uint8_t* steps, int64_t chunks,
                  __mmask64 last_mask, __m512i (&acc0)[MR], __m512i (&acc1)[MR]) {
#pragma GCC unroll 8
  for (int t = 0; t < R; ++t) acc0[t] = acc1[t] = _mm512_setzero_si512();
  for (int64_t c = 0; c < chunks; ++c) {
    const __mmask64 mk = c + 1 == chunks ? last_mask : ~0ull;  // inputs past k are never read
    __m512i x[R];
#pragma GCC unroll 8
    for (int t = 0; t < R; ++t) x[t] = _mm512_maskz_loadu_epi8(mk, a + t * lda + 64 * c);
    for (int s = steps[c]; s > 0; --s, rec += 256) {
      const __m512i i0 = _mm512_load_si512(rec), w0 = _mm512_load_si512(rec + 64);
      const __m512i i1 = _mm512_load_si512(rec + 128), w1 = _mm512_load_si512(rec + 192);
#pragma GCC unroll 8
      for (int t = 0; t < R; ++t) {
        TF_DPBUSD(acc0[t], _mm512_permutexvar_epi8(i0, x[t]), w0);
        TF_DPBUSD(acc1[t], _mm512_permutexvar_epi8(i1, x[t]), w1);
      }
    }
  }
}

template <int R>
void micro_store(const uint8_t* a, int64_t lda, const uint8_t* rec, const uint8_t* steps, int64_t chunks,
                 __mmask64 last_mask, float* c, int64_t ldc, int64_t cols, const __m512 (&colsum)[2],
                 const __m512 (&wscale)[2], const float* rscale, const float* rzp) {
  __m512i acc0[MR], acc1[MR];
  micro<R>(a, lda, rec, steps, chunks, last_mask, acc0, acc1);
#pragma GCC unroll 8
  for (int t = 0; t < R; ++t) {
    const __m512 zi = _mm512_set1_ps(rzp[t]), si = _mm512_set1_ps(rscale[t]);
    _mm512_mask_storeu_ps(c + t * ldc, s8::lane_mask(cols, 0), s8::dequant(acc0[t], zi, si, colsum[0], wscale[0]));
    _mm512_mask_storeu_ps(c + t * ldc + 16, s8::lane_mask(cols, 1),
                          s8::dequant(acc1[t], zi, si, colsum[1], wscale[1]));
  }
}

using MicroFn = void (*)(const uint8_t*, int64_t, const uint8_t*, const uint8_t*, int64_t, __mmask64, float*,
                         int64_t, int64_t, const __m512 (&)[2], const __m512 (&)[2], const float*, const float*);
const MicroFn kMicro[MR + 1] = {nullptr,        micro_store<1>, micro_store<2>, micro_store<3>, micro_store<4>,
                                micro_store<5>, micro_store<6>, micro_store<7>, micro_store<8>};
}  // namespace

void gemm_perm_s8(const uint8_t* a, int64_t lda, const PermS8& w, float* c, int64_t ldc, int64_t m0, int64_t m1,
                  int64_t n0, int64_t n1, const Epilogue& epi) {
  const int64_t chunks = (w.k + kPermChunk - 1) / kPermChunk;
  const int64_t tail = w.k - (chunks - 1) * kPermChunk;
  const __mmask64 last_mask = tail >= 64 ? ~0ull : (1ull << tail) - 1;
  Epilogue rest = epi;
  rest.alpha = 1.0f;  // dequantization is done in the micro-kernel
  for (int64_t p = n0; p < n1; p += kPermPanel) {
    const int64_t cols = n1 - p < kPermPanel ? n1 - p : kPermPanel;
    __m512 colsum[2], wscale[2];
    s8::panel_scales<2>(epi, p, cols, colsum, wscale);
    const int64_t panel = p / kPermPanel;
    const uint8_t* rec = w.records + w.panel_off[panel];
    const uint8_t* steps = w.steps + panel * chunks;
    alignas(64) float tile[MR * kPermPanel];
    for (int64_t m = m0; m < m1; m += MR) {
      const int rows = static_cast<int>(m1 - m < MR ? m1 - m : MR);
      float* dst = epi.out_u8 ? tile : c + m * ldc + p;
      const int64_t ldd = epi.out_u8 ? kPermPanel : ldc;
      kMicro[rows](a + m * lda, lda, rec, steps, chunks, last_mask, dst, ldd, cols, colsum, wscale,
                   epi.row_scale + m, epi.row_zp + m);
      s8::finish_tile(dst, ldd, rows, cols, m, p, rest, epi);
    }
  }
}

}  // namespace avx512
}  // namespace tf
