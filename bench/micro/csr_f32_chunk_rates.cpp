// The csr-f32 walk over one 64-token At tile in isolation (AVX-512): FMAs per cycle for 90% unstructured weights
// at BERT-base shapes, whole rows against input chunks small enough for a chunk of At to stay in L1, and the ways
// of paying for a chunk's short row pieces. Every variant computes the same Y^T tile (checked against the first).
//
//   rows         each row's entries in input order, accumulators in registers (two sets: 8 FMA chains), one
//                store per row: every entry reads 256 bytes of At from wherever the tile's slice is (192 KiB at
//                768 inputs: L2)
//   rows_l1_at   the same walk with every entry's input folded into the first 96 (At in L1): its rate without
//                At's misses (other sums: not checked)
//   *_chain      rows (and the kernel's 384-input chunks) in a greedy chain order, each row followed by the one
//                sharing most inputs with it (an FFN1's output order is free): its At rows partly still in L1
//   pairs        rows in pairs matched within 16 by shared inputs, as csr-int8's row pairs (BsrS8::pair_tile): the
//                inputs both rows hold read their At row once for two rows' FMAs
//   chunkC       groups of 16 rows, inputs in chunks of C; each row adds its entries of the chunk to accumulators
//                in L1 (loaded and stored per row piece): the kernel's scheme (csrc/sparse/spmm_f32_avx512vnni.cpp),
//                whose pieces have a variable length (a loop exit the branch predictor misses)
//   fixedC       the same chunks, each row piece cut into pieces of exactly 8 entries and then of exactly 4, the
//                last padded with zero weights on an input of the chunk: two loops of fixed bodies per group and
//                chunk, no exit per row piece, at the price of the padding's FMAs
//
//   g++ -O2 -march=native -o /tmp/csr_f32_chunk_rates bench/micro/csr_f32_chunk_rates.cpp && /tmp/csr_f32_chunk_rates
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "micro_common.h"

namespace {
constexpr int kTile = 64;
constexpr int kV = kTile / 16;  // token vectors per tile

// the entries of rows [r0, r0+16) in input chunk ch, as pieces of exactly E entries (E = 8, then E = 4), padded
struct Fixed {
  std::vector<int32_t> row8, row4;        // per piece: the accumulator row's float offset (row * 64)
  std::vector<int32_t> col8, col4;        // per entry: the At float offset (input * 64)
  std::vector<float> val8, val4;
  std::vector<int64_t> g8, g4;             // per (group, chunk): first piece, pieces end at the next one's
};

Fixed make_fixed(const Csr& w, int64_t chunk) {
  Fixed f;
  const int64_t chunks = (w.k + chunk - 1) / chunk;
  for (int64_t r0 = 0; r0 < w.n; r0 += 16)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      f.g8.push_back(static_cast<int64_t>(f.row8.size()));
      f.g4.push_back(static_cast<int64_t>(f.row4.size()));
      // each row's entries of the chunk; pieces go round-robin over the rows, so that a row's next piece is not
      // the next one walked (it would wait for the previous piece's accumulator store)
      std::vector<std::vector<int32_t>> c(16);
      std::vector<std::vector<float>> v(16);
      for (int64_t r = r0; r < r0 + 16 && r < w.n; ++r)
        for (int32_t j = w.rowptr[r]; j < w.rowptr[r + 1]; ++j)
          if (w.cols[j] / chunk == ch) {
            c[r - r0].push_back(w.cols[j]);
            v[r - r0].push_back(w.vals[j]);
          }
      std::vector<size_t> at(16, 0);
      for (bool more = true; more;) {
        more = false;
        for (int i = 0; i < 16; ++i)
          if (at[i] + 8 <= c[i].size()) {
            f.row8.push_back(i * kTile);
            for (int e = 0; e < 8; ++e) {
              f.col8.push_back(c[i][at[i] + e] * kTile);
              f.val8.push_back(v[i][at[i] + e]);
            }
            at[i] += 8;
            more = true;
          }
      }
      for (bool more = true; more;) {
        more = false;
        for (int i = 0; i < 16; ++i)
          if (at[i] < c[i].size()) {
            f.row4.push_back(i * kTile);
            for (int e = 0; e < 4; ++e) {
              const bool real = at[i] + e < c[i].size();
              f.col4.push_back((real ? c[i][at[i] + e] : static_cast<int32_t>(ch * chunk)) * kTile);
              f.val4.push_back(real ? v[i][at[i] + e] : 0.0f);
            }
            at[i] += 4;
            more = true;
          }
      }
    }
  f.g8.push_back(static_cast<int64_t>(f.row8.size()));
  f.g4.push_back(static_cast<int64_t>(f.row4.size()));
  return f;
}

inline void fma4(__m512* a, __m512 w, const float* p) {
  _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) a[v] = _mm512_fmadd_ps(w, _mm512_load_ps(p + 16 * v), a[v]);
}

// rows: whole rows, registers
void walk_rows(const Csr& w, const float* at, float* y) {
  for (int64_t r = 0; r < w.n; ++r) {
    __m512 a[4], b[4];
    _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) a[v] = b[v] = _mm512_setzero_ps();
    int32_t j = w.rowptr[r];
    const int32_t j1 = w.rowptr[r + 1];
    for (; j + 1 < j1; j += 2) {
      fma4(a, _mm512_set1_ps(w.vals[j]), at + static_cast<int64_t>(w.cols[j]) * kTile);
      fma4(b, _mm512_set1_ps(w.vals[j + 1]), at + static_cast<int64_t>(w.cols[j + 1]) * kTile);
    }
    if (j < j1) fma4(a, _mm512_set1_ps(w.vals[j]), at + static_cast<int64_t>(w.cols[j]) * kTile);
    _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) _mm512_store_ps(y + r * kTile + 16 * v, _mm512_add_ps(a[v], b[v]));
  }
}

// chunkC: groups of 16 rows, chunks of C inputs, per-row pieces (chunk pointers: ptr[r * (chunks + 1) + ch])
void walk_chunks(const Csr& w, const std::vector<int32_t>& ptr, int64_t chunk, const float* at, float* y) {
  const int64_t chunks = (w.k + chunk - 1) / chunk;
  alignas(64) static float acc[16 * kTile];
  for (int64_t r0 = 0; r0 < w.n; r0 += 16) {
    std::memset(acc, 0, sizeof(acc));
    for (int64_t ch = 0; ch < chunks; ++ch)
      for (int64_t r = r0; r < r0 + 16; ++r) {
        const int32_t* cp = ptr.data() + r * (chunks + 1) + ch;
        int32_t j = cp[0];
        const int32_t j1 = cp[1];
        if (j == j1) continue;
        float* ar = acc + (r - r0) * kTile;
        __m512 a[4], b[4];
        _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) {
          a[v] = _mm512_load_ps(ar + 16 * v);
          b[v] = _mm512_setzero_ps();
        }
        for (; j + 1 < j1; j += 2) {
          fma4(a, _mm512_set1_ps(w.vals[j]), at + static_cast<int64_t>(w.cols[j]) * kTile);
          fma4(b, _mm512_set1_ps(w.vals[j + 1]), at + static_cast<int64_t>(w.cols[j + 1]) * kTile);
        }
        if (j < j1) fma4(a, _mm512_set1_ps(w.vals[j]), at + static_cast<int64_t>(w.cols[j]) * kTile);
        _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) _mm512_store_ps(ar + 16 * v, _mm512_add_ps(a[v], b[v]));
      }
    std::memcpy(y + r0 * kTile, acc, sizeof(acc));
  }
}

template <int E>
inline void fixed_pieces(const int32_t* rows, const int32_t* cols, const float* vals, int64_t p0, int64_t p1,
                         const float* at, float* acc) {
  for (int64_t p = p0; p < p1; ++p) {
    float* ar = acc + rows[p];
    __m512 a[4], b[4];
    _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) {
      a[v] = _mm512_load_ps(ar + 16 * v);
      b[v] = _mm512_setzero_ps();
    }
#pragma GCC unroll 8
    for (int e = 0; e < E; e += 2) {
      fma4(a, _mm512_set1_ps(vals[p * E + e]), at + cols[p * E + e]);
      fma4(b, _mm512_set1_ps(vals[p * E + e + 1]), at + cols[p * E + e + 1]);
    }
    _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) _mm512_store_ps(ar + 16 * v, _mm512_add_ps(a[v], b[v]));
  }
}

void walk_fixed(const Csr& w, const Fixed& f, int64_t chunk, const float* at, float* y) {
  const int64_t chunks = (w.k + chunk - 1) / chunk;
  alignas(64) static float acc[16 * kTile];
  int64_t g = 0;
  for (int64_t r0 = 0; r0 < w.n; r0 += 16) {
    std::memset(acc, 0, sizeof(acc));
    for (int64_t ch = 0; ch < chunks; ++ch, ++g) {
      fixed_pieces<8>(f.row8.data(), f.col8.data(), f.val8.data(), f.g8[g], f.g8[g + 1], at, acc);
      fixed_pieces<4>(f.row4.data(), f.col4.data(), f.val4.data(), f.g4[g], f.g4[g + 1], at, acc);
    }
    std::memcpy(y + r0 * kTile, acc, sizeof(acc));
  }
}

// Row pairs, as csr-int8's (BsrS8::pair_tile): the rows of every 16 matched greedily by shared inputs, each
// pair's entries as three lists (inputs both rows hold: one At row load feeds both rows' FMAs; then each row's own)
struct Pairs {
  std::vector<int32_t> ptr{0};  // per pair: ends of its shared, a's own and b's own lists
  std::vector<int32_t> cols;    // At float offsets
  std::vector<float> vals;      // shared entries: a's value, b's value; own entries: one
  std::vector<int32_t> voff{0};
  std::vector<int32_t> row_a, row_b;
  int64_t shared = 0;
};

Pairs make_pairs(const Csr& w) {
  Pairs p;
  const auto* rp = w.rowptr.data();
  const auto* cols = w.cols.data();
  const auto common = [&](int64_t a, int64_t b) {
    int n = 0;
    for (int32_t i = rp[a], j = rp[b]; i < rp[a + 1] && j < rp[b + 1];) {
      if (cols[i] == cols[j]) ++n, ++i, ++j;
      else if (cols[i] < cols[j]) ++i;
      else ++j;
    }
    return n;
  };
  for (int64_t r0 = 0; r0 < w.n; r0 += 16) {
    const int g = static_cast<int>(std::min<int64_t>(16, w.n - r0));
    std::vector<std::array<int, 3>> cand;
    for (int a = 0; a < g; ++a)
      for (int b = a + 1; b < g; ++b) cand.push_back({common(r0 + a, r0 + b), a, b});
    std::stable_sort(cand.begin(), cand.end(), [](const auto& x, const auto& y) { return x[0] > y[0]; });
    bool used[16] = {};
    for (const auto& c : cand) {
      if (used[c[1]] || used[c[2]]) continue;
      used[c[1]] = used[c[2]] = true;
      const int64_t ra = r0 + c[1], rb = r0 + c[2];
      p.row_a.push_back(static_cast<int32_t>(ra));
      p.row_b.push_back(static_cast<int32_t>(rb));
      std::vector<int32_t> own_a, own_b;
      int32_t i = rp[ra], j = rp[rb];
      while (i < rp[ra + 1] || j < rp[rb + 1]) {
        if (i < rp[ra + 1] && j < rp[rb + 1] && cols[i] == cols[j]) {
          p.cols.push_back(cols[i] * kTile);
          p.vals.push_back(w.vals[i++]);
          p.vals.push_back(w.vals[j++]);
          ++p.shared;
        } else if (j >= rp[rb + 1] || (i < rp[ra + 1] && cols[i] < cols[j])) {
          own_a.push_back(i++);
        } else {
          own_b.push_back(j++);
        }
      }
      p.ptr.push_back(static_cast<int32_t>(p.cols.size()));
      for (int32_t e : own_a) p.cols.push_back(cols[e] * kTile), p.vals.push_back(w.vals[e]);
      p.ptr.push_back(static_cast<int32_t>(p.cols.size()));
      for (int32_t e : own_b) p.cols.push_back(cols[e] * kTile), p.vals.push_back(w.vals[e]);
      p.ptr.push_back(static_cast<int32_t>(p.cols.size()));
      p.voff.push_back(static_cast<int32_t>(p.vals.size()));
    }
  }
  return p;
}

void walk_pairs(const Pairs& p, const float* at, float* y) {
  int32_t j = 0;
  for (size_t t = 0; t < p.row_a.size(); ++t) {
    __m512 a[kV], b[kV];
    _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) a[v] = b[v] = _mm512_setzero_ps();
    const float* vp = p.vals.data() + p.voff[t];
    for (; j < p.ptr[3 * t + 1]; ++j, vp += 2) {
      const __m512 wa = _mm512_set1_ps(vp[0]), wb = _mm512_set1_ps(vp[1]);
      const float* ap = at + p.cols[j];
      _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) {
        const __m512 x = _mm512_load_ps(ap + 16 * v);
        a[v] = _mm512_fmadd_ps(wa, x, a[v]);
        b[v] = _mm512_fmadd_ps(wb, x, b[v]);
      }
    }
    for (; j < p.ptr[3 * t + 2]; ++j, ++vp) fma4(a, _mm512_set1_ps(*vp), at + p.cols[j]);
    for (; j < p.ptr[3 * t + 3]; ++j, ++vp) fma4(b, _mm512_set1_ps(*vp), at + p.cols[j]);
    _Pragma("GCC unroll 4") for (int v = 0; v < kV; ++v) {
      _mm512_store_ps(y + p.row_a[t] * kTile + 16 * v, a[v]);
      _mm512_store_ps(y + p.row_b[t] * kTile + 16 * v, b[v]);
    }
  }
}

// The rows of w reordered into a greedy chain: each next row the remaining one sharing most inputs with the last
// (an FFN1's output order is free: FFN2's inputs follow it), so that a row's At rows are partly the ones its
// predecessor just brought into L1
Csr chained(const Csr& w) {
  const int64_t words = (w.k + 63) / 64;
  std::vector<uint64_t> bits(static_cast<size_t>(w.n * words), 0);
  for (int64_t r = 0; r < w.n; ++r)
    for (int32_t j = w.rowptr[r]; j < w.rowptr[r + 1]; ++j) bits[r * words + w.cols[j] / 64] |= 1ull << (w.cols[j] % 64);
  std::vector<bool> used(w.n, false);
  std::vector<int64_t> order{0};
  used[0] = true;
  for (int64_t step = 1; step < w.n; ++step) {
    const uint64_t* last = bits.data() + order.back() * words;
    int64_t best = -1, best_n = -1;
    for (int64_t r = 0; r < w.n; ++r) {
      if (used[r]) continue;
      int64_t n = 0;
      for (int64_t i = 0; i < words; ++i) n += __builtin_popcountll(last[i] & bits[r * words + i]);
      if (n > best_n) best_n = n, best = r;
    }
    used[best] = true;
    order.push_back(best);
  }
  Csr out{w.n, w.k, {0}, {}, {}};
  for (int64_t r : order) {
    out.cols.insert(out.cols.end(), w.cols.begin() + w.rowptr[r], w.cols.begin() + w.rowptr[r + 1]);
    out.vals.insert(out.vals.end(), w.vals.begin() + w.rowptr[r], w.vals.begin() + w.rowptr[r + 1]);
    out.rowptr.push_back(static_cast<int32_t>(out.cols.size()));
  }
  return out;
}

std::vector<int32_t> chunk_ptr(const Csr& w, int64_t chunk) {
  const int64_t chunks = (w.k + chunk - 1) / chunk;
  std::vector<int32_t> ptr;
  for (int64_t r = 0; r < w.n; ++r) {
    int32_t j = w.rowptr[r];
    for (int64_t ch = 0; ch <= chunks; ++ch) {
      while (j < w.rowptr[r + 1] && w.cols[j] < ch * chunk) ++j;
      ptr.push_back(j);
    }
  }
  return ptr;
}

// n Y^T rows of 64 floats, 64-byte aligned (the walks store whole vectors)
struct AlignedRows {
  explicit AlignedRows(int64_t n) : size(static_cast<size_t>(n) * kTile) {
    p = static_cast<float*>(std::aligned_alloc(64, size * sizeof(float)));
  }
  ~AlignedRows() { std::free(p); }
  float* data() { return p; }
  float operator[](size_t i) const { return p[i]; }
  float* p;
  size_t size;
};

double max_rel_diff(const AlignedRows& a, const AlignedRows& b) {
  double m = 0;
  for (size_t i = 0; i < a.size; ++i) m = std::fmax(m, std::fabs(a[i] - b[i]) / (std::fabs(a[i]) + 1e-3));
  return m;
}
}  // namespace

int main() {
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock %.2f GHz (vpaddd chain)\n", ghz);
  struct Shape { const char* name; int64_t n, k; };
  const Shape shapes[] = {{"ffn1 3072x768", 3072, 768}, {"384x768 (weights in L2)", 384, 768}, {"96x3072 (weights in L2)", 96, 3072}};
  for (const Shape& s : shapes) {
    const Csr w = random_csr(s.n, s.k, 0.1, 7);
    std::vector<float> at(static_cast<size_t>(s.k) * kTile + 16);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float& x : at) x = u(rng);
    float* atp = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(at.data()) + 63) & ~uintptr_t(63));
    AlignedRows ref(s.n), y(s.n);
    walk_rows(w, atp, ref.data());
    const double fmas = 4.0 * static_cast<double>(w.cols.size());
    auto report = [&](const char* what, auto fn) {
      const long reps = 400;
      const double sec = best_of_5([&](long r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (long i = 0; i < r; ++i) fn();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }, reps);
      std::printf("  %-12s %.3f FMA/cycle  %.1f us/tile  (max rel diff %.1e)\n", what, fmas * reps / (sec * ghz * 1e9),
                  sec / reps * 1e6, max_rel_diff(ref, y));
    };
    std::printf("%s, %zu entries\n", s.name, w.cols.size());
    report("rows", [&] { walk_rows(w, atp, y.data()); });
    {  // the same walk with every entry's input folded into the first 96 (a 24 KiB At slice, in L1): the walk's
       // rate without At's misses (its results differ: no check)
      Csr l1 = w;
      for (int32_t& c : l1.cols) c %= 96;
      report("rows_l1_at", [&] { walk_rows(l1, atp, y.data()); });
    }
    {  // rows in a chained order (other row order: its results are not compared)
      const Csr wc = chained(w);
      report("rows_chain", [&] { walk_rows(wc, atp, y.data()); });
      const std::vector<int32_t> ptr = chunk_ptr(wc, 384);
      report("chunk384_chain", [&] { walk_chunks(wc, ptr, 384, atp, y.data()); });
    }
    {
      const Pairs pr = make_pairs(w);
      report("pairs", [&] { walk_pairs(pr, atp, y.data()); });
      std::printf("    (pairs: %.0f%% of the entries shared)\n", 200.0 * pr.shared / w.cols.size());
    }
    for (int64_t chunk : {64, 96, 128, 384}) {
      const std::vector<int32_t> ptr = chunk_ptr(w, chunk);
      char name[32];
      std::snprintf(name, sizeof(name), "chunk%lld", static_cast<long long>(chunk));
      report(name, [&] { walk_chunks(w, ptr, chunk, atp, y.data()); });
      if (chunk > 128) continue;
      const Fixed f = make_fixed(w, chunk);
      std::snprintf(name, sizeof(name), "fixed%lld", static_cast<long long>(chunk));
      const double pad = static_cast<double>(f.val8.size() + f.val4.size()) / static_cast<double>(w.cols.size());
      report(name, [&] { walk_fixed(w, f, chunk, atp, y.data()); });
      std::printf("    (fixed pieces: %.2fx the entries)\n", pad);
    }
  }
  return 0;
}
