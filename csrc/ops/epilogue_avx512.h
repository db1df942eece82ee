// 16-lane epilogue pieces for translation units compiled with the AVX-512 flags (rowops_avx512.cpp and the avx512
// sparse kernels): GELU (erf), the activation of one piece and the u8 requantization, in registers, so a kernel can
// finish a 16-wide piece of its output without a call per piece. Each does the same float ops as its row-loop counterpart in rowops.inc
// (act_row<GeluErf>, quantize_u8), so fused and unfused paths give identical results.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../core/isa.h"
#include "../sparse/avx512_lanes.h"  // packed_bytes64
#include "gelu_table.h"

namespace tf {
namespace avx512 {
void activation(float* x, int64_t n, Act act);  // rowops.inc (decl.inc): the row loop, for the tanh forms

namespace {

// GELU (erf) from the shared piecewise-cubic table (gelu_table.h): max(x, 0) - g(|x|), the segment picked by
// vpermt2ps from the index one FMA leaves in the low mantissa bits; 12 ops where the erf rational took 24 (a
// division by reciprocal estimate + Newton step among them). Same arithmetic as rowops.inc's gelu_erf.
inline __m512 gelu_erf16(__m512 v) {
  const __m512 ac = _mm512_min_ps(_mm512_abs_ps(v), _mm512_set1_ps(kGeluAMax));  // NaN -> kGeluAMax, as scalar
  const __m512i idx = _mm512_castps_si512(_mm512_fmadd_ps(ac, _mm512_set1_ps(kGeluK), _mm512_set1_ps(8388608.0f)));
  const auto coef = [&](int j) {
    return _mm512_permutex2var_ps(_mm512_load_ps(kGeluC[j]), idx, _mm512_load_ps(kGeluC[j] + 16));
  };
  __m512 p = _mm512_fmadd_ps(coef(3), ac, coef(2));
  p = _mm512_fmadd_ps(p, ac, coef(1));
  p = _mm512_fmadd_ps(p, ac, coef(0));
  return _mm512_sub_ps(_mm512_max_ps(_mm512_setzero_ps(), v), p);  // max(0, NaN) = NaN: NaN stays NaN
}

// activation of one 16-lane piece (the first `cols` lanes matter): GELU (erf) and ReLU in registers, the tanh forms
// through the row loop on a stack copy
inline __m512 act16(__m512 y, Act act, int64_t cols) {
  if (act == Act::None) return y;
  if (act == Act::GeluErf) return gelu_erf16(y);
  if (act == Act::Relu) return _mm512_max_ps(y, _mm512_setzero_ps());  // max(NaN, 0) = 0, as v > 0 ? v : 0
  alignas(64) float piece[16];
  _mm512_store_ps(piece, y);
  activation(piece, cols, act);
  return _mm512_load_ps(piece);
}

// quantize_u8 before its clamp: nearbyint(y * inv_scale) + zp as int32, the product first capped at 32000 (any
// value that large gives 255 either way; the cap keeps the sum inside int16 for the packs and away from
// vcvtps2dq's out-of-range result). NaN passes the cap (vminps returns its second operand) and converts to INT_MIN,
// which clamps to 0 as in the scalar loop.
inline __m512i quant_i32_16(__m512 y, __m512 inv_scale, __m512i zp) {
  const __m512 t = _mm512_min_ps(_mm512_set1_ps(32000.0f), _mm512_mul_ps(y, inv_scale));
  return _mm512_add_epi32(_mm512_cvt_roundps_epi32(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
}

// quantize_u8 of 16 lanes: clamp(nearbyint(y * inv_scale) + zp, 0, 255) as 16 bytes
inline __m128i quant_u8_16(__m512 y, __m512 inv_scale, __m512i zp) {
  return _mm512_cvtusepi32_epi8(_mm512_max_epi32(quant_i32_16(y, inv_scale, zp), _mm512_setzero_si512()));
}

// quantize_rows_s8's symmetric scale of a row whose largest magnitude is amax (1 for a row of zeros)
inline float s8_row_scale(float amax) { return amax > 0.0f ? amax / 127.0f : 1.0f; }

// quantize_rows_s8 of 16 lanes: nearbyint(x * inv_scale) clamped to [-127, 127], as int32 (one definition for the
// row quantization and quant_pack_nk_s8, which must give the same bytes)
inline __m512i quant_s8_16(__m512 x, __m512 inv_scale) {
  const __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(x, inv_scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f)));
}

// quant_u8_16 stored under `mask`
inline void store_u8_16(uint8_t* dst, __mmask16 mask, __m512 y, __m512 inv_scale, __m512i zp) {
  _mm_mask_storeu_epi8(dst, mask, quant_u8_16(y, inv_scale, zp));
}

// packed_bytes64 of four int32 vectors stored as 64 consecutive bytes under `mask`, in place of four narrowing
// stores (each two uops on the shuffle port, plus a store); quant_i32_16 caps values inside int16 for the packs
template <bool Signed = false>
inline void store_bytes_64(void* dst, __mmask64 mask, const __m512i* q) {
  _mm512_mask_storeu_epi8(dst, mask, packed_bytes64<Signed>(q));
}

// Four quant_i32_16 results (rows r = 0..3 of Y^T, 16 tokens each) clamped to u8 by the saturating packs and laid
// out token-major within each 128-bit lane: dword k of lane L = the 4 rows' bytes of token 4L + k.
// Signed: the signed packs (values within +-127, quant_s8_16's), the same layout.
template <bool Signed = false>
inline __m512i pack_rows4(const __m512i* q) {
  const __m512i bytes =
      Signed ? _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]))
             : _mm512_packus_epi16(_mm512_packus_epi32(q[0], q[1]), _mm512_packus_epi32(q[2], q[3]));
  // per lane: row 0's tokens 0-3, row 1's, row 2's, row 3's -> token 0's rows 0-3, token 1's, ...
  const __m512i to_tokens = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  return _mm512_shuffle_epi8(bytes, to_tokens);
}
inline __m512i pack_rows4_u8(const __m512i* q) { return pack_rows4<false>(q); }

}  // namespace
}  // namespace avx512
}  // namespace tf
