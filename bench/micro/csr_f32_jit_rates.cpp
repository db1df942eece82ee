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
//   g++ -O2 -march=native -o /tmp/csr_f32_jit_rates bench/micro/csr_f32_jit_rates.cpp && /tmp/csr_f32_jit_rates
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "micro_common.h"

namespace {
constexpr int kTile = 64;

struct Csr {
  int64_t n, k;
  std::vector<int32_t> rowptr, cols;
  std::vector<float> vals;
};

Csr random_csr(int64_t n, int64_t k, double density, uint32_t seed) {
  Csr w{n, k, {0}, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c)
      if (u(rng) < density) {
        w.cols.push_back(static_cast<int32_t>(c));
        w.vals.push_back(u(rng) - 0.5f);
      }
    w.rowptr.push_back(static_cast<int32_t>(w.cols.size()));
  }
  return w;
}

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

// A few AVX-512 instructions, EVEX-encoded by hand (Intel SDM vol. 2, 2.7): 512-bit, no masking.
struct Code {
  std::vector<uint8_t> b;
  enum Reg { RDX = 2, RSI = 6, RDI = 7 };
  void evex(int mm, int pp, int reg, int vvvv, int rm, bool rm_is_reg, bool bcast) {
    b.push_back(0x62);
    const int R = (reg >> 3) & 1, Rp = (reg >> 4) & 1;
    const int B = (rm >> 3) & 1, X = rm_is_reg ? (rm >> 4) & 1 : 0;
    b.push_back(static_cast<uint8_t>(((!R) << 7) | ((!X) << 6) | ((!B) << 5) | ((!Rp) << 4) | mm));
    b.push_back(static_cast<uint8_t>(((~vvvv & 15) << 3) | 4 | pp));
    b.push_back(static_cast<uint8_t>((2 << 5) | (bcast << 4) | ((!((vvvv >> 4) & 1)) << 3)));
  }
  // ModRM (+ displacement) for [base + disp], disp8 compressed by n where it fits
  void mem(int reg, int base, int32_t disp, int n) {
    if (disp % n == 0 && disp / n >= -128 && disp / n <= 127) {
      b.push_back(static_cast<uint8_t>((1 << 6) | ((reg & 7) << 3) | base));
      b.push_back(static_cast<uint8_t>(static_cast<int8_t>(disp / n)));
    } else {
      b.push_back(static_cast<uint8_t>((2 << 6) | ((reg & 7) << 3) | base));
      for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(disp >> (8 * i)));
    }
  }
  void zero(int d) {  // vpxord zmm_d, zmm_d, zmm_d
    evex(1, 1, d, d, d, true, false);
    b.push_back(0xEF);
    b.push_back(static_cast<uint8_t>(0xC0 | ((d & 7) << 3) | (d & 7)));
  }
  void load(int d, int base, int32_t disp) {  // vmovaps zmm_d, [base + disp]
    evex(1, 0, d, 0, base, false, false);
    b.push_back(0x28);
    mem(d, base, disp, 64);
  }
  void store(int s, int base, int32_t disp) {  // vmovaps [base + disp], zmm_s
    evex(1, 0, s, 0, base, false, false);
    b.push_back(0x29);
    mem(s, base, disp, 64);
  }
  void fma_bcast(int d, int v, int base, int32_t disp) {  // vfmadd231ps zmm_d, zmm_v, [base + disp]{1to16}
    evex(2, 1, d, v, base, false, true);
    b.push_back(0xB8);
    mem(d, base, disp, 4);
  }
  void add_rsi(int32_t imm) {  // add rsi, imm32
    b.insert(b.end(), {0x48, 0x81, 0xC6});
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(imm >> (8 * i)));
  }
  void ret() { b.push_back(0xC3); }
};

using TileFn = void (*)(const float* at16, const float* values, float* yt16);

struct Jit {
  TileFn fn = nullptr;
  std::vector<float> values;  // in code order
  size_t code_bytes = 0;
  int64_t at_loads = 0;
};

// code for one 16-token tile: At rows `at_stride` bytes apart at rdi (64: a 16-token re-layout [k][16]; 256: a
// 64-token one [k][64], rdi at the tile's 16-token quarter), values at rsi, Y^T rows `y_stride` bytes apart at rdx
Jit make_jit(const Csr& w, int R, int at_stride = 64, int y_stride = 64) {
  Code c;
  Jit j;
  int32_t voff = 0;  // rsi-relative offset of the next value
  for (int64_t r0 = 0; r0 < w.n; r0 += R) {
    const int rows = static_cast<int>(std::min<int64_t>(R, w.n - r0));
    for (int i = 0; i < rows; ++i) c.zero(i);
    // (input, row, value) of the group, by input
    std::vector<std::array<float, 3>> e;
    for (int i = 0; i < rows; ++i)
      for (int32_t q = w.rowptr[r0 + i]; q < w.rowptr[r0 + i + 1]; ++q)
        e.push_back({static_cast<float>(w.cols[q]), static_cast<float>(i), w.vals[q]});
    std::stable_sort(e.begin(), e.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
    int slot = 0;
    for (size_t q = 0; q < e.size();) {
      const int input = static_cast<int>(e[q][0]);
      const int at = 28 + (slot++ & 3);
      c.load(at, Code::RDI, input * at_stride);
      ++j.at_loads;
      for (; q < e.size() && static_cast<int>(e[q][0]) == input; ++q) {
        if (voff > 127 * 4) {
          c.add_rsi(voff);
          voff = 0;
        }
        c.fma_bcast(static_cast<int>(e[q][1]), at, Code::RSI, voff);
        j.values.push_back(e[q][2]);
        voff += 4;
      }
    }
    for (int i = 0; i < rows; ++i) c.store(i, Code::RDX, static_cast<int32_t>((r0 + i) * y_stride));
  }
  c.ret();
  j.code_bytes = c.b.size();
  void* mem = mmap(nullptr, c.b.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  std::memcpy(mem, c.b.data(), c.b.size());
  mprotect(mem, c.b.size(), PROT_READ | PROT_EXEC);
  j.fn = reinterpret_cast<TileFn>(mem);
  return j;
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
    Jit j = make_jit(w, R);
    const auto tile = [&] {
      for (int q = 0; q < 4; ++q) j.fn(at16 + q * k * 16, j.values.data(), yj + q * n * 16);
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
                R, fmas / (t * ghz * 1e9), t * 1e6, j.code_bytes / 1e6,
                static_cast<double>(j.at_loads) / static_cast<double>(nnz), diff);
  }
  {  // the kernel's own re-layout: 64-token At rows (256 bytes), Y^T rows of 64 tokens, quarter q at +16q floats
    Jit j = make_jit(w, 28, 256, 256);
    const auto tile = [&] {
      for (int q = 0; q < 4; ++q) j.fn(at + 16 * q, j.values.data(), yj + 16 * q);
    };
    const double t = seconds_per(tile, 20);
    double diff = 0;
    for (int64_t i = 0; i < n * kTile; ++i) diff = std::max(diff, std::abs(double(y[i]) - yj[i]) / (std::abs(y[i]) + 1e-3));
    std::printf("  jit28 on 64-token At rows  %.3f FMA/cycle  %7.1f us/tile  (code %.2f MB, max rel diff %.1e)\n",
                fmas / (t * ghz * 1e9), t * 1e6, j.code_bytes / 1e6, diff);
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
