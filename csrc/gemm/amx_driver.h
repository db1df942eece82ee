// The loop both AMX GEMMs share (gemm_s8_amx.cpp: tdpbusd, gemm_bf16_amx.cpp: tdpbf16ps). Both read their AVX-512
// kernel's packed panels: 64 columns, one 256-byte row per 4-byte group of k (4 int8 or 2 bf16 values), so a
// 16-column slice of 16 such rows is one B tile. A rows are bytes too (lda in bytes), each k step 64 bytes.
//
// Blocking: 32 rows x 32 columns = 4 accumulator tiles (tmm0-3), 2 A tiles (tmm4-5) and 2 B tiles (tmm6-7): per
// 64-byte k step 4 tile loads feed 4 tile products. K tails (k not a multiple of the step) and row tails (fewer
// than 32 rows) go through zero-padded copies, so no tile load reads past a row or a panel. Loop order: column
// blocks of at most kL2Bytes of weights (they stay in L2), then 32-row blocks (A's rows stay in L1 while the
// block's panels stream past), then the panels' 32-column halves. Included inside namespace tf::avx512 by
// translation units compiled with AMX flags.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace tf {
namespace avx512 {
namespace amx {

constexpr int64_t NR = 64;            // packed panel width (shared with the AVX-512 kernels)
constexpr int64_t PANEL_LD = NR * 4;  // bytes per 4-byte k group of a panel
constexpr int64_t BM = 32, BN = 32, BK = 64;  // BK: bytes of an A row per step
constexpr int64_t kL2Bytes = 512 * 1024;      // weights per column block: half of a 1-2 MiB L2

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Dot::products() of a kernel: its tile product instruction over the step's four pairs, tmm0-3 += tmm4-5 x tmm6-7
// (a macro: the intrinsics take the tile numbers as immediates)
#define TF_AMX_PRODUCTS(dot) \
  static void products() {   \
    dot(0, 4, 6);            \
    dot(1, 4, 7);            \
    dot(2, 5, 6);            \
    dot(3, 5, 7);            \
  }

// One 64-byte k step: A rows 0-15 / 16-31 into tmm4 / tmm5, B columns 0-15 / 16-31 into tmm6 / tmm7, then
// Dot::products() (the four tile products into tmm0-3; tdpbusd or tdpbf16ps)
template <class Dot>
inline void step(const uint8_t* a, int64_t lda, const uint8_t* b) {
  _tile_loadd(4, a, lda);
  _tile_loadd(6, b, PANEL_LD);
  _tile_loadd(5, a + 16 * lda, lda);
  _tile_loadd(7, b + 64, PANEL_LD);
  Dot::products();
}

// Acc: the accumulator element (int32 or float). finish(acc, m, col, rows, cols): the caller's store and epilogue
// of one 32 x 32 block (acc row stride BN) for rows m.. and columns col..
template <class Dot, class Acc, class Finish>
void drive(const uint8_t* a, int64_t lda, const uint8_t* pb, int64_t kq, int64_t m0, int64_t m1, int64_t n0,
           int64_t n1, Finish finish) {
  if (m0 >= m1 || n0 >= n1) return;
  struct Scratch {
    std::vector<uint8_t> a;
    alignas(64) uint8_t a_tail[BM * BK];
    std::vector<uint8_t> b_tail;  // per panel of the call: its last k groups padded to 16
  };
  thread_local Scratch s;
  const int64_t chunks = kq / 16;           // full 64-byte steps
  const int64_t tail_q = kq - chunks * 16;  // k groups of the last, partial step (0: none)
  const int64_t rows = m1 - m0;
  const int64_t full_rows = rows / BM * BM;

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

  // The panels' last k groups, zero-padded to full 16-row tiles, once per call.
  const int64_t panels = (n1 - n0 + NR - 1) / NR;
  if (tail_q) {
    s.b_tail.assign(static_cast<size_t>(panels * 16 * PANEL_LD), 0);
    for (int64_t i = 0; i < panels; ++i)
      std::memcpy(s.b_tail.data() + i * 16 * PANEL_LD, pb + (n0 + i * NR) * kq * 4 + chunks * 16 * PANEL_LD,
                  static_cast<size_t>(tail_q * PANEL_LD));
  }
  const int64_t panel_bytes = kq * 4 * NR;
  const int64_t block_panels = panel_bytes * 2 > kL2Bytes ? 1 : kL2Bytes / panel_bytes;
  alignas(64) Acc acc[BM * BN];
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
        const uint8_t* bp = pb + p * kq * 4;
        const uint8_t* bt = tail_q ? s.b_tail.data() + pi * 16 * PANEL_LD : nullptr;
        const int64_t pcols = n1 - p < NR ? n1 - p : NR;
        for (int64_t h = 0; h < pcols; h += BN) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          for (int64_t st = 0; st < chunks; ++st) step<Dot>(ab + st * BK, ldab, bp + h * 4 + st * 16 * PANEL_LD);
          if (a_tail) step<Dot>(a_tail, ld_tail, bt + h * 4);
          _tile_stored(0, acc, BN * 4);
          _tile_stored(1, acc + 16, BN * 4);
          _tile_stored(2, acc + 16 * BN, BN * 4);
          _tile_stored(3, acc + 16 * BN + 16, BN * 4);
          finish(static_cast<const Acc*>(acc), m, p + h, brows, pcols - h < BN ? pcols - h : BN);
        }
      }
    }
  }
  _tile_release();
}

}  // namespace amx
}  // namespace avx512
}  // namespace tf
