// INT8 GEMM on AMX (AMX-TILE + AMX-INT8): u8 activations x s8 weights -> s32 with tdpbusd, which multiplies a
// 16 x 64-byte A tile by a 16 x 64-byte B tile holding 16 output columns x 4 consecutive k per row. That is exactly
// one 16-column slice of the VNNI kernel's packed panel ([panel of 64 columns][k/4][64][4] bytes, row stride 256),
// so both kernels share the weight packing and the planner packs once. Only called from the avx512 level's
// gemm_s8 when the CPU has AMX-INT8 and the OS granted the tile state (cpu_has_amx_int8); compiled with -mamx-*.
//
// Blocking: 32 rows x 32 columns = 4 accumulator tiles (tmm0-3), 2 A tiles (tmm4-5) and 2 B tiles (tmm6-7): per
// 64-deep k step 4 tile loads feed 4 tdpbusd. K tails (k not a multiple of 64) and row tails (fewer than 32 rows)
// go through zero-padded copies, so no tile load reads past a row or a panel. The dequantization is the VNNI
// kernel's (s8::dequant, one definition), so results are bit-identical to every other level.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "s8_dequant_avx512.h"

namespace tf {
namespace avx512 {

namespace {
constexpr int64_t NR = 64;  // packed panel width (shared with the VNNI kernel)
constexpr int64_t PANEL_LD = NR * 4;  // bytes per k/4 row of a panel
constexpr int64_t BM = 32, BN = 32, BK = 64;
constexpr int64_t kL2Bytes = 512 * 1024;  // weights per column block: half of a 1-2 MiB L2

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

using s8::lane_mask;

// One 64-deep step: 2 A tiles (rows 0-15, 16-31) x 2 B tiles (columns 0-15, 16-31) into the 4 accumulators.
inline void step(const uint8_t* a, int64_t lda, const int8_t* b) {
  _tile_loadd(4, a, lda);
  _tile_loadd(6, b, PANEL_LD);
  _tile_loadd(5, a + 16 * lda, lda);
  _tile_loadd(7, b + 64, PANEL_LD);
  _tile_dpbusd(0, 4, 6);
  _tile_dpbusd(1, 4, 7);
  _tile_dpbusd(2, 5, 6);
  _tile_dpbusd(3, 5, 7);
}

// acc[32][32] int32 (row stride BN) for `chunks` full 64-deep k steps read from a (row stride lda) and the panel
// slice b (row stride PANEL_LD), then one more step from the zero-padded tail copies if given.
inline void block(const uint8_t* a, int64_t lda, const int8_t* b, int64_t chunks, const uint8_t* a_tail,
                  int64_t ld_tail, const int8_t* b_tail, int32_t* acc) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t s = 0; s < chunks; ++s) step(a + s * BK, lda, b + s * 16 * PANEL_LD);
  if (a_tail) step(a_tail, ld_tail, b_tail);
  _tile_stored(0, acc, BN * 4);
  _tile_stored(1, acc + 16, BN * 4);
  _tile_stored(2, acc + 16 * BN, BN * 4);
  _tile_stored(3, acc + 16 * BN + 16, BN * 4);
}

// Per-thread scratch: the zero-padded A copy for row / K tails and the padded tail of one panel.
struct Scratch {
  std::vector<uint8_t> a;
  alignas(64) uint8_t a_tail[BM * BK];
  std::vector<int8_t> b_tail;  // per panel of the call: its last k/4 rows padded to 16
};
thread_local Scratch scratch;
}  // namespace

void gemm_s8_amx(const uint8_t* a, int64_t lda, const void* packed_b, int64_t n, int64_t k, float* c, int64_t ldc,
                 int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)n;
  if (m0 >= m1 || n0 >= n1) return;
  const int8_t* pb = static_cast<const int8_t*>(packed_b);
  const int64_t kq = (k + 3) / 4;          // packed k/4 rows per panel
  const int64_t chunks = kq / 16;          // full 64-deep steps
  const int64_t tail_q = kq - chunks * 16;  // k/4 rows of the last, partial step (0: none)
  const int64_t rows = m1 - m0;
  const int64_t full_rows = rows / BM * BM;
  Scratch& s = scratch;

  // Rows [m0 + full_rows, m1) are copied once per call into BM zero-padded rows; the 64-byte-deep tail of every row
  // is handled per block below. The copy's row stride is the padded K so its tail chunk can be read in place.
  const int64_t kpad = (chunks + (tail_q ? 1 : 0)) * BK;
  const uint8_t* rest_a = nullptr;
  if (full_rows < rows) {
    s.a.assign(static_cast<size_t>(BM * kpad), 0);
    for (int64_t i = 0; i < rows - full_rows; ++i)
      std::memcpy(s.a.data() + i * kpad, a + (m0 + full_rows + i) * lda, static_cast<size_t>(kq * 4));
    rest_a = s.a.data();
  }

  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);

  // The panels' last k/4 rows, zero-padded to full 16-row tiles, once per call.
  const int64_t panels = (n1 - n0 + NR - 1) / NR;
  if (tail_q) {
    s.b_tail.assign(static_cast<size_t>(panels * 16 * PANEL_LD), 0);
    for (int64_t i = 0; i < panels; ++i)
      std::memcpy(s.b_tail.data() + i * 16 * PANEL_LD, pb + (n0 + i * NR) * kq * 4 + chunks * 16 * PANEL_LD,
                  static_cast<size_t>(tail_q * PANEL_LD));
  }
  // Loop order: column blocks of at most kL2Bytes of weights (they stay in L2), then 32-row blocks (A's rows stay
  // in L1 while the block's panels stream past), then the panels' 32-column halves.
  const int64_t panel_bytes = kq * 4 * NR;
  const int64_t block_panels = panel_bytes * 2 > kL2Bytes ? 1 : kL2Bytes / panel_bytes;
  Epilogue rest = epi;
  rest.alpha = 1.0f;  // dequantization is done below
  alignas(64) int32_t acc[BM * BN];
  alignas(64) float tile[BM * BN];
  for (int64_t pb0 = 0; pb0 < panels; pb0 += block_panels) {
    const int64_t pb1 = pb0 + block_panels < panels ? pb0 + block_panels : panels;
    for (int64_t r = 0; r < rows; r += BM) {
      const int64_t m = m0 + r;
      const int64_t brows = rows - r < BM ? rows - r : BM;
      const bool full = r < full_rows;
      const uint8_t* ab = full ? a + m * lda : rest_a;
      const int64_t ldab = full ? lda : kpad;
      // the K tail: full blocks copy their rows' last partial step into a zero-padded tile; the row-tail copy is
      // already zero-padded to kpad and is read in place
      const uint8_t* a_tail = nullptr;
      int64_t ld_tail = BK;
      if (tail_q && full) {
        for (int64_t i = 0; i < BM; ++i) {
          std::memcpy(s.a_tail + i * BK, ab + i * ldab + chunks * BK, static_cast<size_t>(tail_q * 4));
          std::memset(s.a_tail + i * BK + tail_q * 4, 0, static_cast<size_t>(BK - tail_q * 4));
        }
        a_tail = s.a_tail;
      } else if (tail_q) {
        a_tail = ab + chunks * BK;
        ld_tail = kpad;
      }
      for (int64_t pi = pb0; pi < pb1; ++pi) {
        const int64_t p = n0 + pi * NR;
        const int8_t* bp = pb + p * kq * 4;
        const int8_t* bt = tail_q ? s.b_tail.data() + pi * 16 * PANEL_LD : nullptr;
        const int64_t pcols = n1 - p < NR ? n1 - p : NR;
        for (int64_t h = 0; h < pcols; h += BN) {
          const int64_t cols = pcols - h < BN ? pcols - h : BN;
          block(ab, ldab, bp + h * 4, chunks, a_tail, ld_tail, bt ? bt + h * 4 : nullptr, acc);
          float* dst = epi.out_u8 ? tile : c + m * ldc + p + h;
          const int64_t ldd = epi.out_u8 ? BN : ldc;
          __m512 colsum[2], wscale[2];
          for (int j = 0; j < 2; ++j) {
            const __mmask16 mk = lane_mask(cols, j);
            colsum[j] = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mk, epi.col_sum + p + h + 16 * j));
            wscale[j] = _mm512_maskz_loadu_ps(mk, epi.w_scale + p + h + 16 * j);
          }
          for (int64_t i = 0; i < brows; ++i) {
            const __m512 zi = _mm512_set1_ps(epi.row_zp[m + i]), si = _mm512_set1_ps(epi.row_scale[m + i]);
            for (int j = 0; j < 2; ++j)
              _mm512_mask_storeu_ps(dst + i * ldd + 16 * j, lane_mask(cols, j),
                                    s8::dequant(_mm512_load_si512(acc + i * BN + 16 * j), zi, si, colsum[j],
                                                wscale[j]));
          }
          epilogue_f32(dst, ldd, brows, cols, m, p + h, rest);
          if (epi.out_u8)
            for (int64_t i = 0; i < brows; ++i)
              quantize_u8(tile + i * BN, BN, epi.out_u8 + (m + i) * epi.ld_out_u8 + p + h, cols, 1, cols,
                          epi.out_inv_scale, epi.out_zp);
        }
      }
    }
  }
  _tile_release();
}

}  // namespace avx512
}  // namespace tf
