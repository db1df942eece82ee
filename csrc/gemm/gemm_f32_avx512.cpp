// FP32 GEMM for AVX-512: B packed in panels of 32 columns ([panel][k][32]), micro-tile 12 rows x 32 columns
// (24 zmm accumulators, 2 B loads and 12 broadcasts per k step). See docs/kernels/gemm.md.
#define TF_ISA_NS avx512
#include <immintrin.h>

#include <cstring>

#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace avx512 {

#ifndef TF_F32_NV
#define TF_F32_NV 2
#endif
#ifndef TF_F32_MR
#define TF_F32_MR 12
#endif
namespace {
constexpr int NV = TF_F32_NV;  // zmm vectors per tile row
constexpr int64_t NR = 16 * NV;
constexpr int MR = TF_F32_MR;
constexpr int64_t kPrefetchK = 16;
// Cache blocking by rows only (pack_f32.inc): a block of rows whose A slice (rows x k floats, ~512 KB) stays in L2
// while every 32-column panel of the call streams past it. Without it each panel re-read the whole A from L3 /
// DRAM: 6 MB at 2048 rows x 768 inputs (bench/results/kernel_rates_amx_rowblock.md against kernel_rates_amx.md).
// Only where that budget holds at least 8 row tiles (k <= 1365), and no K blocking: in development sweeps (not
// kept) a 48-row block at k = 3072 and K blocks of 256-512 were slower than none.
constexpr int64_t kUnblocked = int64_t{1} << 40;
constexpr int64_t KC = kUnblocked;
constexpr int64_t kRowBlockFloats = 128 * 1024;
inline int64_t row_block(int64_t k) {
  const int64_t rows = kRowBlockFloats / (k > 0 ? k : 1) / MR * MR;
  return rows >= 8 * MR ? rows : kUnblocked;
}

template <int R>
inline void micro(const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc, int64_t cols,
                  bool accumulate) {
  __m512 acc[NV][R];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    const int64_t left = cols - 16 * v;
    const __mmask16 mk = left >= 16 ? 0xFFFF : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1));
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
      acc[v][i] = accumulate ? _mm512_maskz_loadu_ps(mk, c + i * ldc + 16 * v) : _mm512_setzero_ps();
  }
  for (int64_t kk = 0; kk < k; ++kk) {
    // the panel 16 k steps (2 KB) ahead: the first row tile of a panel pulls it from DRAM (an encoder's FP32
    // weights do not stay in cache between passes), the others find it in L2
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v)
      _mm_prefetch(reinterpret_cast<const char*>(b + (kk + kPrefetchK) * NR + 16 * v), _MM_HINT_T0);
    __m512 bv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + kk * NR + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * lda + kk]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[v][i] = _mm512_fmadd_ps(av, bv[v], acc[v][i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const int64_t left = cols - 16 * v;
      const __mmask16 mk = left >= 16 ? 0xFFFF : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1));
      _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mk, acc[v][i]);
    }
}

template <int... Rs>
struct MicroTable {
  using Fn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, bool);
  static constexpr Fn fns[sizeof...(Rs) + 1] = {nullptr, micro<Rs>...};
};
template <int... Rs>
constexpr typename MicroTable<Rs...>::Fn MicroTable<Rs...>::fns[];

template <int N, int... Rs>
struct Seq : Seq<N - 1, N, Rs...> {};
template <int... Rs>
struct Seq<0, Rs...> {
  using Table = MicroTable<Rs...>;
};
const auto& kMicro = Seq<MR>::Table::fns;
}  // namespace

const int64_t kF32Nr = NR;

#define TF_F32_DRIVER 1
#include "pack_f32.inc"

}  // namespace avx512
}  // namespace tf
