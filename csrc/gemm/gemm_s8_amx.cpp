// INT8 GEMM on AMX (AMX-TILE + AMX-INT8): u8 activations x s8 weights -> s32 with tdpbusd, which multiplies a
// 16 x 64-byte A tile by a 16 x 64-byte B tile holding 16 output columns x 4 consecutive k per row. That is exactly
// one 16-column slice of the VNNI kernel's packed panel ([panel of 64 columns][k/4][64][4] bytes, row stride 256),
// so both kernels share the weight packing and the planner packs once. Only called from the avx512 level's
// gemm_s8 when the CPU has AMX-INT8 and the OS granted the tile state (cpu_has_amx_int8); compiled with -mamx-*.
//
// Blocking, tails and loop order: amx_driver.h (shared with the BF16 tile kernel). The dequantization is the VNNI
// kernel's (s8::dequant, one definition), so results are bit-identical to every other level.
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
using s8::lane_mask;

struct DotS8 {  // the four products of one step (amx::step loads the tiles)
  TF_AMX_PRODUCTS(_tile_dpbusd)
};
}  // namespace

void gemm_s8_amx(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
                 int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)n;
  Epilogue rest = epi;
  rest.alpha = 1.0f;  // dequantization is done below
  alignas(64) float tile[amx::BM * BN];
  amx::drive<DotS8, int32_t>(
      a, lda, static_cast<const uint8_t*>(packed_b), (k + 3) / 4, m0, m1, n0, n1,
      [&](const int32_t* acc, int64_t m, int64_t col, int64_t brows, int64_t cols) {
        float* dst = epi.out_u8 ? tile : c + m * ldc + col;
        const int64_t ldd = epi.out_u8 ? BN : ldc;
        __m512 colsum[2], wscale[2];
        s8::panel_scales<2>(epi, col, cols, colsum, wscale);
        for (int64_t i = 0; i < brows; ++i) {
          const __m512 zi = _mm512_set1_ps(epi.row_zp[m + i]), si = _mm512_set1_ps(epi.row_scale[m + i]);
          for (int j = 0; j < 2; ++j)
            _mm512_mask_storeu_ps(dst + i * ldd + 16 * j, lane_mask(cols, j),
                                  s8::dequant(_mm512_load_si512(acc + i * BN + 16 * j), zi, si, colsum[j],
                                              wscale[j]));
        }
        s8::finish_tile(dst, ldd, brows, cols, m, col, rest, epi);
      });
}

}  // namespace avx512
}  // namespace tf
