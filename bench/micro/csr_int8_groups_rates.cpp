// csr-int8 on 90% unstructured weights, AVX-512 VNNI, one 64-token tile: the kernel's 1x4 quads against groups of
// four arbitrary non-zeros of a row whose activations are interleaved at run time.
//
//   quads    the kernel's walk (bsr_s8_avx512vnni.cpp: row_dot, one row at a time): each quad of 4 consecutive
//            inputs holding a non-zero is one broadcast of its 4 weights, 4 loads of At (64 tokens x 4 bytes) and
//            4 vpdpbusd. At 90% a quad holds 1.16 non-zeros on average, so 71% of the products multiply zeros.
//   groups4  a row's non-zeros in groups of 4 (any inputs; the last group padded with zero weights): the 4 inputs'
//            At rows (64 tokens x 1 byte each, At8[k][64]) are loaded, interleaved with 4 vpunpck*bw and 4
//            vpunpck*wd into 4 vectors of 16 tokens x 4 bytes, and fed to 4 vpdpbusd with the group's 4 weights
//            broadcast. Every product is a non-zero's; the unpacks leave the tokens in a fixed order within the
//            tile (vector q, lane L, dword j: token 16 L + 4 q + j) that a store would undo.
//
//   g++ -O2 -march=native -o /tmp/csr_int8_groups_rates bench/micro/csr_int8_groups_rates.cpp && /tmp/csr_int8_groups_rates
//
// Both walks are checked against a scalar reference (int32 sums, exact). Rows are random at density 0.1 (seeded);
// At holds random bytes. The clock is a dependent vpaddd chain (micro_common.h).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "micro_common.h"

namespace {
constexpr int64_t kTok = 64;

struct Quads {
  std::vector<int32_t> ptr{0};
  std::vector<uint16_t> quad;  // input / 4
  std::vector<int32_t> w;      // the quad's 4 weights
};
struct Groups {
  std::vector<int32_t> ptr{0};  // in groups
  std::vector<uint16_t> k;      // 4 inputs per group
  std::vector<int32_t> w;       // 4 weights per group (zeros pad the last)
};

void walk_quads(const Quads& q, int64_t n, const uint8_t* atq, int32_t* y) {
  for (int64_t r = 0; r < n; ++r) {
    __m512i a[4], b[4];
    for (int v = 0; v < 4; ++v) a[v] = b[v] = _mm512_setzero_si512();
    int32_t j = q.ptr[r];
    const int32_t j1 = q.ptr[r + 1];
    for (; j + 1 < j1; j += 2) {
      const uint8_t* p = atq + q.quad[j] * 256;
      const uint8_t* s = atq + q.quad[j + 1] * 256;
      const __m512i w = _mm512_set1_epi32(q.w[j]), u = _mm512_set1_epi32(q.w[j + 1]);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) a[v] = _mm512_dpbusd_epi32(a[v], _mm512_load_si512(p + 64 * v), w);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) b[v] = _mm512_dpbusd_epi32(b[v], _mm512_load_si512(s + 64 * v), u);
    }
    if (j < j1) {
      const uint8_t* p = atq + q.quad[j] * 256;
      const __m512i w = _mm512_set1_epi32(q.w[j]);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) a[v] = _mm512_dpbusd_epi32(a[v], _mm512_load_si512(p + 64 * v), w);
    }
    for (int v = 0; v < 4; ++v) _mm512_store_si512(y + r * kTok + 16 * v, _mm512_add_epi32(a[v], b[v]));
  }
}

void walk_groups(const Groups& g, int64_t n, const uint8_t* at8, int32_t* y) {
  for (int64_t r = 0; r < n; ++r) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (int32_t j = g.ptr[r]; j < g.ptr[r + 1]; ++j) {
      const uint16_t* kk = &g.k[4 * j];
      const __m512i x0 = _mm512_load_si512(at8 + kk[0] * kTok), x1 = _mm512_load_si512(at8 + kk[1] * kTok);
      const __m512i x2 = _mm512_load_si512(at8 + kk[2] * kTok), x3 = _mm512_load_si512(at8 + kk[3] * kTok);
      const __m512i l01 = _mm512_unpacklo_epi8(x0, x1), h01 = _mm512_unpackhi_epi8(x0, x1);
      const __m512i l23 = _mm512_unpacklo_epi8(x2, x3), h23 = _mm512_unpackhi_epi8(x2, x3);
      const __m512i w = _mm512_set1_epi32(g.w[j]);
      a0 = _mm512_dpbusd_epi32(a0, _mm512_unpacklo_epi16(l01, l23), w);
      a1 = _mm512_dpbusd_epi32(a1, _mm512_unpackhi_epi16(l01, l23), w);
      a2 = _mm512_dpbusd_epi32(a2, _mm512_unpacklo_epi16(h01, h23), w);
      a3 = _mm512_dpbusd_epi32(a3, _mm512_unpackhi_epi16(h01, h23), w);
    }
    _mm512_store_si512(y + r * kTok, a0);
    _mm512_store_si512(y + r * kTok + 16, a1);
    _mm512_store_si512(y + r * kTok + 32, a2);
    _mm512_store_si512(y + r * kTok + 48, a3);
  }
}
}  // namespace

int main() {
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock %.2f GHz (vpaddd chain)\n\n", ghz);
  std::printf("| shape (out x in) | At KiB | non-zeros | per quad | walk | us per tile | cycles per non-zero | vpdpbusd per cycle | exact |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int64_t K : {768, 3072}) {
    const int64_t N = K == 768 ? 3072 : 768;
    std::mt19937 rng(5);
    std::vector<int8_t> w(N * K, 0);
    for (auto& x : w)
      if (rng() % 10 == 0) x = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    Quads q;
    Groups g;
    int64_t nnz = 0;
    for (int64_t r = 0; r < N; ++r) {
      const int8_t* row = &w[r * K];
      for (int64_t b = 0; b < K / 4; ++b) {
        if (!row[4 * b] && !row[4 * b + 1] && !row[4 * b + 2] && !row[4 * b + 3]) continue;
        int32_t packed;
        std::memcpy(&packed, row + 4 * b, 4);
        q.quad.push_back(static_cast<uint16_t>(b));
        q.w.push_back(packed);
      }
      q.ptr.push_back(static_cast<int32_t>(q.quad.size()));
      std::vector<int64_t> ks;
      for (int64_t i = 0; i < K; ++i)
        if (row[i]) ks.push_back(i);
      nnz += static_cast<int64_t>(ks.size());
      for (size_t j = 0; j < ks.size(); j += 4) {
        int8_t wb[4] = {0, 0, 0, 0};
        for (size_t t = 0; t < 4; ++t) {
          const bool real = j + t < ks.size();
          g.k.push_back(static_cast<uint16_t>(real ? ks[j + t] : ks[j]));
          wb[t] = real ? row[ks[j + t]] : 0;
        }
        int32_t packed;
        std::memcpy(&packed, wb, 4);
        g.w.push_back(packed);
      }
      g.ptr.push_back(static_cast<int32_t>(g.w.size()));
    }
    // activations: x[t][k] random bytes; At quads [K/4][64][4], At8 [K][64]
    std::vector<uint8_t> x(kTok * K);
    for (auto& v : x) v = static_cast<uint8_t>(rng());
    auto* atq = static_cast<uint8_t*>(std::aligned_alloc(64, K * kTok));
    auto* at8 = static_cast<uint8_t*>(std::aligned_alloc(64, K * kTok));
    for (int64_t t = 0; t < kTok; ++t)
      for (int64_t k = 0; k < K; ++k) {
        atq[(k / 4) * 256 + t * 4 + k % 4] = x[t * K + k];
        at8[k * kTok + t] = x[t * K + k];
      }
    std::vector<int32_t> ref(N * kTok, 0);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t k = 0; k < K; ++k)
        if (w[r * K + k])
          for (int64_t t = 0; t < kTok; ++t) ref[r * kTok + t] += int32_t(w[r * K + k]) * int32_t(x[t * K + k]);
    auto* y = static_cast<int32_t*>(std::aligned_alloc(64, N * kTok * 4));
    const auto exact = [&](bool groups) {
      for (int64_t r = 0; r < N; ++r)
        for (int64_t i = 0; i < kTok; ++i) {
          // groups4: vector q = i / 16, dword d = i % 16 (lane d / 4, j = d % 4) holds token 16 (d / 4) + 4 q + d % 4
          const int64_t t = groups ? 16 * ((i % 16) / 4) + 4 * (i / 16) + i % 4 : i;
          if (y[r * kTok + i] != ref[r * kTok + t]) return false;
        }
      return true;
    };
    const auto report = [&](const char* name, bool groups, auto fn) {
      const long reps = 30;
      const double sec = best_of_5([&](long rr) {
        const auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < rr; ++i) fn();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }, reps);
      const double cyc = sec * ghz * 1e9 / reps;
      const double dp = groups ? 4.0 * static_cast<double>(g.w.size()) : 4.0 * static_cast<double>(q.quad.size());
      std::printf("| %lldx%lld | %lld | %lld | %.2f | %s | %.1f | %.2f | %.2f | %s |\n", static_cast<long long>(N),
                  static_cast<long long>(K), static_cast<long long>(K * kTok / 1024), static_cast<long long>(nnz),
                  static_cast<double>(nnz) / static_cast<double>(q.quad.size()), name, sec / reps * 1e6,
                  cyc / static_cast<double>(nnz), dp / cyc, exact(groups) ? "yes" : "NO");
    };
    report("quads", false, [&] { walk_quads(q, N, atq, y); });
    report("groups4", true, [&] { walk_groups(g, N, at8, y); });
    std::free(atq);
    std::free(at8);
    std::free(y);
  }
  return 0;
}
