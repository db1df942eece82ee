// Python bindings (nanobind): the native core exposes the encoder executor and the raw kernels (the latter for
// property tests against numpy references at every ISA level).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "core/core_distance.h"
#include "core/isa.h"
#include "bindings_common.h"
#include "executor/encoder.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace tf {
// A map of numpy arrays as borrowed host tensors (shared by every engine's binding).
std::map<std::string, HostTensor> host_tensors(const std::map<std::string, AnyArray>& tensors) {
  std::map<std::string, HostTensor> out;
  for (const auto& [name, arr] : tensors) {
    HostTensor h;
    h.data = arr.data();
    for (size_t i = 0; i < arr.ndim(); ++i) h.shape.push_back(static_cast<int64_t>(arr.shape(i)));
    if (arr.dtype() == nb::dtype<float>()) h.dtype = 'f';
    else if (arr.dtype() == nb::dtype<int8_t>()) h.dtype = 'b';
    else if (arr.dtype() == nb::dtype<int32_t>()) h.dtype = 'i';
    else if (arr.dtype() == nb::dtype<uint16_t>()) h.dtype = 'h';  // bf16 bits or small indices
    else if (arr.dtype() == nb::dtype<uint8_t>()) h.dtype = 'u';   // packed k-bit codes, bit-packed metadata
    else throw std::invalid_argument("tensor '" + name + "' must be float32, int8, uint8, int32 or uint16");
    out[name] = h;
  }
  return out;
}
}  // namespace tf

namespace {

using tf::Isa;
using tf::AnyArray;
using tf::host_tensors;

using F32In = nb::ndarray<const float, nb::ro, nb::c_contig, nb::device::cpu>;
using I64In = nb::ndarray<const int64_t, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

using tf::to_numpy;

tf::Act act_from(int a) {
  if (a < 0 || a > 4) throw std::invalid_argument("unknown activation code");
  return static_cast<tf::Act>(a);
}

class PyEncoder {
 public:
  PyEncoder(const nb::dict& config, const std::map<std::string, AnyArray>& tensors, const std::string& isa, int threads) {
    tf::EncoderConfig c;
    auto geti = [&](const char* k) { return nb::cast<int64_t>(config[k]); };
    c.hidden = geti("hidden");
    c.heads = geti("heads");
    c.head_dim = config.contains("head_dim") ? geti("head_dim") : 0;
    c.layers = geti("layers");
    c.intermediate = geti("intermediate");
    c.vocab = geti("vocab");
    c.max_positions = geti("max_positions");
    c.type_vocab = geti("type_vocab");
    c.pad_token_id = geti("pad_token_id");
    c.position_mode = static_cast<int>(geti("position_mode"));
    c.ln_eps = nb::cast<float>(config["ln_eps"]);
    c.act = act_from(static_cast<int>(geti("act")));
    c.head_pool = static_cast<int>(geti("head_pool"));
    c.attention_mode = config.contains("attention_mode") ? nb::cast<int>(config["attention_mode"]) : 0;
    c.bf16_attention_max_seq =
        config.contains("bf16_attention_max_seq") ? nb::cast<int64_t>(config["bf16_attention_max_seq"]) : 0;
    c.chunk_rows = config.contains("chunk_rows") ? nb::cast<int64_t>(config["chunk_rows"]) : 0;
    if (c.chunk_rows < 0) throw std::invalid_argument("chunk_rows must be >= 0");
    for (auto a : nb::cast<std::vector<int>>(config["head_acts"])) c.head_acts.push_back(act_from(a));
    if (config.contains("csr_f32_walk")) c.csr_f32_walk = nb::cast<std::vector<std::string>>(config["csr_f32_walk"]);
    const Isa level = tf::resolve_isa(isa);
    if (threads > 256) threads = 256;
    engine_ = std::make_unique<tf::EncoderEngine>(c, host_tensors(tensors), level, threads);
  }

  nb::tuple run(I64In ids, nb::object mask, nb::object types, const std::string& pooling, bool normalize) {
    int pool = 0;
    if (pooling == "cls") pool = 1;
    else if (pooling == "mean") pool = 2;
    else if (!pooling.empty()) throw std::invalid_argument("pooling must be 'cls', 'mean' or empty");
    const int64_t batch = ids.shape(0), seq = ids.shape(1);
    I64In m, t;
    const int64_t* mp = nullptr;
    const int64_t* tp = nullptr;
    if (!mask.is_none()) {
      m = nb::cast<I64In>(mask);
      if (m.shape(0) != (size_t)batch || m.shape(1) != (size_t)seq)
        throw std::invalid_argument("attention_mask shape differs from input_ids");
      mp = m.data();
    }
    if (!types.is_none()) {
      t = nb::cast<I64In>(types);
      if (t.shape(0) != (size_t)batch || t.shape(1) != (size_t)seq)
        throw std::invalid_argument("token_type_ids shape differs from input_ids");
      tp = t.data();
    }
    tf::RunResult r;
    {
      nb::gil_scoped_release release;
      engine_->run(ids.data(), mp, tp, batch, seq, &r, pool, normalize);
    }
    const size_t H = r.hidden.size() / (batch * seq);
    nb::object pooled = nb::none();
    if (pool) pooled = nb::cast(to_numpy(std::move(r.pooled), {(size_t)batch, H}));
    auto hidden = to_numpy(std::move(r.hidden), {(size_t)batch, (size_t)seq, H});
    if (r.head_dim == 0) return nb::make_tuple(hidden, nb::none(), pooled);
    const size_t rows = r.head.size() / r.head_dim;
    std::vector<size_t> shape = rows == (size_t)batch ? std::vector<size_t>{(size_t)batch, (size_t)r.head_dim}
                                                      : std::vector<size_t>{(size_t)batch, (size_t)seq, (size_t)r.head_dim};
    return nb::make_tuple(hidden, to_numpy(std::move(r.head), shape), pooled);
  }

  std::unique_ptr<tf::EncoderEngine> engine_;
};

// ---- raw kernels for tests ----
nb::ndarray<nb::numpy, float> k_gemm_f32(F32In a, F32In w, nb::object bias, int act, nb::object residual,
                                         float alpha, const std::string& isa, bool w_is_kn) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (a.ndim() != 2 || w.ndim() != 2) throw std::invalid_argument("a and w must be 2-D");
  const int64_t m = a.shape(0), k = a.shape(1);
  const int64_t n = w_is_kn ? w.shape(1) : w.shape(0);
  if ((w_is_kn ? (int64_t)w.shape(0) : (int64_t)w.shape(1)) != k) throw std::invalid_argument("inner dims differ");
  tf::AlignedBuf packed(kt.pack_f32_size(n, k) + 64);
  if (w_is_kn) kt.pack_f32_kn(w.data(), n, n, k, packed.as<float>());
  else kt.pack_f32_nk(w.data(), k, n, k, packed.as<float>());
  std::vector<float> c(m * n);
  tf::Epilogue epi;
  epi.alpha = alpha;
  epi.act = act_from(act);
  F32In b, r;
  if (!bias.is_none()) { b = nb::cast<F32In>(bias); epi.bias = b.data(); }
  if (!residual.is_none()) { r = nb::cast<F32In>(residual); epi.residual = r.data(); epi.ld_residual = n; }
  // split into two column ranges and two row ranges to exercise partial tiles the way threads do
  const int64_t nsplit = (n / kt.f32_nr) / 2 * kt.f32_nr, msplit = m / 2;
  kt.gemm_f32(a.data(), k, packed.as<float>(), n, k, c.data(), n, 0, msplit, 0, nsplit, epi);
  kt.gemm_f32(a.data(), k, packed.as<float>(), n, k, c.data(), n, msplit, m, 0, nsplit, epi);
  kt.gemm_f32(a.data(), k, packed.as<float>(), n, k, c.data(), n, 0, m, nsplit, n, epi);
  return to_numpy(std::move(c), {(size_t)m, (size_t)n});
}

nb::object k_gemm_s8(nb::ndarray<const uint8_t, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> a,
                                        nb::ndarray<const int8_t, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> w,
                                        F32In w_scale, float a_scale, int a_zp, nb::object bias, int act,
                                        const std::string& isa, float out_scale, int out_zp) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  const int64_t m = a.shape(0), k = a.shape(1), n = w.shape(0);
  if ((int64_t)w.shape(1) != k) throw std::invalid_argument("inner dims differ");
  tf::AlignedBuf packed(kt.pack_s8_size(n, k) + 64);
  kt.pack_s8(w.data(), k, n, k, packed.as<void>());
  std::vector<int32_t> colsum(n, 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t kk = 0; kk < k; ++kk) colsum[j] += w.data()[j * k + kk];
  const int64_t ldq = (k + 3) / 4 * 4;
  std::vector<uint8_t> ap(m * ldq, static_cast<uint8_t>(a_zp));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t kk = 0; kk < k; ++kk) ap[i * ldq + kk] = a.data()[i * k + kk];
  std::vector<float> c(m * n);
  tf::Epilogue epi;
  epi.w_scale = w_scale.data();
  epi.col_sum = colsum.data();
  std::vector<float> rs(m, a_scale), rz(m, static_cast<float>(a_zp));
  epi.row_scale = rs.data();
  epi.row_zp = rz.data();
  epi.act = act_from(act);
  F32In b;
  if (!bias.is_none()) { b = nb::cast<F32In>(bias); epi.bias = b.data(); }
  std::vector<uint8_t> oq;
  if (out_scale > 0.0f) {  // requantizing epilogue: u8 output with this scale / zero point
    oq.assign(m * n, 0);
    epi.out_u8 = oq.data();
    epi.ld_out_u8 = n;
    epi.out_inv_scale = 1.0f / out_scale;
    epi.out_zp = out_zp;
  }
  const int64_t nsplit = (n / kt.s8_nr) / 2 * kt.s8_nr, msplit = m / 2;
  kt.gemm_s8(ap.data(), ldq, packed.as<void>(), n, k, c.data(), n, 0, msplit, 0, nsplit, epi);
  kt.gemm_s8(ap.data(), ldq, packed.as<void>(), n, k, c.data(), n, msplit, m, 0, nsplit, epi);
  kt.gemm_s8(ap.data(), ldq, packed.as<void>(), n, k, c.data(), n, 0, m, nsplit, n, epi);
  if (out_scale > 0.0f) return nb::cast(to_numpy(std::move(oq), {(size_t)m, (size_t)n}));
  return nb::cast(to_numpy(std::move(c), {(size_t)m, (size_t)n}));
}

nb::ndarray<nb::numpy, float> k_rowop(F32In x, const std::string& op, nb::object g, nb::object b, float eps,
                                      const std::string& isa) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D");
  const int64_t rows = x.shape(0), cols = x.shape(1);
  std::vector<float> y(x.data(), x.data() + rows * cols);
  if (op == "layernorm") {
    F32In gg = nb::cast<F32In>(g), bb = nb::cast<F32In>(b);
    kt.layernorm(y.data(), y.data(), rows, cols, cols, gg.data(), bb.data(), eps);
  } else if (op == "softmax") {
    kt.softmax_rows(y.data(), rows, cols, cols);
  } else if (op == "gelu") {
    kt.activation(y.data(), rows * cols, tf::Act::GeluErf);
  } else if (op == "gelu_tanh") {
    kt.activation(y.data(), rows * cols, tf::Act::GeluTanh);
  } else if (op == "relu") {
    kt.activation(y.data(), rows * cols, tf::Act::Relu);
  } else if (op == "tanh") {
    kt.activation(y.data(), rows * cols, tf::Act::Tanh);
  } else {
    throw std::invalid_argument("unknown row op '" + op + "'");
  }
  return to_numpy(std::move(y), {(size_t)rows, (size_t)cols});
}

// the level's fused float attention (KernelTable::attention_f32) over every head of one sequence: qkv [seq, 3H]
// as the encoder lays it out (Q, K, V of head h at columns h*d, H + h*d, 2H + h*d), bias [seq]; ctx [seq, H]
nb::ndarray<nb::numpy, float> k_attention_f32(F32In qkv, int64_t heads, F32In bias, float alpha,
                                              const std::string& isa) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (!kt.attention_f32) throw std::invalid_argument("this ISA level has no fused float attention");
  if (qkv.ndim() != 2 || bias.ndim() != 1) throw std::invalid_argument("qkv must be 2-D and bias 1-D");
  const int64_t seq = qkv.shape(0), ld = qkv.shape(1);
  if (heads <= 0 || ld % (3 * heads) != 0) throw std::invalid_argument("qkv's width must be 3 * heads * head_dim");
  if (static_cast<int64_t>(bias.shape(0)) != seq) throw std::invalid_argument("bias needs one value per token");
  const int64_t H = ld / 3, d = H / heads;
  std::vector<float> ctx(seq * H);
  std::vector<char> scratch(kt.attention_f32_scratch(seq, d));
  for (int64_t h = 0; h < heads; ++h) {
    const float* q = qkv.data() + h * d;
    kt.attention_f32(q, q + H, q + 2 * H, ld, seq, d, alpha, bias.data(), ctx.data() + h * d, H, scratch.data());
  }
  return to_numpy(std::move(ctx), {(size_t)seq, (size_t)H});
}

nb::tuple k_softmax_u8(F32In x, const std::string& isa) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D");
  const int64_t rows = x.shape(0), cols = x.shape(1);
  std::vector<uint8_t> q(rows * cols);
  std::vector<float> s(rows), z(rows);
  kt.softmax_u8_rows(x.data(), rows, cols, cols, q.data(), cols, s.data(), z.data());
  return nb::make_tuple(to_numpy(std::move(q), {(size_t)rows, (size_t)cols}), to_numpy(std::move(s), {(size_t)rows}));
}

// the bf16 attention's softmax (levels with AVX512-BF16): the probabilities as float32 (each a bf16 value)
nb::ndarray<nb::numpy, float> k_softmax_bf16(F32In x, const std::string& isa) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D");
  if (!kt.softmax_bf16_rows) throw std::invalid_argument("this ISA level has no bf16 softmax");
  const int64_t rows = x.shape(0), cols = x.shape(1), ldy = (cols + 1) / 2 * 2;
  std::vector<float> scratch(x.data(), x.data() + rows * cols);
  std::vector<uint16_t> y(rows * ldy);
  kt.softmax_bf16_rows(scratch.data(), rows, cols, cols, y.data(), ldy);
  std::vector<float> out(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t u = static_cast<uint32_t>(y[r * ldy + c]) << 16;
      std::memcpy(&out[r * cols + c], &u, 4);
    }
  return to_numpy(std::move(out), {(size_t)rows, (size_t)cols});
}

// per-row quantization as the executor does it for dynamic activations and attention: u8 with a per-row (scale,
// zero point), or symmetric s8 with a per-row scale and the row's integer sum; `pad` extra output columns
// attention K's operand two ways: quantize_rows_s8 then pack_s8, and quant_pack_nk_s8 in one pass (None where the
// level has none): (plain bytes, scales, sums, fused bytes or None, scales, sums), over the first k of x's columns
nb::tuple k_quant_pack_nk(F32In x, int64_t k, const std::string& isa) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D");
  const int64_t n = x.shape(0), ld = x.shape(1);
  if (k < 1 || k > ld) throw std::invalid_argument("k must be in [1, columns]");
  const size_t bytes = kt.pack_s8_size(n, k);
  std::vector<int8_t> q(n * k);
  std::vector<float> s(n), fs(n);
  std::vector<int32_t> sums(n), fsums(n);
  tf::AlignedBuf plain(bytes), fused(bytes);
  std::memset(plain.as<char>(), 0x5a, bytes);  // bytes a kernel leaves unwritten show
  std::memset(fused.as<char>(), 0x5a, bytes);
  kt.quantize_rows_s8(x.data(), ld, q.data(), k, n, k, s.data(), sums.data());
  kt.pack_s8(q.data(), k, n, k, plain.as<void>());
  std::vector<int8_t> p(plain.as<int8_t>(), plain.as<int8_t>() + bytes);
  nb::object f = nb::none(), fsc = nb::none(), fsu = nb::none();
  if (kt.quant_pack_nk_s8) {
    kt.quant_pack_nk_s8(x.data(), ld, n, k, fused.as<void>(), fs.data(), fsums.data());
    f = nb::cast(to_numpy(std::vector<int8_t>(fused.as<int8_t>(), fused.as<int8_t>() + bytes), {bytes}));
    fsc = nb::cast(to_numpy(std::move(fs), {(size_t)n}));
    fsu = nb::cast(to_numpy(std::move(fsums), {(size_t)n}));
  }
  return nb::make_tuple(to_numpy(std::move(p), {bytes}), to_numpy(std::move(s), {(size_t)n}),
                        to_numpy(std::move(sums), {(size_t)n}), f, fsc, fsu);
}

nb::tuple k_quantize_rows(F32In x, bool symmetric, int64_t pad, const std::string& isa) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D");
  if (pad < 0) throw std::invalid_argument("pad must be >= 0");
  const int64_t rows = x.shape(0), cols = x.shape(1), ldq = cols + pad;
  std::vector<float> s(rows);
  if (symmetric) {
    std::vector<int8_t> q(rows * ldq, 0);
    std::vector<int32_t> sums(rows);
    kt.quantize_rows_s8(x.data(), cols, q.data(), ldq, rows, cols, s.data(), sums.data());
    return nb::make_tuple(to_numpy(std::move(q), {(size_t)rows, (size_t)ldq}), to_numpy(std::move(s), {(size_t)rows}),
                          to_numpy(std::move(sums), {(size_t)rows}));
  }
  std::vector<uint8_t> q(rows * ldq);
  std::vector<float> z(rows);
  kt.quantize_rows_u8(x.data(), cols, q.data(), ldq, rows, cols, s.data(), z.data());
  return nb::make_tuple(to_numpy(std::move(q), {(size_t)rows, (size_t)ldq}), to_numpy(std::move(s), {(size_t)rows}),
                        to_numpy(std::move(z), {(size_t)rows}));
}

nb::ndarray<nb::numpy, uint8_t> k_quantize(F32In x, float scale, int zp, const std::string& isa) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D");
  const int64_t rows = x.shape(0), cols = x.shape(1);
  std::vector<uint8_t> q(rows * cols);
  kt.quantize_u8(x.data(), cols, q.data(), cols, rows, cols, 1.0f / scale, zp);
  return to_numpy(std::move(q), {(size_t)rows, (size_t)cols});
}

nb::ndarray<nb::numpy, float> k_gemm_bf16(F32In a, nb::ndarray<const uint16_t, nb::ro, nb::ndim<2>, nb::c_contig,
                                          nb::device::cpu> w, nb::object bias, int act) {
  const tf::KernelTable& kt = tf::kernels_for(tf::Isa::Avx512Vnni);
  if (tf::detect_isa() != tf::Isa::Avx512Vnni || !tf::cpu_has_avx512_bf16() || !kt.gemm_bf16)
    throw std::invalid_argument("this CPU has no AVX512_BF16");
  if (a.ndim() != 2) throw std::invalid_argument("a must be 2-D");
  const int64_t m = a.shape(0), k = a.shape(1), n = w.shape(0);
  if ((int64_t)w.shape(1) != k) throw std::invalid_argument("inner dims differ");
  tf::AlignedBuf packed(kt.pack_bf16_size(n, k) + 64);
  kt.pack_bf16(w.data(), n, k, packed.as<void>());
  const int64_t lda = (k + 1) / 2 * 2;
  std::vector<uint16_t> ab(m * lda + 2);
  kt.to_bf16_rows(a.data(), k, ab.data(), lda, m, k);
  std::vector<float> c(m * n);
  tf::Epilogue epi;
  epi.act = act_from(act);
  F32In b;
  if (!bias.is_none()) { b = nb::cast<F32In>(bias); epi.bias = b.data(); }
  const int64_t nsplit = (n / kt.bf16_nr) / 2 * kt.bf16_nr;
  kt.gemm_bf16(ab.data(), lda, packed.as<void>(), n, k, c.data(), n, 0, m, 0, nsplit, epi);
  kt.gemm_bf16(ab.data(), lda, packed.as<void>(), n, k, c.data(), n, 0, m, nsplit, n, epi);
  return to_numpy(std::move(c), {(size_t)m, (size_t)n});
}

// The attention's packings of a float matrix w [n, k] as gemm_bf16's B operand: "nk" packs w itself
// (pack_bf16_nk_f32: K in Q.K^T), "kn" packs w^T, read as X [k][n] = w^T (pack_bf16_kn: V in P.V), "bits" is
// pack_bf16 of w's bf16 bits (round to nearest even): the reference both must equal. Returned as uint16 words.
nb::ndarray<nb::numpy, uint16_t> k_pack_bf16(F32In w, const std::string& how) {
  const tf::KernelTable& kt = tf::kernels_for(tf::Isa::Avx512Vnni);
  if (tf::detect_isa() != tf::Isa::Avx512Vnni || !tf::cpu_has_avx512_bf16() || !kt.gemm_bf16)
    throw std::invalid_argument("this CPU has no AVX512_BF16");
  if (w.ndim() != 2) throw std::invalid_argument("w must be 2-D");
  const int64_t n = w.shape(0), k = w.shape(1);
  const size_t bytes = kt.pack_bf16_size(n, k);
  tf::AlignedBuf packed(bytes + 64);
  if (how == "nk") {
    kt.pack_bf16_nk_f32(w.data(), k, n, k, packed.as<void>());
  } else if (how == "kn") {
    std::vector<float> x(k * n);  // X [k][n] = w^T
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) x[j * n + i] = w.data()[i * k + j];
    kt.pack_bf16_kn(x.data(), n, n, k, packed.as<void>());
  } else if (how == "bits") {
    std::vector<uint16_t> bits(n * k);
    kt.to_bf16_rows(w.data(), k, bits.data(), k, n, k);
    kt.pack_bf16(bits.data(), n, k, packed.as<void>());
  } else {
    throw std::invalid_argument("how must be nk, kn or bits");
  }
  const uint16_t* p = packed.as<uint16_t>();
  return to_numpy(std::vector<uint16_t>(p, p + bytes / 2), {bytes / 2});
}

// BSR (1x4 blocks) from a dense int8 matrix: blocks that are all zero are dropped
struct BsrHost {
  std::vector<int32_t> rowptr, cols, col_sum;
  std::vector<int8_t> values;
  std::vector<int16_t> values16;  // the same values widened (levels with KernelTable::bsr_wide_values read these)
  std::vector<float> w_scale;
  int64_t block_rows = 1;
  tf::BsrS8 view(int64_t n, int64_t k) const {
    tf::BsrS8 b;
    b.n = n;
    b.k = k;
    b.block_rows = block_rows;
    b.rowptr = rowptr.data();
    b.cols = cols.data();
    b.values = values.data();
    b.values16 = values16.data();
    b.col_sum = col_sum.data();
    b.w_scale = w_scale.data();
    return b;
  }
};

BsrHost bsr_from_dense(const int8_t* w, int64_t n, int64_t k, const float* ws, int64_t R = 1) {
  BsrHost h;
  h.rowptr.push_back(0);
  h.col_sum.assign(n, 0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t kk = 0; kk < k; ++kk) h.col_sum[r] += w[r * k + kk];
  for (int64_t b = 0; b < (n + R - 1) / R; ++b) {
    for (int64_t g = 0; g < (k + 3) / 4; ++g) {
      int8_t blk[16] = {0};
      bool any = false;
      for (int64_t i = 0; i < R; ++i)
        for (int t = 0; t < 4; ++t)
          if (b * R + i < n && g * 4 + t < k) {
            blk[i * 4 + t] = w[(b * R + i) * k + g * 4 + t];
            any |= blk[i * 4 + t] != 0;
          }
      if (!any) continue;
      h.cols.push_back(static_cast<int32_t>(g));
      h.values.insert(h.values.end(), blk, blk + 4 * R);
    }
    h.rowptr.push_back(static_cast<int32_t>(h.cols.size()));
  }
  h.w_scale.assign(ws, ws + n);
  h.block_rows = R;
  h.values.resize(h.values.size() + 4);  // never empty
  h.values16.assign(h.values.begin(), h.values.end());
  h.cols.resize(h.cols.size() + 1);
  return h;
}

nb::object k_gemm_bsr_s8(nb::ndarray<const uint8_t, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> a,
                         nb::ndarray<const int8_t, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> w,
                         F32In w_scale, float a_scale, int a_zp, nb::object bias, int act, const std::string& isa,
                         int block_rows, float out_scale, int out_zp, int pair_quads, bool few_tokens) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  const int64_t m = a.shape(0), k = a.shape(1), n = w.shape(0);
  if ((int64_t)w.shape(1) != k) throw std::invalid_argument("inner dims differ");
  if (block_rows != 1 && block_rows != 4) throw std::invalid_argument("block_rows must be 1 or 4");
  const BsrHost h = bsr_from_dense(w.data(), n, k, w_scale.data(), block_rows);
  tf::BsrS8 bw = h.view(n, k);
  // as the executor's loader: 4x4 values within [-64, 64] take the level's 8-bit path where it has one
  bw.narrow = kt.bsr_narrow_values && block_rows == 4 && tf::bsr_values_narrow(h.values.data(), h.values.size());
  // pair_quads -1: the executor's rule (bsr_pair_quads); 0 / 1 force the quad / pair-major re-layout where the
  // weight could take either (1: 4x4 blocks of 16-bit weights at a level with pair quads)
  bw.pair_quads = pair_quads < 0 ? tf::bsr_pair_quads(kt, block_rows, bw.narrow, 0, k) : pair_quads == 1;
  if (bw.pair_quads && !(kt.bsr_pair_quads_max_k > 0 && block_rows == 4 && !bw.narrow))
    throw std::invalid_argument("pair quads need 4x4 blocks of 16-bit weights at a level that has them");
  const int64_t ldq = (k + 3) / 4 * 4;
  std::vector<uint8_t> ap(m * ldq, static_cast<uint8_t>(a_zp));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t kk = 0; kk < k; ++kk) ap[i * ldq + kk] = a.data()[i * k + kk];
  tf::AlignedBuf at(kt.bsr_at_size(m, k) + 64);
  kt.bsr_pack_at(ap.data(), ldq, m, 0, (m + 15) / 16 * 16 / 2 / 16 * 16, k, at.as<uint8_t>(), bw.pair_quads);
  kt.bsr_pack_at(ap.data(), ldq, m, (m + 15) / 16 * 16 / 2 / 16 * 16, m, k, at.as<uint8_t>(), bw.pair_quads);
  std::vector<float> c(m * n), rs(m, a_scale), rz(m, static_cast<float>(a_zp));
  tf::Epilogue epi;
  epi.row_scale = rs.data();
  epi.row_zp = rz.data();
  epi.act = act_from(act);
  F32In b;
  if (!bias.is_none()) { b = nb::cast<F32In>(bias); epi.bias = b.data(); }
  std::vector<uint8_t> oq;
  if (out_scale > 0.0f) {  // requantizing epilogue: u8 output with this scale / zero point
    oq.assign(m * n, 0);
    epi.out_u8 = oq.data();
    epi.ld_out_u8 = n;
    epi.out_inv_scale = 1.0f / out_scale;
    epi.out_zp = out_zp;
  }
  // few_tokens: the u8 rows without a re-layout (KernelTable::bsr_few_tokens), as the executor runs such calls
  if (few_tokens && (m > kt.bsr_few_tokens || block_rows != 4))
    throw std::invalid_argument("few_tokens: 4x4 blocks and at most bsr_few_tokens tokens at this level");
  const uint8_t* at_or_rows = few_tokens ? nullptr : at.as<uint8_t>();
  const int64_t nsplit = n / 32 * 16;  // two column ranges, as threads split them
  kt.gemm_bsr_s8(ap.data(), ldq, at_or_rows, m, bw, c.data(), n, 0, nsplit, epi);
  kt.gemm_bsr_s8(ap.data(), ldq, at_or_rows, m, bw, c.data(), n, nsplit, n, epi);
  if (out_scale > 0.0f) return nb::cast(to_numpy(std::move(oq), {(size_t)m, (size_t)n}));
  return nb::cast(to_numpy(std::move(c), {(size_t)m, (size_t)n}));
}

// A static INT8 Linear's input prepared both ways the executor can at a level: quantize_u8 into u8 rows (returned)
// then bsr_pack_at, and bsr_quant_pack_at in one pass (None where the level has none), each over two token ranges
// as two threads split them. Returns (u8 rows, At unfused, At fused or None).
nb::object k_bsr_quant_pack(nb::ndarray<const float, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> x,
                            float inv_scale, int zp, const std::string& isa, bool pair_quads) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  const int64_t m = x.shape(0), k = x.shape(1), ldq = (k + 3) / 4 * 4 + 4;  // a row stride past k's quads
  const int64_t half = (m + 15) / 16 * 16 / 2 / 16 * 16;
  if (pair_quads && kt.bsr_pair_quads_max_k == 0) throw std::invalid_argument("this level has no pair quads");
  std::vector<uint8_t> q(m * ldq, 0);
  kt.quantize_u8(x.data(), k, q.data(), ldq, m, k, inv_scale, zp);
  const size_t bytes = kt.bsr_at_size(m, k);
  // the re-layouts store whole aligned vectors, so At must be 64-byte aligned, as the engine's buffers are
  // (a std::vector's 16-byte alignment faulted at the avx512 level); copied out afterwards
  tf::AlignedBuf plain_at(bytes), fused_at(bytes);
  std::memset(plain_at.as<uint8_t>(), 0xA5, bytes);  // bytes no pack writes keep 0xA5 in both
  std::memset(fused_at.as<uint8_t>(), 0xA5, bytes);
  kt.bsr_pack_at(q.data(), ldq, m, 0, half, k, plain_at.as<uint8_t>(), pair_quads);
  kt.bsr_pack_at(q.data(), ldq, m, half, m, k, plain_at.as<uint8_t>(), pair_quads);
  const auto copy_out = [&](const tf::AlignedBuf& b) {
    std::vector<uint8_t> v(b.as<uint8_t>(), b.as<uint8_t>() + bytes);
    return to_numpy(std::move(v), {bytes});
  };
  nb::object f = nb::none();
  if (kt.bsr_quant_pack_at) {
    kt.bsr_quant_pack_at(x.data(), k, m, 0, half, k, inv_scale, zp, fused_at.as<uint8_t>(), pair_quads);
    kt.bsr_quant_pack_at(x.data(), k, m, half, m, k, inv_scale, zp, fused_at.as<uint8_t>(), pair_quads);
    f = nb::cast(copy_out(fused_at));
  }
  return nb::make_tuple(to_numpy(std::move(q), {(size_t)m, (size_t)ldq}), copy_out(plain_at), f);
}

// One INT8 GEMM call, dense or block-sparse, split across `threads` the way the executor splits it: the
// sparse path first re-lays the activations by rows (then a barrier), and both split output columns.
void run_int8_split(const tf::KernelTable& kt, int threads, bool sparse, const uint8_t* aq, int64_t ldq, int64_t m,
                    int64_t n, int64_t k, const void* packed, const tf::BsrS8& bw, uint8_t* at, float* c,
                    const tf::Epilogue& epi) {
#pragma omp parallel num_threads(threads)
  {
    const int i = omp_get_thread_num(), cnt = omp_get_num_threads();
    if (sparse) {
      const int64_t mb = ((m + 15) / 16 + cnt - 1) / cnt * 16;
      const int64_t r0 = std::min(m, i * mb), r1 = std::min(m, (i + 1) * mb);
      if (r0 < r1) kt.bsr_pack_at(aq, ldq, m, r0, r1, k, at, bw.pair_quads);
#pragma omp barrier
    }
    const int64_t nr = sparse ? 16 : kt.s8_nr, units = (n + nr - 1) / nr, per = (units + cnt - 1) / cnt;
    const int64_t lo = std::min(n, i * per * nr), hi = std::min(n, (i + 1) * per * nr);
    if (lo < hi) {
      if (sparse) kt.gemm_bsr_s8(aq, ldq, at, m, bw, c, n, lo, hi, epi);
      else kt.gemm_s8(aq, ldq, packed, n, k, c, n, 0, m, lo, hi, epi);
    }
  }
}

// Times one GEMM shape with pre-packed random weights (no packing or Python in the loop): seconds per call.
double k_time_gemm(const std::string& kind, int64_t m, int64_t n, int64_t k, int iters, const std::string& isa,
                   int threads, double density, int block_rows) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  const bool s8 = kind == "s8", bsr = kind == "bsr";
  if (!s8 && !bsr && kind != "f32") throw std::invalid_argument("kind must be f32, s8 or bsr");
  const int64_t ldq = (k + 3) / 4 * 4;
  std::vector<float> a(m * k, 0.5f), c(m * n), ws(n, 1.0f), rs(m, 1.0f), rz(m, 0.0f);
  std::vector<uint8_t> aq(m * ldq, 3);
  std::vector<int8_t> w(n * k, 1);
  std::vector<float> wf(n * k, 0.25f);
  std::vector<int32_t> cs(n, 0);
  tf::AlignedBuf packed(s8 ? kt.pack_s8_size(n, k) : kt.pack_f32_size(n, k));
  if (s8) kt.pack_s8(w.data(), k, n, k, packed.as<void>());
  else kt.pack_f32_nk(wf.data(), k, n, k, packed.as<float>());
  // bsr: a deterministic pseudo-random block pattern with the given density of non-zero 1x4 blocks
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int64_t r = 0; r < n; r += block_rows)
    for (int64_t g = 0; g < (k + 3) / 4; ++g) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      const bool keep = static_cast<double>(state >> 11) / 9007199254740992.0 < density;
      for (int64_t i = r; i < r + block_rows && i < n; ++i)
        for (int t = 0; t < 4 && g * 4 + t < k; ++t) w[i * k + g * 4 + t] = keep ? 1 : 0;
    }
  const BsrHost bh = bsr_from_dense(w.data(), n, k, ws.data(), block_rows);
  tf::BsrS8 bw = bh.view(n, k);
  bw.pair_quads = tf::bsr_pair_quads(kt, block_rows, false, 0, k);  // as the executor (the weights are 1: not narrow)
  tf::AlignedBuf at(kt.bsr_at_size(m, k) + 64);
  tf::Epilogue epi;
  epi.w_scale = ws.data();
  epi.col_sum = cs.data();
  epi.row_scale = rs.data();
  epi.row_zp = rz.data();
  const int64_t nr = kt.f32_nr;
  nb::gil_scoped_release release;
  auto once = [&] {
    if (s8 || bsr) {
      run_int8_split(kt, threads, bsr, aq.data(), ldq, m, n, k, packed.as<void>(), bw, at.as<uint8_t>(), c.data(),
                     epi);
      return;
    }
#pragma omp parallel num_threads(threads)
    {
      const int i = omp_get_thread_num(), cnt = omp_get_num_threads();
      const int64_t units = (n + nr - 1) / nr, per = (units + cnt - 1) / cnt;
      const int64_t lo = std::min(n, i * per * nr), hi = std::min(n, (i + 1) * per * nr);
      if (lo < hi) kt.gemm_f32(a.data(), k, packed.as<float>(), n, k, c.data(), n, 0, m, lo, hi, epi);
    }
  };
  once();
  const auto t0 = std::chrono::steady_clock::now();
  for (int it = 0; it < iters; ++it) once();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}


// ---- sparse runtime (issue 3): FP32 sparse kernels from a dense weight, and a Linear-only engine ----
// Sparse FP32 weight from dense W [n][k]: layout "csr" (every non-zero), "block" (4x1 blocks with a non-zero),
// "2:4" / "4:8" (W must have at most N non-zeros per group; each group keeps its non-zeros, then zeros, in input
// order).
struct SparseF32Host {
  std::vector<int32_t> rowptr, cols;
  std::vector<float> values;
  std::vector<uint8_t> idx;
  int64_t rows = 1, keep = 0, group = 0;
};

SparseF32Host sparse_f32_from_dense(const float* w, int64_t n, int64_t k, const std::string& layout) {
  SparseF32Host h;
  if (layout == "csr" || layout == "block") {
    h.rows = layout == "csr" ? 1 : 4;
    h.rowptr.push_back(0);
    for (int64_t b = 0; b < (n + h.rows - 1) / h.rows; ++b) {
      for (int64_t kk = 0; kk < k; ++kk) {
        float blk[4] = {0, 0, 0, 0};
        bool any = false;
        for (int64_t i = 0; i < h.rows && b * h.rows + i < n; ++i) {
          blk[i] = w[(b * h.rows + i) * k + kk];
          any |= blk[i] != 0.0f;
        }
        if (!any) continue;
        h.cols.push_back(static_cast<int32_t>(kk));
        h.values.insert(h.values.end(), blk, blk + h.rows);
      }
      h.rowptr.push_back(static_cast<int32_t>(h.cols.size()));
    }
  } else if (layout == "2:4" || layout == "4:8") {
    h.keep = layout == "2:4" ? 2 : 4;
    h.group = layout == "2:4" ? 4 : 8;
    const int64_t groups = (k + h.group - 1) / h.group;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<int64_t> pos;
        for (int64_t i = 0; i < h.group; ++i)
          if (g * h.group + i < k && w[r * k + g * h.group + i] != 0.0f) pos.push_back(i);
        if (static_cast<int64_t>(pos.size()) > h.keep) throw std::invalid_argument("weight breaks the N:M pattern");
        for (int64_t i = 0; i < h.group && static_cast<int64_t>(pos.size()) < h.keep; ++i)
          if (std::find(pos.begin(), pos.end(), i) == pos.end()) pos.push_back(i);
        std::sort(pos.begin(), pos.end());
        for (int64_t i : pos) {
          const int64_t col = g * h.group + i;
          h.values.push_back(col < k ? w[r * k + col] : 0.0f);
          h.idx.push_back(static_cast<uint8_t>(i));
        }
      }
  } else {
    throw std::invalid_argument("layout must be csr, block, 2:4 or 4:8");
  }
  h.values.resize(h.values.size() + 16, 0.0f);
  h.idx.resize(h.idx.size() + 16, 0);
  h.cols.resize(h.cols.size() + 1, 0);
  return h;
}

nb::ndarray<nb::numpy, float> k_gemm_sparse_f32(F32In a, F32In w, const std::string& layout, nb::object bias, int act,
                                                nb::object residual, float alpha, const std::string& isa,
                                                bool chunk_pointers) {
  const tf::KernelTable& kt = tf::kernels_for(tf::resolve_isa(isa));
  if (a.ndim() != 2 || w.ndim() != 2) throw std::invalid_argument("a and w must be 2-D");
  const int64_t m = a.shape(0), k = a.shape(1), n = w.shape(0);
  if ((int64_t)w.shape(1) != k) throw std::invalid_argument("inner dims differ");
  const SparseF32Host h = sparse_f32_from_dense(w.data(), n, k, layout);
  tf::SparseF32 sw;
  sw.n = n;
  sw.k = k;
  sw.block_rows = h.rows;
  sw.rowptr = h.rowptr.data();
  sw.cols = h.cols.data();
  sw.values = h.values.data();
  std::vector<int32_t> chunk_ptr;
  if (kt.spf32_chunk_k > 0 && !h.group && chunk_pointers) {
    chunk_ptr = tf::build_chunk_pointers(h.rowptr, h.cols.data(), k, kt.spf32_chunk_k);
    sw.chunk_k = kt.spf32_chunk_k;
    sw.chunk_ptr = chunk_ptr.data();
  }
  tf::NmF32 nw;
  nw.n = n;
  nw.k = k;
  nw.keep = h.keep;
  nw.group = h.group;
  nw.values = h.values.data();
  nw.idx = h.idx.data();
  tf::AlignedBuf at(kt.spf32_at_size(m, k) + 64);
  const int64_t msplit = (m + 15) / 16 * 16 / 2 / 16 * 16;  // two row ranges, as threads re-lay them
  kt.spf32_pack_at(a.data(), k, m, 0, msplit, k, at.as<float>());
  kt.spf32_pack_at(a.data(), k, m, msplit, m, k, at.as<float>());
  std::vector<float> c(m * n);
  tf::Epilogue epi;
  epi.alpha = alpha;
  epi.act = act_from(act);
  F32In b, r;
  if (!bias.is_none()) { b = nb::cast<F32In>(bias); epi.bias = b.data(); }
  if (!residual.is_none()) { r = nb::cast<F32In>(residual); epi.residual = r.data(); epi.ld_residual = n; }
  const int64_t nsplit = n / 32 * 16;  // two column ranges, as threads split them
  for (auto [n0, n1] : {std::pair<int64_t, int64_t>{0, nsplit}, {nsplit, n}}) {
    if (h.group) kt.gemm_nm_f32(a.data(), k, at.as<float>(), m, nw, c.data(), n, n0, n1, epi);
    else kt.gemm_spf32(a.data(), k, at.as<float>(), m, sw, c.data(), n, n0, n1, epi);
  }
  return to_numpy(std::move(c), {(size_t)m, (size_t)n});
}

// One stored Linear (any registry format) run by the executor's own loader and dispatch.
class PyLinear {
 public:
  PyLinear(const std::map<std::string, AnyArray>& tensors, const std::string& name, const std::string& isa,
           int threads, bool csr_f32_code) {
    engine_ = std::make_unique<tf::EncoderEngine>(host_tensors(tensors), name, tf::resolve_isa(isa),
                                                  std::min(threads, 256), csr_f32_code);
  }
  nb::ndarray<nb::numpy, float> run(F32In x, int act, nb::object residual, bool u8_input) {
    const tf::Linear& L = engine_->only_linear();
    if (x.ndim() != 2 || (int64_t)x.shape(1) != L.k) throw std::invalid_argument("x must be [m, in_features]");
    const int64_t m = x.shape(0);
    F32In r;
    const float* rp = nullptr;
    if (!residual.is_none()) {
      r = nb::cast<F32In>(residual);
      if (r.ndim() != 2 || (int64_t)r.shape(0) != m || (int64_t)r.shape(1) != L.n)
        throw std::invalid_argument("residual must be [m, out_features]");
      rp = r.data();
    }
    // into a 64-byte aligned buffer, as the executor's are (time() says why), then copied out
    tf::AlignedBuf yb(m * L.n * sizeof(float));
    {
      nb::gil_scoped_release release;
      engine_->run_linear(x.data(), m, yb.as<float>(), act_from(act), rp, u8_input);
    }
    std::vector<float> y(yb.as<float>(), yb.as<float>() + m * L.n);
    return to_numpy(std::move(y), {(size_t)m, (size_t)L.n});
  }
  // best seconds per call over `iters` calls on synthetic activations (after one warm-up call); cold: the weight is
  // flushed from the caches before each call (untimed), as in a pass. The calls share one parallel region,
  // each ending at the team's barrier, as a pass's ops do (EncoderEngine::time_linear); region_per_call: each call
  // opens its own, as a lone run_linear does (a fork and a join per call: 0.8-1.0 us on 2 Ice Lake cores, a fifth
  // of a 90% block-sparse 768 x 768 call of one token: bench/results/timing_protocol_icelake.md)
  // u8_input: the input arrives quantized (and re-laid) as FFN2's does in a static INT8 pass
  // (EncoderEngine::run_linear), made once before the timed calls
  // warm_call: one untimed call before the timed ones, after the input is made (EncoderEngine::time_linear says why)
  double time(int64_t m, int iters, bool cold, bool region_per_call, bool u8_input, bool warm_call) {
    const tf::Linear& L = engine_->only_linear();
    if (m <= 0 || iters <= 0) throw std::invalid_argument("m and iters must be positive");
    // 64-byte aligned, as the executor's buffers are (a std::vector's large float output sits 16 bytes off a cache
    // line, which changes what the kernels' stores cost and so what the planner and the kernel benchmark compare)
    tf::AlignedBuf xb(m * L.k * sizeof(float)), yb(m * L.n * sizeof(float));
    float *x = xb.as<float>(), *y = yb.as<float>();
    // in [-2, 2) (_core.timing_input_range: static activation parameters are set for it)
    for (int64_t i = 0; i < m * L.k; ++i)
      x[i] = static_cast<float>(static_cast<int64_t>(((i * 2654435761u) >> 24) & 255) - 128) / 64.0f;
    nb::gil_scoped_release release;
    engine_->run_linear(x, m, y, tf::Act::None, nullptr, u8_input);
    return engine_->time_linear(x, m, y, iters, cold, region_per_call, u8_input, warm_call);
  }
  std::unique_ptr<tf::EncoderEngine> engine_;
};
}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "trimformer native core";
  m.def("detect_isa", [] { return std::string(tf::isa_name(tf::detect_isa())); });
  m.def("resolve_isa", [](const std::string& s) { return std::string(tf::isa_name(tf::resolve_isa(s))); },
        "requested"_a = "");
  m.def("has_avx512_bf16", &tf::cpu_has_avx512_bf16);
  // AMD Zen 4: 512-bit FMAs (and vpdpbusd / vdpbf16ps) issued as two 256-bit halves
  m.def("halves_512bit_fma", &tf::cpu_halves_512bit_fma);
  m.def("max_threads", [] { return omp_get_max_threads(); });
  // a Linear's float output from this many bytes on goes out by streaming stores where a kernel has them
  m.attr("stream_output_bytes") = tf::kStreamOutputBytes;
  // the range of LinearRunner.time's synthetic activations
  m.attr("timing_input_range") = nb::make_tuple(-2.0, 2.0);
  m.def("gemm_f32", &k_gemm_f32, "a"_a, "w"_a, "bias"_a = nb::none(), "act"_a = 0, "residual"_a = nb::none(),
        "alpha"_a = 1.0f, "isa"_a = "", "w_is_kn"_a = false);
  m.def("gemm_s8", &k_gemm_s8, "a"_a, "w"_a, "w_scale"_a, "a_scale"_a, "a_zp"_a, "bias"_a = nb::none(),
        "act"_a = 0, "isa"_a = "", "out_scale"_a = 0.0f, "out_zp"_a = 0);
  m.def("gemm_bsr_s8", &k_gemm_bsr_s8, "a"_a, "w"_a, "w_scale"_a, "a_scale"_a, "a_zp"_a, "bias"_a = nb::none(),
        "act"_a = 0, "isa"_a = "", "block_rows"_a = 1, "out_scale"_a = 0.0f, "out_zp"_a = 0, "pair_quads"_a = -1,
        "few_tokens"_a = false);
  // the most tokens a block-sparse INT8 call may have to run over its u8 rows (KernelTable::bsr_few_tokens; 0: none)
  m.def("bsr_few_tokens", [](const std::string& isa) { return tf::kernels_for(tf::resolve_isa(isa)).bsr_few_tokens; },
        "isa"_a = "");
  m.def("bsr_quant_pack", &k_bsr_quant_pack, "x"_a, "inv_scale"_a, "zp"_a, "isa"_a = "", "pair_quads"_a = false);
  m.def("pack_bf16", &k_pack_bf16, "w"_a, "how"_a);
  m.def("gemm_bf16", &k_gemm_bf16, "a"_a, "w_bits"_a, "bias"_a = nb::none(), "act"_a = 0);
  m.def("rowop", &k_rowop, "x"_a, "op"_a, "g"_a = nb::none(), "b"_a = nb::none(), "eps"_a = 1e-12f, "isa"_a = "");
  m.def("time_gemm", &k_time_gemm, "kind"_a, "m"_a, "n"_a, "k"_a, "iters"_a = 10, "isa"_a = "", "threads"_a = 1,
        "density"_a = 1.0, "block_rows"_a = 1);
  // the round trip of one cache line between two CPUs (core/core_distance.h): where the host placed this VM's cores
  m.def("core_roundtrip_ns", [](int cpu_a, int cpu_b, int64_t iters) {
    nb::gil_scoped_release release;
    return tf::core_roundtrip_ns(cpu_a, cpu_b, iters);
  }, "cpu_a"_a, "cpu_b"_a, "iters"_a = 20000);
  // which INT8 GEMM a level runs for calls of at least 16 rows: "amx" (tiles) or "vnni" at avx512, else the level
  m.def("gemm_s8_kernel", [](const std::string& isa) {
    const tf::Isa level = tf::resolve_isa(isa);
    if (level == tf::Isa::Avx512Vnni) return std::string(tf::cpu_has_amx_int8() ? "amx" : "vnni");
    return std::string(tf::isa_name(level));
  }, "isa"_a = "");
  // whether a level runs unstructured and 2:4 INT8 weights as pair records (BsrS8::pair_slots) rather than quads
  m.def("bsr_pair_kernel", [](const std::string& isa) {
    return tf::kernels_for(tf::resolve_isa(isa)).bsr_pack_pairs != nullptr;
  }, "isa"_a = "");
  // likewise for gemm_bf16 at the avx512 level: "amx" (tiles), "avx512_bf16" (vdpbf16ps) or "none"
  m.def("gemm_bf16_kernel", []() {
    if (tf::detect_isa() != tf::Isa::Avx512Vnni || !tf::cpu_has_avx512_bf16()) return std::string("none");
    return std::string(tf::cpu_has_amx_bf16() ? "amx" : "avx512_bf16");
  });
  // what an encoder's dense bf16 Linears run on at the detected level: "amx", "avx512_bf16" (where vdpbf16ps
  // measures faster than the float32 GEMM) or "f32" (the weights widened: no BF16 GEMM, or a slower one)
  m.def("bf16_linear_kernel", []() {
    const tf::KernelTable& kt = tf::kernels_for(tf::detect_isa());
    if (!tf::bf16_gemm_preferred(kt)) return std::string("f32");
    return std::string(tf::cpu_has_amx_bf16() ? "amx" : "avx512_bf16");
  });
  // the longest rows (inputs) whose 4x4 16-bit weights run over the pair-major re-layout (0: the level never does)
  m.def("bsr_pair_quads_max_k", [](const std::string& isa) {
    return tf::kernels_for(tf::resolve_isa(isa)).bsr_pair_quads_max_k;
  }, "isa"_a = "");
  // whether a level multiplies 4x4 block-sparse weights within [-64, 64] 8-bit (KernelTable::bsr_narrow_values)
  // whether sparse 1x4 INT8 rows run as gathered quads at that level (tf::gathered_quads_available)
  m.def("gathered_quads_kernel", [](const std::string& isa) {
    return tf::gathered_quads_available(tf::kernels_for(tf::resolve_isa(isa)));
  }, "isa"_a = "");
  // whether N:M INT8 weights run as permuted quads at that level on this CPU (tf::perm_s8_available)
  m.def("perm_s8_kernel", [](const std::string& isa) {
    return tf::perm_s8_available(tf::kernels_for(tf::resolve_isa(isa)));
  }, "isa"_a = "");
  m.def("bsr_narrow_kernel", [](const std::string& isa) {
    return tf::kernels_for(tf::resolve_isa(isa)).bsr_narrow_values;
  }, "isa"_a = "");
  m.def("attention_f32", &k_attention_f32, "qkv"_a, "heads"_a, "bias"_a, "alpha"_a, "isa"_a = "");
  m.def("attention_f32_kernel", [](const std::string& isa) {
    return tf::kernels_for(tf::resolve_isa(isa)).attention_f32 != nullptr;
  }, "isa"_a = "");
  m.def("softmax_u8", &k_softmax_u8, "x"_a, "isa"_a = "");
  m.def("softmax_bf16", &k_softmax_bf16, "x"_a, "isa"_a = "");
  m.def("quantize_u8", &k_quantize, "x"_a, "scale"_a, "zp"_a, "isa"_a = "");
  m.def("quantize_rows", &k_quantize_rows, "x"_a, "symmetric"_a = false, "pad"_a = 0, "isa"_a = "");
  m.def("quant_pack_nk", &k_quant_pack_nk, "x"_a, "k"_a, "isa"_a = "");
  // sparse runtime (issue 3)
  m.def("gemm_sparse_f32", &k_gemm_sparse_f32, "a"_a, "w"_a, "layout"_a, "bias"_a = nb::none(), "act"_a = 0,
        "residual"_a = nb::none(), "alpha"_a = 1.0f, "isa"_a = "", "chunk_pointers"_a = true);
  nb::class_<PyLinear>(m, "LinearRunner")
      .def(nb::init<const std::map<std::string, AnyArray>&, const std::string&, const std::string&, int, bool>(),
           "tensors"_a, "name"_a, "isa"_a = "", "threads"_a = 1, "csr_f32_code"_a = true)
      .def("run", &PyLinear::run, "x"_a, "act"_a = 0, "residual"_a = nb::none(), "u8_input"_a = false)
      .def("time", &PyLinear::time, "m"_a = 128, "iters"_a = 5, "cold"_a = false, "region_per_call"_a = false,
           "u8_input"_a = false, "warm_call"_a = true)
      .def_prop_ro("kind", [](PyLinear& p) { return std::string(tf::linear_kind_name(p.engine_->only_linear().kind)); })
      .def_prop_ro("kernel", [](PyLinear& p) { return tf::linear_kernel(p.engine_->only_linear()); })
      .def_prop_ro("isa", [](PyLinear& p) { return std::string(tf::isa_name(p.engine_->isa())); })
      .def_prop_ro("weight_bytes", [](PyLinear& p) { return p.engine_->only_linear().weight_bytes(); })
      // 1x4-block INT8 rows run as row pairs at this level (BsrS8::pair_tile)
      .def_prop_ro("row_pairs", [](PyLinear& p) { return !p.engine_->only_linear().bsr_pair_tile.empty(); })
      .def_prop_ro("gathered_quads", [](PyLinear& p) { return p.engine_->only_linear().gathered(); })
      .def_prop_ro("jit_code_bytes", [](PyLinear& p) {
        const tf::Linear& L = p.engine_->only_linear();
        return L.spf32_jit ? L.spf32_jit->code_bytes() : size_t{0};
      });
  nb::class_<PyEncoder>(m, "EncoderEngine")
      .def(nb::init<const nb::dict&, const std::map<std::string, AnyArray>&, const std::string&, int>(), "config"_a, "tensors"_a,
           "isa"_a = "", "threads"_a = 1)
      .def("run", &PyEncoder::run, "input_ids"_a, "attention_mask"_a = nb::none(), "token_type_ids"_a = nb::none(),
           "pooling"_a = "", "normalize"_a = false)
      .def_prop_ro("isa", [](PyEncoder& e) { return std::string(tf::isa_name(e.engine_->isa())); })
      .def_prop_rw("threads", [](PyEncoder& e) { return e.engine_->threads(); },
                   [](PyEncoder& e, int t) { e.engine_->set_threads(t > 256 ? 256 : t); })
      .def("set_observe", [](PyEncoder& e, bool on) { e.engine_->set_observe(on); })
      .def("observed_ranges", [](PyEncoder& e) { return e.engine_->observed_ranges(); })
      .def("set_histograms", [](PyEncoder& e, const std::map<std::string, std::pair<float, float>>& r, int bins) {
        e.engine_->set_histograms(r, bins);
      })
      .def("histograms", [](PyEncoder& e) { return e.engine_->histograms(); })
      .def("set_profile", [](PyEncoder& e, bool on) { e.engine_->set_profile(on); })
      .def("profile", [](PyEncoder& e) { return e.engine_->profile(); })
      .def("reset_observers", [](PyEncoder& e) { e.engine_->reset_observers(); })
      .def_prop_ro("packed_bytes", [](PyEncoder& e) { return e.engine_->packed_bytes(); })
      .def_prop_ro("qkv_s8_layers", [](PyEncoder& e) { return e.engine_->qkv_s8_layers(); })
      .def_prop_ro("linear_kernels", [](PyEncoder& e) {
        nb::dict d;
        for (const auto& [name, kernel] : e.engine_->linear_kernels()) d[nb::str(name.c_str())] = kernel;
        return d;
      });
  tf::register_decoder(m);
}
