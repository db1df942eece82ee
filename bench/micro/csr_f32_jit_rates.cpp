// Would weight-specialised code (a JIT, as DeepSparse and the ITREX engine generate) lift the csr-f32 walk past
// its At-from-L2 bound? One 64-token tile, 90% unstructured weights at BERT-base shapes, FMAs per cycle:
//
//   rows     the kernel's walk (csrc/sparse/spmm_f32_avx512vnni.cpp without its chunks): each row's entries in
//            input order, 4 token vectors, accumulators in registers; every entry reads its 256-byte At row
//            (192 KiB slice at 768 inputs: L2)
//   jitR     generated code per group of R output rows over 16-token tiles (4 calls for the 64 tokens): the R
//            accumulators live in zmm0 .. zmmR-1 for the whole row; the group's inputs are walked in order, each
//            input's 64-byte At row loaded once into a register and multiplied into every row of the group that
//            holds it (vfmadd231ps with the weight as an embedded {1to16} broadcast from the value stream); no
//            index loads, no branches. At rows are shared by the group's rows that hold the input (at 90% and
//            R = 24, 2.6 of them on average), and a 16-token tile's At (48 KiB at 768 inputs) sits mostly in L1.
//            The price: the code itself, about 7 bytes per entry plus 10 per At load, replayed per 16 tokens and
//            fetched from beyond L2 for FFN-sized weights.
//
// The code comes from the loader's own generator (csrc/sparse/jit_f32.cpp), blocks cut every R rows.
//
//   g++ -O2 -march=native -std=c++20 -Icsrc -o /tmp/csr_f32_jit_rates bench/micro/csr_f32_jit_rates.cpp \
//       csrc/sparse/jit_f32.cpp && /tmp/csr_f32_jit_rates
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "micro_common.h"
#include "sparse/jit_f32.h"

namespace {
constexpr int kTile = 64;

void walk_rows(const Csr& w, const float* at, float* y) {
  for (int64_t r = 0; r < w.n; ++r) {
    __m512 a[4], b[4];
    for (int v = 0; v < 4; ++v) a[v] = b[v] = _mm512_setzero_ps();
    int32_t j = w.rowptr[r];
    const int32_t j1 = w.rowptr[r + 1];
    for (; j + 1 < j1; j += 2) {
      const __m512 w0 = _mm512_set1_ps(w.vals[j]), w1 = _mm512_set1_ps(w.vals[j + 1]);
      const float* p0 = at + static_cast<int64_t>(w.cols[j]) * kTile;
      const float* p1 = at + static_cast<int64_t>(w.cols[j + 1]) * kTile;
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        a[v] = _mm512_fmadd_ps(w0, _mm512_load_ps(p0 + 16 * v), a[v]);
        b[v] = _mm512_fmadd_ps(w1, _mm512_load_ps(p1 + 16 * v), b[v]);
      }
    }
    if (j < j1) {
      const __m512 w0 = _mm512_set1_ps(w.vals[j]);
      const float* p0 = at + static_cast<int64_t>(w.cols[j]) * kTile;
      for (int v = 0; v < 4; ++v) a[v] = _mm512_fmadd_ps(w0, _mm512_load_ps(p0 + 16 * v), a[v]);
    }
    for (int v = 0; v < 4; ++v) _mm512_store_ps(y + r * kTile + 16 * v, _mm512_add_ps(a[v], b[v]));
  }
}

using GroupFn = void (*)(const float* at, const float* values, float* yt);

// The loader's generator (csrc/sparse/jit_f32.cpp) with blocks of R rows (one group each: R <= kJitRows), plus the
// At loads its code makes: one per input a group holds
struct Jit {
  tf::JitF32Code code;
  int64_t at_loads = 0;
};

std::unique_ptr<Jit> make_jit(const Csr& w, int R, int at_stride, int y_stride) {
  auto j = std::make_unique<Jit>();
  std::vector<int32_t> blocks;
  for (int64_t r = 0; r < w.n; r += R) blocks.push_back(static_cast<int32_t>(r));
  if (!j->code.build(w.n, w.rowptr.data(), w.cols.data(), w.vals.data(), blocks, at_stride, y_stride)) {
    std::fprintf(stderr, "no executable memory\n");
    std::exit(1);
  }
  for (int64_t r0 = 0; r0 < w.n; r0 += R) {
    std::vector<char> held(w.k, 0);
    for (int64_t r = r0; r < std::min<int64_t>(w.n, r0 + R); ++r)
      for (int32_t q = w.rowptr[r]; q < w.rowptr[r + 1]; ++q) held[w.cols[q]] = 1;
    for (char h : held) j->at_loads += h;
  }
  return j;
}

// one 16-token quarter through every group: At rows from `at`, Y^T rows (y_stride floats apart) from `yt`
void run_quarter(const Jit& j, const float* at, float* yt, int64_t y_stride) {
  const tf::SparseF32Jit& v = j.code.view();
  for (int64_t g = 0; g < v.block_groups[v.blocks]; ++g)
    reinterpret_cast<GroupFn>(v.code + v.groups[g].code_off)(at, v.values + v.groups[g].value_off,
                                                               yt + v.groups[g].row0 * y_stride);
}

double seconds_per(auto&& f, int reps) {
  f();
  double best = 1e30;
  for (int t = 0; t < 5; ++t) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  return best;
}

void run(const char* name, int64_t n, int64_t k, double ghz) {
  const Csr w = random_csr(n, k, 0.1, 7);
  const int64_t nnz = w.rowptr.back();
  std::printf("%s %lldx%lld, %lld entries\n", name, static_cast<long long>(n), static_cast<long long>(k),
              static_cast<long long>(nnz));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  float* at = static_cast<float*>(std::aligned_alloc(64, k * kTile * 4));
  float* at16 = static_cast<float*>(std::aligned_alloc(64, k * kTile * 4));  // 4 tiles of [k][16]
  for (int64_t i = 0; i < k * kTile; ++i) at[i] = u(rng);
  for (int q = 0; q < 4; ++q)
    for (int64_t c = 0; c < k; ++c)
      for (int t = 0; t < 16; ++t) at16[q * k * 16 + c * 16 + t] = at[c * kTile + 16 * q + t];
  float* y = static_cast<float*>(std::aligned_alloc(64, n * kTile * 4));
  float* yj = static_cast<float*>(std::aligned_alloc(64, n * kTile * 4));  // 4 tiles of Y^T [n][16]
  const double t_rows = seconds_per([&] { walk_rows(w, at, y); }, 20);
  const double fmas = static_cast<double>(nnz) * 4;
  std::printf("  rows    %.3f FMA/cycle  %7.1f us/tile\n", fmas / (t_rows * ghz * 1e9), t_rows * 1e6);
  for (int R : {8, 16, 24, 28}) {
    const auto j = make_jit(w, R, 64, 64);
    const auto tile = [&] {
      for (int q = 0; q < 4; ++q) run_quarter(*j, at16 + q * k * 16, yj + q * n * 16, 16);
    };
    const double t = seconds_per(tile, 20);
    double diff = 0;
    for (int64_t r = 0; r < n; ++r)
      for (int t2 = 0; t2 < kTile; ++t2) {
        const double a = y[r * kTile + t2], b = yj[(t2 / 16) * n * 16 + r * 16 + t2 % 16];
        diff = std::max(diff, std::abs(a - b) / (std::abs(a) + 1e-3));
      }
    std::printf("  jit%-2d   %.3f FMA/cycle  %7.1f us/tile  (code %.2f MB, %.2f At loads per entry, max rel diff "
                "%.1e)\n",
                R, fmas / (t * ghz * 1e9), t * 1e6, j->code.code_bytes() / 1e6,
                static_cast<double>(j->at_loads) / static_cast<double>(nnz), diff);
  }
  {  // the kernel's own re-layout: 64-token At rows (256 bytes), Y^T rows of 64 tokens, quarter q at +16q floats
    const auto j = make_jit(w, 28, 256, 256);
    const auto tile = [&] {
      for (int q = 0; q < 4; ++q) run_quarter(*j, at + 16 * q, yj + 16 * q, kTile);
    };
    const double t = seconds_per(tile, 20);
    double diff = 0;
    for (int64_t i = 0; i < n * kTile; ++i) diff = std::max(diff, std::abs(double(y[i]) - yj[i]) / (std::abs(y[i]) + 1e-3));
    std::printf("  jit28 on 64-token At rows  %.3f FMA/cycle  %7.1f us/tile  (code %.2f MB, max rel diff %.1e)\n",
                fmas / (t * ghz * 1e9), t * 1e6, j->code.code_bytes() / 1e6, diff);
  }
  std::free(at);
  std::free(at16);
  std::free(y);
  std::free(yj);
}
}  // namespace

int main() {
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock %.2f GHz (vpaddd chain)\n", ghz);
  run("ffn1", 3072, 768, ghz);
  run("ffn2", 768, 3072, ghz);
  run("qkv", 2304, 768, ghz);
  run("attn_out", 768, 768, ghz);
  return 0;
}
