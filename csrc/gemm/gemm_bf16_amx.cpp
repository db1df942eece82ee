// BF16 GEMM on AMX (AMX-TILE + AMX-BF16): bf16 activations x bf16 weights -> fp32 with tdpbf16ps, which multiplies a
// 16 x 32-bf16 A tile by a 16 x 64-byte B tile holding 16 output columns x 2 consecutive k per row. That is one
// 16-column slice of the AVX512-BF16 kernel's packed panel ([panel of 64 columns][k/2][64][2] bf16, row stride
// 256 bytes), so both kernels read the same packing. Only called from the avx512 level's gemm_bf16 when the CPU
// has AMX-BF16 and the OS granted the tile state (cpu_has_amx_bf16); compiled with -mamx-*.
//
// Blocking as in the INT8 tile kernel (gemm_s8_amx.cpp): 32 rows x 32 columns = 4 accumulator tiles, 2 A and 2 B
// tiles, 32 k per step; K tails and row tails go through zero-padded copies so no tile load reads past a row or a
// panel. Accumulation order differs from the vdpbf16ps kernel (the tile sums pairs in its own order), so results
// agree with it to float rounding, not bit for bit.
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
constexpr int64_t NR = 64;            // packed panel width (shared with the AVX512-BF16 kernel)
constexpr int64_t PANEL_LD = NR * 4;  // bytes per k/2 row of a panel
constexpr int64_t BM = 32, BN = 32, BK = 32;  // BK in bf16 elements (64 bytes of an A row)
constexpr int64_t kL2Bytes = 512 * 1024;

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// one 32-deep step: 2 A tiles (rows 0-15, 16-31) x 2 B tiles (columns 0-15, 16-31); lda in bytes
inline void step(const uint8_t* a, int64_t lda, const uint8_t* b) {
  _tile_loadd(4, a, lda);
  _tile_loadd(6, b, PANEL_LD);
  _tile_loadd(5, a + 16 * lda, lda);
  _tile_loadd(7, b + 64, PANEL_LD);
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 4, 7);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

inline void block(const uint8_t* a, int64_t lda, const uint8_t* b, int64_t chunks, const uint8_t* a_tail,
                  int64_t ld_tail, const uint8_t* b_tail, float* acc) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t s = 0; s < chunks; ++s) step(a + s * BK * 2, lda, b + s * 16 * PANEL_LD);
  if (a_tail) step(a_tail, ld_tail, b_tail);
  _tile_stored(0, acc, BN * 4);
  _tile_stored(1, acc + 16, BN * 4);
  _tile_stored(2, acc + 16 * BN, BN * 4);
  _tile_stored(3, acc + 16 * BN + 16, BN * 4);
}

struct Scratch {
  std::vector<uint8_t> a;
  alignas(64) uint8_t a_tail[BM * BK * 2];
  std::vector<uint8_t> b_tail;
};
thread_local Scratch scratch;
}  // namespace

void gemm_bf16_amx(const uint16_t* a16, int64_t lda16, const void* packed_b, int64_t n, int64_t k, float* c,
                   int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)n;
  if (m0 >= m1 || n0 >= n1) return;
  const uint8_t* a = reinterpret_cast<const uint8_t*>(a16);
  const int64_t lda = lda16 * 2;  // bytes
  const uint8_t* pb = static_cast<const uint8_t*>(packed_b);
  const int64_t kp = (k + 1) / 2;           // packed k/2 rows per panel
  const int64_t chunks = kp / 16;           // full 32-deep steps
  const int64_t tail_p = kp - chunks * 16;  // k/2 rows of the last, partial step (0: none)
  const int64_t rows = m1 - m0;
  const int64_t full_rows = rows / BM * BM;
  Scratch& s = scratch;

  // rows [m0 + full_rows, m1) copied once into BM zero-padded rows of the padded K (their tail is read in place)
  const int64_t kpad_bytes = (chunks + (tail_p ? 1 : 0)) * BK * 2;
  const uint8_t* rest_a = nullptr;
  if (full_rows < rows) {
    s.a.assign(static_cast<size_t>(BM * kpad_bytes), 0);
    for (int64_t i = 0; i < rows - full_rows; ++i)
      std::memcpy(s.a.data() + i * kpad_bytes, a + (m0 + full_rows + i) * lda, static_cast<size_t>(k * 2));
    rest_a = s.a.data();
  }

  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);

  const int64_t panels = (n1 - n0 + NR - 1) / NR;
  if (tail_p) {
    s.b_tail.assign(static_cast<size_t>(panels * 16 * PANEL_LD), 0);
    for (int64_t i = 0; i < panels; ++i)
      std::memcpy(s.b_tail.data() + i * 16 * PANEL_LD, pb + (n0 + i * NR) * kp * 4 + chunks * 16 * PANEL_LD,
                  static_cast<size_t>(tail_p * PANEL_LD));
  }
  const int64_t panel_bytes = kp * 4 * NR;
  const int64_t block_panels = panel_bytes * 2 > kL2Bytes ? 1 : kL2Bytes / panel_bytes;
  // alpha and the bias are applied as the accumulators are stored (attention's scale and mask); the rest of the
  // epilogue (activation, residual) after, while the block is hot
  Epilogue rest = epi;
  rest.alpha = 1.0f;
  rest.bias = nullptr;
  const bool more = rest.act != Act::None || rest.residual;
  const __m512 alpha = _mm512_set1_ps(epi.alpha);
  alignas(64) float acc[BM * BN];
  for (int64_t pb0 = 0; pb0 < panels; pb0 += block_panels) {
    const int64_t pb1 = pb0 + block_panels < panels ? pb0 + block_panels : panels;
    for (int64_t r = 0; r < rows; r += BM) {
      const int64_t m = m0 + r;
      const int64_t brows = rows - r < BM ? rows - r : BM;
      const bool full = r < full_rows;
      const uint8_t* ab = full ? a + m * lda : rest_a;
      const int64_t ldab = full ? lda : kpad_bytes;
      // the K tail: full blocks copy their rows' last partial step (k past the row's end is zero: k odd leaves the
      // last pair's second half, which the packed B holds as zero too)
      const uint8_t* a_tail = nullptr;
      int64_t ld_tail = BK * 2;
      if (tail_p && full) {
        const int64_t tail_bytes = (k - chunks * BK) * 2;
        for (int64_t i = 0; i < BM; ++i) {
          std::memcpy(s.a_tail + i * BK * 2, ab + i * ldab + chunks * BK * 2, static_cast<size_t>(tail_bytes));
          std::memset(s.a_tail + i * BK * 2 + tail_bytes, 0, static_cast<size_t>(BK * 2 - tail_bytes));
        }
        a_tail = s.a_tail;
      } else if (tail_p) {
        a_tail = ab + chunks * BK * 2;
        ld_tail = kpad_bytes;
      }
      for (int64_t pi = pb0; pi < pb1; ++pi) {
        const int64_t p = n0 + pi * NR;
        const uint8_t* bp = pb + p * kp * 4;
        const uint8_t* bt = tail_p ? s.b_tail.data() + pi * 16 * PANEL_LD : nullptr;
        const int64_t pcols = n1 - p < NR ? n1 - p : NR;
        for (int64_t h = 0; h < pcols; h += BN) {
          const int64_t cols = pcols - h < BN ? pcols - h : BN;
          block(ab, ldab, bp + h * 4, chunks, a_tail, ld_tail, bt ? bt + h * 4 : nullptr, acc);
          float* dst = c + m * ldc + p + h;
          __m512 bias[2];
          for (int j = 0; j < 2; ++j)
            bias[j] = epi.bias ? _mm512_maskz_loadu_ps(s8::lane_mask(cols, j), epi.bias + p + h + 16 * j)
                               : _mm512_setzero_ps();
          for (int64_t i = 0; i < brows; ++i)
            for (int j = 0; j < 2; ++j)
              _mm512_mask_storeu_ps(dst + i * ldc + 16 * j, s8::lane_mask(cols, j),
                                    _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(acc + i * BN + 16 * j), alpha),
                                                  bias[j]));
          if (more) epilogue_f32(dst, ldc, brows, cols, m, p + h, rest);
        }
      }
    }
  }
  _tile_release();
}

}  // namespace avx512
}  // namespace tf
