// Sparse FP32 GEMMs on AVX-512 (csr-f32, block-f32 with 4x1 blocks, N:M groups).
//
// Same scheme as the block-sparse INT8 kernel (bsr_s8_avx512vnni.cpp): the weight is the sparse operand and the
// activations are re-laid once per call as At[k][m16] (tokens along the vector), so each stored weight costs one
// broadcast and, per 16 tokens, one fused load + FMA: no work on zeros, no gathers. Rows of the output come out
// as Y^T tiles (16 output rows x up to 16V tokens) that a 16x16 transpose turns back into token rows, with bias
// and residual applied on the way out. csr-f32 runs one output row per entry list (8 token vectors); block-f32
// shares each activation load between the 4 rows of a 4x1 block (4 token vectors x 4 rows of accumulators);
// N:M decodes each value's input from its group number and its small in-group index. See docs/kernels.md.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace avx512 {

namespace {

inline int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }
inline int64_t round8(int64_t x) { return (x + 7) / 8 * 8; }
// token vectors per tile: 8 for one row at a time (8 accumulators), 4 when 4 rows share each load (16)
constexpr int kV1 = 8;
constexpr int kV4 = 4;

// r[i][j] <- r[j][i] for a 16x16 matrix of 32-bit lanes
inline void transpose16(__m512* rf) {
  __m512i* r = reinterpret_cast<__m512i*>(rf);
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

inline __mmask16 first(int64_t count) {
  return count >= 16 ? 0xFFFF : (count <= 0 ? 0 : static_cast<__mmask16>((1u << count) - 1));
}

// one output row over a list of (input, value) entries: acc[v] = sum_j value_j * At[input_j][m0 + 16v ..]
template <int V>
inline void csr_row(const float* at, int64_t m_pad, int64_t m0, const int32_t* cols, const float* vals, int32_t nnz,
                    __m512* acc) {
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
  const float* base = at + m0;
  for (int32_t j = 0; j < nnz; ++j) {
    const __m512 wv = _mm512_set1_ps(vals[j]);
    const float* ap = base + static_cast<int64_t>(cols[j]) * m_pad;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[v] = _mm512_fmadd_ps(wv, _mm512_load_ps(ap + 16 * v), acc[v]);
  }
}

// the 4 rows of a 4x1 row block: each activation load feeds 4 FMAs
template <int V>
inline void block4_rows(const float* at, int64_t m_pad, int64_t m0, const int32_t* cols, const float* vals,
                        int32_t nnz, __m512 (*acc)[kV1]) {
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* base = at + m0;
  for (int32_t j = 0; j < nnz; ++j) {
    const __m512 w0 = _mm512_set1_ps(vals[4 * j]), w1 = _mm512_set1_ps(vals[4 * j + 1]),
                 w2 = _mm512_set1_ps(vals[4 * j + 2]), w3 = _mm512_set1_ps(vals[4 * j + 3]);
    const float* ap = base + static_cast<int64_t>(cols[j]) * m_pad;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m512 x = _mm512_load_ps(ap + 16 * v);
      acc[0][v] = _mm512_fmadd_ps(w0, x, acc[0][v]);
      acc[1][v] = _mm512_fmadd_ps(w1, x, acc[1][v]);
      acc[2][v] = _mm512_fmadd_ps(w2, x, acc[2][v]);
      acc[3][v] = _mm512_fmadd_ps(w3, x, acc[3][v]);
    }
  }
}

// one row of an N:M weight: value j of the row sits at input group * (j / keep) + idx[j]
template <int V, int KEEP, int GROUP>
inline void nm_row(const float* at, int64_t m_pad, int64_t m0, const float* vals, const uint8_t* idx, int64_t groups,
                   __m512* acc) {
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
  const float* base = at + m0;
  for (int64_t g = 0; g < groups; ++g) {
    const float* gp = base + g * GROUP * m_pad;
#pragma GCC unroll 4
    for (int q = 0; q < KEEP; ++q) {
      const __m512 wv = _mm512_set1_ps(vals[g * KEEP + q]);
      const float* ap = gp + static_cast<int64_t>(idx[g * KEEP + q]) * m_pad;
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[v] = _mm512_fmadd_ps(wv, _mm512_load_ps(ap + 16 * v), acc[v]);
    }
  }
}

// Y^T tile t (rows nb0 .. nb1-1 of the output, tokens m0 .. m0+16V-1) back to token rows of c, scaled by alpha,
// with bias and (when there is no activation) the residual added on the way out
template <int V>
void store_tile(float (*t)[16 * kV1], int64_t m, int64_t m0, int64_t nb0, int64_t nb1, float* c, int64_t ldc,
                const Epilogue& epi) {
  const int64_t cols = nb1 - nb0 < 16 ? nb1 - nb0 : 16;
  const __mmask16 ck = first(cols);
  const __m512 bias = epi.bias ? _mm512_maskz_loadu_ps(ck, epi.bias + nb0) : _mm512_setzero_ps();
  const __m512 alpha = _mm512_set1_ps(epi.alpha);
  for (int v = 0; v < V; ++v) {
    if (m - m0 - 16 * v <= 0) break;
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(&t[i][16 * v]);
    transpose16(r);
    const int64_t rows = m - m0 - 16 * v < 16 ? m - m0 - 16 * v : 16;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t row = m0 + 16 * v + i;
      __m512 y = _mm512_add_ps(_mm512_mul_ps(r[i], alpha), bias);
      if (epi.residual && epi.act == Act::None)
        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(ck, epi.residual + row * epi.ld_residual + nb0));
      _mm512_mask_storeu_ps(c + row * ldc + nb0, ck, y);
    }
  }
}

template <int V>
void csr_tile(const float* at, int64_t m_pad, int64_t m, int64_t m0, const SparseF32& w, int64_t nb0, int64_t nb1,
              float* c, int64_t ldc, const Epilogue& epi) {
  alignas(64) float t[16][16 * kV1];
  if (w.block_rows == 4) {  // nb0 is a multiple of 16, so row blocks never straddle the tile
    for (int64_t i = 0; i < 16; i += 4) {
      __m512 acc[4][kV1];
      if (nb0 + i < nb1) {
        const int64_t b = (nb0 + i) / 4;
        const int32_t b0 = w.rowptr[b], b1 = w.rowptr[b + 1];
        block4_rows<V>(at, m_pad, m0, w.cols + b0, w.values + 4 * b0, b1 - b0, acc);
      } else {
        for (int r = 0; r < 4; ++r)
          for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
      }
      for (int r = 0; r < 4; ++r)
        for (int v = 0; v < V; ++v) _mm512_store_ps(&t[i + r][16 * v], acc[r][v]);
    }
  } else {
    for (int64_t i = 0; i < 16; ++i) {
      __m512 acc[V];
      if (nb0 + i < nb1) {
        const int32_t b0 = w.rowptr[nb0 + i], b1 = w.rowptr[nb0 + i + 1];
        csr_row<V>(at, m_pad, m0, w.cols + b0, w.values + b0, b1 - b0, acc);
      } else {
        for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
      }
      for (int v = 0; v < V; ++v) _mm512_store_ps(&t[i][16 * v], acc[v]);
    }
  }
  store_tile<V>(t, m, m0, nb0, nb1, c, ldc, epi);
}

template <int V, int KEEP, int GROUP>
void nm_tile(const float* at, int64_t m_pad, int64_t m, int64_t m0, const NmF32& w, int64_t nb0, int64_t nb1,
             float* c, int64_t ldc, const Epilogue& epi) {
  alignas(64) float t[16][16 * kV1];
  const int64_t groups = (w.k + GROUP - 1) / GROUP, per_row = groups * KEEP;
  for (int64_t i = 0; i < 16; ++i) {
    __m512 acc[V];
    if (nb0 + i < nb1) {
      nm_row<V, KEEP, GROUP>(at, m_pad, m0, w.values + (nb0 + i) * per_row, w.idx + (nb0 + i) * per_row, groups,
                             acc);
    } else {
      for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
    }
    for (int v = 0; v < V; ++v) _mm512_store_ps(&t[i][16 * v], acc[v]);
  }
  store_tile<V>(t, m, m0, nb0, nb1, c, ldc, epi);
}

// an activation runs after the tiles, over whole rows of the output range, then the residual
void finish_rows(float* c, int64_t ldc, int64_t m0, int64_t rows, int64_t n0, int64_t n1, const Epilogue& epi) {
  if (epi.act == Act::None) return;
  for (int64_t i = 0; i < rows; ++i) {
    float* out = c + (m0 + i) * ldc + n0;
    activation(out, n1 - n0, epi.act);
    if (epi.residual) {
      const float* res = epi.residual + (m0 + i) * epi.ld_residual + n0;
      for (int64_t j = 0; j < n1 - n0; ++j) out[j] += res[j];
    }
  }
}

template <class W>
using TileFn = void (*)(const float*, int64_t, int64_t, int64_t, const W&, int64_t, int64_t, float*, int64_t,
                        const Epilogue&);

// token tiles outside, output rows inside: one tile's slice of At stays hot while every row streams past it
template <class W>
void drive(const float* at, int64_t m, const W& w, float* c, int64_t ldc, int64_t n0, int64_t n1, const Epilogue& epi,
           int vmax, const TileFn<W>* table) {
  const int64_t m_pad = round16(m);
  for (int64_t m0 = 0; m0 < m; m0 += 16 * vmax) {
    const int64_t vecs = (m - m0 + 15) / 16;
    const TileFn<W> fn = table[vecs > vmax ? vmax : vecs];
    for (int64_t nb = n0; nb < n1; nb += 16) fn(at, m_pad, m, m0, w, nb, nb + 16 < n1 ? nb + 16 : n1, c, ldc, epi);
    finish_rows(c, ldc, m0, m - m0 < 16 * vmax ? m - m0 : 16 * vmax, n0, n1, epi);
  }
}

const TileFn<SparseF32> kCsr[9] = {nullptr,        csr_tile<1>, csr_tile<2>, csr_tile<3>, csr_tile<4>,
                                   csr_tile<5>,    csr_tile<6>, csr_tile<7>, csr_tile<8>};
const TileFn<NmF32> kNm24[9] = {nullptr,          nm_tile<1, 2, 4>, nm_tile<2, 2, 4>, nm_tile<3, 2, 4>,
                                nm_tile<4, 2, 4>, nm_tile<5, 2, 4>, nm_tile<6, 2, 4>, nm_tile<7, 2, 4>,
                                nm_tile<8, 2, 4>};
const TileFn<NmF32> kNm48[9] = {nullptr,          nm_tile<1, 4, 8>, nm_tile<2, 4, 8>, nm_tile<3, 4, 8>,
                                nm_tile<4, 4, 8>, nm_tile<5, 4, 8>, nm_tile<6, 4, 8>, nm_tile<7, 4, 8>,
                                nm_tile<8, 4, 8>};
}  // namespace

size_t spf32_at_size(int64_t m, int64_t k) { return static_cast<size_t>(round16(m) * round8(k)) * 4 + 64; }

void spf32_pack_at(const float* x, int64_t ldx, int64_t m, int64_t m0, int64_t m1, int64_t k, float* at) {
  const int64_t m_pad = round16(m), k8 = round8(k);
  for (int64_t mb = m0; mb < m1; mb += 16) {
    for (int64_t g = 0; g < k8; g += 16) {
      const __mmask16 gk = first(k - g);  // inputs past k come out as zeros
      __m512 r[16];
      for (int64_t i = 0; i < 16; ++i)
        r[i] = mb + i < m ? _mm512_maskz_loadu_ps(gk, x + (mb + i) * ldx + g) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t i = 0; i < 16 && g + i < k8; ++i) _mm512_store_ps(at + (g + i) * m_pad + mb, r[i]);
    }
  }
}

void gemm_spf32(const float* x, int64_t ldx, const float* at, int64_t m, const SparseF32& w, float* c, int64_t ldc,
                int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)x;
  (void)ldx;
  drive(at, m, w, c, ldc, n0, n1, epi, w.block_rows == 4 ? kV4 : kV1, kCsr);
}

void gemm_nm_f32(const float* x, int64_t ldx, const float* at, int64_t m, const NmF32& w, float* c, int64_t ldc,
                 int64_t n0, int64_t n1, const Epilogue& epi) {
  (void)x;
  (void)ldx;
  drive(at, m, w, c, ldc, n0, n1, epi, kV1, w.group == 8 ? kNm48 : kNm24);
}

}  // namespace avx512
}  // namespace tf
