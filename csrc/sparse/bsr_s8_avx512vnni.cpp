// Block-sparse INT8 GEMM on AVX-512 VNNI, 1x4 blocks (4 consecutive input features of one output row).
//
// The weight is the sparse operand: row n keeps a list of non-zero 4-byte blocks. vpdpbusd wants the 4 bytes of a
// block against the 4 matching activation bytes of 16 tokens, so activations are re-laid out per call, in tiles of
// 64 tokens, as At[tile][k/4][64][4] (tokens along the vector: one 64-byte load = 16 tokens x 4 features) with
// 16x16 32-bit transposes. Each non-zero block then costs one broadcast and, per 16 tokens, one load + one
// vpdpbusd: no work is spent on zero blocks. Rows whose quads are sparse (unstructured or 2:4 weights, where most
// of a quad's bytes are zeros) run as gathered quads instead: any four non-zeros of a row form one quad, over a
// byte re-layout (one 64-byte row of 64 tokens per input) whose four rows the kernel interleaves into VNNI's
// operand at run time (gathered_dot, bsr_pack_bytes). Results come out as Y^T tiles (16 output rows x up to 64
// tokens), are dequantized, transposed back with the same 16x16 transpose and finished piece by piece (bias,
// activation, residual, requantization for the next INT8 layer) before they are stored. See docs/kernels.md.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "../gemm/s8_dequant_avx512.h"
#include "../ops/epilogue_avx512.h"
#include "avx512_lanes.h"

namespace tf {
namespace avx512 {

namespace {
#define TF_DPBUSD(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

// One weight (or input) quad broadcast to every dword lane of a register straight from memory: a load-port uop.
// (Written as set1 after a memcpy, gcc moves the quads through general registers and broadcasts from there: a
// port-5 uop per quad, the port the vpdpbusd use, so 4x4 blocks spent 20 instead of 16 uops per block on them.)
template <class Vec = __m512i>
inline Vec bcast_quad(const void* p) {
  Vec r;
  asm("vpbroadcastd %1, %0" : "=v"(r) : "m"(*static_cast<const int32_t*>(p)));
  return r;
}

// At is stored in tiles of kAtTile tokens, At[m / kAtTile][k/4][kAtTile][4]: a tile's slice for one input quad is
// 256 contiguous bytes and quads are 256 bytes apart whatever the call's token count. (One [k/4][m][4] array put
// the quads m * 4 bytes apart: 8 KiB at 2048 tokens, a stride that maps a tile's whole slice onto a few L1 / L2
// sets. With this layout and the executor's token split, BERT-base at batch 16 went from 0.86x to 1.54x
// DeepSparse's throughput: bench/results/sparse_e2e_block_0.9_fused.md -> _tiled.md.)
constexpr int64_t kAtTile = kBsrAtTile;
// Token vectors per kernel tile: one whole At tile (64 tokens) for both block shapes, except on calls of more than
// two At tiles whose tiles end in float token rows (finish_piece), which run 2 (gemm_bsr_s8). 4x4 blocks were
// measured best at 4 (Zen 5, 1 thread, 90% sparse, 128 tokens, 768x768: 5.9x dense INT8; 6 vectors spill their 24
// accumulators and drop to 3x). Over 128-token At tiles, 1x4 blocks had run 8 vectors and 4x4 blocks 2 on calls
// longer than one tile (bench/results/profile_block90_int8_tilevecs.md); over the compact 64-token tiles 4 is as
// fast or faster for both on calls of up to two tiles (bench/results/profile_block90_int8_attile64.md,
// _attile64_1x4.md), and on longer ones for the tiles that end in u8 rows (FFN1) or bf16 attention operands (QKV),
// while the row-piece epilogues ran slower with 4 there (_attile64_b16.md: MiniLM-L6 at batch 16; _rowpieces.md).
constexpr int kTileVecs = kAtTile / 16;

// acc[v] += 1x4 block j's weight quad against its input quad's At bytes, tokens 16v .. of the tile `at` points
// into (quads m_pad tokens apart)
template <int V>
inline void add_block(const uint8_t* at, int64_t m_pad, const int32_t* cols, const int8_t* vals, int32_t j,
                      __m512i* acc) {
  const __m512i wb = bcast_quad(vals + 4 * j);
  const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * m_pad * 4;
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) TF_DPBUSD(acc[v], _mm512_load_si512(ap + 64 * v), wb);
}

// Line t (16 blocks) of the block indices and values from block b on: the weight prefetch of the row walks below
inline void prefetch_block_line(const int32_t* cols, const int8_t* vals, int64_t b, int32_t t) {
  _mm_prefetch(reinterpret_cast<const char*>(cols + b + 16 * t), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(vals + 4 * (b + 16 * t)), _MM_HINT_T0);
}

// acc[v] for one output row over its blocks, asking on the way for the next row's blocks (pf_blocks indices and
// values from block pf_b on, a line of each per step): in a pass the weights stream from beyond L2 (a
// layer's csr-int8 weight is 1.6 MB at FFN1) and the At reads crowd out the hardware prefetchers. Zen 4, single
// Linears (1 thread, 128 tokens, cold weights): QKV, FFN1 and attn_out 0.95-0.97x the time; 2 rows ahead was no
// better (bench/results/zen4_csr_int8_row_prefetch_ab.md). 90% unstructured static INT8 BERT-base at batch 16:
// its Linear ops 0.85-0.98x in three runs, the wall time within the host's noise (zen4_sparse_weight_prefetch_*)
template <int V>
inline void row_dot(const uint8_t* at, int64_t m_pad, const int32_t* cols, const int8_t* vals,
                    int32_t nb, __m512i* acc, const int32_t* all_cols, const int8_t* all_vals, int32_t pf_b,
                    int32_t pf_blocks) {
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_si512();
  const int32_t pf_lines = (pf_blocks + 15) / 16;
  for (int32_t j = 0; j < nb; ++j) {
    if (j < pf_lines) prefetch_block_line(all_cols, all_vals, pf_b, j);
    add_block<V>(at, m_pad, cols, vals, j, acc);
  }
}

// R rows of 1x4 blocks at once (csr-int8): their blocks interleaved up to the shortest list, then each one's rest.
// R address streams in flight instead of one: on rows of at least kRows4MinQuads quads, whose At slice (192 KiB at
// FFN2's 3072 inputs) lies beyond L1, 4 rows took 0.78x the time of one at a time on Zen 4 (single Linears, 1
// thread, 128 tokens: bench/results/zen4_csr_int8_rows4_ab.md); at 768 inputs (a 48 KiB slice) 1.06-1.09x, so
// shorter rows run as row pairs instead (pair_dot; one at a time, 2 rows interleaved measured level there).
constexpr int64_t kRows4MinQuads = 384;

template <int V, int R>
inline void rows_dot(const uint8_t* at, int64_t m_pad, const int32_t* cols, const int8_t* vals, const int32_t* rp,
                     int32_t nnz, __m512i (*acc)[V]) {
  // The next R rows' blocks (indices and values, 16 blocks per line of each) are asked for while these run, about
  // as many as these rows hold: in a pass a layer's weights come from beyond L2, and 2R streams of them plus the At
  // reads are more than the hardware prefetchers follow. FFN2 (single Linear, cold weights) 0.91x the time, its op
  // 0.84-0.91x at batch 1 and 0.96x at batch 16, the passes' wall time within the host's noise
  // (bench/results/zen4_csr_int8_weight_prefetch_ab.md, _e2e_ab.md, _e2e_ab_b1.md)
  const int32_t pf0 = rp[R];
  const int32_t pf_lines = (rp[R] - rp[0] < nnz - pf0 ? rp[R] - rp[0] : nnz - pf0) / 16;
  int32_t j[R], end[R];
  int32_t both = 1 << 30;
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    j[r] = rp[r];
    end[r] = rp[r + 1];
    both = end[r] - j[r] < both ? end[r] - j[r] : both;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_si512();
  }
  for (int32_t t = 0; t < both; ++t) {
    if (t < pf_lines) prefetch_block_line(cols, vals, pf0, t);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) add_block<V>(at, m_pad, cols, vals, j[r] + t, acc[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
    for (int32_t i = j[r] + both; i < end[r]; ++i) add_block<V>(at, m_pad, cols, vals, i, acc[r]);
}

// acc[r][v] for 4 output rows sharing one block list: each activation load feeds 4 vpdpbusd
template <int V>
inline void rows4_dot(const uint8_t* at, int64_t m_pad, const int32_t* cols, const int8_t* vals,
                      int32_t nb, __m512i (*acc)[V]) {
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_si512();
  for (int32_t j = 0; j < nb; ++j) {
    const __m512i w0 = bcast_quad(vals + 16 * j), w1 = bcast_quad(vals + 16 * j + 4),
                  w2 = bcast_quad(vals + 16 * j + 8), w3 = bcast_quad(vals + 16 * j + 12);
    const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * m_pad * 4;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m512i x = _mm512_load_si512(ap + 64 * v);
      TF_DPBUSD(acc[0][v], x, w0);
      TF_DPBUSD(acc[1][v], x, w1);
      TF_DPBUSD(acc[2][v], x, w2);
      TF_DPBUSD(acc[3][v], x, w3);
    }
  }
}

// Row pair t (BsrS8::pair_tile): a[v] and b[v] for its two rows. The quads both rows hold come first, each At
// load feeding both rows' vpdpbusd, then each row's own. Rows of a 16-row tile are matched by the quads they share
// (greedily, at load): on 90% unstructured weights about 40% of a row's quads, so a pair needs about a fifth fewer
// At loads than its rows one at a time. The next pair's indices and values are asked for on the way in. 90%
// unstructured static INT8 BERT-base on Zen 4: 0.964x the pass time at batch 16, 0.958x at batch 1
// (bench/results/zen4_csr_int8_row_pairs_ab2.md, _ab.md).
template <int V>
inline void pair_dot(const uint8_t* at, int64_t m_pad, const BsrS8& w, int32_t t, __m512i* a, __m512i* b) {
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) a[v] = b[v] = _mm512_setzero_si512();
  const int32_t* p = w.pair_ptr + 3 * t;
  const int32_t* cols = w.pair_cols;
  const int8_t* vals = w.pair_values + w.pair_voff[t];
  // the next pair's entries (past the last pair: the empty one the loader pads with)
  for (int32_t j = p[3]; j < p[6]; j += 16) _mm_prefetch(reinterpret_cast<const char*>(cols + j), _MM_HINT_T0);
  for (int32_t i = w.pair_voff[t + 1]; i < w.pair_voff[t + 2]; i += 64)
    _mm_prefetch(reinterpret_cast<const char*>(w.pair_values + i), _MM_HINT_T0);
  int32_t j = p[0];
  for (; j < p[1]; ++j, vals += 8) {
    const __m512i wa = bcast_quad(vals), wb = bcast_quad(vals + 4);
    const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * m_pad * 4;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m512i x = _mm512_load_si512(ap + 64 * v);
      TF_DPBUSD(a[v], x, wa);
      TF_DPBUSD(b[v], x, wb);
    }
  }
  for (; j < p[2]; ++j, vals += 4) add_block<V>(at, m_pad, cols + j, vals, 0, a);
  for (; j < p[3]; ++j, vals += 4) add_block<V>(at, m_pad, cols + j, vals, 0, b);
}

// Gathered quads (BsrS8::gq_ptr): a[0..3] for one output row over its groups of four non-zeros. Each group loads
// its four inputs' byte rows of the tile (64 tokens each, bsr_pack_bytes' order), interleaves them with two
// rounds of unpacks (bytes, then words) into four vectors of 16 tokens x the four inputs' bytes, and adds each
// against the group's 4 weights broadcast: 4 vpdpbusd per 4 non-zeros, where 1x4 quads spend 4 per quad and a
// 90% unstructured quad holds 1.16 non-zeros. The unpacks work within 128-bit lanes, which is why the re-layout
// stores the tokens in the order that comes back out as tokens 16q .. 16q + 15 in a[q]. The next row's inputs
// and weights are asked for on the way (pf: its first group, pf_groups of them). Zen 4, the loop alone over a
// 64-token tile: 0.37x / 0.28x the time of the quads' walk at 768 / 3072 inputs
// (bench/results/csr_int8_groups_rates_zen4.md).
inline void gathered_dot(const uint8_t* at, const BsrS8& w, int32_t g0, int32_t g1, int32_t pf, int32_t pf_groups,
                         __m512i* a) {
#pragma GCC unroll 4
  for (int v = 0; v < 4; ++v) a[v] = _mm512_setzero_si512();
  const int32_t in_lines = (pf_groups + 7) / 8, val_lines = (pf_groups + 15) / 16;
  for (int32_t j = g0; j < g1; ++j) {
    const int32_t t = j - g0;
    if (t < in_lines) _mm_prefetch(reinterpret_cast<const char*>(w.gq_inputs + 4 * (pf + 8 * t)), _MM_HINT_T0);
    if (t < val_lines) _mm_prefetch(reinterpret_cast<const char*>(w.gq_values + 4 * (pf + 16 * t)), _MM_HINT_T0);
    const uint16_t* in = w.gq_inputs + 4 * j;
    const __m512i x0 = _mm512_load_si512(at + static_cast<int64_t>(in[0]) * kAtTile);
    const __m512i x1 = _mm512_load_si512(at + static_cast<int64_t>(in[1]) * kAtTile);
    const __m512i x2 = _mm512_load_si512(at + static_cast<int64_t>(in[2]) * kAtTile);
    const __m512i x3 = _mm512_load_si512(at + static_cast<int64_t>(in[3]) * kAtTile);
    const __m512i lo01 = _mm512_unpacklo_epi8(x0, x1), hi01 = _mm512_unpackhi_epi8(x0, x1);
    const __m512i lo23 = _mm512_unpacklo_epi8(x2, x3), hi23 = _mm512_unpackhi_epi8(x2, x3);
    const __m512i wq = bcast_quad(w.gq_values + 4 * j);
    TF_DPBUSD(a[0], _mm512_unpacklo_epi16(lo01, lo23), wq);
    TF_DPBUSD(a[1], _mm512_unpackhi_epi16(lo01, lo23), wq);
    TF_DPBUSD(a[2], _mm512_unpacklo_epi16(hi01, hi23), wq);
    TF_DPBUSD(a[3], _mm512_unpackhi_epi16(hi01, hi23), wq);
  }
}

// Whether a tile of this epilogue ends in finish_u8_rows (requantized without a residual, an activation it does in
// registers) rather than in 16 x 16 pieces (finish_piece_for)
inline bool ends_in_u8_rows(const Epilogue& epi) {
  return epi.out_u8 && !epi.residual && bsr_fills_next_at(epi.act);
}

// The end of a tile whose layer requantizes without a residual (static INT8 FFN1, whose u8 output FFN2 reads):
// each output row of the Y^T tile is finished while tokens run along the lanes (bias, activation and quantization
// are per element: the same float ops in the same order as the transposed path, so the same bytes), and only the
// u8 results are transposed: four rows pack into one register (pack_rows4_u8), and a 4x4 dword transpose per
// 128-bit lane gives each token its 16 bytes. That replaces the 16x16 float transpose. The activation is a
// template parameter (GELU-erf, ReLU or none: those act16 does in registers), so act16's row-loop call for the
// other forms folds away and no call sits in the loop.
// Four finished output rows n0 .. n0+3 (q[r]: 16 tokens from `tok` on, quant_i32_16's values) into the next
// gathered layer's byte re-layout at epi.out_at (Epilogue::out_at_bytes): each row's 16 bytes are dwords 4L + b of
// that input's 64-byte row in its tile (b: the tokens' 16-token block in the tile; bsr_pack_bytes' order).
inline void store_byte_rows4(const __m512i* q, const Epilogue& epi, int64_t tok, int64_t n0, int64_t n1) {
  const __m512i lane_of_dword = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  const __mmask16 block = static_cast<__mmask16>(0x1111 << ((tok % kAtTile) / 16));
  uint8_t* tile = epi.out_at + (tok / kAtTile) * kAtTile * ((epi.out_at_k + 3) / 4 * 4);
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    if (n0 + r >= n1) return;
    const __m128i b = _mm512_cvtusepi32_epi8(_mm512_max_epi32(q[r], _mm512_setzero_si512()));
    _mm512_mask_storeu_epi32(tile + (n0 + r) * kAtTile, block,
                             _mm512_permutexvar_epi32(lane_of_dword, _mm512_castsi128_si512(b)));
  }
}

// Four pack_rows4 registers (16 output rows x 16 tokens of bytes) handed out as each token's 16 bytes: per 128-bit
// lane, 4 groups x 4 tokens of dwords -> 4 tokens x 4 groups (token 4L + k is lane L of tok[k]); store(token, bytes)
template <class Store>
inline void token_bytes16(const __m512i (&packed)[4], Store store) {
  const __m512i lo01 = _mm512_unpacklo_epi32(packed[0], packed[1]);
  const __m512i hi01 = _mm512_unpackhi_epi32(packed[0], packed[1]);
  const __m512i lo23 = _mm512_unpacklo_epi32(packed[2], packed[3]);
  const __m512i hi23 = _mm512_unpackhi_epi32(packed[2], packed[3]);
  const __m512i tok[4] = {_mm512_unpacklo_epi64(lo01, lo23), _mm512_unpackhi_epi64(lo01, lo23),
                          _mm512_unpacklo_epi64(hi01, hi23), _mm512_unpackhi_epi64(hi01, hi23)};
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    store(k, _mm512_castsi512_si128(tok[k]));
    store(4 + k, _mm512_extracti32x4_epi32(tok[k], 1));
    store(8 + k, _mm512_extracti32x4_epi32(tok[k], 2));
    store(12 + k, _mm512_extracti32x4_epi32(tok[k], 3));
  }
}

template <int V, Act A>
void finish_u8_rows(const float (*t)[64], int64_t m, int64_t m0, int64_t nb0, int64_t nb1, const Epilogue& epi) {
  const __m512 out_inv = _mm512_set1_ps(epi.out_inv_scale);
  const __m512i out_zp = _mm512_set1_epi32(epi.out_zp);
  const int64_t cols = nb1 - nb0 < 16 ? nb1 - nb0 : 16;
  const __mmask16 ck = first(cols);
  // each row's bias broadcast straight from memory (a row past the end: any valid row's; its bytes are not stored)
  const auto bias = [&](int64_t i) {
    return _mm512_set1_ps(epi.bias ? epi.bias[nb0 + (i < cols ? i : cols - 1)] : 0.0f);
  };
  const bool bytes = epi.out_at && epi.out_at_bytes;
  for (int v = 0; v < V; ++v) {
    const int64_t rows = m - m0 - 16 * v < 16 ? m - m0 - 16 * v : 16;
    __m512i packed[4];
    for (int g = 0; g < 4; ++g) {
      __m512i q[4];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const __m512 y = _mm512_add_ps(_mm512_load_ps(&t[4 * g + r][16 * v]), bias(4 * g + r));
        q[r] = quant_i32_16(act16(y, A, 16), out_inv, out_zp);
      }
      if (bytes) {  // each output row is the next layer's byte row for these 16 tokens
        store_byte_rows4(q, epi, m0 + 16 * v, nb0 + 4 * g, nb1);
        continue;
      }
      packed[g] = pack_rows4_u8(q);
    }
    if (bytes) continue;
    if (epi.out_at) {  // packed[g] is quad row nb0 / 4 + g of the next layer's re-layout for these 16 tokens
      uint8_t* dst = epi.out_at + bsr_at_offset(m0 + 16 * v, epi.out_at_k, kAtTile);
      const int64_t quads = (epi.out_at_k + 3) / 4 - nb0 / 4;
      for (int g = 0; g < 4 && g < quads; ++g)
        _mm512_store_si512(dst + (nb0 / 4 + g) * kAtTile * 4, packed[g]);
      continue;
    }
    uint8_t* out = epi.out_u8 + (m0 + 16 * v) * epi.ld_out_u8 + nb0;
    token_bytes16(packed, [&](int64_t token, __m128i bytes) {
      if (token >= rows) return;
      if (cols == 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + token * epi.ld_out_u8), bytes);
      else _mm_mask_storeu_epi8(out + token * epi.ld_out_u8, ck, bytes);
    });
  }
}

// Piece v of a tile's general epilogue (tokens m0 + 16v .. m0 + 16v + 15, output rows nb0 .. nb1 - 1)
using PieceFn = void (*)(const float (*)[64], int, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                         const Epilogue&);

// One token row's 16 dequantized outputs from nb0 on (the first `cols` real) finished: bias, then (in the shared
// epilogue's order) activation, residual and the requantization for the next INT8 layer, stored as float or u8
// (Stream: whole 64-byte lines of float rows go out as streaming stores, see gemm_bsr_s8)
template <Act A, bool Residual, bool OutU8, bool Stream>
inline void finish_row(__m512 y, int64_t row, int64_t nb0, int64_t cols, __mmask16 ck, __m512 bias, float* c,
                       int64_t ldc, const Epilogue& epi, __m512 out_inv, __m512i out_zp) {
  y = _mm512_add_ps(y, bias);
  y = act16(y, A, cols);
  if (Residual) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(ck, epi.residual + row * epi.ld_residual + nb0));
  if (OutU8) store_u8_16(epi.out_u8 + row * epi.ld_out_u8 + nb0, ck, y, out_inv, out_zp);
  else if (Stream && cols == 16) _mm512_stream_ps(c + row * ldc + nb0, y);
  else _mm512_mask_storeu_ps(c + row * ldc + nb0, ck, y);
}

// The general end of a tile, one 16 x 16 piece: transpose back to token rows and finish them in registers: bias,
// then (in the shared epilogue's order) activation, residual and the requantization for the next INT8 layer, so
// neither the activation nor the requantization makes a second pass over the output (c is not written when out_u8
// is set). Specialised on what the layer's epilogue does: a piece's instruction count is what it costs (its
// shuffles and float ops take the issue ports the dot products use: bench/results/port_contention.md), and the
// run-time form spent more of them testing the epilogue's fields per row and moving the transposed rows through
// the stack than finishing them.
template <Act A, bool Residual, bool OutU8, bool Stream>
void finish_piece(const float (*t)[64], int v, int64_t m, int64_t m0, int64_t nb0, int64_t nb1, float* c,
                  int64_t ldc, const Epilogue& epi) {
  const int64_t cols = nb1 - nb0 < 16 ? nb1 - nb0 : 16;
  const __mmask16 ck = first(cols);
  const __m512 bias = epi.bias ? _mm512_maskz_loadu_ps(ck, epi.bias + nb0) : _mm512_setzero_ps();
  const __m512 out_inv = _mm512_set1_ps(epi.out_inv_scale);
  const __m512i out_zp = _mm512_set1_epi32(epi.out_zp);
  const int64_t row0 = m0 + 16 * v;
  const int64_t rows = m - row0 < 16 ? m - row0 : 16;
  // the 16 transposed rows finished with constant indices, so they stay in registers: r indexed by a variable (a
  // loop to `rows`), or one array filled by either form below, put all 16 on the stack in every piece (16 stores
  // and 16 reloads each). Each form has its own array and its own copy of this.
  const auto finish_rows = [&](const __m512i* r) {
    const auto finish = [&](int64_t i, __m512i ri) {
      finish_row<A, Residual, OutU8, Stream>(_mm512_castsi512_ps(ri), row0 + i, nb0, cols, ck, bias, c, ldc, epi,
                                             out_inv, out_zp);
    };
    if (rows == 16) {
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) finish(i, r[i]);
    } else {
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)
        if (i < rows) finish(i, r[i]);
    }
  };
  if (epi.bsr_transpose16) {  // the A/B setting's form: the rows into registers, then the 64 shuffles
    __m512i r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(&t[i][16 * v]);
    transpose16(r);
    finish_rows(r);
  } else {  // half the shuffles (the pieces' transposes take the port the dot products share)
    __m512i r[16];
    load_transposed16(&t[0][16 * v], 64, r);
    finish_rows(r);
  }
}

// lo and hi rounded to bf16 (nearest even) and interleaved: dword j = (lo[j], hi[j])
__attribute__((target("avx512bf16"))) inline __m512i interleave(__m512 lo, __m512 hi) {
  const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

// QKV before BF16 attention (Epilogue::qkv): piece v of a tile written as the attention's bf16 operands instead
// of float rows. Each value is the float finish_piece stores (the dequantized sum plus the bias, the same add),
// rounded to bf16 by vcvtne2ps2bf16 (nearest even) as the attention's own conversions of float rows do: the same
// bits, at half the bytes, and the attention no longer converts or packs. K needs no transpose: two output rows (a
// pair of K features) over 16 tokens are one 64-byte row of its packed layout; Q and V are transposed to tokens
// first. Only called when the CPU has AVX512_BF16 (BF16 attention requires it).
__attribute__((target("avx512bf16"))) void finish_qkv_bf16(const float (*t)[64], int v, int64_t m, int64_t m0,
                                                           int64_t nb0, int64_t nb1, float* c, int64_t ldc,
                                                           const Epilogue& epi) {
  (void)nb1;
  (void)c;
  (void)ldc;
  const QkvBf16& ops = epi.qkv;
  const int64_t d = ops.head_dim, width = ops.heads * d, seq = ops.seq, nr = kBf16Nr;
  const int64_t part = nb0 / width, h = nb0 % width / d, f0 = nb0 % d;  // Q, K or V; head; its first feature
  const int64_t token = ops.token0 + m0 + 16 * v, b = token / seq, s0 = token % seq;  // 16 tokens of sequence b
  const int64_t rows = m - m0 - 16 * v < 16 ? m - m0 - 16 * v : 16;
  const __mmask16 tokens = first(rows);
  const auto y = [&](int i) {  // output row nb0 + i over the piece's 16 tokens, as finish_piece adds its bias
    return _mm512_add_ps(_mm512_load_ps(&t[i][16 * v]), _mm512_set1_ps(epi.bias ? epi.bias[nb0 + i] : 0.0f));
  };
  const int64_t head = b * ops.heads + h;
  if (part == 1) {  // K: [token panel][feature pair][token][2]; pair f0 / 2 + p holds rows 2p, 2p + 1
    uint16_t* dst = reinterpret_cast<uint16_t*>(ops.k + head * ops.kv_bytes) + (s0 / nr) * (d / 2) * nr * 2 +
                    (s0 % nr) * 2;
    for (int p = 0; p < 8; ++p)
      _mm512_mask_storeu_epi32(dst + (f0 / 2 + p) * nr * 2, tokens, interleave(y(2 * p), y(2 * p + 1)));
    return;
  }
  // Q and V: a transpose to tokens done on bf16 pairs (dwords), half the data of the float rows: after two rounds
  // of in-lane unpacks, register k's 128-bit lane L holds 4 dwords of one token (or token pair) and 4 features
  // (or feature pairs); a two-source qword permute then gathers each output row from two such registers
  __m512i u[8];
  if (part == 0) {  // Q: dword p of token j = features (2p, 2p + 1); 8 dwords (32 bytes) per token row
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) u[p] = interleave(y(2 * p), y(2 * p + 1));
  } else {  // V: dword q of row i = tokens (2q, 2q + 1); rows i and i + 8 side by side (lanes 0-1 and 2-3)
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) u[p] = (__m512i)_mm512_cvtne2ps_pbh(y(p + 8), y(p));
  }
  __m512i w[8];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    w[2 * k] = _mm512_unpacklo_epi32(u[2 * k], u[2 * k + 1]);
    w[2 * k + 1] = _mm512_unpackhi_epi32(u[2 * k], u[2 * k + 1]);
  }
  // x[4g + r], lane L: dword 4L + r of u[4g] .. u[4g + 3]
  __m512i x[8];
#pragma GCC unroll 2
  for (int g = 0; g < 2; ++g) {
    x[4 * g + 0] = _mm512_unpacklo_epi64(w[4 * g], w[4 * g + 2]);
    x[4 * g + 1] = _mm512_unpackhi_epi64(w[4 * g], w[4 * g + 2]);
    x[4 * g + 2] = _mm512_unpacklo_epi64(w[4 * g + 1], w[4 * g + 3]);
    x[4 * g + 3] = _mm512_unpackhi_epi64(w[4 * g + 1], w[4 * g + 3]);
  }
  if (part == 0) {
    // x[r] lane L: token 4L + r, pairs 0-3; x[4 + r] lane L: the same token, pairs 4-7. A row is [x[r].L, x[4+r].L]
    uint16_t* dst = ops.q + token * width + h * d + f0;
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m512i t01 = _mm512_permutex2var_epi64(x[r], lo, x[4 + r]);  // tokens r, 4 + r
      const __m512i t23 = _mm512_permutex2var_epi64(x[r], hi, x[4 + r]);  // tokens 8 + r, 12 + r
      const __m256i out[4] = {_mm512_castsi512_si256(t01), _mm512_extracti64x4_epi64(t01, 1),
                              _mm512_castsi512_si256(t23), _mm512_extracti64x4_epi64(t23, 1)};
      for (int g = 0; g < 4; ++g)  // token 4g + r
        if (4 * g + r < rows) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (4 * g + r) * width), out[g]);
    }
    return;
  }
  // V: x[r]'s lanes are rows 0-3 at token pair r, rows 0-3 at pair r + 4, rows 8-11 at r, rows 8-11 at r + 4;
  // x[4 + r]'s the same for rows 4-7 and 12-15. Pair q's packed row is features (rows) 0-15 in order
  uint16_t* dst = reinterpret_cast<uint16_t*>(ops.v + head * ops.kv_bytes) + (f0 / nr) * (seq / 2) * nr * 2 +
                  (f0 % nr) * 2;
  const __m512i at_r = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), at_r4 = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    if (2 * r < rows)
      _mm512_storeu_si512(dst + (s0 / 2 + r) * nr * 2, _mm512_permutex2var_epi64(x[r], at_r, x[4 + r]));
    if (2 * (r + 4) < rows)
      _mm512_storeu_si512(dst + (s0 / 2 + r + 4) * nr * 2, _mm512_permutex2var_epi64(x[r], at_r4, x[4 + r]));
  }
}

// A 16 x 16 piece of a block-sparse QKV before INT8 attention (Epilogue::qkv_s8). V's rows (finish_piece's floats) are
// stored by channel, as the tile holds them. Q's and K's rows (finish_piece's floats: the dequantized sum plus the
// bias) are gathered per head in the call's buffer (QkvS8::head_rows) over the head's head_dim / 16 row groups, which a
// call runs one after another for the same tokens (it covers whole heads); at the head's last group each of the 16
// tokens' head row is quantized as the attention would quantize it, the row's reductions running along the lanes: Q as
// quantize_rows_u8 (range with 0, row_u8_params, quant_i32_16) into u8 token rows, K as quant_pack_nk_s8 (absolute
// maximum, s8_row_scale, quant_s8_16, the integer sum) into pack_s8's layout, whose 4 inputs x 16 keys per quad are
// pack_rows4's bytes. The same floats and bytes as those functions on the float rows.
void finish_qkv_s8(const float (*t)[64], int v, int64_t m, int64_t m0, int64_t nb0, int64_t nb1, float* c,
                   int64_t ldc, const Epilogue& epi) {
  const QkvS8& ops = epi.qkv_s8;
  const int64_t d = ops.head_dim, width = ops.heads * d, seq = ops.seq;
  (void)c;
  (void)ldc;
  const int64_t part = nb0 / width, h = nb0 % width / d, f0 = nb0 % d;
  const int64_t token = ops.token0 + m0 + 16 * v, b = token / seq, s0 = token % seq;  // 16 tokens of sequence b
  const int64_t rows = m - m0 - 16 * v < 16 ? m - m0 - 16 * v : 16;
  const __mmask16 tokens = first(rows);
  const int64_t head = b * ops.heads + h;
  const auto row = [&](int i) {  // output row nb0 + i over the piece's 16 tokens, as finish_piece adds its bias
    return _mm512_add_ps(_mm512_load_ps(&t[i][16 * v]), _mm512_set1_ps(epi.bias ? epi.bias[nb0 + i] : 0.0f));
  };
  if (part == 2) {  // V: the tile's rows are its channels, stored as they are (QkvS8::vt)
    float* dst = ops.vt + (head * d + f0) * seq + s0;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      if (nb0 + i < nb1) _mm512_mask_storeu_ps(dst + i * seq, tokens, row(i));
    return;
  }
  float(*head_rows)[64] = reinterpret_cast<float(*)[64]>(ops.head_rows);  // [feature of the head][token of the tile]
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) _mm512_store_ps(&head_rows[f0 + i][16 * v], row(i));
  if (f0 + 16 < d) return;
  const auto y = [&](int64_t f) { return _mm512_load_ps(&head_rows[f][16 * v]); };
  if (part == 0) {  // Q
    // rows_range_u8's ranges, which include 0, in four chains (min and max are exact in any order; the clamps
    // below make a zero of either sign +0, as row_u8_params does)
    __m512 mn4[4], mx4[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) mn4[j] = mx4[j] = _mm512_setzero_ps();
    for (int64_t f = 0; f < d; f += 4)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        mn4[j] = _mm512_min_ps(mn4[j], y(f + j));
        mx4[j] = _mm512_max_ps(mx4[j], y(f + j));
      }
    __m512 mn = _mm512_min_ps(_mm512_min_ps(mn4[0], mn4[1]), _mm512_min_ps(mn4[2], mn4[3]));
    __m512 mx = _mm512_max_ps(_mm512_max_ps(mx4[0], mx4[1]), _mm512_max_ps(mx4[2], mx4[3]));
    // row_u8_params on every lane
    mn = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mn, _mm512_setzero_ps(), _CMP_LT_OQ), mn);
    mx = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mx, _mm512_setzero_ps(), _CMP_GT_OQ), mx);
    __m512 scale = _mm512_div_ps(_mm512_sub_ps(mx, mn), _mm512_set1_ps(255.0f));
    scale = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(scale, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.0f),
                                 scale);
    __m512 zp = _mm512_roundscale_ps(_mm512_div_ps(_mm512_xor_ps(mn, _mm512_set1_ps(-0.0f)), scale),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    zp = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(zp, _mm512_setzero_ps(), _CMP_LT_OQ), zp, _mm512_setzero_ps());
    zp = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(zp, _mm512_set1_ps(255.0f), _CMP_GT_OQ), zp,
                              _mm512_set1_ps(255.0f));
    _mm512_mask_storeu_ps(ops.q_scale + head * seq + s0, tokens, scale);
    _mm512_mask_storeu_ps(ops.q_zp + head * seq + s0, tokens, zp);
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), scale);
    const __m512i zpi = _mm512_cvttps_epi32(zp);
    uint8_t* dst = ops.q + (head * seq + s0) * d;
    for (int64_t g = 0; g < d; g += 16) {  // 16 features: per 128-bit lane, 4 tokens' 16 bytes
      __m512i packed[4];
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        __m512i q[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) q[r] = quant_i32_16(y(g + 4 * k + r), inv, zpi);
        packed[k] = pack_rows4_u8(q);
      }
      token_bytes16(packed, [&](int64_t j, __m128i bytes) {  // token j of the 16: its features g .. g + 15
        if (j < rows) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j * d + g), bytes);
      });
    }
    return;
  }
  // K: quant_pack_nk_s8's scale, bytes and sum per key
  __m512 am4[4];  // four chains: the maximum is exact in any order
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) am4[j] = _mm512_setzero_ps();
  for (int64_t f = 0; f < d; f += 4)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) am4[j] = _mm512_max_ps(am4[j], _mm512_abs_ps(y(f + j)));
  const __m512 amax = _mm512_max_ps(_mm512_max_ps(am4[0], am4[1]), _mm512_max_ps(am4[2], am4[3]));
  const __m512 scale = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ),
                                            _mm512_set1_ps(1.0f), _mm512_div_ps(amax, _mm512_set1_ps(127.0f)));
  const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), scale);
  const int64_t nr = kS8Nr;  // pack_s8's panel of keys
  int8_t* dst = ops.k + head * ops.k_bytes + (s0 / nr) * (d / 4) * nr * 4 + (s0 % nr) * 4;
  __m512i sum = _mm512_setzero_si512();
  for (int64_t g = 0; g < d; g += 4) {  // input quad g / 4: 16 keys x 4 bytes
    __m512i q[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      q[r] = quant_s8_16(y(g + r), inv);
      sum = _mm512_add_epi32(sum, q[r]);
    }
    _mm512_mask_storeu_epi32(dst + (g / 4) * nr * 4, tokens, pack_rows4<true>(q));
  }
  _mm512_mask_storeu_ps(ops.k_scale + head * seq + s0, tokens, scale);
  _mm512_mask_storeu_epi32(ops.k_sum + head * seq + s0, tokens, sum);
}

template <Act A, bool Stream>
PieceFn finish_piece_for(const Epilogue& epi) {
  if (epi.residual) return epi.out_u8 ? finish_piece<A, true, true, false> : finish_piece<A, true, false, Stream>;
  return epi.out_u8 ? finish_piece<A, false, true, false> : finish_piece<A, false, false, Stream>;
}

template <bool Stream>
PieceFn finish_piece_for(const Epilogue& epi) {
  return with_act(epi.act, [&](auto a) { return finish_piece_for<decltype(a)::value, Stream>(epi); });
}

PieceFn finish_piece_for(const Epilogue& epi, bool stream) {
  if (epi.qkv.q) return finish_qkv_bf16;
  if (epi.qkv_s8.q) return finish_qkv_s8;
  return stream ? finish_piece_for<true>(epi) : finish_piece_for<false>(epi);
}

template <int V>
void tile(const uint8_t* at_all, int64_t m, int64_t m0, const BsrS8& w, int64_t nb0, int64_t nb1, float* c,
          int64_t ldc, const Epilogue& epi, PieceFn piece) {
  // this tile's tokens within its At tile: the dot products index At as [quad][kAtTile][4] from there
  const uint8_t* at = at_all + (m0 / kAtTile) * ((w.k + 3) / 4) * kAtTile * 4 + (m0 % kAtTile) * 4;
  constexpr int64_t m_pad = kAtTile;
  alignas(64) float t[16][64];  // Y^T tile: 16 output rows x up to 64 tokens
  __m512 zp[V], sc[V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    const __mmask16 mk = first(m - m0 - 16 * v);
    zp[v] = _mm512_maskz_loadu_ps(mk, epi.row_zp + m0 + 16 * v);
    sc[v] = _mm512_maskz_loadu_ps(mk, epi.row_scale + m0 + 16 * v);
  }
  auto store_row = [&](int64_t i, const __m512i* acc) {
    const int64_t n = nb0 + i;
    const __m512 cs = _mm512_set1_ps(static_cast<float>(w.col_sum[n])), ws = _mm512_set1_ps(w.w_scale[n]);
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_store_ps(&t[i][16 * v], s8::dequant(acc[v], zp[v], sc[v], cs, ws));
  };
  for (int64_t i = 0; i < 16; ++i)
    if (nb0 + i >= nb1)
      for (int v = 0; v < V; ++v) _mm512_store_ps(&t[i][16 * v], _mm512_setzero_ps());
  // 4x4 blocks: 4 x V accumulators, which fit the registers up to V = 4 (test_codegen checks that no dot product
  // loop spills)
  static_assert(V <= 4, "4 x V accumulators fit the registers");
  const bool rows4 = w.block_rows == 4;
  for (int64_t i = 0; rows4 && i < 16 && nb0 + i < nb1; i += 4) {  // row blocks never straddle a tile (nb0 % 16 = 0)
    __m512i acc[4][V];
    const int64_t b = (nb0 + i) / 4;
    const int32_t b0 = w.rowptr[b], b1 = w.rowptr[b + 1];
    rows4_dot<V>(at, m_pad, w.cols + b0, w.values + 16 * b0, b1 - b0, acc);
    for (int r = 0; r < 4 && nb0 + i + r < nb1; ++r) store_row(i + r, acc[r]);
  }
  if (!rows4 && w.gq_ptr) {  // gathered quads: all 4 token vectors (a partial tile's others are not stored)
    const uint8_t* at8 = at_all + (m0 / kAtTile) * ((w.k + 3) / 4) * kAtTile * 4;
    for (int64_t i = 0; i < 16 && nb0 + i < nb1; ++i) {
      __m512i acc[4];
      const int64_t n = nb0 + i;
      const int32_t pf = w.gq_ptr[n + 1], pf_end = n + 1 < w.n ? w.gq_ptr[n + 2] : pf;
      gathered_dot(at8, w, w.gq_ptr[n], w.gq_ptr[n + 1], pf, pf_end - pf, acc);
      store_row(i, acc);
    }
  } else if (!rows4 && w.pair_tile) {  // nb0 % 16 == 0 (gemm_bsr_s8 checks): this tile's row pairs
    for (int32_t t = w.pair_tile[nb0 / 16]; t < w.pair_tile[nb0 / 16 + 1]; ++t) {
      __m512i a[V], b[V];
      pair_dot<V>(at, m_pad, w, t, a, b);
      const int64_t ra = w.pair_rows[t] & 0xff, rb = w.pair_rows[t] >> 8;
      if (nb0 + ra < nb1) store_row(ra, a);
      if (rb != 0xff && nb0 + rb < nb1) store_row(rb, b);
    }
  } else if (!rows4) {
    int64_t i = 0;
    if ((w.k + 3) / 4 >= kRows4MinQuads)
      for (; i + 3 < 16 && nb0 + i + 3 < nb1; i += 4) {
        __m512i acc[4][V];
        rows_dot<V, 4>(at, m_pad, w.cols, w.values, w.rowptr + nb0 + i, w.rowptr[w.n], acc);
        for (int r = 0; r < 4; ++r) store_row(i + r, acc[r]);
      }
    for (; i < 16 && nb0 + i < nb1; ++i) {
      __m512i acc[V];
      const int32_t b0 = w.rowptr[nb0 + i], b1 = w.rowptr[nb0 + i + 1];
      const int32_t p1 = nb0 + i + 1 < w.n ? w.rowptr[nb0 + i + 2] : b1;  // the next row's blocks: b1 .. p1
      row_dot<V>(at, m_pad, w.cols + b0, w.values + 4 * b0, b1 - b0, acc, w.cols, w.values, b1, p1 - b1);
      store_row(i, acc);
    }
  }
  if (ends_in_u8_rows(epi)) {
    (epi.act == Act::GeluErf ? finish_u8_rows<V, Act::GeluErf>
                             : epi.act == Act::Relu ? finish_u8_rows<V, Act::Relu> : finish_u8_rows<V, Act::None>)(
        t, m, m0, nb0, nb1, epi);
    return;
  }
  for (int v = 0; v < V; ++v) piece(t, v, m, m0, nb0, nb1, c, ldc, epi);
}

using TileFn = void (*)(const uint8_t*, int64_t, int64_t, const BsrS8&, int64_t, int64_t, float*, int64_t,
                        const Epilogue&, PieceFn);
const TileFn kTile[5] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>};
static_assert(kTileVecs == 4, "kTile covers a tile's token vectors");

// ---- calls of a few tokens: 4x4 blocks over the quantized rows, no re-layout ----
// A tile's dot products put 16 tokens along each vector, so a call of one token used 1/16 of every vpdpbusd, and
// its re-layout and epilogue still transposed 16 x 16 pieces. Here a 4x4 block is one 128-bit operand as it is
// stored (dword r: row r's weights for the block's 4 inputs) against the token's 4 input bytes broadcast: one
// vpdpbusd per block and token, the 4 rows' sums in its lanes, read straight from the u8 rows (no re-layout) and
// finished by token rows (no transpose). Several independent sums per token: vpdpbusd's latency is several
// cycles, a block's work one. Up to 4 tokens: each token costs a broadcast and a 128-bit product per block, where
// a tile's 16 lanes take up to 16 at the price of one; on Zen 4 (single Linears, 90% block, 2 threads) the four
// BERT-base shapes took 0.41x the time at 1 token, 0.63x at 4, and with the limit raised to 8, 0.95x at 6 and
// 1.23x at 8 (bench/results/zen4_bsr_few_tokens_kernels_ab_*.md)
constexpr int kFewTokens = 4;
// A call of a few tokens spends its time fetching the weights (a pass flushes them from the caches between
// layers), and by our reading the hardware prefetchers did not ask for them early enough: its block walk asks for
// them this many bytes ahead (the block indices a quarter as far). Ice Lake, 2 threads, BERT-base shapes: 0.80-0.89x the time at
// 1 token, 0.83-0.90x at 4 (bench/results/icelake_bsr_few_prefetch_kernels_ab_1.md, _4.md); 1 and 2 KiB measured
// about as fast, and a burst per 16-row group (the group and 2 KiB on) slowed FFN2's long rows at 4 tokens.
constexpr int64_t kFewPrefetchBytes = 4096;

// acc += u8 a . s8 block at p (from memory). As TF_DPBUSD: through the intrinsic gcc copied every sum to another
// register around each product (vpdpbusd overwrites its sum)
inline void dpbusd_block(__m128i& acc, __m128i a, const int8_t* p) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "m"(*reinterpret_cast<const __m128i*>(p)));
}

// acc[t]: the 4 rows' int32 sums of one row block (nb blocks from cols / vals) for tokens t < M (u8 rows ldq apart)
template <int M>
inline void block_row_few(const uint8_t* q, int64_t ldq, const int32_t* cols, const int8_t* vals, int32_t nb,
                          __m128i* acc) {
  constexpr int C = M == 1 ? 4 : (M == 2 ? 2 : 1);  // sums per token: at least 4 in flight per block step
  __m128i a[C][M];
#pragma GCC unroll 4
  for (int i = 0; i < C; ++i)
#pragma GCC unroll 8
    for (int t = 0; t < M; ++t) a[i][t] = _mm_setzero_si128();
  int32_t j = 0;
  for (; j + C <= nb; j += C) {
    // a line of values per 4 blocks and one of indices per 16, kFewPrefetchBytes on (past the call's last block
    // row too: a prefetch never faults)
    if (j % 4 == 0) _mm_prefetch(reinterpret_cast<const char*>(vals + 16 * j) + kFewPrefetchBytes, _MM_HINT_T0);
    if (j % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(cols + j) + kFewPrefetchBytes / 4, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int i = 0; i < C; ++i) {
      const int8_t* wv = vals + 16 * (j + i);
      const uint8_t* x = q + 4 * static_cast<int64_t>(cols[j + i]);
#pragma GCC unroll 8
      for (int t = 0; t < M; ++t) dpbusd_block(a[i][t], bcast_quad<__m128i>(x + t * ldq), wv);
    }
  }
  for (; j < nb; ++j) {
    const uint8_t* x = q + 4 * static_cast<int64_t>(cols[j]);
#pragma GCC unroll 8
    for (int t = 0; t < M; ++t) dpbusd_block(a[0][t], bcast_quad<__m128i>(x + t * ldq), vals + 16 * j);
  }
#pragma GCC unroll 8
  for (int t = 0; t < M; ++t) {
    acc[t] = a[0][t];
#pragma GCC unroll 4
    for (int i = 1; i < C; ++i) acc[t] = _mm_add_epi32(acc[t], a[i][t]);
  }
}

// Output rows [n0, n1) (n0 a multiple of 4) of M tokens: per 16 rows, each row block's sums, then per token the 16
// rows dequantized as the tiles' store_row does (s8::dequant, the dense kernels' float ops) and finished as a tile's
// piece (finish_row)
template <int M, Act A, bool Residual, bool OutU8>
void few_tokens(const uint8_t* q, int64_t ldq, const BsrS8& w, float* c, int64_t ldc, int64_t n0, int64_t n1,
                const Epilogue& epi) {
  const __m512 out_inv = _mm512_set1_ps(epi.out_inv_scale);
  const __m512i out_zp = _mm512_set1_epi32(epi.out_zp);
  __m512 zp[M], sc[M];
#pragma GCC unroll 8
  for (int t = 0; t < M; ++t) {
    zp[t] = _mm512_set1_ps(epi.row_zp[t]);
    sc[t] = _mm512_set1_ps(epi.row_scale[t]);
  }
  for (int64_t nb = n0; nb < n1; nb += 16) {
    const int64_t cols = n1 - nb < 16 ? n1 - nb : 16;
    const __mmask16 ck = first(cols);
    __m128i acc[4][M];
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      if (4 * g >= cols) {
#pragma GCC unroll 8
        for (int t = 0; t < M; ++t) acc[g][t] = _mm_setzero_si128();
        continue;
      }
      const int64_t b = (nb + 4 * g) / 4;
      const int32_t b0 = w.rowptr[b], b1 = w.rowptr[b + 1];
      block_row_few<M>(q, ldq, w.cols + b0, w.values + 16 * static_cast<int64_t>(b0), b1 - b0, acc[g]);
    }
    const __m512 cs = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(ck, w.col_sum + nb));
    const __m512 ws = _mm512_maskz_loadu_ps(ck, w.w_scale + nb);
    const __m512 bias = epi.bias ? _mm512_maskz_loadu_ps(ck, epi.bias + nb) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int t = 0; t < M; ++t) {
      __m512i r = _mm512_castsi128_si512(acc[0][t]);
      r = _mm512_inserti32x4(r, acc[1][t], 1);
      r = _mm512_inserti32x4(r, acc[2][t], 2);
      r = _mm512_inserti32x4(r, acc[3][t], 3);
      finish_row<A, Residual, OutU8, false>(s8::dequant(r, zp[t], sc[t], cs, ws), t, nb, cols, ck, bias, c, ldc,
                                            epi, out_inv, out_zp);
    }
  }
}

using FewFn = void (*)(const uint8_t*, int64_t, const BsrS8&, float*, int64_t, int64_t, int64_t, const Epilogue&);

template <Act A, bool Residual, bool OutU8, int... Ms>
FewFn few_tokens_for_m(int64_t m, std::integer_sequence<int, Ms...>) {
  FewFn fn = nullptr;
  ((fn = (m == Ms + 1 ? few_tokens<Ms + 1, A, Residual, OutU8> : fn)), ...);
  return fn;
}

template <Act A>
FewFn few_tokens_for(int64_t m, const Epilogue& epi) {
  using Ms = std::make_integer_sequence<int, kFewTokens>;
  if (epi.residual)
    return epi.out_u8 ? few_tokens_for_m<A, true, true>(m, Ms()) : few_tokens_for_m<A, true, false>(m, Ms());
  return epi.out_u8 ? few_tokens_for_m<A, false, true>(m, Ms()) : few_tokens_for_m<A, false, false>(m, Ms());
}

FewFn few_tokens_for(int64_t m, const Epilogue& epi) {
  return with_act(epi.act, [&](auto a) { return few_tokens_for<decltype(a)::value>(m, epi); });
}
}  // namespace

const int64_t kBsrTile = kAtTile;
const int64_t kBsrFewTokens = kFewTokens;
// shorter 1x4 rows run as row pairs (BsrS8::pair_tile); longer ones 4 at a time, interleaved (rows_dot)
const int64_t kBsrRowPairsMaxQuads = kRows4MinQuads;

size_t bsr_at_size(int64_t m, int64_t k) {
  return static_cast<size_t>((m + kAtTile - 1) / kAtTile * kAtTile * ((k + 3) / 4) * 4 + 64);
}

namespace {
// Re-lays tokens [m0, m1) (m0 a multiple of 16), 16 tokens x 16 quads at a time: row(token, g) gives one token's
// 16 quads from quad g on as a register (zero past m), and a 16x16 dword transpose turns 16 of them into 16 quad
// rows of 16 tokens, each handed to store(mb, quad, r) (r: input quad `quad` of tokens mb .. mb + 15, 4 bytes per
// token). Interleaved: row() gives the quads in packus order (dword 4L + j = quad 4j + L, see quantized_quads),
// and transposed row d is that quad.
template <bool Interleaved, class Row, class Store>
void relayout(int64_t m, int64_t m0, int64_t m1, int64_t k, Row row, Store store) {
  const int64_t kq = (k + 3) / 4;
  for (int64_t mb = m0; mb < m1; mb += 16) {
    for (int64_t g = 0; g < kq; g += 16) {
      __m512i r[16];
      // unrolled with constant indices, so the rows stay in registers through the transpose (r indexed by a
      // variable anywhere, as the bounded loops did, put it on the stack for every group); the bounds are a test
      // per row
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) r[i] = mb + i < m ? row(mb + i, g) : _mm512_setzero_si512();
      transpose16(r);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        const int64_t quad = g + (Interleaved ? 4 * (i % 4) + i / 4 : i);
        if (quad < kq) store(mb, quad, r[i]);
      }
    }
  }
}

template <bool Interleaved, class Row>
void relayout_at(int64_t m, int64_t m0, int64_t m1, int64_t k, uint8_t* at, Row row) {
  relayout<Interleaved>(m, m0, m1, k, row, [&](int64_t mb, int64_t quad, __m512i r) {
    _mm512_store_si512(at + bsr_at_offset(mb, k, kAtTile) + quad * kAtTile * 4, r);
  });
}

// bsr_pack_bytes' order: within a tile, token t = 16 q + 4 L + j (q: its 16-token block, L: the 128-bit lane it
// holds in that block's registers, j: its dword there) goes to byte 16 L + 4 q + j of each input's row. So a
// block's quad register r (lane L: tokens 4L .. 4L+3, 4 input bytes each) turns into byte rows by one in-lane byte
// shuffle per input i (bytes i, 4+i, 8+i, 12+i of each lane to dword q of that lane) and a store of those dwords.
struct ByteRowShuffles {
  __m512i ctl[4][4];  // [input i of the quad][block q]
  ByteRowShuffles() {
    for (int i = 0; i < 4; ++i)
      for (int q = 0; q < 4; ++q) {
        alignas(64) int8_t b[64];
        for (int x = 0; x < 64; ++x) {
          const int pos = x % 16;  // vpshufb indexes within the lane
          b[x] = pos / 4 == q ? static_cast<int8_t>(4 * (pos % 4) + i) : static_cast<int8_t>(-128);
        }
        ctl[i][q] = _mm512_load_si512(b);
      }
  }
};

template <bool Interleaved, class Row>
void relayout_bytes(int64_t m, int64_t m0, int64_t m1, int64_t k, uint8_t* at, Row row) {
  static const ByteRowShuffles shuffles;
  const int64_t k4 = (k + 3) / 4 * 4;
  relayout<Interleaved>(m, m0, m1, k, row, [&](int64_t mb, int64_t quad, __m512i r) {
    const int q = static_cast<int>((mb % kAtTile) / 16);
    const __mmask16 lanes = static_cast<__mmask16>(0x1111 << q);
    uint8_t* rows = at + (mb / kAtTile) * kAtTile * k4 + 4 * quad * kAtTile;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
      _mm512_mask_storeu_epi32(rows + i * kAtTile, lanes, _mm512_shuffle_epi8(r, shuffles.ctl[i][q]));
  });
}
}  // namespace

namespace {
// relayout's row() for u8 rows: a token's 16 quads from quad g on (zeros past k's quads)
inline auto u8_quads(const uint8_t* q, int64_t ldq, int64_t k) {
  return [=](int64_t token, int64_t g) {
    return _mm512_maskz_loadu_epi32(first((k + 3) / 4 - g), q + token * ldq + g * 4);
  };
}

// relayout's row() for float rows under the static quantization: quantize_u8's arithmetic on a token's 64 inputs
// from quad g on, one register of bytes. The clamp to 0..255 is done by the saturating packs (quant_i32_16 is at
// most 32000 + zp, below the signed 16-bit range the second pack reads: the same bytes as quant_u8_16) in 3
// shuffles per 64 inputs instead of 4 narrowing converts and 3 inserts; they leave the quads interleaved across
// the 128-bit lanes (dword 4L + j = quad 4j + L), which relayout<true> undoes for free by where it stores each
// transposed row. Inputs past k read as 0.0, which quantizes to the zero point, what the u8 rows' padding holds.
inline __m512i quantized_quads_at(const float* xr, int64_t k, int64_t g, __m512 inv, __m512i zpv) {
  const bool whole = 4 * g + 64 <= k;  // 64 inputs: no lane mask to work out per load
  const auto part = [&](int j) {
    const __m512 v = whole ? _mm512_loadu_ps(xr + 16 * j) : _mm512_maskz_loadu_ps(first(k - 4 * g - 16 * j), xr + 16 * j);
    return quant_i32_16(v, inv, zpv);
  };
  return _mm512_packus_epi16(_mm512_packus_epi32(part(0), part(1)), _mm512_packus_epi32(part(2), part(3)));
}

inline auto quantized_quads(const float* x, int64_t ldx, int64_t k, float inv_scale, int32_t zp) {
  const __m512 inv = _mm512_set1_ps(inv_scale);
  const __m512i zpv = _mm512_set1_epi32(zp);
  return [=](int64_t token, int64_t g) { return quantized_quads_at(x + token * ldx + 4 * g, k, g, inv, zpv); };
}
}  // namespace

void bsr_pack_at(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, int64_t k, uint8_t* at,
                 bool /*pair_quads: never at this level*/) {
  relayout_at<false>(m, m0, m1, k, at, u8_quads(q, ldq, k));
}

// the static quantization and bsr_pack_at's re-layout in one pass: the u8 rows are never stored
void bsr_quant_pack_at(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k, float inv_scale,
                       int32_t zp, uint8_t* at, bool /*pair_quads: never at this level*/) {
  relayout_at<true>(m, m0, m1, k, at, quantized_quads(x, ldx, k, inv_scale, zp));
}

// The dynamic quantization (quantize_rows_u8) and bsr_pack_at's re-layout in one pass, 16 rows at a time: their
// ranges first (row_params_u8, which brings the rows into L1 / L2), then the re-layout quantizing each row with its
// own scale and zero point, quantize_rows_u8's arithmetic (1 / scale, the zero point as an integer), so the same
// bytes. The u8 rows are never stored: at 2048 tokens of 3072 inputs they were 6 MiB written and read back.
void bsr_quant_rows_pack_at(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k,
                            float* row_scale, float* row_zp, uint8_t* at) {
  for (int64_t mb = m0; mb < m1; mb += 16) {  // m0 a multiple of 16, as bsr_pack_at's: whole groups of 16 rows
    const int64_t rows = std::min<int64_t>(16, m - mb);
    if (rows > 0) row_params_u8(x + mb * ldx, ldx, rows, k, row_scale + mb, row_zp + mb);
    alignas(64) float inv[16];
    alignas(64) int32_t zp[16];
    for (int64_t i = 0; i < rows; ++i) {
      inv[i] = 1.0f / row_scale[mb + i];
      zp[i] = static_cast<int32_t>(row_zp[mb + i]);
    }
    relayout_at<true>(m, mb, mb + 16, k, at, [&](int64_t token, int64_t g) {
      const int64_t i = token - mb;
      return quantized_quads_at(x + token * ldx + 4 * g, k, g, _mm512_set1_ps(inv[i]), _mm512_set1_epi32(zp[i]));
    });
  }
}

void bsr_pack_bytes(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, int64_t k, uint8_t* at) {
  relayout_bytes<false>(m, m0, m1, k, at, u8_quads(q, ldq, k));
}

void bsr_quant_pack_bytes(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k,
                          float inv_scale, int32_t zp, uint8_t* at) {
  relayout_bytes<true>(m, m0, m1, k, at, quantized_quads(x, ldx, k, inv_scale, zp));
}

void gemm_bsr_s8(const uint8_t* q, int64_t ldq, const uint8_t* at, int64_t m, const BsrS8& w, float* c,
                 int64_t ldc, int64_t n0, int64_t n1, const Epilogue& epi) {
  if (!at) {  // a call of a few tokens over its u8 rows (KernelTable::bsr_few_tokens)
    if (w.block_rows != 4 || w.gq_ptr || w.pair_tile || m < 1 || m > kFewTokens || n0 % 4 != 0 || epi.out_at ||
        epi.qkv.q || epi.qkv_s8.q)
      throw std::invalid_argument("gemm_bsr_s8: no re-layout is only for calls of a few tokens of 4x4 blocks");
    few_tokens_for(m, epi)(q, ldq, w, c, ldc, n0, n1, epi);
    return;
  }
  if (w.pair_tile && n0 % 16 != 0)  // row pairs are matched within 16-row tiles (the executor splits rows by 16)
    throw std::invalid_argument("gemm_bsr_s8: row pairs need a row range starting at a multiple of 16");
  if (w.gq_ptr && w.block_rows != 1) throw std::invalid_argument("gemm_bsr_s8: gathered quads are 1x4 rows");
  // token tiles outside, output rows inside: one At tile's slice of the re-laid activations (k/4 x 64 tokens x 4
  // bytes, contiguous) stays in L1 while every output row of the range streams its blocks past it
  // Float rows as streaming stores where the executor asks for them (Epilogue::stream_out, kStreamOutputBytes) and
  // they lie on whole 64-byte lines; the fence makes them visible before the call returns
  if (epi.qkv_s8.q && !epi.qkv_s8.head_rows) {  // finish_qkv_s8 gathers whole heads of 16-token pieces
    const QkvS8& o = epi.qkv_s8;
    const int64_t d = o.head_dim, width = o.heads * d;
    if (d <= 0 || d % 16 != 0 || d > 64 || o.seq % 64 != 0 || o.token0 % 16 != 0 || n0 % d != 0 ||
        (n1 % d != 0 && n1 <= 2 * width))
      throw std::invalid_argument("gemm_bsr_s8: INT8 attention operands need whole heads of 16-token pieces");
    // in a buffer on this call's stack (a thread_local one cost a __tls_get_addr call per piece)
    alignas(64) float head_rows[64][64];
    Epilogue with_rows = epi;
    with_rows.qkv_s8.head_rows = &head_rows[0][0];
    gemm_bsr_s8(q, ldq, at, m, w, c, ldc, n0, n1, with_rows);
    return;
  }
  const bool stream = epi.stream_out && !epi.out_u8 && !epi.qkv.q && !epi.qkv_s8.q &&
                      reinterpret_cast<uintptr_t>(c) % 64 == 0 &&
                      ldc % 16 == 0 && n0 % 16 == 0;
  const PieceFn piece = finish_piece_for(epi, stream);
  // 4x4-block tiles finished as 16 x 16 row pieces (not u8 rows, not bf16 attention operands) run 2 token vectors
  // on calls of 3 to 8 At tiles: measured faster there (bench/results/profile_block90_int8_attile64_rowpieces.md).
  // Longer calls keep 4: on a single Linear of 1024 or 2048 tokens into 64-byte aligned float rows, 2 vectors took
  // up to 2.1x the time of 4 on Zen 4 (FFN1's 3072 outputs most;
  // bench/results/zen4_bsr_tile_vecs_kernels_ab_2048.md, _1024.md).
  // 1x4 rows (csr-int8) keep 4: with 2 a row has 2 dependency chains and one broadcast per 2 products; on Zen 4
  // their QKV took 0.73x the time with 4 at 1 x 384 tokens (bench/results/csr_int8_rows_v4_zen4_ab.md)
  // On Intel cores only the pieces that add a residual run 2. Ice Lake, against 2 for every row piece
  // (TRIMFORMER_BSR_PIECES_V2=1): single Linears (no residual) at 384 tokens 0.79-0.89x the time
  // (bench/results/icelake_bsr_pieces_v4_kernels_ab_384_u8.md, _dynamic.md), 90% block dynamic INT8 BERT-base passes
  // 0.979x at 1 x 384 and 0.974x at batch 3 (icelake_bsr_pieces_v4_e2e_ab.md); the passes' residual pieces (attn_out,
  // FFN2) had been 1.05-1.06x slower with 4 (icelake_tried_bsr_tile_vecs4_e2e_b3_s384_r2.md)
  static const bool intel = cpu_is_intel();
  const bool row_pieces = !epi.qkv.q && !epi.qkv_s8.q && !ends_in_u8_rows(epi);
  const bool two_vecs = row_pieces && (!intel || epi.residual || epi.bsr_pieces_v2);
  const int64_t rule = m > 2 * kAtTile && m <= 8 * kAtTile && two_vecs && w.block_rows == 4 ? 2 : kTileVecs;
  // (an A/B setting: 1, 2 or 4 vectors, so that no tile straddles an At tile)
  const bool set = epi.tile_vecs == 1 || epi.tile_vecs == 2 || epi.tile_vecs == 4;
  const int64_t vmax = w.block_rows == 4 && set ? epi.tile_vecs : rule;
  for (int64_t m0 = 0; m0 < m; m0 += 16 * vmax) {
    const int64_t vecs = (m - m0 + 15) / 16;
    const TileFn fn = kTile[vecs > vmax ? vmax : vecs];
    for (int64_t nb = n0; nb < n1; nb += 16) fn(at, m, m0, w, nb, nb + 16 < n1 ? nb + 16 : n1, c, ldc, epi, piece);
  }
  if (stream) _mm_sfence();
}

}  // namespace avx512
}  // namespace tf
