// A whole 2:4 FP32 Linear in the permuted form (experiment, not a runtime kernel; the lead in docs/kernels.md under
// nm-f32): output rows along the lanes, y[t][16 rows] += v0 * vpermilps(i0, x4) + v1 * vpermilps(i1, x4), where
// x4 is token t's 4 inputs of a group broadcast to every 128-bit lane. Token rows in as they are, token rows out
// (with the bias), no re-layout, no transposes; per 16-row block the packed group steps (two value vectors, two
// index vectors: 256 bytes per 16 rows x 4 inputs) stay in L1/L2 while every 8-token tile walks them. Prints the
// best time of a call on one thread, hot caches, for BERT-base shapes at 128 tokens, and checks the result against
// a plain loop. Compare with our dense FP32 Linear on the same shape, one thread, hot (LinearRunner.time; the
// short script that does so is in bench/results/nm_f32_perm_call_icelake.md).
//
//   g++ -O3 -march=native -o /tmp/nm_f32_perm_call bench/micro/nm_f32_perm_call.cpp && /tmp/nm_f32_perm_call
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {
struct Packed {  // per 16-row block, per group of 4 inputs: v0[16], v1[16] (floats), i0[16], i1[16] (int32)
  int64_t n, k;
  std::vector<float> steps;  // [n/16][k/4][64] (the indices stored as int32 bits)
};

Packed pack(const std::vector<float>& w, int64_t n, int64_t k) {  // w: [n][k], 2:4 along k (n % 16 == 0, k % 4 == 0)
  Packed p{n, k, std::vector<float>(static_cast<size_t>(n / 16 * (k / 4) * 64))};
  for (int64_t rb = 0; rb < n / 16; ++rb)
    for (int64_t g = 0; g < k / 4; ++g) {
      float* s = &p.steps[(rb * (k / 4) + g) * 64];
      for (int l = 0; l < 16; ++l) {
        const float* row = &w[(rb * 16 + l) * k + 4 * g];
        int kept[2] = {0, 1}, c = 0;
        for (int i = 0; i < 4 && c < 2; ++i)
          if (row[i] != 0.0f) kept[c++] = i;
        if (c == 1) kept[1] = kept[0] == 3 ? 2 : 3;  // fewer than 2 kept: a zero value fills the slot
        s[l] = row[kept[0]];
        s[16 + l] = row[kept[1]];
        int32_t i0 = kept[0], i1 = kept[1];
        std::memcpy(&s[32 + l], &i0, 4);
        std::memcpy(&s[48 + l], &i1, 4);
      }
    }
  return p;
}

#define ACC_TOKEN(T, ACC)                                                                      \
  if (TT > T) {                                                                                \
    const __m512 x4 = _mm512_broadcast_f32x4(_mm_loadu_ps(x + (t0 + T) * k + 4 * g));          \
    ACC = _mm512_fmadd_ps(v0, _mm512_permutevar_ps(x4, i0), ACC);                              \
    ACC = _mm512_fmadd_ps(v1, _mm512_permutevar_ps(x4, i1), ACC);                              \
  }
#define STORE_TOKEN(T, ACC) \
  if (TT > T) _mm512_storeu_ps(y + (t0 + T) * n + 16 * rb, _mm512_add_ps(ACC, bias));

template <int TT>  // tokens t0 .. t0 + TT - 1 (TT <= 8) of row block rb
inline void tile(const Packed& p, const float* x, const float* b, float* y, int64_t rb, int64_t t0) {
  const int64_t n = p.n, k = p.k;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const float* s = &p.steps[rb * (k / 4) * 64];
  for (int64_t g = 0; g < k / 4; ++g, s += 64) {
    const __m512 v0 = _mm512_loadu_ps(s), v1 = _mm512_loadu_ps(s + 16);
    const __m512i i0 = _mm512_loadu_si512(s + 32), i1 = _mm512_loadu_si512(s + 48);
    ACC_TOKEN(0, a0) ACC_TOKEN(1, a1) ACC_TOKEN(2, a2) ACC_TOKEN(3, a3)
    ACC_TOKEN(4, a4) ACC_TOKEN(5, a5) ACC_TOKEN(6, a6) ACC_TOKEN(7, a7)
  }
  const __m512 bias = _mm512_loadu_ps(b + 16 * rb);
  STORE_TOKEN(0, a0) STORE_TOKEN(1, a1) STORE_TOKEN(2, a2) STORE_TOKEN(3, a3)
  STORE_TOKEN(4, a4) STORE_TOKEN(5, a5) STORE_TOKEN(6, a6) STORE_TOKEN(7, a7)
}

__attribute__((noinline)) void linear(const Packed& p, const float* x, const float* b, float* y, int64_t m) {
  for (int64_t rb = 0; rb < p.n / 16; ++rb) {
    int64_t t = 0;
    for (; t + 8 <= m; t += 8) tile<8>(p, x, b, y, rb, t);
    for (; t < m; ++t) tile<1>(p, x, b, y, rb, t);
  }
}
}  // namespace

int main() {
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Shape {
    const char* name;
    int64_t n, k;
  } shapes[] = {{"qkv", 2304, 768}, {"ffn1", 3072, 768}, {"ffn2", 768, 3072}, {"attn_out", 768, 768}};
  const int64_t m = 128;
  std::printf("| shape | m | perm form ms (1 thread, hot) | max rel err |\n|---|---|---|---|\n");
  for (const Shape& sh : shapes) {
    const int64_t n = sh.n, k = sh.k;
    std::vector<float> w(static_cast<size_t>(n * k)), x(static_cast<size_t>(m * k)), b(n), y(static_cast<size_t>(m * n));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t g = 0; g < k / 4; ++g) {  // keep the 2 largest of every 4 (2:4 magnitude pruning)
        float v[4];
        for (float& f : v) f = u(rng);
        int order[4] = {0, 1, 2, 3};
        std::sort(order, order + 4, [&](int a, int c) { return std::fabs(v[a]) < std::fabs(v[c]); });
        v[order[0]] = 0.0f;
        v[order[1]] = 0.0f;
        for (int i = 0; i < 4; ++i) w[r * k + 4 * g + i] = v[i];
      }
    for (float& f : x) f = u(rng);
    for (float& f : b) f = u(rng);
    const Packed p = pack(w, n, k);
    linear(p, x.data(), b.data(), y.data(), m);
    double err = 0.0;
    for (int64_t t = 0; t < m; t += 17)
      for (int64_t r = 0; r < n; r += 5) {
        double ref = b[r];
        for (int64_t i = 0; i < k; ++i) ref += static_cast<double>(w[r * k + i]) * x[t * k + i];
        err = std::max(err, std::fabs(ref - y[t * n + r]) / (std::fabs(ref) + 1e-3));
      }
    double best = 1e30;
    for (int it = 0; it < 50; ++it) {
      const auto t0 = std::chrono::steady_clock::now();
      linear(p, x.data(), b.data(), y.data(), m);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("| %s | %lld | %.3f | %.1e |\n", sh.name, static_cast<long long>(m), best * 1e3, err);
  }
  return 0;
}
