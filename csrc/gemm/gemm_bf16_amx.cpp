// BF16 GEMM on AMX (AMX-TILE + AMX-BF16): bf16 activations x bf16 weights -> fp32 with tdpbf16ps, which multiplies a
// 16 x 32-bf16 A tile by a 16 x 64-byte B tile holding 16 output columns x 2 consecutive k per row. That is one
// 16-column slice of the AVX512-BF16 kernel's packed panel ([panel of 64 columns][k/2][64][2] bf16, row stride
// 256 bytes), so both kernels read the same packing. Only called from the avx512 level's gemm_bf16 when the CPU
// has AMX-BF16 and the OS granted the tile state (cpu_has_amx_bf16); compiled with -mamx-*.
//
// Blocking, tails and loop order: amx_driver.h (shared with the INT8 tile kernel; a 64-byte step is 32 k). The
// accumulation order differs from the vdpbf16ps kernel (the tile sums pairs in its own order), so results agree
// with it to float rounding, not bit for bit.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "amx_driver.h"
#include "s8_dequant_avx512.h"

namespace tf {
namespace avx512 {

namespace {
using amx::BN;

struct DotBf16 {  // the four products of one step (amx::step loads the tiles)
  TF_AMX_PRODUCTS(_tile_dpbf16ps)
};
}  // namespace

void gemm_bf16_amx(const uint16_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c,
                   int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)n;
  // alpha and the bias are applied as the accumulators are stored (attention's scale and mask); the rest of the
  // epilogue (activation, residual) after, while the block is hot
  Epilogue rest = epi;
  rest.alpha = 1.0f;
  rest.bias = nullptr;
  const bool more = rest.act != Act::None || rest.residual;
  const __m512 alpha = _mm512_set1_ps(epi.alpha);
  amx::drive<DotBf16, float>(
      reinterpret_cast<const uint8_t*>(a), lda * 2, static_cast<const uint8_t*>(packed_b), (k + 1) / 2, m0, m1, n0,
      n1, [&](const float* acc, int64_t m, int64_t col, int64_t brows, int64_t cols) {
        float* dst = c + m * ldc + col;
        __m512 bias[2];
        for (int j = 0; j < 2; ++j)
          bias[j] = epi.bias ? _mm512_maskz_loadu_ps(s8::lane_mask(cols, j), epi.bias + col + 16 * j)
                             : _mm512_setzero_ps();
        for (int64_t i = 0; i < brows; ++i)
          for (int j = 0; j < 2; ++j)
            _mm512_mask_storeu_ps(dst + i * ldc + 16 * j, s8::lane_mask(cols, j),
                                  _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(acc + i * BN + 16 * j), alpha), bias[j]));
        if (more) epilogue_f32(dst, ldc, brows, cols, m, col, rest);
      });
}

}  // namespace avx512
}  // namespace tf
