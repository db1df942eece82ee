// Sparse FP32 GEMMs on AVX2 (csr-f32, block-f32, N:M): the AVX-512 kernels' scheme (spmm_f32_avx512vnni.cpp)
// with 8-float vectors. Activations are re-laid per call as tiles of 64 tokens, At[tile][k8][64]; every stored
// weight is broadcast and FMA'd against 8 tokens per load into Y^T accumulator rows (a group of output rows x 64
// tokens), which are written back to token rows by 8 x 8 transposes and finished by the shared epilogue (alpha,
// bias, activation, residual). AVX2 has 16 vector registers, so a row keeps 8 accumulators (8 FMA chains) and a 4x1
// block's 4 rows take the tile in passes of 2 vectors. N:M walks its groups in chunks of 48 inputs.
#define TF_ISA_NS avx2
#include <immintrin.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "../ops/ymm_util.h"

namespace tf {
namespace avx2 {

namespace {

inline int64_t round8(int64_t x) { return (x + 7) / 8 * 8; }
constexpr int kV = 8;            // 8-float vectors per tile
constexpr int64_t kTile = 64;    // tokens per tile (floats per At row within a tile)
constexpr int64_t kNmChunk = 48;  // N:M inputs per chunk (a multiple of 8)
constexpr int64_t kCsrChunk = 1024;
constexpr int64_t kRowGroup = 16;
// N:M output rows per group: an input chunk of At (48 x 256 bytes) is brought to L1 once per group; 32 rows'
// accumulators (8 KB) still leave it room there
constexpr int64_t kNmRowGroup = 32;
// csr-f32 rows ask for the At row of the entry 8 ahead (its 4 lines): a row's entries read At rows in the order of
// their input indices, which the hardware prefetchers do not follow, and a 64-token tile of At (k x 256 bytes)
// lives in L2, not L1 (bench/results/csr_f32_prefetch_avx2_ab.md)
constexpr int32_t kCsrPrefetch = 8;

#include "acc_buffer.inc"  // AccBuffer, tl_acc
#include "nm_chunk.inc"  // nm_chunk_rows

template <int V>
inline void row_entries(const float* base, const int32_t* cols, const float* vals, int32_t j0, int32_t j1,
                        float* acc) {
  __m256 a[V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) a[v] = _mm256_load_ps(acc + 8 * v);
  for (int32_t j = j0; j < j1; ++j) {
    const __m256 wv = _mm256_broadcast_ss(vals + j);
    const float* p = base + static_cast<int64_t>(cols[j]) * kTile;
    if (V == 8 && j + kCsrPrefetch < j1) {  // whole tiles: the later entry's 256 bytes
      const char* q = reinterpret_cast<const char*>(base + static_cast<int64_t>(cols[j + kCsrPrefetch]) * kTile);
#pragma GCC unroll 4
      for (int line = 0; line < 4; ++line) _mm_prefetch(q + 64 * line, _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) a[v] = _mm256_fmadd_ps(wv, _mm256_load_ps(p + 8 * v), a[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) _mm256_store_ps(acc + 8 * v, a[v]);
}

// 4 rows of a 4x1 block over vectors [v0, v0 + V) of the tile
template <int V>
inline void block4_entries(const float* base, const int32_t* cols, const float* vals, int32_t j0, int32_t j1,
                           float* acc, int64_t ld) {
  __m256 a[4][V];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) a[r][v] = _mm256_load_ps(acc + r * ld + 8 * v);
  for (int32_t j = j0; j < j1; ++j) {
    const float* p = base + static_cast<int64_t>(cols[j]) * kTile;
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      const __m256 x = _mm256_load_ps(p + 8 * v);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) a[r][v] = _mm256_fmadd_ps(_mm256_broadcast_ss(vals + 4 * j + r), x, a[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) _mm256_store_ps(acc + r * ld + 8 * v, a[r][v]);
}

template <int V, int KEEP, int GROUP>
inline void nm_entries(const float* base, const float* vals, const uint8_t* idx, int64_t g0, int64_t g1,
                       float* acc) {
  __m256 a[V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) a[v] = _mm256_load_ps(acc + 8 * v);
  for (int64_t g = g0; g < g1; ++g) {
    const float* gp = base + g * GROUP * kTile;
#pragma GCC unroll 4
    for (int q = 0; q < KEEP; ++q) {
      const __m256 wv = _mm256_broadcast_ss(vals + g * KEEP + q);
      const float* p = gp + static_cast<int64_t>(idx[g * KEEP + q]) * kTile;
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) a[v] = _mm256_fmadd_ps(wv, _mm256_load_ps(p + 8 * v), a[v]);
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) _mm256_store_ps(acc + 8 * v, a[v]);
}

// token tiles outside, then groups of `group` output rows (kRowGroup unless asked), then input chunks, then the
// rows of the group;
// add_chunk(std::integral_constant<int, V>, base, acc, ld, ch, r0, r1) as in the AVX-512 kernels
template <class AddChunk>
void drive(const float* at, int64_t m, int64_t k, int64_t chunk, float* c, int64_t ldc, int64_t n0, int64_t n1,
           const Epilogue& epi, AddChunk add_chunk, int64_t group = kRowGroup) {
  const int64_t ld = kTile, chunks = (k + chunk - 1) / chunk, k8 = round8(k);
  float* acc = tl_acc.get(static_cast<size_t>(group * ld));
  for (int64_t m0 = 0; m0 < m; m0 += kTile) {
    const float* base = at + (m0 / kTile) * k8 * kTile;
    const int64_t tokens = m - m0 < kTile ? m - m0 : kTile, vecs = (tokens + 7) / 8;
    for (int64_t r0 = n0; r0 < n1; r0 += group) {
      const int64_t r1 = r0 + group < n1 ? r0 + group : n1;
      std::memset(acc, 0, static_cast<size_t>(group * ld) * 4);
      for (int64_t ch = 0; ch < chunks; ++ch) {
        switch (vecs) {
          case 8: add_chunk(std::integral_constant<int, 8>(), base, acc, ld, ch, r0, r1); break;
          case 7: add_chunk(std::integral_constant<int, 7>(), base, acc, ld, ch, r0, r1); break;
          case 6: add_chunk(std::integral_constant<int, 6>(), base, acc, ld, ch, r0, r1); break;
          case 5: add_chunk(std::integral_constant<int, 5>(), base, acc, ld, ch, r0, r1); break;
          case 4: add_chunk(std::integral_constant<int, 4>(), base, acc, ld, ch, r0, r1); break;
          case 3: add_chunk(std::integral_constant<int, 3>(), base, acc, ld, ch, r0, r1); break;
          case 2: add_chunk(std::integral_constant<int, 2>(), base, acc, ld, ch, r0, r1); break;
          default: add_chunk(std::integral_constant<int, 1>(), base, acc, ld, ch, r0, r1); break;
        }
      }
      store_transposed(acc, ld, r1 - r0, tokens, c + m0 * ldc + r0, ldc);
    }
    epilogue_f32(c + m0 * ldc + n0, ldc, tokens, n1 - n0, m0, n0, epi);
  }
}

template <int KEEP, int GROUP>
void gemm_nm(const float* at, int64_t m, const NmF32& w, float* c, int64_t ldc, int64_t n0, int64_t n1,
             const Epilogue& epi) {
  drive(at, m, w.k, kNmChunk, c, ldc, n0, n1, epi,
        [&](auto vt, const float* base, float* acc, int64_t ld, int64_t ch, int64_t r0, int64_t r1) {
          nm_chunk_rows<KEEP, GROUP>(w, ch, r0, r1, acc, ld, [&](const float* v, const uint8_t* ix, int64_t g0,
                                                                 int64_t g1, float* a) {
            nm_entries<decltype(vt)::value, KEEP, GROUP>(base, v, ix, g0, g1, a);
          });
        }, kNmRowGroup);
}
}  // namespace

const int64_t kSpf32ChunkK = kCsrChunk;

size_t spf32_at_size(int64_t m, int64_t k) {
  return static_cast<size_t>((m + kTile - 1) / kTile * kTile * round8(k)) * 4 + 64;
}

// rows [m0, m1) of x into At[tile][k8][64]; inputs k .. k8-1 are zeros, and the range ending at m also zeroes
// the padding tokens of its last tile
void spf32_pack_at(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k, float* at) {
  const int64_t k8 = round8(k);
  const int64_t end = m1 == m ? (m + kTile - 1) / kTile * kTile : m1;
  for (int64_t r = m0; r < end;) {
    float* tile = at + (r / kTile) * k8 * kTile + r % kTile;
    if (r % 8 == 0 && r + 8 <= end && r + 8 <= m) {
      // 8 whole token rows: 8 x 8 transposes, each input's 8 tokens one store, where a float at a time went 256
      // bytes apart (bench/results/spf32_pack_at_avx2_ab.md)
      int64_t kk = 0;
      for (; kk + 8 <= k; kk += 8) transpose8_block(x + r * ldx + kk, ldx, tile + kk * kTile, kTile);
      for (; kk < k8; ++kk)
        for (int64_t i = 0; i < 8; ++i) tile[kk * kTile + i] = kk < k ? x[(r + i) * ldx + kk] : 0.0f;
      r += 8;
      continue;
    }
    const float* xr = x + r * ldx;
    for (int64_t kk = 0; kk < k8; ++kk) tile[kk * kTile] = r < m && kk < k ? xr[kk] : 0.0f;
    ++r;
  }
}

void gemm_spf32(const float* x, int64_t ldx, const float* at, int64_t m, const SparseF32& w, float* c, int64_t ldc,
                int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)x;
  (void)ldx;
  const bool chunked = w.chunk_k == kCsrChunk && w.chunk_ptr;
  const int32_t* ptr = chunked ? w.chunk_ptr : w.rowptr;
  const int64_t chunk = chunked ? kCsrChunk : (w.k > 0 ? w.k : 1);
  const int64_t stride = chunked ? (w.k + kCsrChunk - 1) / kCsrChunk + 1 : 1;
  if (w.block_rows == 4) {  // n0 and row groups are multiples of 16, so row blocks never straddle them
    drive(at, m, w.k, chunk, c, ldc, n0, n1, epi,
          [&](auto vt, const float* base, float* acc, int64_t ld, int64_t ch, int64_t r0, int64_t r1) {
            constexpr int V = decltype(vt)::value;
            for (int64_t b = r0 / 4; b < (r1 + 3) / 4; ++b) {
              const int32_t* cp = ptr + b * stride + ch;
              if (cp[0] >= cp[1]) continue;
              float* a = acc + (4 * b - r0) * ld;
              // 4 rows x 2 vectors per pass (8 accumulators of the 16 registers)
              if constexpr (V >= 2) block4_entries<2>(base, w.cols, w.values, cp[0], cp[1], a, ld);
              else block4_entries<1>(base, w.cols, w.values, cp[0], cp[1], a, ld);
              if constexpr (V >= 4) block4_entries<2>(base + 16, w.cols, w.values, cp[0], cp[1], a + 16, ld);
              else if constexpr (V == 3) block4_entries<1>(base + 16, w.cols, w.values, cp[0], cp[1], a + 16, ld);
              if constexpr (V >= 6) block4_entries<2>(base + 32, w.cols, w.values, cp[0], cp[1], a + 32, ld);
              else if constexpr (V == 5) block4_entries<1>(base + 32, w.cols, w.values, cp[0], cp[1], a + 32, ld);
              if constexpr (V == 8) block4_entries<2>(base + 48, w.cols, w.values, cp[0], cp[1], a + 48, ld);
              else if constexpr (V == 7) block4_entries<1>(base + 48, w.cols, w.values, cp[0], cp[1], a + 48, ld);
            }
          });
  } else {
    drive(at, m, w.k, chunk, c, ldc, n0, n1, epi,
          [&](auto vt, const float* base, float* acc, int64_t ld, int64_t ch, int64_t r0, int64_t r1) {
            constexpr int V = decltype(vt)::value;
            for (int64_t n = r0; n < r1; ++n) {
              const int32_t* cp = ptr + n * stride + ch;
              if (cp[0] < cp[1]) row_entries<V>(base, w.cols, w.values, cp[0], cp[1], acc + (n - r0) * ld);
            }
          },
          // Rows longer than two chunks (FFN2: 3072 inputs, a 768 KB tile of At, beyond L2) take every output row of
          // the call as one group, chunk by chunk, so a chunk of At (256 KB) serves all rows while it is in L2; the
          // accumulators (output rows x 256 bytes) round-trip once per chunk
          // (bench/results/csr_f32_long_rows_avx2_ab.md)
          chunked && w.k > 2 * kCsrChunk ? (n1 - n0 + 15) / 16 * 16 : kRowGroup);
  }
}

void gemm_nm_f32(const float* x, int64_t ldx, const float* at, int64_t m, const NmF32& w, float* c, int64_t ldc,
                 int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)x;
  (void)ldx;
  if (w.group == 8) gemm_nm<4, 8>(at, m, w, c, ldc, n0, n1, epi);
  else gemm_nm<2, 4>(at, m, w, c, ldc, n0, n1, epi);
}

}  // namespace avx2
}  // namespace tf
