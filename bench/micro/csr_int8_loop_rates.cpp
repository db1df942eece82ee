// The csr-int8 (1x4 rows) inner loop in isolation, AVX-512 VNNI: vpdpbusd per cycle for rows of random quads over
// an At slice of a given size, as the kernel walks it (bsr_s8_avx512vnni.cpp: row_dot), and variants that show
// what bounds it. Rows of `density` x kq quads (the quads of 90% unstructured weights hold a non-zero with
// probability 1 - 0.9^4 = 0.344), 4 token vectors (a 64-token At tile, 256 bytes per quad), int32 accumulators in
// registers, one store per row.
//
//   row          the kernel's walk: a row's quads in input order, each one broadcast + 4 loads of At + 4 vpdpbusd
//   seq_at       the same loop, but quad j of every row reads At quad j % 64 (an At slice that stays in L1 and is
//                read in order): what the loop costs without At's misses
//   no_at        no At loads (one register for every product): the loop's issue rate alone
//   pairs        rows in pairs (2i, 2i+1), each pair as three lists: the quads both hold (one At load per token
//                vector feeds both rows' vpdpbusd), then each row's own (the kernel's row pairs, BsrS8::pair_tile)
//   matched      the same with the rows of every 16 matched greedily by shared quads (each free row in turn with
//                its best free partner; the loader takes the pairs sharing most first)
//   chunked      rows in groups of 16, the inputs in chunks of 192 quads (48 KiB of At); each row adds its quads of
//                the chunk to accumulators kept in L1 (4 KiB per group) and read / written once per chunk
//
//   g++ -O2 -march=native -o /tmp/csr_int8_loop_rates bench/micro/csr_int8_loop_rates.cpp && /tmp/csr_int8_loop_rates
//
// The clock is measured with a dependent vpaddd chain (1 cycle each), as dot_rates.cpp does.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#define DP(acc, a, b) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))

namespace {
constexpr int V = 4;            // token vectors (64 tokens)
constexpr int64_t kQuad = 256;  // bytes of At per quad (64 tokens x 4)

struct Rows {
  std::vector<int32_t> ptr{0}, cols;
  std::vector<int8_t> vals;
  int kq = 0;
};

inline __m512i bcast_quad(const int8_t* p) {
  __m512i r;
  asm("vpbroadcastd %1, %0" : "=v"(r) : "m"(*reinterpret_cast<const int32_t*>(p)));
  return r;
}

template <int Mode>  // 0 row, 1 seq_at, 2 no_at
__attribute__((noinline)) void walk_rows(const uint8_t* at, const Rows& w, int32_t* out) {
  const __m512i x = _mm512_set1_epi32(0x01020304);
  const int rows = static_cast<int>(w.ptr.size()) - 1;
  const int32_t* ptr = w.ptr.data();
  const int32_t* cols = w.cols.data();
  const int8_t* vals = w.vals.data();
  for (int r = 0; r < rows; ++r) {
    __m512i a[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) a[v] = _mm512_setzero_si512();
    for (int32_t j = ptr[r]; j < ptr[r + 1]; ++j) {
      const __m512i wb = bcast_quad(vals + 4 * j);
      const int64_t q = Mode == 1 ? (j & 63) : cols[j];
      const uint8_t* ap = at + q * kQuad;
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) DP(a[v], Mode == 2 ? x : _mm512_load_si512(ap + 64 * v), wb);
    }
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm512_store_si512(out + 64 * r + 16 * v, a[v]);
  }
}

__attribute__((noinline)) void walk_chunked(const uint8_t* at, const Rows& w, int32_t* out) {
  constexpr int kGroup = 16, kChunk = 192;
  alignas(64) int32_t acc[kGroup * 64];
  int32_t cur[kGroup];
  const int rows = static_cast<int>(w.ptr.size()) - 1;
  const int32_t* ptr = w.ptr.data();
  const int32_t* cols = w.cols.data();
  const int8_t* vals = w.vals.data();
  for (int r0 = 0; r0 < rows; r0 += kGroup) {
    const int g = std::min(kGroup, rows - r0);
    std::memset(acc, 0, sizeof(acc));
    for (int i = 0; i < g; ++i) cur[i] = ptr[r0 + i];
    for (int q0 = 0; q0 < w.kq; q0 += kChunk) {
      const int32_t q_end = q0 + kChunk;
      for (int i = 0; i < g; ++i) {
        int32_t j = cur[i];
        const int32_t end = ptr[r0 + i + 1];
        if (j >= end || cols[j] >= q_end) continue;
        // named accumulators: with an array here gcc kept them on the stack
        int32_t* ai = acc + 64 * i;
        __m512i a0 = _mm512_load_si512(ai), a1 = _mm512_load_si512(ai + 16), a2 = _mm512_load_si512(ai + 32),
                a3 = _mm512_load_si512(ai + 48);
        do {
          const __m512i wb = bcast_quad(vals + 4 * j);
          const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kQuad;
          DP(a0, _mm512_load_si512(ap), wb);
          DP(a1, _mm512_load_si512(ap + 64), wb);
          DP(a2, _mm512_load_si512(ap + 128), wb);
          DP(a3, _mm512_load_si512(ap + 192), wb);
          ++j;
        } while (j < end && cols[j] < q_end);
        _mm512_store_si512(ai, a0);
        _mm512_store_si512(ai + 16, a1);
        _mm512_store_si512(ai + 32, a2);
        _mm512_store_si512(ai + 48, a3);
        cur[i] = j;
      }
    }
    std::memcpy(out + 64 * r0, acc, static_cast<size_t>(g) * 256);
  }
}

// Rows in pairs, each pair as three lists: the quads both rows hold (one At load per token vector feeds two
// vpdpbusd), then each row's own. Within every 16 rows the pairs are matched greedily by shared quads (`matched`) or
// taken as they come (rows 2i, 2i+1).
struct Pairs {
  std::vector<int32_t> ptr{0};  // per pair: shared, solo a, solo b list ends, 3 entries
  std::vector<int32_t> cols;
  std::vector<int8_t> vals;  // shared entries: 8 bytes (a's quad, b's quad), solo: 4
  std::vector<int32_t> row_a, row_b;
  int64_t shared = 0;
};

Pairs make_pairs(const Rows& w, bool matched) {
  Pairs p;
  const int rows = static_cast<int>(w.ptr.size()) - 1;
  auto common = [&](int a, int b) {
    int n = 0;
    for (int32_t i = w.ptr[a], j = w.ptr[b]; i < w.ptr[a + 1] && j < w.ptr[b + 1];) {
      if (w.cols[i] == w.cols[j]) { ++n; ++i; ++j; }
      else if (w.cols[i] < w.cols[j]) ++i;
      else ++j;
    }
    return n;
  };
  for (int r0 = 0; r0 + 1 < rows; r0 += 16) {
    const int g = std::min(16, rows - r0) / 2 * 2;
    std::vector<bool> used(g, false);
    for (int t = 0; t < g / 2; ++t) {
      int a = 0;
      while (used[a]) ++a;
      int b = -1, best = -1;
      for (int c = a + 1; c < g; ++c)
        if (!used[c] && (matched ? common(r0 + a, r0 + c) > best : b < 0)) { best = common(r0 + a, r0 + c); b = c; }
      used[a] = used[b] = true;
      const int ra = r0 + a, rb = r0 + b;
      p.row_a.push_back(ra);
      p.row_b.push_back(rb);
      int32_t i = w.ptr[ra], j = w.ptr[rb];
      auto push = [&](int32_t q, int32_t ia, int32_t jb) {
        p.cols.push_back(q);
        if (ia >= 0) for (int k = 0; k < 4; ++k) p.vals.push_back(w.vals[4 * ia + k]);
        if (jb >= 0) for (int k = 0; k < 4; ++k) p.vals.push_back(w.vals[4 * jb + k]);
      };
      std::vector<std::pair<int32_t, int32_t>> onlya, onlyb;
      while (i < w.ptr[ra + 1] || j < w.ptr[rb + 1]) {
        if (i < w.ptr[ra + 1] && j < w.ptr[rb + 1] && w.cols[i] == w.cols[j]) { push(w.cols[i], i, j); ++i; ++j; ++p.shared; }
        else if (j >= w.ptr[rb + 1] || (i < w.ptr[ra + 1] && w.cols[i] < w.cols[j])) { onlya.push_back({w.cols[i], i}); ++i; }
        else { onlyb.push_back({w.cols[j], j}); ++j; }
      }
      p.ptr.push_back(static_cast<int32_t>(p.cols.size()));
      for (auto& e : onlya) push(e.first, e.second, -1);
      p.ptr.push_back(static_cast<int32_t>(p.cols.size()));
      for (auto& e : onlyb) push(e.first, -1, e.second);
      p.ptr.push_back(static_cast<int32_t>(p.cols.size()));
    }
  }
  return p;
}

__attribute__((noinline)) void walk_pairs(const uint8_t* at, const Pairs& p, int32_t* out) {
  const int pairs = static_cast<int>(p.row_a.size());
  const int32_t* cols = p.cols.data();
  const int8_t* vals = p.vals.data();
  int32_t j = 0;
  const int8_t* vp = vals;
  for (int t = 0; t < pairs; ++t) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    const int32_t e0 = p.ptr[3 * t + 1], e1 = p.ptr[3 * t + 2], e2 = p.ptr[3 * t + 3];
    for (; j < e0; ++j, vp += 8) {
      const __m512i wa = bcast_quad(vp), wb = bcast_quad(vp + 4);
      const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kQuad;
      __m512i x = _mm512_load_si512(ap);
      DP(a0, x, wa); DP(b0, x, wb);
      x = _mm512_load_si512(ap + 64);
      DP(a1, x, wa); DP(b1, x, wb);
      x = _mm512_load_si512(ap + 128);
      DP(a2, x, wa); DP(b2, x, wb);
      x = _mm512_load_si512(ap + 192);
      DP(a3, x, wa); DP(b3, x, wb);
    }
    for (; j < e1; ++j, vp += 4) {
      const __m512i wa = bcast_quad(vp);
      const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kQuad;
      DP(a0, _mm512_load_si512(ap), wa); DP(a1, _mm512_load_si512(ap + 64), wa);
      DP(a2, _mm512_load_si512(ap + 128), wa); DP(a3, _mm512_load_si512(ap + 192), wa);
    }
    for (; j < e2; ++j, vp += 4) {
      const __m512i wb = bcast_quad(vp);
      const uint8_t* ap = at + static_cast<int64_t>(cols[j]) * kQuad;
      DP(b0, _mm512_load_si512(ap), wb); DP(b1, _mm512_load_si512(ap + 64), wb);
      DP(b2, _mm512_load_si512(ap + 128), wb); DP(b3, _mm512_load_si512(ap + 192), wb);
    }
    int32_t* oa = out + 64 * p.row_a[t];
    int32_t* ob = out + 64 * p.row_b[t];
    _mm512_store_si512(oa, a0); _mm512_store_si512(oa + 16, a1); _mm512_store_si512(oa + 32, a2); _mm512_store_si512(oa + 48, a3);
    _mm512_store_si512(ob, b0); _mm512_store_si512(ob + 16, b1); _mm512_store_si512(ob + 32, b2); _mm512_store_si512(ob + 48, b3);
  }
}

double clock_hz() {
  const int64_t n = 200000000;
  __m512i a = _mm512_set1_epi32(1);
  const __m512i b = _mm512_set1_epi32(1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i) asm volatile("vpaddd %1, %0, %0" : "+v"(a) : "v"(b));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return n / s;
}

template <class F>
double best_seconds(F f) {
  double best = 1e30;
  for (int it = 0; it < 40; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}
}  // namespace

int main() {
  clock_hz();  // the core's clock ramps up first
  const double hz = clock_hz();
  std::printf("clock (dependent vpaddd chain): %.2f GHz\n\n", hz / 1e9);
  std::printf("| At slice (quads, KiB) | rows | row | seq_at | no_at | chunked | pairs | matched |\n|---|---|---|---|---|---|---|---|\n");
  std::mt19937 rng(0);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  for (const int kq : {64, 192, 768}) {
    const int rows = 393216 / kq;  // about the same number of products for every size
    Rows w;
    w.kq = kq;
    for (int r = 0; r < rows; ++r) {
      for (int q = 0; q < kq; ++q)
        if (uni(rng) < 0.344) {
          w.cols.push_back(q);
          for (int b = 0; b < 4; ++b) w.vals.push_back(static_cast<int8_t>(rng()));
        }
      w.ptr.push_back(static_cast<int32_t>(w.cols.size()));
    }
    uint8_t* at = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(kq) * kQuad));
    for (int64_t i = 0; i < kq * kQuad; ++i) at[i] = static_cast<uint8_t>(rng());
    int32_t* out = static_cast<int32_t*>(std::aligned_alloc(64, static_cast<size_t>(rows) * 256));
    const double dps = static_cast<double>(w.cols.size()) * V;
    const auto rate = [&](double s) { return dps / s / hz; };
    const double row = rate(best_seconds([&] { walk_rows<0>(at, w, out); }));
    const double seq = rate(best_seconds([&] { walk_rows<1>(at, w, out); }));
    const double no_at = rate(best_seconds([&] { walk_rows<2>(at, w, out); }));
    const double chunked = rate(best_seconds([&] { walk_chunked(at, w, out); }));
    std::vector<int32_t> ref(out, out + static_cast<size_t>(rows) * 64);
    const Pairs pr = make_pairs(w, false), pm = make_pairs(w, true);
    const double pairs = rate(best_seconds([&] { walk_pairs(at, pr, out); }));
    const bool ok_r = std::equal(ref.begin(), ref.end(), out);
    const double matched = rate(best_seconds([&] { walk_pairs(at, pm, out); }));
    const bool ok_m = std::equal(ref.begin(), ref.end(), out);

    std::printf("| %d, %lld | %d | %.2f | %.2f | %.2f | %.2f | %.2f (%.0f%% shared%s) | %.2f (%.0f%% shared%s) |\n", kq,
                static_cast<long long>(kq) * kQuad / 1024, rows, row, seq, no_at, chunked, pairs,
                200.0 * pr.shared / w.cols.size(), ok_r ? "" : ", WRONG", matched, 200.0 * pm.shared / w.cols.size(),
                ok_m ? "" : ", WRONG");
    std::free(at);
    std::free(out);
  }
  std::printf("\nvpdpbusd per cycle (best of 40 walks over all rows)\n");
  return 0;
}
