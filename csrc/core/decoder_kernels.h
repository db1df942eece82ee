// The decoder's kernel table: row ops for causal LMs (RMSNorm, SwiGLU, rotary embeddings), attention over the
// KV cache, and the weight-only k-bit GEMV / dequantization kernels. Like KernelTable, each ISA level's entries
// are compiled in their own translation unit (csrc/ops/decoder_ops_<isa>.cpp) inside that level's namespace.
#pragma once
#include <cstddef>
#include <cstdint>

#include "isa.h"

namespace tf {

// How a packed k-bit row stores its codes (docs/kernels.md, "Weight-only k-bit"):
//   Lut4: two 4-bit codes per byte, chunks of 32 codes in 16 bytes (byte j: code j low nibble, code j+16 high),
//         value = lut[code] (int2/int3/int4/nf4/fp4: up to 16 levels)
//   S8 / U8: one signed / unsigned byte per weight, value = the byte
//   E4M3 / E5M2: one FP8 byte per weight, decoded by moving its bits into a float32 and multiplying by the
//         power of two that rebiases the exponent (exact, subnormals included): no table
enum class KbitMode : int { Lut4 = 0, S8 = 1, U8 = 2, E4M3 = 3, E5M2 = 4 };

struct KbitWeight {
  KbitMode mode = KbitMode::Lut4;
  int64_t n = 0, k = 0, group = 0;  // groups run along k; the last may be shorter (ceil(k / group) groups)
  int64_t row_bytes = 0;            // bytes per output row of `codes`
  const uint8_t* codes = nullptr;
  const float* scales = nullptr;   // [n][ceil(k / group)]
  const float* offsets = nullptr;  // [n][ceil(k / group)] or null (symmetric types)
  float lut[16] = {};
};

// Bitmask-sparse weight (docs/kernels.md, "Bitmask sparse"): per output row, ceil(k / 64) 64-bit words with one
// bit per input (bit j % 64 of word j / 64; bits past k are zero) and that row's non-zeros packed in input order
// at values[rowptr[n] ..] (float32, bitmask-f32) or qvalues[rowptr[n] ..] (int8 with per-row w_scale and col_sum,
// bitmask-int8: W8A8 with u8 activations quantized per token). Decode reads only the bits and the non-zeros and
// computes densely: the kernel expands each word's values into a full vector (no gathers, no work on indices).
struct BitmaskWeight {
  int64_t n = 0, k = 0, words = 0;  // words = ceil(k / 64) per row
  const uint64_t* mask = nullptr;   // [n][words]
  const int64_t* rowptr = nullptr;  // [n + 1]
  const float* values = nullptr;    // bitmask-f32
  const int8_t* qvalues = nullptr;  // bitmask-int8
  const float* w_scale = nullptr;   // bitmask-int8: per output row
  const int32_t* col_sum = nullptr; // bitmask-int8: per output row, sum of its codes (for the activation zero point)
};

// The layouts the W4A8 kernels' vector paths take (and the engine's only W4A8 layouts, checked at load): 4-bit
// codes, in_features a multiple of 64, group 32 or a multiple of 64
inline bool a8_vector_layout(KbitMode mode, int64_t k, int64_t group) {
  return mode == KbitMode::Lut4 && k % 64 == 0 && (group == 32 || group % 64 == 0);
}

struct DecoderKernels {
  Isa isa;
  // y = x / rms(x) * g, rows of `cols`, row strides ldx / ldy
  void (*rmsnorm)(const float* x, int64_t ldx, float* y, int64_t ldy, int64_t rows, int64_t cols, const float* g,
                  float eps);
  // out[r, j] = silu(gu[r, j]) * gu[r, cols + j]  (gate then up halves of one fused GEMM output)
  void (*silu_mul)(const float* gu, int64_t ldgu, float* out, int64_t ldo, int64_t rows, int64_t cols);
  // rotate-half rotary embedding of `heads` consecutive head vectors of size d, in place; cs = [cos | sin] (d/2 each)
  void (*rope)(float* x, int64_t heads, int64_t d, const float* cs);
  // causal attention of `rows` query rows of one head against the cache: keys transposed kt [d][ld_kt], values
  // vc [slots][ld_v]. Query row t sees slots [0, limit[t]) where valid[s] != 0; out[t] = softmax(scale q.k) v
  // (zeros if it sees no valid slot). scratch: limit[rows - 1] floats
  void (*attend)(const float* q, int64_t ldq, int64_t rows, const float* kt, int64_t ld_kt, const float* vc,
                 int64_t ld_v, int64_t d, const int64_t* limit, const uint8_t* valid, float scale, float* out,
                 int64_t ldo, float* scratch);
  // y[r, n0:n1] = x[r, :] . W[n0:n1, :]^T for r < m (m small: decode), x rows of stride ldx; xsum[r][g] = sum of
  // x[r] over group g (needed for the offsets). Plain store, no epilogue.
  void (*kbit_gemv)(const float* x, int64_t ldx, int64_t m, const KbitWeight& w, const float* xsum, float* y,
                    int64_t ldy, int64_t n0, int64_t n1);
  // dequantize rows [r0, r1) of W to float32 [r1 - r0][k]
  void (*kbit_dequant)(const KbitWeight& w, int64_t r0, int64_t r1, float* out);
  // out[r][g] = sum of x[r, g*group .. (g+1)*group)
  void (*group_sums)(const float* x, int64_t ldx, int64_t m, int64_t k, int64_t group, float* out);
  // log(sum(exp(x))) of one row, computed stably (max first)
  float (*logsumexp)(const float* x, int64_t n);
  // ---- W4A8: 4-bit integer codes x int8 activations (u8 x s8 dot products, VNNI on avx512) ----
  // Rows of x [m][k] to s8 with one symmetric scale per row (ax = max|x| / 127), laid out for kbit_gemv_a8:
  // per 64 inputs the order is x[0..15], x[32..47], x[16..31], x[48..63] (how two packed 32-code chunks split
  // into low and high nibbles); k padded to a multiple of 64 with zeros, row stride ldxq (>= that). Also the
  // per-group sums of the QUANTIZED activations, qsum[r][g] = ax[r] * sum_g xq: the group's constant part must
  // see the same rounded activations as the code part, or their rounding errors stop cancelling
  void (*quantize_a8)(const float* x, int64_t ldx, int64_t m, int64_t k, int64_t group, int8_t* xq, int64_t ldxq,
                      float* ax, float* qsum);
  // y[r, n] = ax[r] * sum_g s[n,g] * (codes . xq)_g + sum_g off[n,g] * qsum[r][g], where off folds the type's
  // integer zero (lut[code] = code + lut0: off = offset + lut0 * scale): exactly W . dequant(xq). Lut4 integer
  // types, k % 64 == 0, group % 32 == 0 (32, or a multiple of 64)
  void (*kbit_gemv_a8)(const int8_t* xq, int64_t ldxq, const float* ax, int64_t m, const KbitWeight& w,
                       const float* xsum, float* y, int64_t ldy, int64_t n0, int64_t n1);
  // the same product for many token rows (prefill): codes expanded once per 16 weight rows into a VNNI panel,
  // the rows in the lanes; equal to kbit_gemv_a8 up to the order of float rounding. Null below avx512 (the GEMV
  // serves every row count there)
  void (*kbit_gemm_a8)(const int8_t* xq, int64_t ldxq, const float* ax, int64_t m, const KbitWeight& w,
                       const float* xsum, float* y, int64_t ldy, int64_t n0, int64_t n1);
  // ---- bitmask sparse (csrc/sparse/bitmask.inc) ----
  // y[r, n0:n1] = x[r, :] . W[n0:n1, :]^T for r < m (decode rows), plain store
  void (*bitmask_gemv_f32)(const float* x, int64_t ldx, int64_t m, const BitmaskWeight& w, float* y, int64_t ldy,
                           int64_t n0, int64_t n1);
  // u8 activation rows q (stride ldq, quantized per row: value = (q - zp[r]) * rs[r]) x int8 codes:
  // y[r, n] = rs[r] * w_scale[n] * (sum q * code - zp[r] * col_sum[n]), as the dense INT8 GEMM's epilogue
  void (*bitmask_gemv_s8)(const uint8_t* q, int64_t ldq, int64_t m, const BitmaskWeight& w, const float* rs,
                          const float* zp, float* y, int64_t ldy, int64_t n0, int64_t n1);
  // rows [r0, r1) of W as dense int8 codes [r1 - r0][k] (INT8 prefill: expanded chunk by chunk, then packed;
  // float32 rows go straight into the FP32 panels: KernelTable::pack_f32_bitmask)
  void (*bitmask_expand_s8)(const BitmaskWeight& w, int64_t r0, int64_t r1, int8_t* out);
  const char* bitmask_s8_kernel;  // which bitmask_gemv_s8 this CPU runs ("vbmi2" or "portable" at avx512, "avx2", "portable")
};

const DecoderKernels& decoder_kernels_for(Isa isa);

namespace scalar { const DecoderKernels& decoder_table(); }
namespace avx2 { const DecoderKernels& decoder_table(); }
namespace avx512 { const DecoderKernels& decoder_table(); }

}  // namespace tf
