// Python bindings of the decoder executor and of the decoder kernels (the latter for property tests).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "bindings_common.h"
#include "core/decoder_kernels.h"
#include "executor/decoder.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using I64In = nb::ndarray<const int64_t, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using F32In = nb::ndarray<const float, nb::ro, nb::c_contig, nb::device::cpu>;
using U8In = nb::ndarray<const uint8_t, nb::ro, nb::c_contig, nb::device::cpu>;

using tf::to_numpy;

class PyDecoder {
 public:
  PyDecoder(const nb::dict& config, const std::map<std::string, tf::AnyArray>& tensors, const std::string& isa,
            int threads) {
    tf::DecoderConfig c;
    auto geti = [&](const char* k) { return nb::cast<int64_t>(config[k]); };
    c.arch = static_cast<int>(geti("arch"));
    c.hidden = geti("hidden");
    c.layers = geti("layers");
    c.heads = geti("heads");
    c.kv_heads = geti("kv_heads");
    c.head_dim = geti("head_dim");
    c.intermediate = geti("intermediate");
    c.vocab = geti("vocab");
    c.max_positions = geti("max_positions");
    c.norm_eps = nb::cast<float>(config["norm_eps"]);
    c.rope_theta = nb::cast<float>(config["rope_theta"]);
    c.act = static_cast<int>(geti("act"));
    c.embed_from_head = config.contains("embed_from_head") && nb::cast<bool>(config["embed_from_head"]);
    if (c.arch < 0 || c.arch > 1 || c.act < 0 || c.act > 2) throw std::invalid_argument("bad decoder arch / act");
    engine_ = std::make_unique<tf::DecoderEngine>(c, tf::host_tensors(tensors), tf::resolve_isa(isa),
                                                  threads > 256 ? 256 : threads);
  }

  void begin(int64_t batch, int64_t capacity) { engine_->begin(batch, capacity); }

  nb::ndarray<nb::numpy, float> forward(I64In ids, nb::object mask, int mode, nb::object targets) {
    const int64_t B = ids.shape(0), T = ids.shape(1);
    I64In m, tg;
    const int64_t* mp = nullptr;
    const int64_t* tp = nullptr;
    if (!mask.is_none()) {
      m = nb::cast<I64In>(mask);
      if (m.shape(0) != (size_t)B || m.shape(1) != (size_t)T) throw std::invalid_argument("mask shape differs from ids");
      mp = m.data();
    }
    if (!targets.is_none()) {
      tg = nb::cast<I64In>(targets);
      if (tg.shape(0) != (size_t)B || tg.shape(1) != (size_t)T)
        throw std::invalid_argument("targets shape differs from ids");
      tp = tg.data();
    }
    std::vector<float> out;
    {
      nb::gil_scoped_release release;
      engine_->forward(ids.data(), mp, B, T, mode, tp, &out);
    }
    const size_t V = static_cast<size_t>(vocab());
    if (mode == 0) return to_numpy(std::move(out), {(size_t)B, V});
    if (mode == 1) return to_numpy(std::move(out), {(size_t)B, (size_t)T, V});
    return to_numpy(std::move(out), {(size_t)B, (size_t)T});
  }

  int64_t vocab() const { return vocab_ ? vocab_ : 0; }
  std::unique_ptr<tf::DecoderEngine> engine_;
  int64_t vocab_ = 0;
};

tf::KbitWeight kbit_view(U8In codes, F32In scales, nb::object offsets, int mode, int64_t k, int64_t group,
                         F32In lut, std::vector<float>* off_store) {
  tf::KbitWeight w;
  if (mode < 0 || mode > 4) throw std::invalid_argument("bad k-bit mode");
  if (group <= 0 || group > k) throw std::invalid_argument("group must be in [1, k]");
  w.mode = static_cast<tf::KbitMode>(mode);
  w.n = codes.shape(0);
  w.k = k;
  w.group = group;
  w.row_bytes = codes.shape(1);
  const int64_t need = w.mode == tf::KbitMode::Lut4 ? (k + 31) / 32 * 16 : k;
  if (w.row_bytes != need) throw std::invalid_argument("code rows have the wrong size");
  if (scales.size() != (size_t)(w.n * ((k + group - 1) / group))) throw std::invalid_argument("scales have the wrong size");
  if (lut.size() != 16) throw std::invalid_argument("lut must have 16 entries");
  w.codes = codes.data();
  w.scales = scales.data();
  if (!offsets.is_none()) {
    F32In o = nb::cast<F32In>(offsets);
    if (o.size() != scales.size()) throw std::invalid_argument("offsets have the wrong size");
    off_store->assign(o.data(), o.data() + o.size());
    w.offsets = off_store->data();
  }
  for (int i = 0; i < 16; ++i) w.lut[i] = lut.data()[i];
  return w;
}

// A BitmaskWeight over caller-owned mask bytes [n, 8 * ceil(k / 64)]; rowptr from the popcounts (kept in *rowptr)
tf::BitmaskWeight bitmask_view(U8In mask, int64_t k, int64_t nnz, std::vector<uint64_t>* words_store,
                               std::vector<int64_t>* rowptr) {
  tf::BitmaskWeight w;
  if (mask.ndim() != 2 || k <= 0) throw std::invalid_argument("mask must be [n, 8 * ceil(k / 64)]");
  w.n = mask.shape(0);
  w.k = k;
  w.words = (k + 63) / 64;
  if ((int64_t)mask.shape(1) != 8 * w.words) throw std::invalid_argument("mask rows have the wrong size");
  words_store->resize(w.n * w.words);
  std::memcpy(words_store->data(), mask.data(), w.n * w.words * 8);
  rowptr->assign(w.n + 1, 0);
  const uint64_t tail = (k % 64) ? ~((uint64_t{1} << (k % 64)) - 1) : 0;
  for (int64_t r = 0; r < w.n; ++r) {
    if ((*words_store)[r * w.words + w.words - 1] & tail) throw std::invalid_argument("mask bits past k");
    int64_t c = 0;
    for (int64_t i = 0; i < w.words; ++i) c += __builtin_popcountll((*words_store)[r * w.words + i]);
    (*rowptr)[r + 1] = (*rowptr)[r] + c;
  }
  if ((*rowptr)[w.n] != nnz) throw std::invalid_argument("values do not match the mask's popcount");
  w.mask = words_store->data();
  w.rowptr = rowptr->data();
  return w;
}

}  // namespace

namespace tf {

void register_decoder(nb::module_& m) {
  nb::class_<PyDecoder>(m, "DecoderEngine")
      .def("__init__",
           [](PyDecoder* self, const nb::dict& config, const std::map<std::string, AnyArray>& tensors,
              const std::string& isa, int threads) {
             new (self) PyDecoder(config, tensors, isa, threads);
             self->vocab_ = nb::cast<int64_t>(config["vocab"]);
           },
           "config"_a, "tensors"_a, "isa"_a = "", "threads"_a = 1)
      .def("begin", &PyDecoder::begin, "batch"_a, "capacity"_a)
      .def("forward", &PyDecoder::forward, "ids"_a, "mask"_a = nb::none(), "mode"_a = 0, "targets"_a = nb::none())
      .def_prop_ro("length", [](PyDecoder& e) { return e.engine_->length(); })
      .def_prop_ro("capacity", [](PyDecoder& e) { return e.engine_->capacity(); })
      .def_prop_ro("batch", [](PyDecoder& e) { return e.engine_->batch(); })
      .def_prop_ro("isa", [](PyDecoder& e) { return std::string(isa_name(e.engine_->isa())); })
      .def_prop_ro("weight_bytes", [](PyDecoder& e) { return e.engine_->weight_bytes(); })
      .def_prop_ro("cache_bytes", [](PyDecoder& e) { return e.engine_->cache_bytes(); })
      .def_prop_rw("threads", [](PyDecoder& e) { return e.engine_->threads(); },
                   [](PyDecoder& e, int t) { e.engine_->set_threads(t > 256 ? 256 : t); });

  // kernel entry points for tests: y = x . W^T through the GEMV path, and the dequantized W
  m.def("kbit_gemv", [](F32In x, U8In codes, F32In scales, nb::object offsets, int mode, int64_t k, int64_t group,
                        F32In lut, const std::string& isa) {
    std::vector<float> off;
    const KbitWeight w = kbit_view(codes, scales, offsets, mode, k, group, lut, &off);
    if (x.ndim() != 2 || (int64_t)x.shape(1) != k) throw std::invalid_argument("x must be [m, k]");
    const DecoderKernels& dk = decoder_kernels_for(resolve_isa(isa));
    const int64_t mrows = x.shape(0), G = (k + group - 1) / group;
    std::vector<float> xs(mrows * G), y(mrows * w.n);
    dk.group_sums(x.data(), k, mrows, k, group, xs.data());
    dk.kbit_gemv(x.data(), k, mrows, w, xs.data(), y.data(), w.n, 0, w.n);
    return to_numpy(std::move(y), {(size_t)mrows, (size_t)w.n});
  }, "x"_a, "codes"_a, "scales"_a, "offsets"_a.none(), "mode"_a, "k"_a, "group"_a, "lut"_a, "isa"_a = "");
  m.def("kbit_gemv_a8", [](F32In x, U8In codes, F32In scales, nb::object offsets, int mode, int64_t k,
                           int64_t group, F32In lut, const std::string& isa, bool gemm) {
    std::vector<float> off;
    const KbitWeight w = kbit_view(codes, scales, offsets, mode, k, group, lut, &off);
    if (x.ndim() != 2 || (int64_t)x.shape(1) != k) throw std::invalid_argument("x must be [m, k]");
    if (!a8_vector_layout(w.mode, k, group))
      throw std::invalid_argument("W4A8 needs 4-bit codes, k % 64 == 0 and group 32 or a multiple of 64");
    const DecoderKernels& dk = decoder_kernels_for(resolve_isa(isa));
    if (gemm && !dk.kbit_gemm_a8) throw std::invalid_argument("no W4A8 prefill GEMM at this ISA level");
    const int64_t mrows = x.shape(0), G = (k + group - 1) / group, ldxq = (k + 63) / 64 * 64;
    std::vector<int8_t> xq(mrows * ldxq);
    std::vector<float> ax(mrows), xs(mrows * G), y(mrows * w.n);
    dk.quantize_a8(x.data(), k, mrows, k, group, xq.data(), ldxq, ax.data(), xs.data());
    (gemm ? dk.kbit_gemm_a8 : dk.kbit_gemv_a8)(xq.data(), ldxq, ax.data(), mrows, w, xs.data(), y.data(), w.n, 0, w.n);
    return to_numpy(std::move(y), {(size_t)mrows, (size_t)w.n});
  }, "x"_a, "codes"_a, "scales"_a, "offsets"_a.none(), "mode"_a, "k"_a, "group"_a, "lut"_a, "isa"_a = "",
     "gemm"_a = false);
  // W4A8's activation quantization alone: (xq [m][ldxq] in the a8 layout, ax [m], qsum [m][groups])
  m.def("quantize_a8", [](F32In x, int64_t group, const std::string& isa) {
    if (x.ndim() != 2 || group <= 0) throw std::invalid_argument("x must be [m, k] and group positive");
    const int64_t mrows = x.shape(0), k = x.shape(1), G = (k + group - 1) / group, ldxq = (k + 63) / 64 * 64;
    std::vector<int8_t> xq(mrows * ldxq);
    std::vector<float> ax(mrows), xs(mrows * G);
    decoder_kernels_for(resolve_isa(isa)).quantize_a8(x.data(), k, mrows, k, group, xq.data(), ldxq, ax.data(),
                                                       xs.data());
    return nb::make_tuple(to_numpy(std::move(xq), {(size_t)mrows, (size_t)ldxq}),
                          to_numpy(std::move(ax), {(size_t)mrows}), to_numpy(std::move(xs), {(size_t)mrows, (size_t)G}));
  }, "x"_a, "group"_a, "isa"_a = "");
  // whether this ISA level has the W4A8 prefill GEMM (kbit_gemm_a8)
  m.def("kbit_gemm_a8_available", [](const std::string& isa) {
    return decoder_kernels_for(resolve_isa(isa)).kbit_gemm_a8 != nullptr;
  }, "isa"_a = "");
  m.def("kbit_dequant", [](U8In codes, F32In scales, nb::object offsets, int mode, int64_t k, int64_t group, F32In lut,
                           const std::string& isa) {
    std::vector<float> off;
    const KbitWeight w = kbit_view(codes, scales, offsets, mode, k, group, lut, &off);
    const DecoderKernels& dk = decoder_kernels_for(resolve_isa(isa));
    std::vector<float> out(w.n * k);
    dk.kbit_dequant(w, 0, w.n, out.data());
    return to_numpy(std::move(out), {(size_t)w.n, (size_t)k});
  }, "codes"_a, "scales"_a, "offsets"_a.none(), "mode"_a, "k"_a, "group"_a, "lut"_a, "isa"_a = "");
  // bitmask sparse kernels (tests): (y = x . W^T by the decode GEMV, W as the prefill packing sees it)
  m.def("bitmask_f32", [](F32In x, U8In mask, F32In values, int64_t k, const std::string& isa) {
    std::vector<uint64_t> words;
    std::vector<int64_t> rowptr;
    BitmaskWeight w = bitmask_view(mask, k, values.size(), &words, &rowptr);
    std::vector<float> vals(values.data(), values.data() + values.size());
    vals.resize(vals.size() + 16, 0.0f);
    w.values = vals.data();
    if (x.ndim() != 2 || (int64_t)x.shape(1) != k) throw std::invalid_argument("x must be [m, k]");
    const DecoderKernels& dk = decoder_kernels_for(resolve_isa(isa));
    const int64_t mrows = x.shape(0);
    std::vector<float> y(mrows * w.n);
    dk.bitmask_gemv_f32(x.data(), k, mrows, w, y.data(), w.n, 0, w.n);
    // the FP32 prefill packing, unpacked again from the panel layout [panel][k][nr]
    const KernelTable& kt = kernels_for(resolve_isa(isa));
    const int64_t nr = kt.f32_nr;
    std::vector<float> packed(kt.pack_f32_size(w.n, k) / 4), dense(w.n * k);
    kt.pack_f32_bitmask(w.mask, w.words, w.values, w.n, k, packed.data());
    for (int64_t r = 0; r < w.n; ++r)
      for (int64_t j = 0; j < k; ++j) dense[r * k + j] = packed[(r / nr) * nr * k + j * nr + r % nr];
    return nb::make_tuple(to_numpy(std::move(y), {(size_t)mrows, (size_t)w.n}),
                          to_numpy(std::move(dense), {(size_t)w.n, (size_t)k}));
  }, "x"_a, "mask"_a, "values"_a, "k"_a, "isa"_a = "");
  m.def("bitmask_s8", [](nb::ndarray<const uint8_t, nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> q, F32In rs,
                         F32In zp, U8In mask, nb::ndarray<const int8_t, nb::ro, nb::c_contig, nb::device::cpu> qvalues,
                         F32In w_scale, int64_t k, const std::string& isa) {
    std::vector<uint64_t> words;
    std::vector<int64_t> rowptr;
    BitmaskWeight w = bitmask_view(mask, k, qvalues.size(), &words, &rowptr);
    std::vector<int8_t> vals(qvalues.data(), qvalues.data() + qvalues.size());
    vals.resize(vals.size() + 64, 0);
    std::vector<int32_t> col_sum(w.n, 0);
    for (int64_t r = 0; r < w.n; ++r)
      for (int64_t j = rowptr[r]; j < rowptr[r + 1]; ++j) col_sum[r] += vals[j];
    if (w_scale.size() != (size_t)w.n) throw std::invalid_argument("w_scale must have n entries");
    w.qvalues = vals.data();
    w.w_scale = w_scale.data();
    w.col_sum = col_sum.data();
    const int64_t mrows = q.shape(0), ldq = q.shape(1);
    if (ldq < k || rs.size() != (size_t)mrows || zp.size() != (size_t)mrows)
      throw std::invalid_argument("q must be [m, >= k] with m row scales and zero points");
    const DecoderKernels& dk = decoder_kernels_for(resolve_isa(isa));
    std::vector<float> y(mrows * w.n);
    std::vector<int8_t> dense(w.n * k);
    dk.bitmask_gemv_s8(q.data(), ldq, mrows, w, rs.data(), zp.data(), y.data(), w.n, 0, w.n);
    dk.bitmask_expand_s8(w, 0, w.n, dense.data());
    std::vector<float> dense_f(dense.begin(), dense.end());
    return nb::make_tuple(to_numpy(std::move(y), {(size_t)mrows, (size_t)w.n}),
                          to_numpy(std::move(dense_f), {(size_t)w.n, (size_t)k}));
  }, "q"_a, "rs"_a, "zp"_a, "mask"_a, "qvalues"_a, "w_scale"_a, "k"_a, "isa"_a = "");
  m.def("bitmask_s8_kernel", [](const std::string& isa) {
    return std::string(decoder_kernels_for(resolve_isa(isa)).bitmask_s8_kernel);
  }, "isa"_a = "");
}

}  // namespace tf
