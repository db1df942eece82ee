// Block-sparse INT8 GEMM for the avx2 level (no VNNI), 1x4 and 4x4 blocks, and pair records (unstructured and 2:4
// INT8 weights: BsrS8::pair_slots, see pair_dot and relayout_pairs). 4x4 weights within [-64, 64] (block-int7,
// BsrS8::narrow) skip the widening below: rows4_dot_narrow multiplies their bytes with vpmaddubsw.
//
// The AVX-512 kernel's activation re-layout with 8-token tiles (At[m / 8][k / 4][8][4] u8, bsr_at_offset with
// KernelTable::bsr_at_tile = 8): a pass of 8 tokens reads 32 contiguous bytes per input quad. (With the AVX-512
// level's 64-token tiles it read half a cache line every 256 bytes, lines that fall on a quarter of L1's sets.)
// The executor's token splits and the FFN1 -> FFN2 direct re-layout (Epilogue::out_at) work on it. AVX2 has no
// u8 x s8 4-way dot product that is exact: vpmaddubsw saturates its 16-bit pair sums (255 * 127 * 2 > 32767). So
// both operands are widened to 16 bits and multiplied with vpmaddwd, which is exact: 16 bytes of At (4 tokens x
// one input quad) zero-extend to 16 words, one block row's 4 weights (widened at load) fill every 64-bit lane, and one
// vpmaddwd gives each token two 32-bit partial sums (inputs 0+1 and 2+3). The partials stay apart in the
// accumulators until a row is done (one vphaddd per 8 tokens). Per 4x4 block and 8 tokens: 2 widening loads
// shared by the 4 rows, 4 weight broadcasts (loads), 8 vpmaddwd, 8 vpaddd; no work on zero blocks. Weights with at
// most kPairQuadsMaxK inputs (QKV, attention output and FFN1 of BERT-base) instead take their re-layout pair-major
// (BsrS8::pair_quads, rows4_dot_pairs) in 16-token passes, one token per lane. Results come out as
// Y^T tiles (16 output rows x the pass's tokens), are dequantized with the dense kernel's float operations and either
// transposed to token rows and finished by the level's shared epilogue, or (FFN1 -> FFN2) finished in registers into
// the next layer's re-layout; either way the outputs equal the dense INT8 kernel's bit for bit. See docs/kernels.md.
#define TF_ISA_NS avx2
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "../ops/epilogue_avx2.h"
#include "../ops/ymm_util.h"

namespace tf {
namespace avx2 {

namespace {
constexpr int64_t kAtTile = 8;  // tokens per re-layout tile (KernelTable::bsr_at_tile, exported as kBsrTile)
// The longest rows run over pair quads (KernelTable::bsr_pair_quads_max_k): a 16-token pass reads two tiles of At,
// 2 x 8 x k bytes, 16 KiB of L1's 32 at k = 1024. Longer rows ran slower over pair quads than over quads in
// _core.time_gemm: a little at 1536 inputs (MiniLM-L6's FFN2), clearly at 3072 (BERT-base's), where At left L1
constexpr int64_t kPairQuadsMaxK = 1024;
inline int64_t at_offset(int64_t m0, int64_t k) { return bsr_at_offset(m0, k, kAtTile); }
// where the weight's re-layout holds token m0: the u8 quads (8-token tiles) or the pairs (bsr_pairs_at_offset)
inline int64_t weight_at_offset(const BsrS8& w, int64_t m0) {
  return w.pair_slots ? bsr_pairs_at_offset(m0, w.k, w.pair_slots) : at_offset(m0, w.k);
}

// One block row's 4 weights (widened to 16 bits at load: BsrS8::values16) in each 64-bit lane: a broadcast from
// memory, a load uop only. (Sign-extending 8-bit weights here took a vpmovsxbw per block row, which issues 0.79 times
// per cycle on Zen 3 where vpmaddwd issues twice: bench/results/avx2_rates.md.)
inline __m256i weight_row(const int16_t* p) {
  __m256i r;
  asm("vpbroadcastq %1, %0" : "=x"(r) : "m"(*reinterpret_cast<const int64_t*>(p)));
  return r;
}

// 4 tokens x one input quad of At, zero-extended to 16 bits
inline __m256i at_quads(const uint8_t* p) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// acc[r][v]: partial sums of output rows r = 0..3 of one 4x4 row block for tokens 4v .. 4v + 3 of the pass
template <int V>
inline void rows4_dot(const uint8_t* at, const int32_t* cols, const int16_t* vals, int32_t nb, __m256i (*acc)[V]) {
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_si256();
  for (int32_t j = 0; j < nb; ++j) {
    const int16_t* w = vals + 16 * j;
    const __m256i w0 = weight_row(w), w1 = weight_row(w + 4), w2 = weight_row(w + 8), w3 = weight_row(w + 12);
    const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kAtTile * 4;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const __m256i x = at_quads(ap + 16 * v);
      acc[0][v] = _mm256_add_epi32(acc[0][v], _mm256_madd_epi16(x, w0));
      acc[1][v] = _mm256_add_epi32(acc[1][v], _mm256_madd_epi16(x, w1));
      acc[2][v] = _mm256_add_epi32(acc[2][v], _mm256_madd_epi16(x, w2));
      acc[3][v] = _mm256_add_epi32(acc[3][v], _mm256_madd_epi16(x, w3));
    }
  }
}

template <int G>
inline void zero_rows4(__m256i (*acc)[G]) {
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 2
    for (int g = 0; g < G; ++g) acc[r][g] = _mm256_setzero_si256();
}

// acc[r][g] for output rows r = 0..3 of one 4x4 row block whose weights lie in [-64, 64] (BsrS8::narrow), tokens
// 8g .. 8g + 7 of the pass (tile g, `tile_bytes` after tile 0): vpmaddubsw multiplies the quad's 8 tokens x 4 u8
// inputs (32 bytes of At as they are) by the row's 4 s8 weights (a dword broadcast) into 16-bit pair sums, which
// cannot saturate at this range (255 * 64 * 2 = 32640), and vpmaddwd by ones adds each token's two pairs into its
// lane. Per block and 8 tokens: one load, 4 broadcasts, 4 + 4 multiplies and 4 adds for all 128 products, one
// token per lane (no horizontal add), where the 16-bit path takes 8 vpmaddwd and 8 vpaddd.
template <int G>
inline void rows4_dot_narrow(const uint8_t* at, int64_t tile_bytes, const int32_t* cols, const int8_t* vals,
                             int32_t nb, __m256i (*acc)[G]) {
  zero_rows4(acc);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int32_t j = 0; j < nb; ++j) {
    const int8_t* w = vals + 16 * j;
    int32_t r0, r1, r2, r3;
    std::memcpy(&r0, w, 4);
    std::memcpy(&r1, w + 4, 4);
    std::memcpy(&r2, w + 8, 4);
    std::memcpy(&r3, w + 12, 4);
    const __m256i w0 = _mm256_set1_epi32(r0), w1 = _mm256_set1_epi32(r1), w2 = _mm256_set1_epi32(r2),
                  w3 = _mm256_set1_epi32(r3);
    const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kAtTile * 4;
#pragma GCC unroll 2
    for (int g = 0; g < G; ++g) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap + g * tile_bytes));
      acc[0][g] = _mm256_add_epi32(acc[0][g], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones));
      acc[1][g] = _mm256_add_epi32(acc[1][g], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones));
      acc[2][g] = _mm256_add_epi32(acc[2][g], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w2), ones));
      acc[3][g] = _mm256_add_epi32(acc[3][g], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w3), ones));
    }
  }
}

// acc[r][g] for output rows r = 0..3 of one 4x4 row block (16-bit weights) over pair-major quads
// (BsrS8::pair_quads), tokens 8g .. 8g + 7 of the pass (tile g, `tile_bytes` after tile 0): a tile's 32 bytes of
// a quad hold its 8 tokens' inputs 0, 1 (16 bytes), then their inputs 2, 3. Each half zero-extends to 8 tokens'
// pairs as words (vpmovzxbw from memory) and meets a dword broadcast of the row's weights 0, 1 or 2, 3: one token
// per lane, no horizontal add at the end. Per block and 16 tokens: 4 widening loads, 8 broadcasts, 16 vpmaddwd and
// 16 vpaddd, the quad kernel's products for twice the tokens, so that each row block's set-up and finish (and its
// loop's exit) serve 16 tokens. The two-tile loop is written in asm: its 8 accumulators, 4 widened halves, 2
// weights and 2 products take all 16 ymm registers, and the compiler spilled two accumulators to the stack.
template <int G>
inline void rows4_dot_pairs(const uint8_t* at, int64_t tile_bytes, const int32_t* cols, const int16_t* vals,
                            int32_t nb, __m256i (*acc)[G]) {
  zero_rows4(acc);
  if constexpr (G == 2) {
    if (nb <= 0) return;
    int64_t n = nb, quad;
    const int32_t* c = cols;
    const int16_t* w = vals;
    // row ROW's weights (block offset 8 * ROW bytes) into ymm12 / ymm13, its products with tile 0 (ymm8, ymm9)
    // and tile 1 (ymm10, ymm11) into the accumulators A0 and A1
#define TF_PAIR_ROW(ROW, A0, A1)                                                                                   \
  "vpbroadcastd " #ROW "*8(%[w]), %%ymm12\n vpbroadcastd " #ROW "*8+4(%[w]), %%ymm13\n"                            \
  "vpmaddwd %%ymm12, %%ymm8, %%ymm14\n vpmaddwd %%ymm13, %%ymm9, %%ymm15\n"                                         \
  "vpaddd %%ymm14, %[" A0 "], %[" A0 "]\n vpaddd %%ymm15, %[" A0 "], %[" A0 "]\n"                                  \
  "vpmaddwd %%ymm12, %%ymm10, %%ymm14\n vpmaddwd %%ymm13, %%ymm11, %%ymm15\n"                                       \
  "vpaddd %%ymm14, %[" A1 "], %[" A1 "]\n vpaddd %%ymm15, %[" A1 "], %[" A1 "]\n"
    asm volatile(
        ".p2align 5\n1:\n"
        "movslq (%[c]), %[quad]\n shl $5, %[quad]\n add %[at], %[quad]\n"  // the block's quad in tile 0
        "vpmovzxbw (%[quad]), %%ymm8\n vpmovzxbw 16(%[quad]), %%ymm9\n"
        "vpmovzxbw (%[quad],%[tb]), %%ymm10\n vpmovzxbw 16(%[quad],%[tb]), %%ymm11\n"
        TF_PAIR_ROW(0, "a00", "a01") TF_PAIR_ROW(1, "a10", "a11") TF_PAIR_ROW(2, "a20", "a21")
        TF_PAIR_ROW(3, "a30", "a31")
        "add $4, %[c]\n add $32, %[w]\n dec %[n]\n jnz 1b\n"
        : [a00] "+x"(acc[0][0]), [a01] "+x"(acc[0][1]), [a10] "+x"(acc[1][0]), [a11] "+x"(acc[1][1]),
          [a20] "+x"(acc[2][0]), [a21] "+x"(acc[2][1]), [a30] "+x"(acc[3][0]), [a31] "+x"(acc[3][1]),
          [c] "+r"(c), [w] "+r"(w), [n] "+r"(n), [quad] "=&r"(quad)
        : [at] "r"(at), [tb] "r"(tile_bytes)
        : "memory", "cc", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
#undef TF_PAIR_ROW
  } else {  // one tile (a call's last 8 tokens)
    for (int32_t j = 0; j < nb; ++j) {
      const int16_t* w = vals + 16 * j;
      const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kAtTile * 4;
      const __m256i lo = at_quads(ap), hi = at_quads(ap + 16);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        __m256i wl, wh;
        asm("vpbroadcastd %1, %0" : "=x"(wl) : "m"(*reinterpret_cast<const int32_t*>(w + 4 * r)));
        asm("vpbroadcastd %1, %0" : "=x"(wh) : "m"(*reinterpret_cast<const int32_t*>(w + 4 * r + 2)));
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_add_epi32(_mm256_madd_epi16(lo, wl), _mm256_madd_epi16(hi, wh)));
      }
    }
  }
}

// acc[v] for one output row of 1x4 blocks; vectors 2g, 2g + 1 are 8-token tile g, `tile_bytes` after tile 0
template <int V>
inline void row_dot(const uint8_t* at, int64_t tile_bytes, const int32_t* cols, const int16_t* vals, int32_t nb,
                    __m256i* acc) {
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_si256();
  for (int32_t j = 0; j < nb; ++j) {
    const __m256i w = weight_row(vals + 4 * j);
    const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kAtTile * 4;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v)
      acc[v] = _mm256_add_epi32(acc[v], _mm256_madd_epi16(at_quads(ap + (v / 2) * tile_bytes + 16 * (v % 2)), w));
  }
}

// acc[g] for one output row of pair records (BsrS8::pair_slots), tokens 8g .. 8g + 7 of the pass: a record's slot
// holds each token's two inputs as bytes (32 tokens, one 64-byte line); 16 of them zero-extend (vpmovzxbw from
// memory) to 8 tokens' pairs as words, the record's two weights fill every dword, and one vpmaddwd adds both
// products of every token, 8 tokens per vector (no partial sums, no horizontal add). Per record and 8 tokens: one
// widening load, one vpmaddwd and one vpaddd, against the same per 4 tokens on 1x4 quads; a quad with one or two
// non-zeros costs one record.
template <int G>
inline void pair_dot(const uint8_t* at, const int32_t* cols, const int16_t* vals, int32_t nb, __m256i* acc) {
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_si256();
  for (int32_t j = 0; j < nb; ++j) {
    int32_t pair;
    std::memcpy(&pair, vals + 2 * j, 4);
    const __m256i w = _mm256_set1_epi32(pair);
    const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kPairAtTile * 2;
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) acc[g] = _mm256_add_epi32(acc[g], _mm256_madd_epi16(at_quads(ap + 16 * g), w));
  }
}

// One quad of 8 tokens, token-major (token i's 4 inputs at bytes 4i .. 4i + 3) -> pair-major (BsrS8::pair_quads:
// the 8 tokens' inputs 0, 1, then their inputs 2, 3): a byte shuffle within each 128-bit lane (4 tokens' pairs
// 0, 1 | their pairs 2, 3) and a qword permute that joins the lanes' halves
inline __m256i pair_major(__m256i bytes) {
  const __m256i pairs = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12,
                                         13, 2, 3, 6, 7, 10, 11, 14, 15);
  return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(bytes, pairs), 0xD8);
}

// Bias and activation A on the rows of a Y^T tile in place, as the shared epilogue does them on token rows (the
// bias added only where there is one). Its own function: inlined into the quad finisher, GELU's table constants and
// the packs' live registers outnumbered the 16 ymm and spilled in the loop.
template <Act A, int T>
__attribute__((noinline)) void bias_act(float (*t)[T], int64_t rows, const float* bias) {
  for (int64_t i = 0; i < rows; ++i)
    for (int g = 0; g < T / 8; ++g) {
      __m256 y = _mm256_load_ps(&t[i][8 * g]);
      if (bias) y = _mm256_add_ps(y, _mm256_set1_ps(bias[i]));
      if constexpr (A == Act::GeluErf) y = gelu_erf8(y);
      if constexpr (A == Act::Relu) y = _mm256_max_ps(y, _mm256_setzero_ps());  // NaN -> 0, as v > 0 ? v : 0
      _mm256_store_ps(&t[i][8 * g], y);
    }
}

// A pass of T tokens (T / 8 groups of 8) over the output rows [n0, n1) of a weight of R x 4 blocks: each group of
// 16 rows is computed as a Y^T tile, dequantized and stored transposed into the float rows c (token i of the pass
// at c + i * ldc).
template <int T, int R>
struct Pass {
  static constexpr int V = T / 4;  // 4-token vectors
  static constexpr int G = T / 8;  // 8-token groups
  __m256 zp[G], sc[G];             // the tokens' activation zero points and scales

  // row i of the tile t (output row nb0 + i) from sums(g), the int32 sums of its tokens 8g .. 8g + 7, dequantized
  // into t[i][0..T) with the dense kernel's float ops
  template <class Sums>
  static void store_row(float (*t)[T], int64_t i, Sums sums, float cs, float ws, const __m256* zp, const __m256* sc) {
    const __m256 csv = _mm256_set1_ps(cs), wsv = _mm256_set1_ps(ws);
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      const __m256 centered = _mm256_sub_ps(_mm256_cvtepi32_ps(sums(g)), _mm256_mul_ps(zp[g], csv));
      _mm256_store_ps(&t[i][8 * g], _mm256_mul_ps(centered, _mm256_mul_ps(sc[g], wsv)));
    }
  }
  // quads leave each token two partial sums, in acc[2g], acc[2g + 1] for tokens 8g .. 8g + 7: vphaddd pairs
  // tokens (0, 1, 4, 5 | 2, 3, 6, 7) and the qword permute puts them in order
  static auto quad_sums(const __m256i* acc) {
    return [acc](int g) { return _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2 * g], acc[2 * g + 1]), 0xD8); };
  }

  // the Y^T tile of output rows nb0 .. nb0 + rows - 1 (rows <= 16), dequantized. Not inlined into the finishers:
  // one call per 16 output rows, and the dot-product loops stay clear of the finishers' register pressure
  __attribute__((noinline)) void tile(const uint8_t* at, const BsrS8& w, int64_t nb0, int64_t rows,
                                      float (*t)[T]) const {
    if constexpr (R == 4) {
      if (w.narrow || w.pair_quads) {  // one token per lane: 4 x G accumulators per row block
        static_assert(G <= 2, "4 x G accumulators and a kernel's operands fit the 16 registers");
        const int64_t tile_bytes = at_offset(kAtTile, w.k);
        for (int64_t i = 0; i < rows; i += 4) {  // row blocks never straddle a tile (nb0 % 16 = 0)
          __m256i acc[4][G];
          const int64_t b = (nb0 + i) / 4;
          const int32_t b0 = w.rowptr[b], b1 = w.rowptr[b + 1];
          if (w.narrow) rows4_dot_narrow<G>(at, tile_bytes, w.cols + b0, w.values + 16 * b0, b1 - b0, acc);
          else rows4_dot_pairs<G>(at, tile_bytes, w.cols + b0, w.values16 + 16 * b0, b1 - b0, acc);
          for (int r = 0; r < 4 && i + r < rows; ++r)
            store_row(t, i + r, [&acc, r](int g) { return acc[r][g]; }, static_cast<float>(w.col_sum[nb0 + i + r]),
                      w.w_scale[nb0 + i + r], zp, sc);
        }
      } else if constexpr (T == kAtTile) {  // 16-bit weights: a pass is one re-layout tile
        static_assert(V <= 2, "4 x V accumulators, 4 weight rows and one activation fit the 16 registers");
        for (int64_t i = 0; i < rows; i += 4) {
          __m256i acc[4][V];
          const int64_t b = (nb0 + i) / 4;
          const int32_t b0 = w.rowptr[b], b1 = w.rowptr[b + 1];
          rows4_dot<V>(at, w.cols + b0, w.values16 + 16 * b0, b1 - b0, acc);
          for (int r = 0; r < 4 && i + r < rows; ++r)
            store_row(t, i + r, quad_sums(acc[r]), static_cast<float>(w.col_sum[nb0 + i + r]),
                      w.w_scale[nb0 + i + r], zp, sc);
        }
      }
    } else if (w.pair_slots) {
      static_assert(T <= kPairAtTile, "a pass's tokens lie in one pair tile");
      static_assert(G <= 4, "4 accumulators, the weights and one widened slot in registers");
      for (int64_t i = 0; i < rows; ++i) {
        __m256i acc[G];
        const int32_t b0 = w.rowptr[nb0 + i], b1 = w.rowptr[nb0 + i + 1];
        pair_dot<G>(at, w.cols + b0, w.values16 + 2 * b0, b1 - b0, acc);
        store_row(t, i, [&acc](int g) { return acc[g]; }, static_cast<float>(w.col_sum[nb0 + i]), w.w_scale[nb0 + i],
                  zp, sc);  // one token per lane already
      }
    } else if constexpr (T <= 16) {  // 1x4 blocks (32-token passes are for pair records only)
      for (int64_t i = 0; i < rows; ++i) {
        __m256i acc[V];
        const int32_t b0 = w.rowptr[nb0 + i], b1 = w.rowptr[nb0 + i + 1];
        row_dot<V>(at, at_offset(kAtTile, w.k), w.cols + b0, w.values16 + 4 * b0, b1 - b0, acc);
        store_row(t, i, quad_sums(acc), static_cast<float>(w.col_sum[nb0 + i]), w.w_scale[nb0 + i], zp, sc);
      }
    }
  }

  // the tile of output rows [nb0, nb1) stored as float token rows c (token i at c + i * ldc)
  void run(const uint8_t* at, const BsrS8& w, int64_t tokens, int64_t nb0, int64_t nb1, float* c,
           int64_t ldc) const {
    alignas(32) float t[16][T];
    const int64_t rows = nb1 - nb0;
    tile(at, w, nb0, rows, t);
    store_transposed(&t[0][0], T, rows, tokens, c + nb0, ldc);  // back to token rows
  }

  // The tile finished in registers straight into the next layer's re-layout (FFN1 -> FFN2: out_at, no residual):
  // bias, activation A and the requantization per element while tokens run along the lanes (the shared epilogue's
  // and quantize_u8's float ops, so the same bytes), then each 4 output rows = one input quad of the next layer:
  // two packs give a lane's 16 bytes row-major (4 rows x 4 tokens) and one byte shuffle makes them token-major,
  // 32 bytes = the quad's 8 tokens in an 8-token tile. Rows past nb1 (a partial last quad) hold the zero point, as
  // the u8 rows' padding does. No float rows, no transposes, no second pass over the output.
  template <Act A>
  void run_quads(const uint8_t* at, const BsrS8& w, int64_t nb0, int64_t nb1, const Epilogue& epi, uint8_t* dst,
                 int64_t tile_bytes) const {
    alignas(32) float t[16][T];
    const int64_t rows = nb1 - nb0;
    tile(at, w, nb0, rows, t);
    if (epi.bias || A != Act::None) bias_act<A, T>(t, rows, epi.bias ? epi.bias + nb0 : nullptr);
    const __m256 inv = _mm256_set1_ps(epi.out_inv_scale), ozp = _mm256_set1_ps(static_cast<float>(epi.out_zp));
    const __m256i token_major = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12,
                                                 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (int64_t q = 0; 4 * q < rows; ++q)
#pragma GCC unroll 2
      for (int g = 0; g < G; ++g) {
        // row 4q + r of the quad as 8 int32 (rows past nb1: the zero point)
        const auto row_q = [&](int r) {
          const int64_t i = 4 * q + r;
          return i < rows ? quant_u8_i32_8(_mm256_load_ps(&t[i][8 * g]), inv, ozp) : _mm256_set1_epi32(epi.out_zp);
        };
        const __m256i bytes = _mm256_shuffle_epi8(pack_u8_4x8(row_q(0), row_q(1), row_q(2), row_q(3)), token_major);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + g * tile_bytes + (nb0 / 4 + q) * kAtTile * 4),
                            epi.out_at_pairs ? pair_major(bytes) : bytes);
      }
  }
};

// Quads 0 .. nq - 1 of the u8 rows of 8 tokens (src + i * lds; tokens from `valid` on read as zeros) handed to
// emit(q, bytes) as 32 bytes, token-major (token i's 4 inputs at bytes 4i .. 4i + 3): 8 quads at a time by one
// 8 x 8 dword transpose
template <class Emit>
void quads_of_8_tokens(const uint8_t* src, int64_t lds, int64_t valid, int64_t nq, Emit emit) {
  int64_t q = 0;
  if (valid == 8)
    for (; q + 8 <= nq; q += 8) {
      __m256 r[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(reinterpret_cast<const float*>(src + i * lds + 4 * q));
      transpose8(r);
#pragma GCC unroll 8
      for (int d = 0; d < 8; ++d) emit(q + d, _mm256_castps_si256(r[d]));
    }
  for (; q < nq; ++q) {
    alignas(32) uint8_t quad[32] = {0};
    for (int64_t i = 0; i < valid && i < 8; ++i) std::memcpy(quad + 4 * i, src + i * lds + 4 * q, 4);
    emit(q, _mm256_load_si256(reinterpret_cast<const __m256i*>(quad)));
  }
}

// Writes the u8 rows of 8 tokens into At's layout: quad q of the tokens (their tile at its first quad) at
// at + q * 32, token-major or (pair_quads) pair-major; tokens from `valid` on as zeros
void relayout_quads(const uint8_t* src, int64_t lds, int64_t valid, int64_t nq, uint8_t* at, bool pair_quads) {
  quads_of_8_tokens(src, lds, valid, nq, [&](int64_t q, __m256i bytes) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(at + q * kAtTile * 4), pair_quads ? pair_major(bytes) : bytes);
  });
}

// relayout_quads' pair form (bsr_pack_pairs): quad q of the 8 tokens becomes slots 0 .. slots - 1 (kPairSlots),
// 16 bytes each (the 8 tokens' two inputs, a quarter of the slot's 64-byte record in a 32-token tile): a vpshufb
// picks them from the quad's 32 bytes, 8 per 128-bit lane, and a qword permute joins the lanes
void relayout_pairs(const uint8_t* src, int64_t lds, int64_t valid, int64_t nq, int64_t slots, uint8_t* at) {
  static const auto masks = [] {
    struct Masks {
      alignas(32) int8_t b[6][32];
    } m;
    for (int s = 0; s < 6; ++s)
      for (int lane = 0; lane < 2; ++lane)
        for (int t = 0; t < 4; ++t) {  // lane's token t: inputs i and j of its quad; upper 8 bytes unused
          int8_t* d = m.b[s] + 16 * lane;
          d[2 * t] = static_cast<int8_t>(4 * t + kPairSlots[s][0]);
          d[2 * t + 1] = static_cast<int8_t>(4 * t + kPairSlots[s][1]);
          d[8 + 2 * t] = d[8 + 2 * t + 1] = -128;
        }
    return m;
  }();
  quads_of_8_tokens(src, lds, valid, nq, [&](int64_t q, __m256i bytes) {
    for (int64_t s = 0; s < slots; ++s) {
      const __m256i picked =
          _mm256_shuffle_epi8(bytes, _mm256_load_si256(reinterpret_cast<const __m256i*>(masks.b[s])));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(at + (q * slots + s) * kPairAtTile * 2),
                       _mm256_castsi256_si128(_mm256_permute4x64_epi64(picked, 0x08)));
    }
  });
}

// Tokens m_begin .. m_end - 1 of a call in passes of T (8 for 4x4 blocks: 4 rows x 2 vectors of 4 tokens, 8
// accumulators; 16 or 8 for 1x4 blocks, see gemm_bsr_s8). With Epilogue::out_at (FFN1 -> FFN2; the executor sets it
// only without a residual and with an activation bsr_fills_next_at allows) every tile goes straight into the next
// layer's re-layout (Pass::run_quads); otherwise into float rows, finished by the shared epilogue over the pass's
// whole row range, then requantized into out_u8 where asked.
template <int T, int R>
void run_passes(const uint8_t* at, int64_t m_begin, int64_t m_end, const BsrS8& w, float* c, int64_t ldc, int64_t n0,
                int64_t n1, const Epilogue& epi) {
  using P = Pass<T, R>;
  Epilogue rest = epi;
  rest.alpha = 1.0f;
  const auto quads = epi.act == Act::GeluErf ? &P::template run_quads<Act::GeluErf>
                     : epi.act == Act::Relu  ? &P::template run_quads<Act::Relu>
                                             : &P::template run_quads<Act::None>;
  const int64_t out_tile_bytes = epi.out_at ? at_offset(kAtTile, epi.out_at_k) : 0;
  for (int64_t m0 = m_begin; m0 < m_end; m0 += T) {
    const int64_t tokens = std::min<int64_t>(T, m_end - m0);
    P pass;
    for (int g = 0; g < P::G; ++g) {
      alignas(32) float zp[8] = {0}, sc[8] = {0};
      for (int64_t i = 0; i < 8 && 8 * g + i < tokens; ++i) {
        zp[i] = epi.row_zp[m0 + 8 * g + i];
        sc[i] = epi.row_scale[m0 + 8 * g + i];
      }
      pass.zp[g] = _mm256_load_ps(zp);
      pass.sc[g] = _mm256_load_ps(sc);
    }
    const uint8_t* at_pass = at + weight_at_offset(w, m0);
    if (epi.out_at) {
      uint8_t* dst = epi.out_at + at_offset(m0, epi.out_at_k);
      for (int64_t nb = n0; nb < n1; nb += 16)
        (pass.*quads)(at_pass, w, nb, std::min(nb + 16, n1), epi, dst, out_tile_bytes);
      continue;
    }
    float* rows = c + m0 * ldc;
    for (int64_t nb = n0; nb < n1; nb += 16) pass.run(at_pass, w, tokens, nb, std::min(nb + 16, n1), rows, ldc);
    epilogue_f32(rows + n0, ldc, tokens, n1 - n0, m0, n0, rest);
    if (epi.out_u8)  // row by row: quantize_u8 fills a row's columns from cols to ldq with the zero point
      for (int64_t i = 0; i < tokens; ++i)
        quantize_u8(rows + i * ldc + n0, ldc, epi.out_u8 + (m0 + i) * epi.ld_out_u8 + n0, n1 - n0, 1, n1 - n0,
                    epi.out_inv_scale, epi.out_zp);
  }
}

// Tokens [m0, m1) of the u8 rows q, 8 at a time, and on the last range zeros up to the next 16 (whole 16-token
// groups, as the AVX-512 level): relayout(rows, valid tokens, first token) for each group of 8
template <class Relayout>
void pack_groups_of_8(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, Relayout relayout) {
  const int64_t end = m1 < m ? m1 : (m + 15) / 16 * 16;
  for (int64_t i0 = m0; i0 < end; i0 += 8)
    relayout(q + i0 * ldq, std::max<int64_t>(0, std::min<int64_t>(8, m - i0)), i0);
}
}  // namespace

const int64_t kBsrTile = kAtTile;

size_t bsr_at_size(int64_t m, int64_t k) {  // whole 16-token groups: bsr_pack_at zero-fills, passes read them
  return static_cast<size_t>((m + 15) / 16 * 16 * ((k + 3) / 4) * 4 + 64);
}

const int64_t kBsrPairQuadsMaxK = kPairQuadsMaxK;

void bsr_pack_at(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, int64_t k, uint8_t* at,
                 bool pair_quads) {
  pack_groups_of_8(q, ldq, m, m0, m1, [&](const uint8_t* src, int64_t valid, int64_t i0) {
    relayout_quads(src, ldq, valid, (k + 3) / 4, at + at_offset(i0, k), pair_quads);
  });
}

// quantize_u8 and bsr_pack_at in one pass (static INT8 inputs; the u8 rows are never stored): per 8 tokens and 8
// quads, each token's 32 inputs become one register of bytes by quant_u8_i32_8 and pack_u8_4x8 (quantize_u8's
// float ops, so the same bytes), which leaves the quads in the order 0 2 4 6 1 3 5 7; one 8 x 8 dword transpose gives
// each quad's 8 tokens, stored where that quad goes. A piece with inputs past k or missing tokens goes through
// quantize_u8 into a small buffer (padding: the zero point, as the u8 rows' padding) and relayout_quads.
void bsr_quant_pack_at(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k, float inv_scale,
                       int32_t zp, uint8_t* at, bool pair_quads) {
  const int64_t kq = (k + 3) / 4, end = m1 < m ? m1 : (m + 15) / 16 * 16;
  const __m256 inv = _mm256_set1_ps(inv_scale), zpv = _mm256_set1_ps(static_cast<float>(zp));
  for (int64_t i0 = m0; i0 < end; i0 += 8) {
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(8, m - i0));
    const float* src = x + i0 * ldx;
    uint8_t* tile = at + at_offset(i0, k);
    for (int64_t q = 0; q < kq; q += 8) {
      if (valid == 8 && 4 * q + 32 <= k) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          const float* xr = src + i * ldx + 4 * q;
          const auto part = [&](int j) { return quant_u8_i32_8(_mm256_loadu_ps(xr + 8 * j), inv, zpv); };
          r[i] = _mm256_castsi256_ps(pack_u8_4x8(part(0), part(1), part(2), part(3)));
        }
        transpose8(r);
#pragma GCC unroll 8
        for (int d = 0; d < 8; ++d)  // transposed row d: dword d of the packs' order 0 2 4 6 1 3 5 7
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + (q + (d < 4 ? 2 * d : 2 * d - 7)) * kAtTile * 4),
                              pair_quads ? pair_major(_mm256_castps_si256(r[d])) : _mm256_castps_si256(r[d]));
        continue;
      }
      alignas(32) uint8_t rows[8][32];
      for (int64_t i = 0; i < valid; ++i)
        quantize_u8(src + i * ldx + 4 * q, ldx, rows[i], 32, 1, std::min<int64_t>(32, k - 4 * q), inv_scale, zp);
      relayout_quads(&rows[0][0], 32, valid, std::min<int64_t>(8, kq - q), tile + q * kAtTile * 4, pair_quads);
    }
  }
}

void bsr_pack_pairs(const uint8_t* q, int64_t ldq, int64_t m, int64_t m0, int64_t m1, int64_t k, int64_t slots,
                    uint8_t* at) {  // as bsr_pack_at, in the pair re-layout
  pack_groups_of_8(q, ldq, m, m0, m1, [&](const uint8_t* src, int64_t valid, int64_t i0) {
    relayout_pairs(src, ldq, valid, (k + 3) / 4, slots, at + bsr_pairs_at_offset(i0, k, slots));
  });
}

void gemm_bsr_s8(const uint8_t* q, int64_t ldq, const uint8_t* at, int64_t m, const BsrS8& w, float* c,
                 int64_t ldc, int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)q;
  (void)ldq;
  if (w.block_rows == 4 && !w.narrow && !w.pair_quads) {
    run_passes<8, 4>(at, 0, m, w, c, ldc, n0, n1, epi);
    return;
  }
  if (w.block_rows == 4) {  // narrow weights and pair quads: 16-token passes (two tiles, 8 accumulators) as 1x4 blocks below
    const int64_t m16 = m / 16 * 16;
    run_passes<16, 4>(at, 0, m16, w, c, ldc, n0, n1, epi);
    run_passes<8, 4>(at, m16, m, w, c, ldc, n0, n1, epi);
    return;
  }
  // 1x4 blocks and pair records: 16-token passes (two 8-token tiles each) while 16 tokens remain, then 8-token
  // ones, so that a pass never reads or writes a tile holding none of this call's tokens (another call's, or past
  // the re-layout); pair records first run 32-token passes, a whole pair tile each (a call starts at a tile or
  // ends within it)
  int64_t m32 = 0;
  if (w.pair_slots) {
    m32 = m / 32 * 32;
    run_passes<32, 1>(at, 0, m32, w, c, ldc, n0, n1, epi);
  }
  const int64_t m16 = m32 + (m - m32) / 16 * 16;
  run_passes<16, 1>(at, m32, m16, w, c, ldc, n0, n1, epi);
  run_passes<8, 1>(at, m16, m, w, c, ldc, n0, n1, epi);
}

}  // namespace avx2
}  // namespace tf
