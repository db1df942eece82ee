// The avx2 GELU (erf) evaluation against the variants tried to make it cheaper: cycles per 8 values in bias_act's
// setting (a 16 x 16 float tile in L1, one vector at a time), and each variant's max |error| against the exact
// GELU (erfc in double) on [-9, 9]. Results: bench/results/gelu_avx2.md; the design: docs/kernels.md, "GELU".
//
//   g++ -O2 -mavx2 -mfma -std=c++17 -o /tmp/gelu_avx2 bench/micro/gelu_avx2.cpp && /tmp/gelu_avx2
//
// - table: gelu_erf8 (csrc/ops/epilogue_avx2.h), the kernels' GELU: 8 sextics in u, one vpermps per coefficient,
//   Estrin's scheme;
// - in-lane: the same table and operations read by vpermilps on its low and high 4 segments joined by vblendvps
//   (the same bits: checked below);
// - 4 segments: g(a) = a * p(u), p of degree 8 per segment read by vpermilps alone (one 4-entry table per lane);
//   its coefficients (kC4) are a minimax fit of g(a) / a = 1 - Phi(a) per segment (Lawson's reweighting, as
//   csrc/ops/gen_gelu_table.py fits its tables), u = |x| * kK4 - 0.5 - i in [-0.5, 0.5];
// - table, Horner: gelu_erf8's table and lookups with Horner's rule in place of Estrin's (not the same bits);
// - no lookups: gelu_erf8's operations with each coefficient lookup replaced by a register (wrong values): the
//   cost of the arithmetic alone.
#include <immintrin.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "../../csrc/ops/epilogue_avx2.h"
#include "micro_common.h"

namespace {
using tf::kGelu8AMax;
using tf::kGelu8C;
using tf::kGelu8K;

alignas(32) const float kC4[9][4] = {{0.245879531f, 0.0195781197f, 0.000293480844f, 7.44930219e-07f},
                                     {-0.43309328f, -0.0653822422f, -0.00149013312f, -5.12571069e-06f},
                                     {0.20471181f, 0.0927138552f, 0.0035217132f, 1.69605773e-05f},
                                     {0.0719718933f, -0.0670495555f, -0.00507812295f, -3.58651669e-05f},
                                     {-0.0815023482f, 0.0183187649f, 0.00489176996f, 5.39586581e-05f},
                                     {-0.0050727916f, 0.00869843364f, -0.00319837057f, -6.02979817e-05f},
                                     {0.0212076064f, -0.00868909992f, 0.00127974211f, 5.32753802e-05f},
                                     {-0.00135595817f, 0.00120088819f, -7.48651873e-05f, -4.1631487e-05f},
                                     {-0.00363925169f, 0.00118393451f, -0.000190395614f, 2.16797034e-05f}};
const float kK4 = 0.727258205f;  // 4 / (5.5 * 1.00002): |x| <= 5.5 keeps the index below 4

// the index and local variable of gelu_erf8
struct Seg {
  __m256 v, ac, u;
  __m256i idx;
};
inline Seg seg8(__m256 v) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 k = _mm256_set1_ps(kGelu8K), two23 = _mm256_set1_ps(8388608.0f);
  const __m256 ac = _mm256_min_ps(_mm256_and_ps(v, abs_mask), _mm256_set1_ps(kGelu8AMax));
  const __m256 t = _mm256_fmadd_ps(ac, k, two23);
  return {v, ac, _mm256_fmsub_ps(ac, k, _mm256_sub_ps(t, two23)), _mm256_castps_si256(t)};
}

// gelu_erf8's Estrin evaluation with coefficient j given by coef(j)
template <class Coef>
inline __m256 estrin6(const Seg& s, Coef coef) {
  const __m256 u = s.u, u2 = _mm256_mul_ps(u, u), u4 = _mm256_mul_ps(u2, u2);
  const __m256 p01 = _mm256_fmadd_ps(coef(1), u, coef(0)), p23 = _mm256_fmadd_ps(coef(3), u, coef(2));
  const __m256 p46 = _mm256_fmadd_ps(coef(6), u2, _mm256_fmadd_ps(coef(5), u, coef(4)));
  const __m256 p = _mm256_fmadd_ps(p46, u4, _mm256_fmadd_ps(p23, u2, p01));
  return _mm256_sub_ps(_mm256_max_ps(_mm256_setzero_ps(), s.v), p);
}

inline __m256 gelu_inlane(__m256 v) {
  const Seg s = seg8(v);
  const __m256 hi = _mm256_castsi256_ps(_mm256_slli_epi32(s.idx, 29));  // index bit 2 in the sign bit
  return estrin6(s, [&](int j) {
    const __m256 lo4 = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(kGelu8C[j]));
    const __m256 hi4 = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(kGelu8C[j] + 4));
    return _mm256_blendv_ps(_mm256_permutevar_ps(lo4, s.idx), _mm256_permutevar_ps(hi4, s.idx), hi);
  });
}

inline __m256 gelu_no_lookups(__m256 v) {
  const Seg s = seg8(v);
  return estrin6(s, [&](int j) { return j % 2 ? s.ac : _mm256_castsi256_ps(s.idx); });
}

inline __m256 gelu_horner(__m256 v) {
  const Seg s = seg8(v);
  const auto coef = [&](int j) { return _mm256_permutevar8x32_ps(_mm256_load_ps(kGelu8C[j]), s.idx); };
  __m256 p = coef(6);
  for (int j = 5; j >= 0; --j) p = _mm256_fmadd_ps(p, s.u, coef(j));
  return _mm256_sub_ps(_mm256_max_ps(_mm256_setzero_ps(), v), p);
}

inline __m256 gelu_4seg(__m256 v) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 magic = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23: round(b) in the low mantissa bits
  const __m256 ac = _mm256_min_ps(_mm256_and_ps(v, abs_mask), _mm256_set1_ps(5.5f));
  const __m256 b = _mm256_fmadd_ps(ac, _mm256_set1_ps(kK4), _mm256_set1_ps(-0.5f));
  const __m256 t = _mm256_add_ps(b, magic);
  const __m256i idx = _mm256_castps_si256(t);
  const __m256 u = _mm256_sub_ps(b, _mm256_sub_ps(t, magic));
  const auto coef = [&](int j) {
    return _mm256_permutevar_ps(_mm256_broadcast_ps(reinterpret_cast<const __m128*>(kC4[j])), idx);
  };
  const __m256 u2 = _mm256_mul_ps(u, u), u4 = _mm256_mul_ps(u2, u2);
  const __m256 p01 = _mm256_fmadd_ps(coef(1), u, coef(0)), p23 = _mm256_fmadd_ps(coef(3), u, coef(2));
  const __m256 p45 = _mm256_fmadd_ps(coef(5), u, coef(4)), p67 = _mm256_fmadd_ps(coef(7), u, coef(6));
  const __m256 p03 = _mm256_fmadd_ps(p23, u2, p01), p47 = _mm256_fmadd_ps(p67, u2, p45);
  const __m256 p = _mm256_fmadd_ps(_mm256_fmadd_ps(coef(8), u4, p47), u4, p03);
  return _mm256_sub_ps(_mm256_max_ps(_mm256_setzero_ps(), v), _mm256_mul_ps(ac, p));
}

using GeluFn = __m256 (*)(__m256);
template <GeluFn F>
__attribute__((noinline)) void tile(float* p, long n) {  // bias_act's loop, without the bias
  for (long i = 0; i < n; i += 8) _mm256_store_ps(p + i, F(_mm256_load_ps(p + i)));
}

alignas(32) float g_src[256], g_buf[256];

template <GeluFn F>
double run(long reps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (long r = 0; r < reps; ++r) {
    std::memcpy(g_buf, g_src, sizeof g_buf);
    tile<F>(g_buf, 256);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// max |F(x) - GELU(x)| over a grid of [-9, 9] (GELU in double from erfc)
template <GeluFn F>
double max_error() {
  double worst = 0;
  alignas(32) float x[8], y[8];
  for (long i = 0; i < 2000000; i += 8) {
    for (int j = 0; j < 8; ++j) x[j] = static_cast<float>(-9.0 + 18.0 * (i + j) / 2000000.0);
    _mm256_store_ps(y, F(_mm256_load_ps(x)));
    for (int j = 0; j < 8; ++j) {
      const double e = 0.5 * x[j] * std::erfc(-x[j] / std::sqrt(2.0));
      worst = std::fmax(worst, std::fabs(y[j] - e));
    }
  }
  return worst;
}

template <GeluFn A, GeluFn B>
bool same_bits() {
  alignas(32) float x[8], a[8], b[8];
  for (long i = 0; i < 2000000; i += 8) {
    for (int j = 0; j < 8; ++j) x[j] = static_cast<float>(-12.0 + 24.0 * (i + j) / 2000000.0);
    _mm256_store_ps(a, A(_mm256_load_ps(x)));
    _mm256_store_ps(b, B(_mm256_load_ps(x)));
    if (std::memcmp(a, b, sizeof a) != 0) return false;
  }
  return true;
}

}  // namespace

int main() {
  for (int i = 0; i < 256; ++i) g_src[i] = (i % 37) * 0.2f - 3.5f;
  const double ghz = vpaddd_clock_ghz();
  std::printf("clock (dependent ymm vpaddd chain): %.2f GHz\n", ghz);
  std::printf("in-lane lookups give gelu_erf8's bits: %s\n", same_bits<tf::avx2::gelu_erf8, gelu_inlane>() ? "yes" : "NO");
  struct Row {
    const char* name;
    double (*run)(long);
    double (*err)();
  } rows[] = {{"table (gelu_erf8: 7 vpermps, Estrin)", run<tf::avx2::gelu_erf8>, max_error<tf::avx2::gelu_erf8>},
              {"in-lane (14 vpermilps + 7 vblendvps, same bits)", run<gelu_inlane>, max_error<gelu_inlane>},
              {"4 segments, degree 8 of g/a (9 vpermilps)", run<gelu_4seg>, max_error<gelu_4seg>},
              {"table, Horner's rule", run<gelu_horner>, max_error<gelu_horner>},
              {"no lookups (arithmetic only; wrong values)", run<gelu_no_lookups>, nullptr}};
  const long reps = 200000;
  std::printf("| variant | cycles per 8 values | max abs error |\n|---|---:|---:|\n");
  for (const Row& r : rows) {
    const double sec = best_of_5(r.run, reps);
    const double cycles = sec * ghz * 1e9 / (reps * 32.0);
    if (r.err) std::printf("| %s | %.1f | %.2g |\n", r.name, cycles, r.err());
    else std::printf("| %s | %.1f | - |\n", r.name, cycles);
  }
  return 0;
}
