// Sparse FP32 GEMMs on AVX-512 (csr-f32, block-f32 with 4x1 blocks, N:M groups).
//
// Same scheme as the block-sparse INT8 kernel (bsr_s8_avx512vnni.cpp): the weight is the sparse operand and the
// activations are re-laid once per call, here as tiles of 64 tokens, At[tile][k8][64] (tokens along the vector),
// so each stored weight costs one broadcast and, per 16 tokens, one fused load + FMA: no work on zeros, no
// gathers. Each pass walks the inputs in chunks (48 for N:M, whose passes cover two adjacent tiles: a chunk of At,
// 2 x 48 x 64 floats = 24 KiB, each half contiguous so it spreads over every L1 set, stays in L1 while a group of
// 16 output rows adds its entries from that chunk to its accumulators, 8 KiB). Every FMA reads its own 64 bytes of
// At (rows share no inputs), so these kernels are bound by loads (~1.5 per FMA) where the dense register-blocked
// GEMM needs ~0.7. Accumulator rows are Y^T (output row x tokens); a 16x16 transpose turns them back into token
// rows with bias, activation and residual applied on the way out. csr-f32 alternates even / odd entries between
// two accumulator sets (8 FMA chains per row), block-f32 shares each activation load between the 4 rows of a 4x1
// block, N:M decodes each value's input from its group number and its in-group index. See docs/kernels.md.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "../ops/epilogue_avx512.h"
#include "avx512_lanes.h"

namespace tf {
namespace avx512 {

namespace {

inline int64_t round8(int64_t x) { return (x + 7) / 8 * 8; }
// At tiles of 64 tokens (floats per At row within a tile): a tile's slice of At is 192 KiB at k = 768 where 128
// tokens made it 384 KiB, and 768 KiB at 3072, within a 1 MiB L2 (1.5 MiB before). On Zen 4 (32 KiB L1d, 1 MiB
// L2) csr-f32 took 0.93x the time per Linear (block-f32 0.96x, nm-f32 1.03x) and 90% unstructured FP32 BERT-base
// 0.94x the pass time at batch 16 and batch 1 (0.89x at batch 16 in a first A/B):
// bench/results/zen4_spf32_tile64_kernels_*_ab.md, _e2e_ab.md, _first_ab.md. csr-f32 and block-f32 run a tile's 4
// vectors; N:M runs 8 over two adjacent tiles (128 tokens: its group decode is paid per 8 vectors, as before).
constexpr int64_t kTile = 64;
constexpr int kTileVecs = kTile / 16;
// inputs per chunk (multiples of 8, so N:M groups never straddle chunks). Quick development timings (noisy shared
// machine, 768x768, 128 tokens, 1 thread): N:M (50% kept, long rows) gained ~15% from 48-96-input chunks; CSR and
// 4x1 blocks at 90% lost 10-25% with chunks under ~200 inputs (a row's handful of entries per chunk no longer
// pays for the accumulator round trip and the loop exit). csr-f32 walks chunks of 384 inputs (96 KiB of a 64-token
// At tile, read by 16 rows while it is the hot part of L2): on Zen 4, 0.97x the time of whole rows up to 1024
// inputs over the four BERT-base shapes in two A/Bs, every shape faster; 128 took 1.34x, 256 1.05x, 512 0.97x,
// 768 1.00x (bench/results/zen4_csr_f32_chunk_ab.md, _ab2.md). block-f32 takes whole block rows: with the 384-input
// chunks it took 1.05x the time, whole rows 0.96x that of 1024-input chunks (zen4_block_f32_rows_ab.md, _ab2.md).
constexpr int64_t kNmChunk = 48;
constexpr int64_t kCsrChunk = 384;
// csr-f32 asks for the indices and values of the row-chunk kCsrPrefetchRows rows on (in walk order: the next
// chunk's first rows after a group's last) while a row runs, a line of each per 2 entries: in a pass the weights
// (1.9 MB per FFN Linear) stream from beyond L2 and the At reads crowd out the hardware prefetchers. Zen 4, single
// Linears (1 thread, 128 tokens, cold weights): 0.84x the time over the four BERT-base shapes (FFN2 0.73-0.74x),
// where 1 row ahead took 0.88x, 4 rows 0.86x and 8 rows 0.89x (bench/results/zen4_csr_f32_weight_prefetch_ab.md,
// _ab2.md); the 90% unstructured FP32 BERT-base pass 0.93x at batch 16 and 0.85x at batch 1
// (zen4_sparse_weight_prefetch_e2e_ab.md)
constexpr int64_t kCsrPrefetchRows = 2;

#include "acc_buffer.inc"  // AccBuffer, tl_acc
#include "nm_chunk.inc"  // nm_chunk_rows

// acc[v] += sum over entries j of value_j * At[input_j][16v ..] (one output row, V <= 4 token vectors). Even and odd
// entries go to two accumulator sets: 2V independent FMA chains despite the 4-cycle FMA latency. Entries pf0 ..
// pf1-1 (another row's) are prefetched on the way, a line of indices and one of values per step.
template <int V>
inline void row_entries(const float* base, const int32_t* cols, const float* vals, int32_t j0, int32_t j1,
                        float* acc, int32_t pf0, int32_t pf1) {
  __m512 a[V], b[V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    a[v] = _mm512_load_ps(acc + 16 * v);
    b[v] = _mm512_setzero_ps();
  }
  int32_t j = j0;
  int32_t pf = pf0;
  for (; j + 1 < j1; j += 2) {
    if (pf < pf1) {
      _mm_prefetch(reinterpret_cast<const char*>(cols + pf), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(vals + pf), _MM_HINT_T0);
      pf += 16;
    }
    const __m512 w0 = _mm512_set1_ps(vals[j]), w1 = _mm512_set1_ps(vals[j + 1]);
    const float* p0 = base + static_cast<int64_t>(cols[j]) * kTile;
    const float* p1 = base + static_cast<int64_t>(cols[j + 1]) * kTile;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      a[v] = _mm512_fmadd_ps(w0, _mm512_load_ps(p0 + 16 * v), a[v]);
      b[v] = _mm512_fmadd_ps(w1, _mm512_load_ps(p1 + 16 * v), b[v]);
    }
  }
  if (j < j1) {
    const __m512 w0 = _mm512_set1_ps(vals[j]);
    const float* p0 = base + static_cast<int64_t>(cols[j]) * kTile;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) a[v] = _mm512_fmadd_ps(w0, _mm512_load_ps(p0 + 16 * v), a[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) _mm512_store_ps(acc + 16 * v, _mm512_add_ps(a[v], b[v]));
}

// the 4 rows of a 4x1 row block (accumulator rows ld apart): each activation load feeds 4 FMAs
template <int V>
inline void block4_entries(const float* base, const int32_t* cols, const float* vals, int32_t j0, int32_t j1,
                           float* acc, int64_t ld) {
  __m512 a[4][V];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) a[r][v] = _mm512_load_ps(acc + r * ld + 16 * v);
  for (int32_t j = j0; j < j1; ++j) {
    const __m512 w0 = _mm512_set1_ps(vals[4 * j]), w1 = _mm512_set1_ps(vals[4 * j + 1]),
                 w2 = _mm512_set1_ps(vals[4 * j + 2]), w3 = _mm512_set1_ps(vals[4 * j + 3]);
    const float* ap = base + static_cast<int64_t>(cols[j]) * kTile;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m512 x = _mm512_load_ps(ap + 16 * v);
      a[0][v] = _mm512_fmadd_ps(w0, x, a[0][v]);
      a[1][v] = _mm512_fmadd_ps(w1, x, a[1][v]);
      a[2][v] = _mm512_fmadd_ps(w2, x, a[2][v]);
      a[3][v] = _mm512_fmadd_ps(w3, x, a[3][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_store_ps(acc + r * ld + 16 * v, a[r][v]);
}

// groups g0 .. g1-1 of one N:M row: value j sits at input GROUP * (j / KEEP) + idx[j]; values alternate between
// two accumulator sets (as in row_entries). Vectors 4 .. V-1 are the next At tile's, tile_stride floats on.
template <int V, int KEEP, int GROUP>
inline void nm_entries(const float* base, int64_t tile_stride, const float* vals, const uint8_t* idx, int64_t g0,
                       int64_t g1, float* acc) {
  __m512 a[2][V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    a[0][v] = _mm512_load_ps(acc + 16 * v);
    a[1][v] = _mm512_setzero_ps();
  }
  for (int64_t g = g0; g < g1; ++g) {
    const float* gp = base + g * GROUP * kTile;
#pragma GCC unroll 4
    for (int q = 0; q < KEEP; ++q) {
      const __m512 wv = _mm512_set1_ps(vals[g * KEEP + q]);
      const float* ap = gp + static_cast<int64_t>(idx[g * KEEP + q]) * kTile;
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        const float* p = v < kTileVecs ? ap + 16 * v : ap + tile_stride + 16 * (v - kTileVecs);
        a[q & 1][v] = _mm512_fmadd_ps(wv, _mm512_load_ps(p), a[q & 1][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) _mm512_store_ps(acc + 16 * v, _mm512_add_ps(a[0][v], a[1][v]));
}

// Y^T rows nb0 .. nb0+15 of a QKV (one head's channels of Q, K or V: head_dim and the call's tokens, sequence by
// sequence, come in 16s) as the fused float attention's operands (QkvF32): K's rows are rows of its key panels as
// they stand (16 keys x one channel), Q's and V's are transposed into token rows of Q or of a V panel. Every store
// lands in one (sequence, head)'s contiguous block instead of spreading a row group's 64-byte pieces over the
// 9 KiB rows of a BERT-base QKV output, and the attention packs neither K nor V. (alpha and bias as store_tile
// applies them, in its order: the same bits; a QKV has no activation or residual.)
void store_qkv_operands(const float* t, int64_t ld, int vecs, int64_t m, int64_t m0, int64_t nb0,
                        const Epilogue& epi) {
  const QkvF32& o = epi.qkv_f32;
  const int64_t d = o.head_dim, width = o.heads * d, which = nb0 / width, head = (nb0 % width) / d, c0 = nb0 % d;
  const __m512 alpha = _mm512_set1_ps(epi.alpha);
  for (int v = 0; v < vecs; ++v) {
    const int64_t tok = m0 + 16 * v, rows = m - tok < 16 ? m - tok : 16;
    if (rows <= 0) break;
    const int64_t at = o.token0 + tok, b = at / o.seq, s = at % o.seq;
    float* block = o.base + (b * o.heads + head) * 3 * o.seq * d;
    if (which == 1) {  // K: channel c0 + i of keys s .. s+15 is row c0 + i of key panel s / 16
      float* panel = block + o.seq * d + (s / 16) * d * 16;
      const __mmask16 live = first(rows);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        const __m512 bias = _mm512_set1_ps(epi.bias ? epi.bias[nb0 + i] : 0.0f);
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(t + i * ld + 16 * v), alpha), bias);
        _mm512_mask_storeu_ps(panel + (c0 + i) * 16, live, y);
      }
      continue;
    }
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(t + i * ld + 16 * v);
    transpose16(r);
    const __m512 bias = epi.bias ? _mm512_loadu_ps(epi.bias + nb0) : _mm512_setzero_ps();
    // Q: token s + i's channels c0 .. c0+15 in its row; V: in panel c0 / 16's row for that token
    float* dst = which == 0 ? block + s * d + c0 : block + 2 * o.seq * d + (c0 / 16) * o.seq * 16 + s * 16;
    const int64_t step = which == 0 ? d : 16;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)  // constant indices keep r in registers
      if (i < rows)
        _mm512_storeu_ps(dst + i * step, _mm512_add_ps(_mm512_mul_ps(r[i], alpha), bias));
  }
}

// store_tile's general end: each 16-token piece of the Y^T rows transposed back to token rows and finished (alpha,
// bias, activation, residual). Specialised on the activation and the residual: with the activation chosen at run
// time, its out-of-line forms (act16 calls `activation` for GELU-tanh and tanh) were calls inside the row loop,
// and a call clobbers every vector register, so all 16 transposed rows went through the stack in every piece, for
// every activation.
template <Act A, bool Residual>
void store_rows(const float* t, int64_t ld, int vecs, int64_t m, int64_t m0, int64_t nb0, int64_t nb1, float* c,
                int64_t ldc, const Epilogue& epi) {
  const int64_t cols = nb1 - nb0 < 16 ? nb1 - nb0 : 16;
  const __mmask16 ck = first(cols);
  const __m512 bias = epi.bias ? _mm512_maskz_loadu_ps(ck, epi.bias + nb0) : _mm512_setzero_ps();
  const __m512 alpha = _mm512_set1_ps(epi.alpha);
  for (int v = 0; v < vecs; ++v) {
    if (m - m0 - 16 * v <= 0) break;
    // transposed on the way in from memory (half transpose16's shuffles, and its 16 temporaries made gcc spill
    // a few registers here)
    __m512 r[16];
    load_transposed16(t + 16 * v, ld, r);
    const int64_t rows = m - m0 - 16 * v < 16 ? m - m0 - 16 * v : 16;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {  // constant indices keep r in registers
      if (i >= rows) break;
      const int64_t row = m0 + 16 * v + i;
      __m512 y = act16(_mm512_add_ps(_mm512_mul_ps(r[i], alpha), bias), A, cols);
      if (Residual) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(ck, epi.residual + row * epi.ld_residual + nb0));
      _mm512_mask_storeu_ps(c + row * ldc + nb0, ck, y);
    }
  }
}

using StoreRowsFn = void (*)(const float*, int64_t, int, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                             const Epilogue&);

template <Act A>
StoreRowsFn store_rows_for(const Epilogue& epi) {
  return epi.residual ? store_rows<A, true> : store_rows<A, false>;
}

StoreRowsFn store_rows_for(const Epilogue& epi) {
  return with_act(epi.act, [&](auto a) { return store_rows_for<decltype(a)::value>(epi); });
}

// Y^T rows nb0 .. nb1-1 (row stride ld, tokens m0 .. m0+16*vecs-1) back to token rows of c, finished on the way
// out in the shared epilogue's order (alpha, bias, activation, residual) while in registers; rows past nb1 of t
// hold zeros
void store_tile(const float* t, int64_t ld, int vecs, int64_t m, int64_t m0, int64_t nb0, int64_t nb1, float* c,
                int64_t ldc, const Epilogue& epi) {
  if (epi.out_at_f32) {  // rows of Y^T are rows of the next layer's At: no transpose, no float token rows
    const int64_t k = epi.out_at_f32_k, k8 = round8(k);
    const __m512 alpha = _mm512_set1_ps(epi.alpha);
    for (int v = 0; v < vecs; ++v) {  // drive's vecs: those holding a token below m
      const int64_t tok = m0 + 16 * v;
      const __mmask16 live = first(m - tok);  // padding tokens get zeros
      float* dst = epi.out_at_f32 + (tok / kTile) * k8 * kTile + tok % kTile;
      for (int64_t n = nb0; n < nb1; ++n) {
        const __m512 bias = _mm512_set1_ps(epi.bias ? epi.bias[n] : 0.0f);
        const __m512 y = act16(_mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(t + (n - nb0) * ld + 16 * v), alpha), bias),
                               epi.act, 16);
        _mm512_store_ps(dst + n * kTile, _mm512_maskz_mov_ps(live, y));
      }
      if (nb1 == k)  // the inputs past k of the next layer's re-layout are zeros, as spf32_pack_at leaves them
        for (int64_t n = k; n < k8; ++n) _mm512_store_ps(dst + n * kTile, _mm512_setzero_ps());
    }
    return;
  }
  if (epi.qkv_f32.base) {
    store_qkv_operands(t, ld, vecs, m, m0, nb0, epi);
    return;
  }
  store_rows_for(epi)(t, ld, vecs, m, m0, nb0, nb1, c, ldc, epi);
}

// token passes of VMAX vectors outside (one At tile, or two adjacent ones for VMAX = 8), then groups of kRowGroup
// output rows, then input chunks, then the rows of the group: `add_chunk(std::integral_constant<int, V>, base, acc,
// ld, ch, r0, r1)` adds chunk ch of rows [r0, r1) into their accumulator rows (row r at acc + (r - r0) * ld) for
// the pass's V token vectors (fewer than VMAX in a last, partial pass: no work on padding tokens beyond the next
// 16). A group's accumulators (16 rows x up to 128 tokens, 8 KiB) fit L1 together with an N:M chunk of At; a chunk
// is re-read from L2 once per group.
constexpr int64_t kRowGroup = 16;

template <int VMAX, class AddChunk>
void drive(const float* at, int64_t m, int64_t k, int64_t chunk, float* c, int64_t ldc, int64_t n0, int64_t n1,
           const Epilogue& epi, AddChunk add_chunk) {
  static_assert(VMAX == kTileVecs || VMAX == 2 * kTileVecs, "a pass is one At tile or two adjacent ones");
  const int64_t ld = 16 * VMAX, chunks = (k + chunk - 1) / chunk, k8 = round8(k);
  float* acc = tl_acc.get(static_cast<size_t>(kRowGroup * ld));
  for (int64_t m0 = 0; m0 < m; m0 += 16 * VMAX) {
    const float* base = at + (m0 / kTile) * k8 * kTile;
    const int64_t vecs = (m - m0 + 15) / 16 < VMAX ? (m - m0 + 15) / 16 : VMAX;
    for (int64_t r0 = n0; r0 < n1; r0 += kRowGroup) {
      const int64_t r1 = r0 + kRowGroup < n1 ? r0 + kRowGroup : n1;
      std::memset(acc, 0, static_cast<size_t>(kRowGroup * ld) * 4);
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const auto run = [&](auto vt) { add_chunk(vt, base, acc, ld, ch, r0, r1); };
        switch (vecs) {
          case 1: run(std::integral_constant<int, 1>()); break;
          case 2: run(std::integral_constant<int, 2>()); break;
          case 3: run(std::integral_constant<int, 3>()); break;
          case 4: run(std::integral_constant<int, 4>()); break;
          default:
            if constexpr (VMAX > 4) {
              switch (vecs) {
                case 5: run(std::integral_constant<int, 5>()); break;
                case 6: run(std::integral_constant<int, 6>()); break;
                case 7: run(std::integral_constant<int, 7>()); break;
                default: run(std::integral_constant<int, VMAX>()); break;
              }
            }
        }
      }
      for (int64_t nb = r0; nb < r1; nb += 16)
        store_tile(acc + (nb - r0) * ld, ld, static_cast<int>(vecs), m, m0, nb, nb + 16 < r1 ? nb + 16 : r1, c,
                   ldc, epi);
    }
  }
}

// csr-f32 as generated code (SparseF32Jit): per 64-token pass and block of rows overlapping [n0, n1), each group's
// function runs the pass's 16-token quarters into the block's Y^T rows (an L1-sized buffer), then store_tile
// finishes the block's 16-row units inside [n0, n1) (a block the split cuts computes its other rows for nothing:
// the loader puts block boundaries where the executor's column splits fall). Group by group rather than quarter
// by quarter, and the next group's code prefetched: 90% unstructured FP32 BERT-base at batch 16 (development
// timings, not on file) ran noticeably faster with each than without.
using JitTileFn = void (*)(const float* at, const float* values, float* yt);

void drive_jit(const float* at, int64_t m, int64_t k, const SparseF32Jit& j, float* c, int64_t ldc, int64_t n0,
               int64_t n1, const Epilogue& epi) {
  const int64_t ld = kTile, k8 = round8(k);
  float* yt = tl_acc.get(static_cast<size_t>((j.max_block_rows + 15) / 16 * 16 * ld));
  const JitGroupF32* last = j.groups + j.block_groups[j.blocks];
  for (int64_t m0 = 0; m0 < m; m0 += kTile) {
    const float* base = at + (m0 / kTile) * k8 * kTile;
    const int vecs = static_cast<int>((m - m0 + 15) / 16 < kTileVecs ? (m - m0 + 15) / 16 : kTileVecs);
    for (int64_t b = 0; b < j.blocks; ++b) {
      const JitGroupF32* g0 = j.groups + j.block_groups[b];
      const JitGroupF32* g1 = j.groups + j.block_groups[b + 1];
      const int64_t bs = g0->row0, be = (g1 - 1)->row0 + (g1 - 1)->rows;
      if (be <= n0 || bs >= n1) continue;
      for (const JitGroupF32* g = g0; g < g1; ++g) {
        // the next group's code toward L2 while this one runs (in a pass it comes from beyond L2, and instruction
        // fetch does not run that far ahead)
        const JitGroupF32* next = g + 1 < last ? g + 1 : g;
        const int64_t end = next + 1 < last ? (next + 1)->code_off : j.code_bytes;
        for (int64_t o = next->code_off; o < end; o += 64)
          _mm_prefetch(reinterpret_cast<const char*>(j.code + o), _MM_HINT_T1);
        // the group's code runs the pass's quarters back to back: after the first, it comes from L1i / L2
        for (int v = 0; v < vecs; ++v)
          reinterpret_cast<JitTileFn>(j.code + g->code_off)(base + 16 * v, j.values + g->value_off,
                                                            yt + (g->row0 - bs) * ld + 16 * v);
      }
      const int64_t r0 = bs > n0 ? bs : n0, r1 = be < n1 ? be : n1;
      for (int64_t nb = r0; nb < r1; nb += 16)
        store_tile(yt + (nb - bs) * ld, ld, vecs, m, m0, nb, nb + 16 < r1 ? nb + 16 : r1, c, ldc, epi);
    }
  }
}

template <int KEEP, int GROUP>
void gemm_nm(const float* at, int64_t m, const NmF32& w, float* c, int64_t ldc, int64_t n0, int64_t n1,
             const Epilogue& epi) {
  const int64_t tile_stride = round8(w.k) * kTile;  // from an input's floats in one At tile to the next tile's
  drive<2 * kTileVecs>(at, m, w.k, kNmChunk, c, ldc, n0, n1, epi,
                       [&](auto vt, const float* base, float* acc, int64_t ld, int64_t ch, int64_t r0, int64_t r1) {
                         nm_chunk_rows<KEEP, GROUP>(w, ch, r0, r1, acc, ld,
                                                    [&](const float* v, const uint8_t* ix, int64_t g0, int64_t g1,
                                                        float* a) {
                                                      nm_entries<decltype(vt)::value, KEEP, GROUP>(
                                                          base, tile_stride, v, ix, g0, g1, a);
                                                    });
                       });
}
}  // namespace

const int64_t kSpf32ChunkK = kCsrChunk;

size_t spf32_at_size(int64_t m, int64_t k) {
  return static_cast<size_t>((m + kTile - 1) / kTile * kTile * round8(k)) * 4 + 64;
}

// rows [m0, m1) of x, 16 tokens at a time, into At[tile][k8][64]; inputs k .. k8-1 and tokens past m are zeros
void spf32_pack_at(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k, float* at) {
  const int64_t k8 = round8(k);
  for (int64_t mb = m0; mb < m1; mb += 16) {
    float* tile = at + (mb / kTile) * k8 * kTile + mb % kTile;
    for (int64_t g = 0; g < k8; g += 16) {
      const __mmask16 gk = first(k - g);
      __m512 r[16];
      for (int64_t i = 0; i < 16; ++i)
        r[i] = mb + i < m ? _mm512_maskz_loadu_ps(gk, x + (mb + i) * ldx + g) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t i = 0; i < 16 && g + i < k8; ++i) _mm512_store_ps(tile + (g + i) * kTile, r[i]);
    }
  }
}

void gemm_spf32(const float* x, int64_t ldx, const float* at, int64_t m, const SparseF32& w, float* c, int64_t ldc,
                int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)x;
  (void)ldx;
  if (w.block_rows == 4) {  // whole block rows (n0 and row groups are multiples of 16: blocks never straddle them)
    drive<kTileVecs>(at, m, w.k, w.k > 0 ? w.k : 1, c, ldc, n0, n1, epi,
                     [&](auto vt, const float* base, float* acc, int64_t ld, int64_t, int64_t r0, int64_t r1) {
                       for (int64_t b = r0 / 4; b < (r1 + 3) / 4; ++b) {
                         const int32_t j0 = w.rowptr[b], j1 = w.rowptr[b + 1];
                         if (j0 < j1)
                           block4_entries<decltype(vt)::value>(base, w.cols, w.values, j0, j1,
                                                               acc + (4 * b - r0) * ld, ld);
                       }
                     });
  } else if (w.jit) {
    drive_jit(at, m, w.k, *w.jit, c, ldc, n0, n1, epi);
  } else {
    // csr-f32 in chunks; without chunk pointers built for this level's chunk, whole rows from the row pointers
    // (same results)
    const bool chunked = w.chunk_k == kCsrChunk && w.chunk_ptr;
    const int32_t* ptr = chunked ? w.chunk_ptr : w.rowptr;
    const int64_t chunk = chunked ? kCsrChunk : (w.k > 0 ? w.k : 1);
    const int64_t stride = chunked ? (w.k + kCsrChunk - 1) / kCsrChunk + 1 : 1;
    drive<kTileVecs>(at, m, w.k, chunk, c, ldc, n0, n1, epi,
                     [&](auto vt, const float* base, float* acc, int64_t ld, int64_t ch, int64_t r0, int64_t r1) {
                       for (int64_t n = r0; n < r1; ++n) {
                         const int32_t* cp = ptr + n * stride + ch;
                         // the row-chunk kCsrPrefetchRows on in walk order (none past the group's last chunk)
                         const int64_t ahead = n + kCsrPrefetchRows, wrapped = r0 + ahead - r1;
                         const int32_t* np = ahead < r1 ? cp + kCsrPrefetchRows * stride
                                             : ch + 1 < stride - 1 && wrapped < r1 ? ptr + wrapped * stride + ch + 1
                                                                                   : cp;
                         if (cp[0] < cp[1])
                           row_entries<decltype(vt)::value>(base, w.cols, w.values, cp[0], cp[1], acc + (n - r0) * ld,
                                                            np[0], np[1]);
                       }
                     });
  }
}

void gemm_nm_f32(const float* x, int64_t ldx, const float* at, int64_t m, const NmF32& w, float* c, int64_t ldc,
                 int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)x;
  (void)ldx;
  if (w.group == 8) gemm_nm<4, 8>(at, m, w, c, ldc, n0, n1, epi);
  else gemm_nm<2, 4>(at, m, w, c, ldc, n0, n1, epi);
}

}  // namespace avx512
}  // namespace tf
