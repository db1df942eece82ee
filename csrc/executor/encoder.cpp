#include "encoder.h"
#include "host_tensors.h"

#include <emmintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <exception>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace tf {

AlignedBuf::~AlignedBuf() { std::free(ptr_); }

void AlignedBuf::reserve(size_t bytes) {
  if (bytes <= size_) return;
  std::free(ptr_);
  const size_t rounded = (bytes + 63) / 64 * 64;
  ptr_ = std::aligned_alloc(64, rounded);
  if (!ptr_) throw std::bad_alloc();
  size_ = rounded;
}

namespace {

std::vector<float> copy_f32(const std::map<std::string, HostTensor>& t, const std::string& name,
                            const std::vector<int64_t>& shape) {
  return copy_tensor<float>(t, name, 'f', shape);
}

// Values stored as float32 or as bf16 bit patterns (uint16: block-bf16, nm-bf16), widened to float32 here.
std::vector<float> copy_f32_or_bf16(const std::map<std::string, HostTensor>& t, const std::string& name,
                                    const std::vector<int64_t>& shape) {
  auto it = t.find(name);
  if (it == t.end() || it->second.dtype != 'h') return copy_f32(t, name, shape);
  const HostTensor& v = need(t, name, 'h', shape);
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return widen_bf16(static_cast<const uint16_t*>(v.data), n);
}

// An index array stored as int32 or (when every index fits) uint16, widened to int32.
std::vector<int32_t> copy_index(const std::map<std::string, HostTensor>& t, const std::string& name,
                                std::vector<int64_t> shape) {
  auto it = t.find(name);
  if (it == t.end()) throw std::invalid_argument("missing tensor '" + name + "'");
  const char dt = it->second.dtype == 'h' ? 'h' : 'i';
  const HostTensor& h = need(t, name, dt, shape);
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<int32_t> out(n);
  if (dt == 'h') {
    const uint16_t* p = static_cast<const uint16_t*>(h.data);
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    const int32_t* p = static_cast<const int32_t*>(h.data);
    std::copy(p, p + n, out.begin());
  }
  return out;
}

// Row (block) pointers: start at 0, never decrease, end at the entry count; entries within a row strictly
// increase and lie in [0, limit). Anything else is a corrupt file: an error here, never a bad read in a kernel.
void check_rows(const std::string& name, const std::vector<int32_t>& rowptr, const std::vector<int32_t>& cols,
                int64_t limit) {
  if (rowptr.empty() || rowptr[0] != 0) throw std::invalid_argument("'" + name + "': row pointers must start at 0");
  for (size_t b = 0; b + 1 < rowptr.size(); ++b) {
    if (rowptr[b + 1] < rowptr[b]) throw std::invalid_argument("'" + name + "': row pointers decrease");
    if (rowptr[b + 1] > static_cast<int64_t>(cols.size()))
      throw std::invalid_argument("'" + name + "': row pointers run past the stored entries");
    for (int32_t j = rowptr[b]; j < rowptr[b + 1]; ++j) {
      if (cols[j] < 0 || cols[j] >= limit) throw std::invalid_argument("'" + name + "': column index out of range");
      if (j > rowptr[b] && cols[j] <= cols[j - 1])
        throw std::invalid_argument("'" + name + "': column indices within a row must increase");
    }
  }
  if (rowptr.back() != static_cast<int64_t>(cols.size()))
    throw std::invalid_argument("'" + name + "': the last row pointer must equal the number of entries");
}

std::vector<int32_t> read_shape(const std::map<std::string, HostTensor>& t, const std::string& name, int64_t len) {
  const HostTensor& h = need(t, name, 'i', {len});
  const int32_t* p = static_cast<const int32_t*>(h.data);
  std::vector<int32_t> v(p, p + len);
  if (v[0] <= 0 || v[1] <= 0) throw std::invalid_argument("'" + name + "': shape must be positive");
  return v;
}

// How the threads of one Linear share the GEMM: by weight panels (output columns), by rows (tokens), or by
// panels unless there are too few of them
enum class Split { Auto, Cols, Rows };

// The workspace and team size of the layer ops the calling thread runs: the engine's first workspace and full
// team, or, inside side-by-side sequence groups, that thread's own workspace and a team of one.
thread_local Workspace* tl_ws = nullptr;
thread_local int tl_team = 0;

// The first exception a team's threads raised inside a parallel region, rethrown by the caller after the region
// (an exception must not leave an OpenMP region, and a thread that skipped a barrier would leave the others
// waiting at it: each piece of work runs guarded and every thread still reaches every barrier).
struct TeamError {
  std::exception_ptr first;
  template <class F>
  void guard(F&& f) {
    try {
      f();
    } catch (...) {
#pragma omp critical(tf_team_error)
      if (!first) first = std::current_exception();
    }
  }
  void rethrow() {
    if (first) std::rethrow_exception(std::exchange(first, nullptr));
  }
};

// Inside EncoderEngine::run's one parallel region for the whole pass (tl_team_error set): every op takes its share
// of the current team instead of opening a region of its own, and ends with a barrier unless the next op reads
// only rows this thread wrote (LinearIO::rows_stay)
thread_local TeamError* tl_team_error = nullptr;

// fn(i) for i in [0, n) split statically over the threads: a worksharing loop of the pass's region (its implicit
// barrier ends it), or a region of its own with nt threads
template <class Fn>
void team_for(int nt, int64_t n, Fn fn) {
  if (TeamError* err = tl_team_error) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) err->guard([&] { fn(i); });
    return;
  }
  TeamError err;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) err.guard([&] { fn(i); });
  err.rethrow();
}

// The epilogue of rows m0.. of a call, for running those rows as a call of their own
Epilogue rows_from(const Epilogue& e, int64_t m0, int64_t at_tile) {
  Epilogue r = e;
  if (r.row_scale) r.row_scale += m0;
  if (r.row_zp) r.row_zp += m0;
  if (r.residual) r.residual += m0 * r.ld_residual;
  if (r.out_u8) r.out_u8 += m0 * r.ld_out_u8;
  if (r.out_at) r.out_at += bsr_at_offset(m0, r.out_at_k, at_tile);
  if (r.out_at_f32) r.out_at_f32 += m0 * ((r.out_at_f32_k + 7) / 8 * 8);  // m0 a multiple of the re-layout's tile
  r.qkv.token0 += m0;
  r.qkv_s8.token0 += m0;
  r.qkv_f32.token0 += m0;
  return r;
}

// A sparse Linear with at least two FP32 re-layout tiles (kSparseAtTile tokens; four block-sparse INT8 ones) per
// thread splits its tokens between the threads in whole tiles (each keeps the whole weight and only its own part
// of the re-layout in L2); with fewer it splits its output rows.
bool sparse_split_tokens(int64_t m, int nt) { return nt > 1 && m >= 2 * kSparseAtTile * nt; }

// Below that, a block-sparse INT8 Linear still splits its tokens, in multiples of 16, from one full token pass (64)
// per thread on: a row split makes every thread read the whole re-layout, half of it written by the other core
// (after a barrier), and leaves each thread's output rows (the residual stream the next LayerNorm reads by tokens)
// half in the other core's cache. BERT-base 90% block static INT8, 2 threads:
// bench/results/profile_block90_int8_smallsplit_*.md. QKV is the exception (EncoderEngine::splits_tokens).
bool bsr_split_short(int64_t m, int nt) { return nt > 1 && m >= 64 * nt && !sparse_split_tokens(m, nt); }

// Tokens per piece of a long token split of a block-sparse INT8 Linear (EncoderEngine::linear): a multiple of
// kSparseAtTile, where those shares start
constexpr int64_t kBsrPieceTokens = 128;

// The most tokens a block-sparse INT8 call runs over its u8 rows (KernelTable::bsr_few_tokens, at most this)
constexpr int64_t kFewTokensMax = 16;

// One parallel region per Linear: each thread prepares its share of rows (quantizes / converts the input), then
// runs the GEMM on its share of weight panels (after a barrier), or on the rows it prepared when there are too few
// panels, and, with has_post, post(lo, hi) on its share of finished rows (LinearIO::ln_gamma). Every gemm(m0, m1,
// ...) of a row split reads only the prepared rows m0 .. m1 - 1.
// With `groups` > 1 (n / groups a multiple of nr) a column split gives each thread the same share of every group.
struct NoPost {
  void operator()(int64_t, int64_t) const {}
};

// Inside the pass's region (tl_team_error) the current team runs it, and it ends with a barrier unless rows_stay.
// prep_barrier = false: the column split's gemm reads nothing prep wrote (each thread prepares what it reads itself)
template <class Prep, class Gemm, class Post = NoPost>
void parallel_linear(int nt, int64_t m, int64_t n, int64_t nr, Prep prep, Gemm gemm, Split split = Split::Auto,
                     int64_t row_align = 1, int64_t groups = 1, bool has_post = false, Post post = Post(),
                     bool rows_stay = false, bool prep_barrier = true) {
  const bool split_n = split == Split::Cols || (split == Split::Auto && (n / nr) >= 2 * nt);
  if (groups < 1 || n % groups != 0 || (n / groups) % nr != 0) groups = 1;
  const int64_t gn = n / groups;
  const auto share = [&](TeamError& err) {
    const int i = omp_get_thread_num(), cnt = omp_get_num_threads();
    int64_t lo, hi;
    split_range(m, row_align, cnt, i, &lo, &hi);
    if (lo < hi) err.guard([&] { prep(lo, hi); });
    if (split_n) {
      // a column split reads every thread's prepared rows; a row split only the rows this thread just prepared
      // (the same lo, hi): no barrier there, so a thread that is done early goes on to its GEMM
      if (prep_barrier) {
#pragma omp barrier
      }
      int64_t n0, n1;
      split_range(gn, nr, cnt, i, &n0, &n1);
      err.guard([&] {
        for (int64_t g = 0; g < groups && n0 < n1; ++g) gemm(int64_t{0}, m, g * gn + n0, g * gn + n1);
      });
    } else if (lo < hi) {
      err.guard([&] { gemm(lo, hi, int64_t{0}, n); });
    }
    if (has_post) {  // on finished rows: this thread's own under a row split, any after a column split's barrier
      if (split_n) {
#pragma omp barrier
      }
      if (lo < hi) err.guard([&] { post(lo, hi); });
    }
  };
  if (TeamError* err = tl_team_error) {
    share(*err);
    if (!rows_stay || split_n) {
#pragma omp barrier
    }
    return;
  }
  TeamError err;
#pragma omp parallel num_threads(nt)
  share(err);
  err.rethrow();
}

}  // namespace

bool bf16_gemm_preferred(const KernelTable& kt) {
  if (!kt.gemm_bf16 || !cpu_has_avx512_bf16()) return false;
  if (cpu_has_amx_bf16()) return true;
  static const bool faster = [&kt] {
    // one thread, 64 tokens x 512 inputs x 256 outputs, each kernel with its own packing and (for bf16) the
    // activations' conversion, as a Linear runs them; best of 5 interleaved calls
    const int64_t m = 64, n = 256, k = 512;
    std::vector<float> a(m * k), c(m * n);
    std::vector<uint16_t> bits(n * k), a16(m * k);
    for (int64_t i = 0; i < m * k; ++i) a[i] = static_cast<float>((i * 37) % 101) / 101.0f - 0.5f;
    for (int64_t i = 0; i < n * k; ++i) bits[i] = static_cast<uint16_t>(0x3c00 + (i * 13) % 512);  // ~0.01-0.03
    const std::vector<float> wide = widen_bf16(bits.data(), n * k);
    AlignedBuf pf, pb;
    pf.reserve(kt.pack_f32_size(n, k));
    kt.pack_f32_nk(wide.data(), k, n, k, pf.as<float>());
    pb.reserve(kt.pack_bf16_size(n, k));
    kt.pack_bf16(bits.data(), n, k, pb.as<void>());
    const Epilogue epi;
    double best_f32 = 1e30, best_bf16 = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      kt.gemm_f32(a.data(), k, pf.as<float>(), n, k, c.data(), n, 0, m, 0, n, epi);
      auto t1 = std::chrono::steady_clock::now();
      kt.to_bf16_rows(a.data(), k, a16.data(), k, m, k);
      kt.gemm_bf16(a16.data(), k, pb.as<void>(), n, k, c.data(), n, 0, m, 0, n, epi);
      auto t2 = std::chrono::steady_clock::now();
      best_f32 = std::min(best_f32, std::chrono::duration<double>(t1 - t0).count());
      best_bf16 = std::min(best_bf16, std::chrono::duration<double>(t2 - t1).count());
    }
    return best_bf16 < best_f32;
  }();
  return faster;
}

const char* linear_kind_name(LinearKind kind) {
  switch (kind) {
    case LinearKind::Bf16: return "bf16";
    case LinearKind::Int8: return "int8";
    case LinearKind::BsrS8: return "bsr-s8";
    case LinearKind::SparseF32: return "sparse-f32";
    case LinearKind::NmF32: return "nm-f32";
    case LinearKind::PermS8: return "perm-s8";
    default: return "f32";
  }
}

std::string linear_kernel(const Linear& L) {
  std::string s = linear_kind_name(L.kind);
  if (L.kind == LinearKind::BsrS8 && L.gathered()) s += ", gathered quads";
  else if (L.kind == LinearKind::BsrS8 && !L.bsr_pair_tile.empty()) s += ", row pairs";
  else if (L.kind == LinearKind::BsrS8 && L.bsr_pair_slots) s += ", pair records";
  if (L.spf32_jit) {
    char mb[32];
    std::snprintf(mb, sizeof mb, "%.1f", static_cast<double>(L.spf32_jit->code_bytes()) / (1 << 20));
    s += std::string(", generated code ") + mb + " MiB";
  }
  return s;
}

namespace {
// f(data, bytes) for each array a Linear's weight occupies: the one list weight_bytes and evict walk
template <class F>
void for_each_weight_array(const Linear& L, F f) {
  const auto vec = [&](const auto& v) { f(v.data(), v.size() * sizeof(v[0])); };
  f(L.packed.as<char>(), L.packed.size());
  vec(L.bsr_rowptr);
  vec(L.bsr_cols);
  vec(L.bsr_values);
  vec(L.bsr_values16);
  vec(L.sp_values);
  vec(L.sp_chunk_ptr);
  vec(L.nm_idx);
  vec(L.bsr_pair_tile);
  vec(L.bsr_pair_ptr);
  vec(L.bsr_pair_cols);
  vec(L.bsr_pair_voff);
  vec(L.bsr_pair_rows);
  vec(L.bsr_pair_values);
  vec(L.bsr_gq_ptr);
  vec(L.bsr_gq_inputs);
  vec(L.bsr_gq_values);
  vec(L.perm_panel_off);
  vec(L.perm_steps);
  if (L.spf32_jit) {
    f(L.spf32_jit->code(), L.spf32_jit->code_bytes());
    vec(L.spf32_jit->values());
  }
}
}  // namespace

size_t Linear::weight_bytes() const {
  size_t bytes = 0;
  for_each_weight_array(*this, [&](const void*, size_t b) { bytes += b; });
  return bytes;
}

void Linear::evict() const {
  const auto flush = [](const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    for (size_t i = 0; i < bytes; i += 64) _mm_clflush(c + i);
  };
  for_each_weight_array(*this, flush);
  flush(bias.data(), bias.size() * 4);
  flush(w_scale.data(), w_scale.size() * 4);
  flush(col_sum.data(), col_sum.size() * 4);
  _mm_mfence();
}

std::vector<int32_t> build_chunk_pointers(const std::vector<int32_t>& rowptr, const int32_t* cols, int64_t k,
                                          int64_t chunk_k) {
  const int64_t chunks = (k + chunk_k - 1) / chunk_k, rows = static_cast<int64_t>(rowptr.size()) - 1;
  std::vector<int32_t> out(rows * (chunks + 1));
  for (int64_t b = 0; b < rows; ++b) {
    int32_t j = rowptr[b];
    for (int64_t c = 0; c < chunks; ++c) {
      out[b * (chunks + 1) + c] = j;
      while (j < rowptr[b + 1] && cols[j] < (c + 1) * chunk_k) ++j;
    }
    out[b * (chunks + 1) + chunks] = rowptr[b + 1];
  }
  return out;
}

void EncoderEngine::load_linear(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t) {
  L->name = name;
  if (t.count(name + ".csr_rowptr")) {
    load_csr(L, name, t);
    if (t.count(name + ".bias")) L->bias = copy_f32(t, name + ".bias", {L->n});
    return;
  }
  if (t.count(name + ".b41_rowptr")) {
    load_block_f32(L, name, t);
    if (t.count(name + ".bias")) L->bias = copy_f32(t, name + ".bias", {L->n});
    return;
  }
  if (t.count(name + ".nm_shape")) {
    load_nm(L, name, t);
    if (t.count(name + ".bias")) L->bias = copy_f32(t, name + ".bias", {L->n});
    return;
  }
  auto it = t.find(name + ".weight");
  auto itq = t.find(name + ".qweight");
  auto itb = t.find(name + ".bweight");
  auto its = t.find(name + ".bsr_values");
  if (its != t.end()) {
    load_block_sparse(L, name, t);
  } else if (itb != t.end()) {
    const HostTensor& w = itb->second;
    if (w.dtype != 'h' || w.shape.size() != 2) throw std::invalid_argument("bad bweight '" + name + "'");
    L->n = w.shape[0];
    L->k = w.shape[1];
    const uint16_t* bits = static_cast<const uint16_t*>(w.data);
    if (bf16_gemm_preferred(*kt_)) {
      L->bf16 = true;
      L->kind = LinearKind::Bf16;
      L->packed.reserve(kt_->pack_bf16_size(L->n, L->k));
      kt_->pack_bf16(bits, L->n, L->k, L->packed.as<void>());
    } else {  // no BF16 GEMM worth running here: the same bf16 weights, computed in float32
      const std::vector<float> wide = widen_bf16(bits, L->n * L->k);
      L->packed.reserve(kt_->pack_f32_size(L->n, L->k));
      kt_->pack_f32_nk(wide.data(), L->k, L->n, L->k, L->packed.as<float>());
    }
  } else if (it != t.end()) {
    const HostTensor& w = it->second;
    if (w.dtype != 'f' || w.shape.size() != 2) throw std::invalid_argument("bad weight '" + name + "'");
    L->n = w.shape[0];
    L->k = w.shape[1];
    L->int8 = false;
    L->packed.reserve(kt_->pack_f32_size(L->n, L->k));
    kt_->pack_f32_nk(static_cast<const float*>(w.data), L->k, L->n, L->k, L->packed.as<float>());
  } else if (itq != t.end()) {
    const HostTensor& w = itq->second;
    if (w.dtype != 'b' || w.shape.size() != 2) throw std::invalid_argument("bad qweight '" + name + "'");
    L->n = w.shape[0];
    L->k = w.shape[1];
    L->int8 = true;
    L->kind = LinearKind::Int8;
    const int8_t* q = static_cast<const int8_t*>(w.data);
    L->packed.reserve(kt_->pack_s8_size(L->n, L->k));
    kt_->pack_s8(q, L->k, L->n, L->k, L->packed.as<void>());
    L->w_scale = copy_f32(t, name + ".wscale", {L->n});
    L->col_sum.assign(L->n, 0);
    for (int64_t j = 0; j < L->n; ++j) {
      int32_t s = 0;
      for (int64_t kk = 0; kk < L->k; ++kk) s += q[j * L->k + kk];
      L->col_sum[j] = s;
    }
    load_static_activation(L, name, t);
  } else {
    throw std::invalid_argument("missing tensor '" + name + ".weight' (or '.qweight')");
  }
  if (t.count(name + ".bias")) L->bias = copy_f32(t, name + ".bias", {L->n});
}

// Calibrated (static) activation scale and zero point of an INT8 Linear's input, when the plan has them.
void EncoderEngine::load_static_activation(Linear* L, const std::string& name,
                                           const std::map<std::string, HostTensor>& t) {
  auto sc = t.find(name + ".act_scale");
  if (sc != t.end()) {
    const HostTensor& zp = need(t, name + ".act_zero_point", 'i', {1});
    need(t, name + ".act_scale", 'f', {1});
    L->static_act = true;
    L->a_scale = *static_cast<const float*>(sc->second.data);
    L->a_zp = *static_cast<const int32_t*>(zp.data);
    if (!(L->a_scale > 0.0f) || L->a_zp < 0 || L->a_zp > 255)
      throw std::invalid_argument("bad activation quantization parameters for '" + name + "'");
  }
}

void build_row_pairs(Linear* L, const KernelTable& kt);       // below
void build_gathered_quads(Linear* L, const KernelTable& kt);  // below

namespace {
// A block-sparse INT8 weight's values in the form the level's kernel reads (KernelTable::bsr_wide_values: widened
// to 16 bits, the 8-bit copy freed), except 4x4 values that all lie in [-64, 64] where the level multiplies those
// 8-bit (KernelTable::bsr_narrow_values; the block-int7 format quantizes to that range). The kernel is chosen by
// the values themselves, so no file can send wider values down the narrow path.
void widen_bsr_values(Linear* L, const KernelTable& kt) {
  L->bsr_narrow = kt.bsr_narrow_values && L->bsr_rows == 4 &&
                  bsr_values_narrow(L->bsr_values.data(), L->bsr_values.size());
  if (!kt.bsr_wide_values || L->bsr_narrow) return;
  L->bsr_values16.assign(L->bsr_values.begin(), L->bsr_values.end());
  std::vector<int8_t>().swap(L->bsr_values);
}
}  // namespace

// Block-sparse INT8: shape [n, k, block_rows], row-block pointers, block columns (k/4 index), block bytes.
// Everything is validated here so that a corrupt file is an error, never an out-of-bounds read in a kernel.
void EncoderEngine::load_block_sparse(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t) {
  const HostTensor& shape = need(t, name + ".bsr_shape", 'i', {3});
  const int32_t* sh = static_cast<const int32_t*>(shape.data);
  L->n = sh[0];
  L->k = sh[1];
  L->bsr_rows = sh[2];
  const int64_t R = L->bsr_rows, nblk = (L->n + R - 1) / R, kq = (L->k + 3) / 4;
  if (L->n <= 0 || L->k <= 0 || (R != 1 && R != 4))
    throw std::invalid_argument("bad block-sparse shape for '" + name + "'");
  const HostTensor& rp = need(t, name + ".bsr_rowptr", 'i', {nblk + 1});
  const int32_t* rowptr = static_cast<const int32_t*>(rp.data);
  const int64_t nnzb = rowptr[nblk];
  if (nnzb < 0 || nnzb > nblk * kq) throw std::invalid_argument("'" + name + "': bad number of stored blocks");
  const std::vector<int32_t> col_vec = copy_index(t, name + ".bsr_cols", {nnzb});  // int32 or uint16
  const HostTensor& vl = need(t, name + ".bsr_values", 'b', {nnzb, 4 * R});
  const int32_t* cols = col_vec.data();
  if (rowptr[0] != 0) throw std::invalid_argument("'" + name + "': block row pointers must start at 0");
  for (int64_t b = 0; b < nblk; ++b)
    if (rowptr[b + 1] < rowptr[b]) throw std::invalid_argument("'" + name + "': block row pointers decrease");
  for (int64_t j = 0; j < nnzb; ++j)
    if (cols[j] < 0 || cols[j] >= kq) throw std::invalid_argument("'" + name + "': block column out of range");
  for (int64_t b = 0; b < nblk; ++b)  // as the encoder writes them (kernels that walk chunks rely on it)
    for (int32_t j = rowptr[b] + 1; j < rowptr[b + 1]; ++j)
      if (cols[j] <= cols[j - 1])
        throw std::invalid_argument("'" + name + "': block columns within a row block must increase");
  L->int8 = true;
  L->kind = LinearKind::BsrS8;
  L->bsr_rowptr.assign(rowptr, rowptr + nblk + 1);
  L->bsr_cols.assign(cols, cols + nnzb);
  const int8_t* vals = static_cast<const int8_t*>(vl.data);
  L->bsr_values.assign(vals, vals + nnzb * 4 * R);
  L->bsr_values.resize(L->bsr_values.size() + 16, 0);  // kernels may read one block's worth past the end
  L->bsr_cols.resize(L->bsr_cols.size() + 1, 0);
  L->w_scale = copy_f32(t, name + ".wscale", {L->n});
  L->col_sum.assign(L->n, 0);
  for (int64_t b = 0; b < nblk; ++b)
    for (int32_t j = rowptr[b]; j < rowptr[b + 1]; ++j)
      for (int64_t i = 0; i < R && b * R + i < L->n; ++i)
        for (int tt = 0; tt < 4; ++tt) L->col_sum[b * R + i] += vals[(j * R + i) * 4 + tt];
  widen_bsr_values(L, *kt_);
  build_gathered_quads(L, *kt_);
  build_row_pairs(L, *kt_);
  load_static_activation(L, name, t);
}

// 1x4-block rows -> row pairs (BsrS8::pair_tile) where the level runs them: within each 16-row tile the rows are
// matched greedily by the quads they share (the pair sharing most first), each pair's quads split into the shared
// list and each row's own; then the plain lists are dropped (the kernel reads only the pairs).
void build_row_pairs(Linear* L, const KernelTable& kt) {
  const int64_t kq = (L->k + 3) / 4;
  if (L->kind != LinearKind::BsrS8 || L->bsr_rows != 1 || L->bsr_pair_slots != 0 || L->bsr_values.empty() ||
      kq >= kt.bsr_row_pairs_max_quads || env_off("TRIMFORMER_ROW_PAIRS"))  // =0 at load: rows one at a time
    return;
  const int32_t* rp = L->bsr_rowptr.data();
  const int32_t* cols = L->bsr_cols.data();
  const int8_t* vals = L->bsr_values.data();
  // each row's quads as a bitset (kq < bsr_row_pairs_max_quads): the quads two rows share are a popcount
  const int64_t words = (kq + 63) / 64;
  std::vector<uint64_t> bits(static_cast<size_t>(16 * words));
  const auto shared = [&](int a, int b) {
    int n = 0;
    for (int64_t i = 0; i < words; ++i) n += __builtin_popcountll(bits[a * words + i] & bits[b * words + i]);
    return n;
  };
  L->bsr_pair_tile.assign(1, 0);
  L->bsr_pair_ptr.assign(1, 0);
  L->bsr_pair_cols.clear();
  L->bsr_pair_voff.assign(1, 0);
  L->bsr_pair_rows.clear();
  L->bsr_pair_values.clear();
  const auto push = [&](int32_t col, const int8_t* qa, const int8_t* qb) {
    L->bsr_pair_cols.push_back(col);
    if (qa) L->bsr_pair_values.insert(L->bsr_pair_values.end(), qa, qa + 4);
    if (qb) L->bsr_pair_values.insert(L->bsr_pair_values.end(), qb, qb + 4);
  };
  const auto ends = [&] { L->bsr_pair_ptr.push_back(static_cast<int32_t>(L->bsr_pair_cols.size())); };
  for (int64_t r0 = 0; r0 < L->n; r0 += 16) {
    const int64_t g = std::min<int64_t>(16, L->n - r0);
    std::fill(bits.begin(), bits.end(), 0);
    for (int64_t a = 0; a < g; ++a)
      for (int32_t j = rp[r0 + a]; j < rp[r0 + a + 1]; ++j) bits[a * words + cols[j] / 64] |= 1ull << (cols[j] % 64);
    std::vector<std::array<int, 3>> cand;  // (shared quads, a, b)
    for (int a = 0; a < g; ++a)
      for (int b = a + 1; b < g; ++b) cand.push_back({shared(a, b), a, b});
    std::stable_sort(cand.begin(), cand.end(), [](const auto& x, const auto& y) { return x[0] > y[0]; });
    bool used[16] = {};
    std::vector<std::pair<int, int>> pairs;
    for (const auto& c : cand)
      if (!used[c[1]] && !used[c[2]]) {
        used[c[1]] = used[c[2]] = true;
        pairs.push_back({c[1], c[2]});
      }
    for (int a = 0; a < g; ++a)
      if (!used[a]) pairs.push_back({a, 0xff});  // an odd tile's last row: alone
    for (const auto& [a, b] : pairs) {
      const int64_t ra = r0 + a;
      L->bsr_pair_rows.push_back(static_cast<uint16_t>(a | (b << 8)));
      std::vector<int32_t> own_a, own_b;  // entry indices of quads only one row holds
      int32_t i = rp[ra], j = b == 0xff ? 0 : rp[r0 + b];
      const int32_t i1 = rp[ra + 1], j1 = b == 0xff ? 0 : rp[r0 + b + 1];
      while (i < i1 || j < j1) {
        if (i < i1 && j < j1 && cols[i] == cols[j]) {
          push(cols[i], vals + 4 * i, vals + 4 * j);
          ++i;
          ++j;
        } else if (j >= j1 || (i < i1 && cols[i] < cols[j])) {
          own_a.push_back(i++);
        } else {
          own_b.push_back(j++);
        }
      }
      ends();
      for (int32_t e : own_a) push(cols[e], vals + 4 * e, nullptr);
      ends();
      for (int32_t e : own_b) push(cols[e], nullptr, vals + 4 * e);
      ends();
      L->bsr_pair_voff.push_back(static_cast<int32_t>(L->bsr_pair_values.size()));
    }
    L->bsr_pair_tile.push_back(static_cast<int32_t>(L->bsr_pair_rows.size()));
  }
  // the kernel reads the next pair's list ends and prefetches its entries: past the last pair, an empty one
  for (int e = 0; e < 3; ++e) L->bsr_pair_ptr.push_back(L->bsr_pair_ptr.back());
  L->bsr_pair_voff.push_back(L->bsr_pair_voff.back());
  L->bsr_pair_cols.resize(L->bsr_pair_cols.size() + 1, 0);
  L->bsr_pair_values.resize(L->bsr_pair_values.size() + 16, 0);
  std::vector<int32_t>().swap(L->bsr_cols);
  std::vector<int8_t>().swap(L->bsr_values);
}

namespace {
// Quads holding at least this many non-zeros on average stay quads. In the loop alone a gathered group of four
// non-zeros took 7.7-8.2 cycles, a quad 6.0-8.5 whatever it holds (bench/results/csr_int8_groups_rates_zen4.md:
// 1.92-2.04 and 5.1-7.3 cycles per non-zero at 1.16 per quad), so quads pay off only from about 3-4 non-zeros
// each: block-pruned rows (4 per quad) keep their quads, unstructured (1.16 at 90%, 1.36 at 80%) and 2:4 (2) rows
// gather
constexpr int64_t kGatheredMaxPerQuad = 3;
}  // namespace

// 1x4-block rows -> gathered quads (BsrS8::gq_ptr) where the level has their re-layout (bsr_pack_bytes) and the
// quads are sparse: each row's non-zeros in input order, four to a group, the last group padded with zero weights
// (on a real input of the row, so the kernel's loads stay inside the re-layout); then the quads are dropped
void build_gathered_quads(Linear* L, const KernelTable& kt) {
  if (L->kind != LinearKind::BsrS8 || L->bsr_rows != 1 || L->bsr_pair_slots != 0 || L->bsr_values.empty() ||
      !gathered_quads_available(kt) || L->k > 65536)
    return;
  const int32_t* rp = L->bsr_rowptr.data();
  const int32_t* cols = L->bsr_cols.data();
  const int8_t* vals = L->bsr_values.data();
  const int64_t quads = rp[L->n];
  int64_t nnz = 0;
  for (int64_t j = 0; j < 4 * quads; ++j) nnz += vals[j] != 0;
  if (quads == 0 || nnz >= kGatheredMaxPerQuad * quads) return;
  L->bsr_gq_ptr.assign(1, 0);
  L->bsr_gq_inputs.clear();
  L->bsr_gq_values.clear();
  for (int64_t r = 0; r < L->n; ++r) {
    int in_group = 0;
    uint16_t first = 0;
    for (int32_t j = rp[r]; j < rp[r + 1]; ++j)
      for (int i = 0; i < 4; ++i) {
        const int8_t v = vals[4 * j + i];
        if (v == 0) continue;
        const uint16_t input = static_cast<uint16_t>(4 * cols[j] + i);
        if (in_group == 0) first = input;
        L->bsr_gq_inputs.push_back(input);
        L->bsr_gq_values.push_back(v);
        in_group = (in_group + 1) % 4;
      }
    for (; in_group != 0; in_group = (in_group + 1) % 4) {
      L->bsr_gq_inputs.push_back(first);
      L->bsr_gq_values.push_back(0);
    }
    L->bsr_gq_ptr.push_back(static_cast<int32_t>(L->bsr_gq_values.size() / 4));
  }
  L->bsr_gq_inputs.resize(L->bsr_gq_inputs.size() + 32, 0);  // room past the end, as the quads had
  L->bsr_gq_values.resize(L->bsr_gq_values.size() + 64, 0);
  std::vector<int32_t>().swap(L->bsr_cols);
  std::vector<int8_t>().swap(L->bsr_values);
}

namespace {
// Resets L to an empty BsrS8 of 1-row blocks and walks the dense INT8 rows w [n][k] quad by quad:
// record(g, quad, nonzero) appends the entries of input quad g of the current row (nonzero: bit i set where input
// 4g + i is non-zero; inputs past k read as zeros); the row pointers and weight sums are kept here.
template <class Record>
void int8_rows_by_quad(Linear* L, const std::vector<int8_t>& w, Record record) {
  const int64_t n = L->n, k = L->k, kq = (k + 3) / 4;
  L->int8 = true;
  L->kind = LinearKind::BsrS8;
  L->bsr_rows = 1;
  L->bsr_pair_slots = 0;
  L->bsr_narrow = false;
  L->bsr_rowptr.assign(1, 0);
  L->bsr_cols.clear();
  L->bsr_values.clear();
  L->bsr_values16.clear();
  L->col_sum.assign(n, 0);
  for (int64_t r = 0; r < n; ++r) {
    const int8_t* row = w.data() + r * k;
    for (int64_t g = 0; g < kq; ++g) {
      int8_t quad[4] = {0, 0, 0, 0};
      int nonzero = 0;
      for (int64_t i = 0; i < 4 && 4 * g + i < k; ++i) {
        quad[i] = row[4 * g + i];
        nonzero |= (quad[i] != 0) << i;
        L->col_sum[r] += quad[i];
      }
      if (nonzero) record(g, quad, nonzero);
    }
    L->bsr_rowptr.push_back(static_cast<int32_t>(L->bsr_cols.size()));
  }
  L->bsr_cols.resize(L->bsr_cols.size() + 1, 0);  // kernels may read one entry's worth past the end
}
}  // namespace

// INT8 rows given densely ([n][k]) -> 1x4 input quads holding a non-zero (BsrS8, R = 1): VNNI's 4-way dot
// product needs 4 consecutive inputs per lane, so unstructured and N:M INT8 weights run on quads where the level
// has no pair records (sparse_int8_rows; see docs/kernels.md for why this beats per-value gathers).
void EncoderEngine::quads_from_rows(Linear* L, const std::vector<int8_t>& w) {
  int8_rows_by_quad(L, w, [&](int64_t g, const int8_t* quad, int) {
    L->bsr_cols.push_back(static_cast<int32_t>(g));
    L->bsr_values.insert(L->bsr_values.end(), quad, quad + 4);
  });
  L->bsr_values.resize(L->bsr_values.size() + 16, 0);  // kernels may read one block's worth past the end
  widen_bsr_values(L, *kt_);
  build_gathered_quads(L, *kt_);
  build_row_pairs(L, *kt_);
}

// INT8 rows given densely -> pair records (BsrS8::pair_slots): per output row and input quad, the fewest slots
// (kPairSlots) that cover the quad's non-zeros, one record each. slots 2: a quad's halves (unstructured weights);
// slots 6: any two of its inputs, so a 2:4 quad is one record.
void EncoderEngine::pairs_from_rows(Linear* L, const std::vector<int8_t>& w, int64_t slots) {
  int8_rows_by_quad(L, w, [&](int64_t g, const int8_t* quad, int nonzero) {
    const auto add = [&](int s) {
      L->bsr_cols.push_back(static_cast<int32_t>(g * slots + s));
      L->bsr_values16.push_back(quad[kPairSlots[s][0]]);
      L->bsr_values16.push_back(quad[kPairSlots[s][1]]);
    };
    for (int s = 0; s < slots; ++s)  // one slot holding every non-zero of the quad
      if ((nonzero & ~((1 << kPairSlots[s][0]) | (1 << kPairSlots[s][1]))) == 0) return add(s);
    if (nonzero & 3) add(0);
    if (nonzero & 12) add(1);
  });
  L->bsr_pair_slots = slots;
  L->bsr_values16.resize(L->bsr_values16.size() + 16, 0);  // as quads_from_rows: room past the end
}

// INT8 rows given densely -> permuted quads (PermS8): per panel of kPermPanel rows and chunk of kPermChunk
// inputs, each row's non-zeros in input order, four to a lane per step; the panel takes as many steps as its
// fullest row needs, the other rows' lanes padded with code 0 (index 0: any input, times zero).
void EncoderEngine::perm_quads_from_rows(Linear* L, const std::vector<int8_t>& w) {
  const int64_t n = L->n, k = L->k, chunks = (k + kPermChunk - 1) / kPermChunk;
  const int64_t panels = (n + kPermPanel - 1) / kPermPanel;
  L->int8 = true;
  L->kind = LinearKind::PermS8;
  L->col_sum.assign(n, 0);
  L->perm_steps.assign(panels * chunks, 0);
  L->perm_panel_off.assign(panels + 1, 0);
  const auto nonzeros = [&](int64_t r, int64_t c) {
    int64_t count = 0;
    for (int64_t i = c * kPermChunk; i < std::min(k, (c + 1) * kPermChunk); ++i) count += w[r * k + i] != 0;
    return count;
  };
  for (int64_t p = 0; p < panels; ++p) {
    int64_t bytes = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      int64_t steps = 0;
      for (int64_t r = p * kPermPanel; r < std::min(n, (p + 1) * kPermPanel); ++r)
        steps = std::max(steps, (nonzeros(r, c) + 3) / 4);
      L->perm_steps[p * chunks + c] = static_cast<uint8_t>(steps);  // at most kPermChunk / 4
      bytes += steps * 256;
    }
    L->perm_panel_off[p + 1] = L->perm_panel_off[p] + bytes;
  }
  const size_t total = static_cast<size_t>(std::max<int64_t>(L->perm_panel_off[panels], 64));
  L->packed.reserve(total);
  uint8_t* rec = L->packed.as<uint8_t>();
  std::memset(rec, 0, total);
  for (int64_t p = 0; p < panels; ++p) {
    uint8_t* out = rec + L->perm_panel_off[p];
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t steps = L->perm_steps[p * chunks + c];
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t l = 0; l < 16; ++l) {
          const int64_t r = p * kPermPanel + 16 * j + l;
          if (r >= n) break;
          int64_t e = 0;  // the row's e-th non-zero in the chunk: step e / 4, byte 4 l + e % 4 of the lane
          for (int64_t i = c * kPermChunk; i < std::min(k, (c + 1) * kPermChunk); ++i) {
            const int8_t v = w[r * k + i];
            if (v == 0) continue;
            uint8_t* step = out + (e / 4) * 256 + 128 * j;
            step[4 * l + e % 4] = static_cast<uint8_t>(i - c * kPermChunk);
            step[64 + 4 * l + e % 4] = static_cast<uint8_t>(v);
            ++e;
          }
        }
      out += steps * 256;
    }
  }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i) L->col_sum[r] += w[r * k + i];
}

void EncoderEngine::sparse_int8_rows(Linear* L, const std::vector<int8_t>& w, int64_t slots, bool nm) {
  if (nm && perm_s8_available(*kt_)) perm_quads_from_rows(L, w);
  else if (kt_->bsr_pack_pairs) pairs_from_rows(L, w, slots);
  else quads_from_rows(L, w);
}

// CSR: shape [n, k], row pointers [n + 1], input indices (int32 or uint16) and values (float32 for csr-f32,
// int8 + per-row scales for csr-int8).
void EncoderEngine::load_csr(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t) {
  const std::vector<int32_t> sh = read_shape(t, name + ".csr_shape", 2);
  L->n = sh[0];
  L->k = sh[1];
  std::vector<int32_t> rowptr = copy_index(t, name + ".csr_rowptr", {L->n + 1});
  const int64_t nnz = rowptr.back();
  if (nnz < 0 || nnz > L->n * L->k) throw std::invalid_argument("'" + name + "': bad number of stored entries");
  std::vector<int32_t> cols = copy_index(t, name + ".csr_cols", {nnz});
  check_rows(name, rowptr, cols, L->k);
  if (t.count(name + ".csr_qvalues")) {
    const HostTensor& v = need(t, name + ".csr_qvalues", 'b', {nnz});
    const int8_t* q = static_cast<const int8_t*>(v.data);
    std::vector<int8_t> dense(L->n * L->k, 0);
    for (int64_t r = 0; r < L->n; ++r)
      for (int32_t j = rowptr[r]; j < rowptr[r + 1]; ++j) dense[r * L->k + cols[j]] = q[j];
    sparse_int8_rows(L, dense, 2, false);
    L->w_scale = copy_f32(t, name + ".wscale", {L->n});
    load_static_activation(L, name, t);
    return;
  }
  L->sp_values = copy_f32(t, name + ".csr_values", {nnz});
  L->sp_values.resize(nnz + 16, 0.0f);
  L->kind = LinearKind::SparseF32;
  L->bsr_rows = 1;
  if (kt_->spf32_chunk_k > 0) L->sp_chunk_ptr = build_chunk_pointers(rowptr, cols.data(), L->k, kt_->spf32_chunk_k);
  L->bsr_rowptr = std::move(rowptr);
  L->bsr_cols = std::move(cols);
  L->bsr_cols.resize(nnz + 1, 0);
}

// block-f32: 4x1 blocks (4 consecutive output rows x 1 input): shape [n, k], block-row pointers, inputs, and 4
// float32 values per block (block-bf16: 4 bf16 values, widened to float32 at load and run by the same kernel).
void EncoderEngine::load_block_f32(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t) {
  const std::vector<int32_t> sh = read_shape(t, name + ".b41_shape", 2);
  L->n = sh[0];
  L->k = sh[1];
  const int64_t nblk = (L->n + 3) / 4;
  std::vector<int32_t> rowptr = copy_index(t, name + ".b41_rowptr", {nblk + 1});
  const int64_t nnzb = rowptr.back();
  if (nnzb < 0 || nnzb > nblk * L->k) throw std::invalid_argument("'" + name + "': bad number of stored blocks");
  std::vector<int32_t> cols = copy_index(t, name + ".b41_cols", {nnzb});
  check_rows(name, rowptr, cols, L->k);
  L->sp_values = copy_f32_or_bf16(t, name + ".b41_values", {nnzb, 4});
  L->sp_values.resize(4 * nnzb + 16, 0.0f);
  L->kind = LinearKind::SparseF32;
  L->bsr_rows = 4;
  if (kt_->spf32_chunk_k > 0) L->sp_chunk_ptr = build_chunk_pointers(rowptr, cols.data(), L->k, kt_->spf32_chunk_k);
  L->bsr_rowptr = std::move(rowptr);
  L->bsr_cols = std::move(cols);
  L->bsr_cols.resize(nnzb + 1, 0);
}

// N:M: shape [n, k, N, M], per row ceil(k / M) * N values (float32 for nm-f32, bf16 bits for nm-bf16, INT8 codes
// for nm-int8) and their in-group indices bit-packed (log2 M bits each, little-endian bit order, each row padded to
// whole bytes).
void EncoderEngine::load_nm(Linear* L, const std::string& name, const std::map<std::string, HostTensor>& t) {
  const std::vector<int32_t> sh = read_shape(t, name + ".nm_shape", 4);
  L->n = sh[0];
  L->k = sh[1];
  const int64_t keep = sh[2], group = sh[3];
  if (!((group == 4 && keep == 2) || (group == 8 && keep == 4)))
    throw std::invalid_argument("'" + name + "': supported N:M patterns are 2:4 and 4:8");
  const int64_t groups = (L->k + group - 1) / group, per_row = groups * keep, bits = group == 4 ? 2 : 3;
  const int64_t row_bytes = (per_row * bits + 7) / 8;
  const HostTensor& ix = need(t, name + ".nm_index", 'u', {L->n, row_bytes});
  const uint8_t* packed = static_cast<const uint8_t*>(ix.data);
  std::vector<uint8_t> idx(L->n * per_row);
  for (int64_t r = 0; r < L->n; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    for (int64_t j = 0; j < per_row; ++j) {
      uint32_t v = 0;
      for (int64_t b = 0; b < bits; ++b) {
        const int64_t p = j * bits + b;
        v |= static_cast<uint32_t>((row[p >> 3] >> (p & 7)) & 1) << b;
      }
      // indices within a group strictly increase (so every kept value has its own input)
      if (j % keep != 0 && v <= idx[r * per_row + j - 1])
        throw std::invalid_argument("'" + name + "': N:M indices within a group must increase");
      idx[r * per_row + j] = static_cast<uint8_t>(v);
    }
  }
  if (t.count(name + ".nm_qvalues")) {
    const HostTensor& v = need(t, name + ".nm_qvalues", 'b', {L->n, per_row});
    const int8_t* q = static_cast<const int8_t*>(v.data);
    std::vector<int8_t> dense(L->n * L->k, 0);
    for (int64_t r = 0; r < L->n; ++r)
      for (int64_t j = 0; j < per_row; ++j) {
        const int64_t col = (j / keep) * group + idx[r * per_row + j];
        if (col < L->k) dense[r * L->k + col] = q[r * per_row + j];
        else if (q[r * per_row + j] != 0)
          throw std::invalid_argument("'" + name + "': N:M value stored past the last input");
      }
    sparse_int8_rows(L, dense, keep == 2 && group == 4 ? 6 : 2, true);
    L->w_scale = copy_f32(t, name + ".wscale", {L->n});
    load_static_activation(L, name, t);
    return;
  }
  L->sp_values = copy_f32_or_bf16(t, name + ".nm_values", {L->n, per_row});  // nm-bf16: widened here
  L->sp_values.resize(L->n * per_row + 16, 0.0f);
  L->nm_idx = std::move(idx);
  L->nm_idx.resize(L->n * per_row + 16, 0);
  L->nm_keep = keep;
  L->nm_group = group;
  L->kind = LinearKind::NmF32;
}

EncoderEngine::EncoderEngine(const std::map<std::string, HostTensor>& t, const std::string& name, Isa isa,
                             int threads, bool csr_f32_code)
    : kt_(&kernels_for(isa)), threads_(threads > 0 ? threads : 1) {
  head_.resize(1);
  load_linear(&head_[0], name, t);
  cfg_.hidden = head_[0].k;
  cfg_.heads = 1;
  if (!csr_f32_code) cfg_.csr_f32_walk.push_back(name);
  read_linear_settings();
  build_all_jit();
}

void EncoderEngine::read_linear_settings() {
  fused_rows_off_ = env_flag("TRIMFORMER_DYNAMIC_U8_ROWS");
  bsr_pieces_off_ = env_flag("TRIMFORMER_BSR_PIECES_OFF");
  bsr_transpose16_ = env_flag("TRIMFORMER_BSR_TRANSPOSE16");
  bsr_pieces_v2_ = env_flag("TRIMFORMER_BSR_PIECES_V2");
  qkv_s8_off_ = env_flag("TRIMFORMER_QKV_S8_OFF");
  if (const char* v = std::getenv("TRIMFORMER_ATTN_ROWS")) attn_rows_ = std::atoi(v);
  bsr_few_off_ = env_flag("TRIMFORMER_BSR_FEW_TOKENS_OFF");
  if (const char* v = std::getenv("TRIMFORMER_BSR_TILE_VECS")) bsr_tile_vecs_ = std::atoi(v);
}

// Blocks of kJitBlock rows (4 groups of 28: whole 16-row units), cut also where a column split of 2 .. threads_
// threads falls (split_range over each of col_groups equal groups, as parallel_linear splits), so a thread's rows
// are whole blocks and it computes no other rows.
// The code and its values take about 14 bytes per stored value, so weights keep the plain kernel where they would
// outgrow the dense float32 weight (more than 2 values in 7 stored: 2:4 weights, whose code the planner picked over
// nm-f32 for 45 of BERT-base's 48 Linears, bench/results/zen4_tried_2of4_fp32_jit.md) or the code would pass 40 MB
// (kJitMaxEntries values).
void EncoderEngine::build_jit(Linear* L) {
  constexpr int64_t kJitBlock = 4 * kJitRows, kJitMaxEntries = int64_t{4} << 20;
  if (L->kind != LinearKind::SparseF32 || L->bsr_rows != 1 || !kt_->spf32_jit || env_off("TRIMFORMER_JIT")) return;
  if (std::find(cfg_.csr_f32_walk.begin(), cfg_.csr_f32_walk.end(), L->name) != cfg_.csr_f32_walk.end()) return;
  if (L->bsr_rowptr.empty() || L->bsr_rowptr.back() > kJitMaxEntries) return;
  if (L->bsr_rowptr.back() * 14 > L->n * L->k * 4) return;
  const int64_t n = L->n, groups = L->col_groups > 1 && n % L->col_groups == 0 && (n / L->col_groups) % 16 == 0
                                       ? L->col_groups
                                       : 1;
  const int64_t gn = n / groups;
  std::vector<int32_t> cuts;
  for (int64_t r = 0; r < n; r += kJitBlock) cuts.push_back(static_cast<int32_t>(r));
  for (int64_t g = 0; g < groups; ++g) {
    cuts.push_back(static_cast<int32_t>(g * gn));
    for (int cnt = 2; cnt <= threads_; ++cnt)
      for (int i = 1; i < cnt; ++i) {
        int64_t lo, hi;
        split_range(gn, 16, cnt, i, &lo, &hi);
        if (lo < gn) cuts.push_back(static_cast<int32_t>(g * gn + lo));
      }
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  auto code = std::make_unique<JitF32Code>();
  if (!code->build(n, L->bsr_rowptr.data(), L->bsr_cols.data(), L->sp_values.data(), cuts, 4 * 64, 4 * 64))
    return;  // no executable memory here: the plain kernel
  L->spf32_jit = std::move(code);
  // the code holds the inputs and its own copy of the values: the plain kernel's arrays are not read again
  std::vector<int32_t>().swap(L->bsr_cols);
  std::vector<float>().swap(L->sp_values);
  std::vector<int32_t>().swap(L->sp_chunk_ptr);
}

void EncoderEngine::build_all_jit() {
  for (auto& L : layers_) {
    build_jit(&L.qkv);
    build_jit(&L.attn_out);
    build_jit(&L.ffn1);
    build_jit(&L.ffn2);
  }
  for (auto& L : head_) build_jit(&L);
}

const Linear& EncoderEngine::only_linear() const {
  if (head_.size() != 1 || !layers_.empty()) throw std::logic_error("not a Linear-only engine");
  return head_[0];
}

LinearIO EncoderEngine::linear_input(Linear& L, const float* x, int64_t m, float* y, Act act,
                                     const float* residual, bool u8_input, AlignedBuf& q) {
  LinearIO io;
  io.in = x;
  io.out = y;
  io.act = act;
  io.residual = residual;
  if (!u8_input) return io;
  if (!L.int8 || !L.static_act)
    throw std::invalid_argument("u8 input needs an INT8 Linear with static activation parameters");
  const int64_t ldq = q_stride(L.k);
  q.reserve(m * ldq);
  std::memset(q.as<uint8_t>(), L.a_zp, m * ldq);  // padding columns hold the zero point, as a requantized output's
  kt_->quantize_u8(x, L.k, q.as<uint8_t>(), ldq, m, L.k, 1.0f / L.a_scale, L.a_zp);
  io.in_q = q.as<uint8_t>();
  // where FFN1's epilogue would write FFN2's re-layout, it is made here once and the calls read it
  if (!takes_relaid_input(L, m)) return io;
  uint8_t* at = tl_ws->at.as<uint8_t>();
  if (L.gathered())
    kt_->bsr_pack_bytes(io.in_q, ldq, m, 0, m, L.k, at);
  else
    kt_->bsr_pack_at(io.in_q, ldq, m, 0, m, L.k, at, bsr_pair_quads(*kt_, L.bsr_rows, L.bsr_narrow, 0, L.k));
  io.in_at = at;
  io.at_bytes = L.gathered();
  return io;
}

void EncoderEngine::use_linear_workspace(int64_t m) {
  if (ws_.empty()) ws_.resize(1);
  ensure_workspace(ws_[0], m, 0, 0);  // no attention: no scratch
  tl_ws = &ws_[0];
  tl_team = 0;
}

void EncoderEngine::run_linear(const float* x, int64_t m, float* y, Act act, const float* residual, bool u8_input) {
  Linear& L = const_cast<Linear&>(only_linear());
  if (m <= 0) throw std::invalid_argument("run_linear needs at least one row");
  use_linear_workspace(m);
  AlignedBuf q;
  const LinearIO io = linear_input(L, x, m, y, act, residual, u8_input, q);
  linear(L, io, m);
}

double EncoderEngine::time_linear(const float* x, int64_t m, float* y, int iters, bool cold, bool region_per_call,
                                  bool u8_input, bool warm_call) {
  Linear& L = const_cast<Linear&>(only_linear());
  if (m <= 0 || iters <= 0) throw std::invalid_argument("time_linear needs rows and iterations");
  const auto since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  use_linear_workspace(m);
  AlignedBuf q;
  const LinearIO io = linear_input(L, x, m, y, Act::None, nullptr, u8_input, q);
  double best = 1e30;
  if (region_per_call) {
    if (warm_call) linear(L, io, m);
    for (int it = 0; it < iters; ++it) {
      if (cold) L.evict();
      const auto t0 = std::chrono::steady_clock::now();
      linear(L, io, m);
      best = std::min(best, since(t0));
    }
    return best;
  }
  TeamError error;
#pragma omp parallel num_threads(threads_)
  {
    tl_ws = &ws_[0];
    tl_team = 0;
    tl_team_error = &error;
    if (warm_call) error.guard([&] { linear(L, io, m); });
    for (int it = 0; it < iters; ++it) {
#pragma omp master
      {
        if (cold) L.evict();
      }
#pragma omp barrier
      const auto t0 = std::chrono::steady_clock::now();
      error.guard([&] { linear(L, io, m); });  // ends at the team's barrier
#pragma omp master
      best = std::min(best, since(t0));
    }
    tl_team_error = nullptr;
  }
  tl_ws = &ws_[0];
  error.rethrow();
  return best;
}

EncoderEngine::EncoderEngine(const EncoderConfig& cfg, const std::map<std::string, HostTensor>& t, Isa isa,
                             int threads)
    : cfg_(cfg), kt_(&kernels_for(isa)), threads_(threads > 0 ? threads : 1) {
  region_per_op_ = env_flag("TRIMFORMER_REGION_PER_OP");
  qkv_token_split_ = env_flag("TRIMFORMER_QKV_TOKEN_SPLIT");
  side_static_ = env_flag("TRIMFORMER_SIDE_STATIC");
  qkv_ops_off_ = env_flag("TRIMFORMER_QKV_ROWS");
  bytes_direct_off_ = env_flag("TRIMFORMER_FFN_BYTE_ROWS_OFF");
  read_linear_settings();
  if (const char* v = std::getenv("TRIMFORMER_FFN_PIECE")) ffn_piece_ = std::max<int64_t>(0, std::atoll(v)) / 64 * 64;
  const int64_t H = cfg.hidden;
  if (H <= 0 || cfg.heads <= 0 || cfg.head_dim < 0 || (cfg.head_dim == 0 && H % cfg.heads != 0))
    throw std::invalid_argument("hidden must divide into heads (or head_dim be given)");
  if (cfg_.head_dim == 0) cfg_.head_dim = H / cfg.heads;
  const int64_t A = cfg_.heads * cfg_.head_dim;  // attention width
  if (cfg.attention_mode < 0 || cfg.attention_mode > 3) throw std::invalid_argument("attention_mode must be 0-3");
  if (cfg.attention_mode >= 2 && !(kt_->gemm_bf16 && cpu_has_avx512_bf16()))
    throw std::invalid_argument("BF16 attention needs AVX512_BF16 at the avx512_vnni level");
  word_ = copy_f32(t, "emb.word", {cfg.vocab, H});
  pos_ = copy_f32(t, "emb.pos", {cfg.max_positions, H});
  if (cfg.type_vocab > 0) type_ = copy_f32(t, "emb.type", {cfg.type_vocab, H});
  emb_g_ = copy_f32(t, "emb.ln.g", {H});
  emb_b_ = copy_f32(t, "emb.ln.b", {H});
  layers_.resize(cfg.layers);
  for (int64_t i = 0; i < cfg.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    EncoderLayer& L = layers_[i];
    load_linear(&L.qkv, p + "qkv", t);
    L.qkv.col_groups = 3;
    load_linear(&L.attn_out, p + "attn_out", t);
    load_linear(&L.ffn1, p + "ffn1", t);
    load_linear(&L.ffn2, p + "ffn2", t);
    if (L.qkv.n != 3 * A || L.qkv.k != H || L.attn_out.n != H || L.attn_out.k != A || L.ffn1.k != H ||
        L.ffn2.n != H || L.ffn2.k != L.ffn1.n)
      throw std::invalid_argument("layer " + std::to_string(i) + " weight shapes do not match the config");
    L.ln1_g = copy_f32(t, p + "ln1.g", {H});
    L.ln1_b = copy_f32(t, p + "ln1.b", {H});
    L.ln2_g = copy_f32(t, p + "ln2.g", {H});
    L.ln2_b = copy_f32(t, p + "ln2.b", {H});
  }
  int64_t prev = H;
  head_.resize(cfg.head_acts.size());
  for (size_t j = 0; j < head_.size(); ++j) {
    load_linear(&head_[j], "head." + std::to_string(j), t);
    if (head_[j].k != prev) throw std::invalid_argument("head layer shapes do not chain");
    prev = head_[j].n;
  }
  build_all_jit();
}

size_t EncoderEngine::packed_bytes() const {
  size_t b = 0;
  for (const auto& L : layers_) b += L.qkv.weight_bytes() + L.attn_out.weight_bytes() + L.ffn1.weight_bytes() +
                                     L.ffn2.weight_bytes();
  return b;
}

std::vector<std::pair<std::string, std::string>> EncoderEngine::linear_kernels() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& L : layers_)
    for (const Linear* l : {&L.qkv, &L.attn_out, &L.ffn1, &L.ffn2}) out.emplace_back(l->name, linear_kernel(*l));
  for (const auto& L : head_) out.emplace_back(L.name, linear_kernel(L));
  return out;
}

size_t EncoderEngine::pair_at_bytes(int64_t rows) const {
  size_t bytes = 0;
  const auto pairs = [&](const Linear& L) {
    if (L.kind == LinearKind::BsrS8 && L.bsr_pair_slots)
      bytes = std::max(bytes, bsr_pairs_at_size(rows, L.k, L.bsr_pair_slots));
  };
  for (const auto& L : layers_) {
    pairs(L.qkv);
    pairs(L.attn_out);
    pairs(L.ffn1);
    pairs(L.ffn2);
  }
  for (const auto& L : head_) pairs(L);
  return bytes;
}

int64_t EncoderEngine::widest_linear() const {
  int64_t max_k = cfg_.hidden;
  for (const auto& L : layers_) max_k = std::max(max_k, std::max(L.ffn2.k, L.attn_out.k));
  for (const auto& L : head_) max_k = std::max(max_k, std::max(L.k, L.n));
  return max_k;
}

int EncoderEngine::team() const { return tl_team > 0 ? tl_team : threads_; }

void EncoderEngine::ensure_workspace(Workspace& w, int64_t rows, int64_t seq, int scratch_count) {
  const int64_t A = cfg_.heads * cfg_.head_dim, max_k = widest_linear();
  if (rows > w.cap_tokens) {
    w.x1.reserve(rows * cfg_.hidden * 4);
    w.qkv.reserve(rows * 3 * A * 4);
    w.ctx.reserve(rows * A * 4);
    w.ff.reserve(rows * std::max<int64_t>(max_k, 1) * 4);
    w.q8.reserve(rows * (q_stride(max_k) + 64));
    w.q8b.reserve(rows * (q_stride(max_k) + 64));
    w.bf.reserve(rows * ((max_k + 1) / 2 * 2) * 2 + 64);
    w.at.reserve(std::max({kt_->bsr_at_size(rows, max_k), kt_->spf32_at_size(rows, max_k), pair_at_bytes(rows)}) +
                 64);
    const bool ffn_at_direct = std::any_of(layers_.begin(), layers_.end(), [this](const EncoderLayer& L) {
      return (L.ffn1.kind == LinearKind::BsrS8 && L.ffn2.kind == LinearKind::BsrS8) || ffn_f32_at_direct(L);
    });
    if (ffn_at_direct)  // FFN1 -> FFN2 re-layout
      w.at_next.reserve(std::max(kt_->bsr_at_size(rows, max_k), kt_->spf32_at_size(rows, max_k)) + 64);
    w.row_scale.reserve(rows * 4);
    w.row_zp.reserve(rows * 4);
    w.cap_tokens = rows;
  }
  if (seq > w.cap_seq || static_cast<int>(w.scratch.size()) < scratch_count) {
    w.cap_seq = std::max(w.cap_seq, seq);
    const size_t bytes = attention_scratch_bytes(w.cap_seq);
    if (static_cast<int>(w.scratch.size()) < scratch_count) w.scratch.resize(scratch_count);
    for (auto& sb : w.scratch) sb.reserve(bytes);
  }
}

void EncoderEngine::ensure_buffers(int64_t batch, int64_t seq) {
  const int64_t M = batch * seq, H = cfg_.hidden, max_k = widest_linear();
  if (M > cap_tokens_) {
    x_.reserve(M * H * 4);
    mask_bias_.reserve(M * 4);
    head_in_.reserve(M * max_k * 4);
    head_tmp_.reserve(M * max_k * 4);
    cap_tokens_ = M;
  }
  if (static_cast<int>(ws_.size()) < threads_) ws_.resize(threads_);
  // the head's Linears run on the first workspace over up to M rows
  ensure_workspace(ws_[0], M, seq, threads_);
  cap_batch_ = std::max(cap_batch_, batch);
}

int64_t EncoderEngine::token_align(const Linear& L, int64_t m) const {
  // gathered quads' re-layout holds each token tile's tokens in the kernel's order: calls start at a tile
  if (bsr_split_short(m, team())) return L.gathered() ? kt_->bsr_at_tile : 16;
  return kSparseAtTile;
}

bool EncoderEngine::splits_tokens(const Linear& L, int64_t m) const {
  const int nt = team();
  // A block-sparse QKV splits its output rows by heads (col_groups: the same share of Q, K and V), as the attention
  // after it splits the heads: each thread then writes the Q, K and V the attention reads on its own core. Under a
  // token split each thread wrote every head's rows of its tokens, so half of what the attention read came from the
  // other core, and the next layer's QKV wrote over lines the other core held. That costs little when the host
  // has the two vCPUs on one CCD and much when it has them apart: BERT-base 90% block static INT8, 2 threads on
  // Zen 4, the token split took 1.03x this pass at batch 1 x 128 tokens with the cores near and 1.17x apart
  // (bench/results/zen4_core_distance_ab.md). An older AVX2 A/B had read the token split faster
  // (qkv_token_split_avx2_ab.md, cores' placement not recorded). TRIMFORMER_QKV_TOKEN_SPLIT=1: the token split.
  if (L.kind != LinearKind::BsrS8 || (L.col_groups == 3 && !qkv_token_split_)) return false;
  return bsr_split_short(m, nt) || sparse_split_tokens(m, nt);
}

int64_t EncoderEngine::q_stride(int64_t k) const {
  return (k + kt_->s8_k_align - 1) / kt_->s8_k_align * kt_->s8_k_align;
}

void EncoderEngine::linear(Linear& L, const float* in, int64_t m, float* out, Act act, const float* residual) {
  LinearIO io;
  io.in = in;
  io.out = out;
  io.act = act;
  io.residual = residual;
  linear(L, io, m);
}

bool EncoderEngine::few_tokens_call(const Linear& L, int64_t m) const {
  return L.kind == LinearKind::BsrS8 && m <= std::min(kt_->bsr_few_tokens, kFewTokensMax) && L.bsr_rows == 4 &&
         !L.gathered() && !L.bsr_pair_slots && L.bsr_pair_tile.empty() && !bsr_few_off_;
}

bool EncoderEngine::takes_relaid_input(const Linear& L, int64_t m) const {
  if (L.kind != LinearKind::BsrS8 || L.bsr_pair_slots || few_tokens_call(L, m)) return false;
  return L.gathered() ? kt_->bsr_pack_bytes != nullptr : kt_->bsr_at_size(kBsrAtTile, 4) > 0;
}

void EncoderEngine::linear(Linear& L, const LinearIO& io, int64_t m) {
  Epilogue epi;
  epi.bias = L.bias.empty() ? nullptr : L.bias.data();
  epi.act = io.act;
  epi.residual = io.residual;
  epi.ld_residual = L.n;
  epi.stream_out = m * L.n * static_cast<int64_t>(sizeof(float)) >= kStreamOutputBytes;  // whatever the call split
  const KernelTable* kt = kt_;
  const int nt = team();
  Workspace& w = *tl_ws;
  const bool ln = io.ln_gamma != nullptr;
  const auto ln_rows = [&](int64_t lo, int64_t hi) {
    kt->layernorm(io.out + lo * L.n, io.out + lo * L.n, hi - lo, L.n, L.n, io.ln_gamma, io.ln_beta, cfg_.ln_eps);
  };
  if (observe_ && io.in) {
    float tmn[256], tmx[256], mn = INFINITY, mx = -INFINITY;
#pragma omp parallel num_threads(nt)
    {
      const int i = omp_get_thread_num();
      int64_t lo, hi;
      split_range(m, 1, omp_get_num_threads(), i, &lo, &hi);
      tmn[i] = INFINITY;
      tmx[i] = -INFINITY;
      if (lo < hi) kt->minmax(io.in + lo * L.k, (hi - lo) * L.k, &tmn[i], &tmx[i]);
    }
    for (int j = 0; j < nt; ++j) { mn = std::min(mn, tmn[j]); mx = std::max(mx, tmx[j]); }
    L.obs_min = L.obs_seen ? std::min(L.obs_min, mn) : mn;
    L.obs_max = L.obs_seen ? std::max(L.obs_max, mx) : mx;
    L.obs_seen = true;
    if (!L.hist.empty() && L.hist_hi > L.hist_lo) {  // calibration only: a plain serial pass
      const int64_t bins = static_cast<int64_t>(L.hist.size());
      const float w = static_cast<float>(bins) / (L.hist_hi - L.hist_lo);
      const float* x = io.in;
      for (int64_t i = 0; i < m * L.k; ++i) {
        int64_t b = static_cast<int64_t>((x[i] - L.hist_lo) * w);
        b = b < 0 ? 0 : (b >= bins ? bins - 1 : b);
        L.hist[b] += 1.0;
      }
    }
  }
  if (L.bf16) {
    const int64_t ldb = (L.k + 1) / 2 * 2;
    uint16_t* a = w.bf.as<uint16_t>();
    parallel_linear(
        nt, m, L.n, kt->bf16_nr,
        [&](int64_t lo, int64_t hi) { kt->to_bf16_rows(io.in + lo * L.k, L.k, a + lo * ldb, ldb, hi - lo, L.k); },
        [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
          kt->gemm_bf16(a, ldb, L.packed.as<void>(), L.n, L.k, io.out, L.n, m0, m1, n0, n1, epi);
        },
        Split::Auto, 1, L.col_groups, ln, ln_rows);
    return;
  }
  if (L.kind == LinearKind::SparseF32 || L.kind == LinearKind::NmF32) {
    // activations re-laid by rows in blocks of 16 tokens (then a barrier); output rows split in multiples of 16
    const float* at = io.in_at_f32 ? io.in_at_f32 : w.at.as<float>();
    if (io.out_at_f32) {  // the next layer's re-layout instead of float rows (KernelTable::spf32_fills_next_at)
      epi.out_at_f32 = io.out_at_f32;
      epi.out_at_f32_k = L.n;
    }
    epi.qkv_f32 = io.qkv_f32;
    SparseF32 sw;
    NmF32 nw;
    sw.n = nw.n = L.n;
    sw.k = nw.k = L.k;
    sw.block_rows = L.bsr_rows;
    sw.rowptr = L.bsr_rowptr.data();
    sw.cols = L.bsr_cols.data();
    sw.values = nw.values = L.sp_values.data();
    sw.chunk_k = kt->spf32_chunk_k;
    sw.chunk_ptr = L.sp_chunk_ptr.data();
    sw.jit = L.spf32_jit ? &L.spf32_jit->view() : nullptr;
    nw.idx = L.nm_idx.data();
    nw.keep = L.nm_keep;
    nw.group = L.nm_group;
    const bool nm = L.kind == LinearKind::NmF32;
    const bool by_tokens = sparse_split_tokens(m, nt);
    const int64_t k8 = (L.k + 7) / 8 * 8;  // floats per token of At
    parallel_linear(
        nt, m, L.n, 16,
        [&](int64_t lo, int64_t hi) {
          if (!io.in_at_f32) kt->spf32_pack_at(io.in, L.k, m, lo, hi, L.k, w.at.as<float>());
        },
        [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
          const Epilogue part = by_tokens ? rows_from(epi, m0, kt->bsr_at_tile) : epi;
          const int64_t r0 = by_tokens ? m0 : 0, rows = by_tokens ? m1 - m0 : m;
          const float* x = io.in + r0 * L.k;
          const float* a = at + r0 * k8;
          float* y = io.out + r0 * L.n;
          if (nm) kt->gemm_nm_f32(x, L.k, a, rows, nw, y, L.n, n0, n1, part);
          else kt->gemm_spf32(x, L.k, a, rows, sw, y, L.n, n0, n1, part);
        },
        by_tokens ? Split::Rows : Split::Cols, /*row_align=*/by_tokens ? kSparseAtTile : 16, L.col_groups, ln,
        ln_rows);
    return;
  }
  if (!L.int8) {
    parallel_linear(
        nt, m, L.n, kt->f32_nr, [](int64_t, int64_t) {},
        [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
          kt->gemm_f32(io.in, L.k, L.packed.as<float>(), L.n, L.k, io.out, L.n, m0, m1, n0, n1, epi);
        },
        Split::Auto, 1, L.col_groups, ln, ln_rows);
    return;
  }
  // u8 activations: static = one calibrated (scale, zero point) for the tensor; dynamic = per-row ranges
  // computed on the fly (finer than a per-tensor range). An input that arrives already quantized (requantized by
  // the previous layer's epilogue) skips this pass.
  const int64_t ldq = q_stride(L.k);
  const uint8_t* q = io.in_q ? io.in_q : w.q8.as<uint8_t>();
  float* rs = w.row_scale.as<float>();
  float* rz = w.row_zp.as<float>();
  epi.w_scale = L.w_scale.data();
  epi.col_sum = L.col_sum.data();
  epi.row_scale = rs;
  epi.row_zp = rz;
  if (io.out_q) {
    epi.out_u8 = io.out_q;
    epi.ld_out_u8 = q_stride(L.n);
    epi.out_inv_scale = 1.0f / io.next->a_scale;
    epi.out_zp = io.next->a_zp;
  }
  uint8_t* q8 = w.q8.as<uint8_t>();
  // quantize = false: the row parameters and the output padding only (a fused re-layout quantizes)
  // rows [lo, hi): their scales and zero points into scale / zp, and (quantize) their u8 rows into dst (row r at
  // dst + r * ldq)
  const auto prep_into = [&](int64_t lo, int64_t hi, bool quantize, uint8_t* dst, float* scale, float* zp) {
    if (L.static_act) {
      for (int64_t r = lo; r < hi; ++r) { scale[r] = L.a_scale; zp[r] = static_cast<float>(L.a_zp); }
      if (!io.in_q && quantize)
        kt->quantize_u8(io.in + lo * L.k, L.k, dst + lo * ldq, ldq, hi - lo, L.k, 1.0f / L.a_scale, L.a_zp);
    } else if (quantize) {
      kt->quantize_rows_u8(io.in + lo * L.k, L.k, dst + lo * ldq, ldq, hi - lo, L.k, scale + lo, zp + lo);
    }
  };
  const auto pad_out = [&](int64_t lo, int64_t hi) {  // padding columns of the requantized output hold the zp
    if (io.out_q && epi.ld_out_u8 > L.n)
      for (int64_t r = lo; r < hi; ++r)
        std::memset(io.out_q + r * epi.ld_out_u8 + L.n, epi.out_zp, epi.ld_out_u8 - L.n);
  };
  auto prep = [&](int64_t lo, int64_t hi, bool quantize = true) {
    prep_into(lo, hi, quantize, q8, rs, rz);
    pad_out(lo, hi);
  };
  if (L.kind == LinearKind::BsrS8) {
    BsrS8 bw;
    bw.n = L.n;
    bw.k = L.k;
    bw.block_rows = L.bsr_rows;
    bw.rowptr = L.bsr_rowptr.data();
    bw.cols = L.bsr_cols.data();
    bw.values = L.bsr_values.data();
    bw.values16 = L.bsr_values16.data();
    bw.col_sum = L.col_sum.data();
    bw.w_scale = L.w_scale.data();
    bw.pair_slots = L.bsr_pair_slots;
    bw.narrow = L.bsr_narrow;
    bw.pair_quads = bsr_pair_quads(*kt, L.bsr_rows, L.bsr_narrow, L.bsr_pair_slots, L.k);
    if (L.gathered()) {
      bw.gq_ptr = L.bsr_gq_ptr.data();
      bw.gq_inputs = L.bsr_gq_inputs.data();
      bw.gq_values = L.bsr_gq_values.data();
    }
    if (!L.bsr_pair_tile.empty()) {
      bw.pair_tile = L.bsr_pair_tile.data();
      bw.pair_ptr = L.bsr_pair_ptr.data();
      bw.pair_rows = L.bsr_pair_rows.data();
      bw.pair_cols = L.bsr_pair_cols.data();
      bw.pair_values = L.bsr_pair_values.data();
      bw.pair_voff = L.bsr_pair_voff.data();
    }
    const uint8_t* at = io.in_at ? io.in_at : w.at.as<uint8_t>();
    if (io.in_at && io.at_bytes != L.gathered())  // byte rows feed gathered quads, quad rows the others
      throw std::logic_error("a previous layer's re-layout in the wrong form");
    if (io.out_at) {  // the next layer's re-layout, in the form its kernel takes
      epi.out_at = io.out_at;
      epi.out_at_k = L.n;
      epi.out_at_bytes = io.at_bytes;
      epi.out_at_pairs =
          bsr_pair_quads(*kt, io.next->bsr_rows, io.next->bsr_narrow, io.next->bsr_pair_slots, io.next->k);
    }
    epi.qkv = io.qkv;
    epi.qkv_s8 = io.qkv_s8;
    epi.tile_vecs = bsr_tile_vecs_;
    epi.bsr_transpose16 = bsr_transpose16_;
    epi.bsr_pieces_v2 = bsr_pieces_v2_;
    // rows are quantized and re-laid in blocks of 16 tokens; then a split by tokens or by output rows (see
    // sparse_split_tokens and bsr_split_short)
    // A call of a few tokens reads its u8 rows directly (KernelTable::bsr_few_tokens: no re-layout, no transposes)
    // unless its input comes re-laid or its output goes into the next layer's re-layout or the attention's bf16
    // operands. TRIMFORMER_BSR_FEW_TOKENS_OFF=1: the tiles' path.
    const bool few = few_tokens_call(L, m) && !io.in_at && !io.out_at && !io.qkv.q && !io.qkv_s8.q;
    const bool fused_prep =
        kt->bsr_quant_pack_at && L.static_act && !io.in_q && !io.in_at && !L.bsr_pair_slots && !few;
    // the dynamic quantization fused the same way (quad rows only: gathered quads and pair records keep the u8 rows)
    const bool fused_rows = kt->bsr_quant_rows_pack_at && !L.static_act && !io.in_q && !io.in_at &&
                            !L.bsr_pair_slots && !L.gathered() && !fused_rows_off_ && !few;
    const bool short_split = bsr_split_short(m, nt);
    // A long token split (shares from 256 tokens on, kSparseAtTile-aligned), or one thread's call of as many tokens,
    // prepares and multiplies its tokens kBsrPieceTokens at a time, so that each piece's re-layout is still in L2
    // when the kernel reads it (a share of 1024 tokens at 3072 inputs is 3 MiB of re-layout, written out and read
    // back). TRIMFORMER_BSR_PIECES_OFF=1: the whole share first.
    const bool split = splits_tokens(L, m);
    const bool pieces = !bsr_pieces_off_ && ((split && !short_split) || (nt == 1 && m >= 2 * kBsrPieceTokens));
    const bool by_tokens = split || pieces;
    const auto prepare = [&](int64_t lo, int64_t hi) {
      prep(lo, hi, !fused_prep && !fused_rows);
      if (fused_rows)
        kt->bsr_quant_rows_pack_at(io.in, L.k, m, lo, hi, L.k, rs, rz, w.at.as<uint8_t>());
      else if (fused_prep && L.gathered())
        kt->bsr_quant_pack_bytes(io.in, L.k, m, lo, hi, L.k, 1.0f / L.a_scale, L.a_zp, w.at.as<uint8_t>());
      else if (fused_prep)  // the static quantization and the re-layout in one pass (no u8 rows)
        kt->bsr_quant_pack_at(io.in, L.k, m, lo, hi, L.k, 1.0f / L.a_scale, L.a_zp, w.at.as<uint8_t>(),
                              bw.pair_quads);
      else if (!io.in_at && L.bsr_pair_slots)
        kt->bsr_pack_pairs(q, ldq, m, lo, hi, L.k, L.bsr_pair_slots, w.at.as<uint8_t>());
      else if (!io.in_at && L.gathered())
        kt->bsr_pack_bytes(q, ldq, m, lo, hi, L.k, w.at.as<uint8_t>());
      else if (!io.in_at)
        kt->bsr_pack_at(q, ldq, m, lo, hi, L.k, w.at.as<uint8_t>(), bw.pair_quads);
    };
    if (few) {
      // each thread quantizes the few rows itself, into rows of its own, and goes straight on to its output columns:
      // no barrier between the threads' preparation and their products
      parallel_linear(
          nt, m, L.n, 16, [](int64_t, int64_t) {},
          [&](int64_t, int64_t, int64_t n0, int64_t n1) {
            thread_local AlignedBuf own_rows;
            float own_scale[kFewTokensMax], own_zp[kFewTokensMax];
            own_rows.reserve(m * ldq);
            prep_into(0, m, true, own_rows.as<uint8_t>(), own_scale, own_zp);
            if (n1 == L.n) pad_out(0, m);  // by one thread
            Epilogue own = epi;
            own.row_scale = own_scale;
            own.row_zp = own_zp;
            kt->gemm_bsr_s8(io.in_q ? io.in_q : own_rows.as<uint8_t>(), ldq, nullptr, m, bw, io.out, L.n, n0, n1,
                            own);
          },
          Split::Cols, 16, L.col_groups, ln, ln_rows, false, /*prep_barrier=*/false);
      return;
    }
    parallel_linear(
        nt, m, L.n, 16,
        [&](int64_t lo, int64_t hi) {
          if (!pieces) prepare(lo, hi);
        },
        [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
          if (!by_tokens) {
            kt->gemm_bsr_s8(q, ldq, at, m, bw, io.out, L.n, n0, n1, epi);
            return;
          }
          for (int64_t c0 = m0; c0 < m1;) {
            const int64_t c1 = pieces ? std::min(m1, c0 + kBsrPieceTokens) : m1;
            if (pieces) prepare(c0, c1);
            // these tokens as calls of their own: to the tile's end from a c0 inside a re-layout tile, then (from
            // a tile-aligned start) one call for the rest (bsr_at_offset). At avx2's 8-token tiles a call per tile
            // left the 1x4 and pair kernels 8-token passes only.
            for (int64_t p = c0; p < c1;) {
              const int64_t tile = L.bsr_pair_slots ? kPairAtTile : kt->bsr_at_tile;
              const int64_t end = short_split && p % tile != 0 ? std::min(c1, (p / tile + 1) * tile) : c1;
              const int64_t at_p = L.bsr_pair_slots ? bsr_pairs_at_offset(p, L.k, L.bsr_pair_slots)
                                                    : bsr_at_offset(p, L.k, tile);
              kt->gemm_bsr_s8(q + p * ldq, ldq, at + at_p, end - p, bw, io.out + p * L.n, L.n, n0, n1,
                              rows_from(epi, p, kt->bsr_at_tile));  // out_at: the next layer's u8 re-layout
              p = end;
            }
            c0 = c1;
          }
        },
        by_tokens ? Split::Rows : Split::Cols, /*row_align=*/by_tokens ? token_align(L, m) : 16,
        L.col_groups, ln, ln_rows, io.rows_stay && by_tokens);
    return;
  }
  if (L.kind == LinearKind::PermS8) {  // the dense GEMM's driver and epilogue, the permuted-quad kernel
    PermS8 pw;
    pw.n = L.n;
    pw.k = L.k;
    pw.records = L.packed.as<uint8_t>();
    pw.panel_off = L.perm_panel_off.data();
    pw.steps = L.perm_steps.data();
    parallel_linear(
        nt, m, L.n, kPermPanel, prep,
        [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
          kt->gemm_perm_s8(q, ldq, pw, io.out, L.n, m0, m1, n0, n1, epi);
        },
        Split::Auto, 1, L.col_groups, ln, ln_rows);
    return;
  }
  parallel_linear(
      nt, m, L.n, kt->s8_nr, prep,
      [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
        kt->gemm_s8(q, ldq, L.packed.as<void>(), L.n, L.k, io.out, L.n, m0, m1, n0, n1, epi);
      },
      Split::Auto, 1, L.col_groups, ln, ln_rows);
}

namespace {
// Carves 64-byte aligned pieces out of one scratch buffer.
struct Carver {
  char* p;
  template <class T>
  T* take(size_t count) {
    T* r = reinterpret_cast<T*>(p);
    p += (count * sizeof(T) + 63) / 64 * 64;
    return r;
  }
};
inline int64_t round4(int64_t x) { return (x + 3) / 4 * 4; }
}  // namespace

size_t EncoderEngine::attention_scratch_bytes(int64_t seq) const {
  const int64_t d = cfg_.head_dim;
  const auto al = [](size_t b) { return (b + 63) / 64 * 64; };
  size_t f32 = al(kt_->pack_f32_size(seq, d)) + al(kt_->pack_f32_size(d, seq)) + al(seq * seq * 4);
  size_t s8 = al(seq * round4(d)) + 2 * al(seq * 4) +                        // Q as u8 + row params
              al(seq * d) + 2 * al(seq * 4) + al(kt_->pack_s8_size(seq, d)) +  // K as s8 + scale, sums, packed
              al(seq * seq * 4) + al(seq * round4(seq)) + 2 * al(seq * 4) +    // scores, P as u8 + row params
              al(d * seq * 4) + al(d * seq) + 2 * al(d * 4) + al(kt_->pack_s8_size(d, seq));  // V^T
  if (kt_->attention_f32) f32 = std::max(f32, kt_->attention_f32_scratch(seq, d));
  size_t bf16 = 0;
  if (kt_->gemm_bf16)
    bf16 = al(seq * (d + 2) * 2) + al(kt_->pack_bf16_size(seq, d)) + al(seq * seq * 4) + al(seq * (seq + 2) * 2) +
           al(kt_->pack_bf16_size(d, seq));
  return std::max(std::max(f32, s8), bf16) + 256;
}

QkvBf16 EncoderEngine::qkv_bf16_operands(Workspace& w, int64_t nb, int64_t seq) const {
  QkvBf16 ops;
  const int64_t d = cfg_.head_dim, nh = cfg_.heads;
  // a piece of the block-sparse kernel's epilogue is 16 tokens x 16 output rows: within one sequence and one head
  if (attention_now_ != 2 || !kt_->bsr_qkv_bf16 || seq % 16 != 0 || d % 16 != 0) return ops;
  const auto al = [](size_t b) { return (b + 63) / 64 * 64; };
  const size_t kv = al(std::max(kt_->pack_bf16_size(seq, d), kt_->pack_bf16_size(d, seq)));
  const size_t q = al(nb * seq * nh * d * 2);
  const size_t bytes = q + 2 * nb * nh * kv;
  if (w.qkv_bf.size() < bytes) w.qkv_bf.reserve(bytes);
  char* base = w.qkv_bf.as<char>();
  ops.q = reinterpret_cast<uint16_t*>(base);
  ops.k = base + q;
  ops.v = base + q + nb * nh * kv;
  ops.kv_bytes = static_cast<int64_t>(kv);
  ops.seq = seq;
  ops.heads = nh;
  ops.head_dim = d;
  // K's and V's packed padding (tokens past seq, features past head_dim) is never written: zero, as the packing
  // functions leave it
  if (seq % kt_->bf16_nr != 0 || d % kt_->bf16_nr != 0) std::memset(ops.k, 0, 2 * nb * nh * kv);
  return ops;
}

QkvS8 EncoderEngine::qkv_s8_operands(Workspace& w, int64_t nb, int64_t seq) const {
  QkvS8 ops;
  const int64_t d = cfg_.head_dim, nh = cfg_.heads;
  // finish_qkv_s8 gathers a head's rows of 16 tokens within one sequence, at most 64 features, K in whole panels
  if (attention_now_ != 1 || !kt_->bsr_qkv_s8 || qkv_s8_off_ || observe_ || seq % 64 != 0 || d % 16 != 0 || d > 64)
    return ops;
  const auto al = [](size_t b) { return (b + 63) / 64 * 64; };
  const size_t rows = static_cast<size_t>(nb * nh * seq);
  const size_t k_head = al(kt_->pack_s8_size(seq, d));
  const size_t q = al(rows * d), scales = al(rows * sizeof(float));
  const size_t vt = al(rows * d * sizeof(float));
  const size_t bytes = vt + q + 3 * scales + static_cast<size_t>(nb * nh) * k_head + al(rows * sizeof(int32_t));
  if (w.qkv_s8.size() < bytes) w.qkv_s8.reserve(bytes);
  ops.vt = w.qkv_s8.as<float>();
  char* base = w.qkv_s8.as<char>() + vt;
  ops.q = reinterpret_cast<uint8_t*>(base);
  ops.q_scale = reinterpret_cast<float*>(base + q);
  ops.q_zp = reinterpret_cast<float*>(base + q + scales);
  ops.k_scale = reinterpret_cast<float*>(base + q + 2 * scales);
  ops.k_sum = reinterpret_cast<int32_t*>(base + q + 3 * scales);
  ops.k = reinterpret_cast<int8_t*>(base + q + 3 * scales + al(rows * sizeof(int32_t)));
  ops.k_bytes = static_cast<int64_t>(k_head);
  ops.seq = seq;
  ops.heads = nh;
  ops.head_dim = d;
  return ops;
}

// Whether every gemm_bsr_s8 call of block-sparse QKV L over m tokens covers whole heads (finish_qkv_s8 needs them):
// one thread, a token split (every row), or a column split whose shares of each of Q, K and V end on heads
bool EncoderEngine::qkv_whole_heads(const Linear& L, int64_t m) const {
  const int nt = team();
  if (nt == 1 || splits_tokens(L, m)) return true;
  const int64_t d = cfg_.head_dim;
  const int64_t groups =
      L.col_groups > 1 && L.n % L.col_groups == 0 && (L.n / L.col_groups) % 16 == 0 ? L.col_groups : 1;
  const int64_t gn = L.n / groups;
  for (int i = 0; i < nt; ++i) {  // parallel_linear's column split (nr 16)
    int64_t n0, n1;
    split_range(gn, 16, nt, i, &n0, &n1);
    if (n0 % d != 0 || n1 % d != 0) return false;
  }
  return true;
}

// Attention with both matmuls in BF16 (float32 accumulation): no scales to compute, so unlike INT8 it also pays
// off at small head sizes. Only built when the CPU has AVX512_BF16 (checked at engine construction). The operands
// come from the float rows of qkv (converted and packed here, per head) or, with `ops`, as a block-sparse QKV wrote
// them (qkv_bf16_operands: Q's rows read in place, K and V packed).
void EncoderEngine::attention_bf16(const float* qkv, const QkvBf16* ops, const float* mask_bias, int64_t batch,
                                   int64_t seq, float* ctx) {
  const int64_t nh = cfg_.heads, d = cfg_.head_dim, H = nh * d, ld = 3 * H;  // H: attention width
  const float alpha = 1.0f / std::sqrt(static_cast<float>(d));
  const KernelTable* kt = kt_;
  const int64_t dp = (d + 1) / 2 * 2, sp = (seq + 1) / 2 * 2;
  const int64_t tasks = batch * nh;
  AlignedBuf* scr = tl_ws->scratch.data();
  team_for(team(), tasks, [&](int64_t task) {
    const int64_t b = task / nh, h = task % nh;
    Carver c{scr[omp_get_thread_num()].as<char>()};
    float* scores = c.take<float>(seq * seq);
    uint16_t* pb = c.take<uint16_t>(seq * sp);
    const uint16_t* qb;
    const void *kpack, *vpack;
    int64_t ldq;
    if (ops) {
      qb = ops->q + b * seq * H + h * d;
      ldq = H;
      kpack = ops->k + task * ops->kv_bytes;
      vpack = ops->v + task * ops->kv_bytes;
    } else {
      uint16_t* q16 = c.take<uint16_t>(seq * dp);
      void* k16 = c.take<char>(kt->pack_bf16_size(seq, d));
      void* v16 = c.take<char>(kt->pack_bf16_size(d, seq));
      const float* q = qkv + b * seq * ld + h * d;
      kt->to_bf16_rows(q, ld, q16, dp, seq, d);
      kt->pack_bf16_nk_f32(q + H, ld, seq, d, k16);
      kt->pack_bf16_kn(q + 2 * H, ld, d, seq, v16);
      qb = q16;
      ldq = dp;
      kpack = k16;
      vpack = v16;
    }
    Epilogue se;
    se.alpha = alpha;
    se.bias = mask_bias + b * seq;
    kt->gemm_bf16(qb, ldq, kpack, seq, d, scores, seq, 0, seq, 0, seq, se);
    kt->softmax_bf16_rows(scores, seq, seq, seq, pb, sp);
    kt->gemm_bf16(pb, sp, vpack, d, seq, ctx + b * seq * H + h * d, H, 0, seq, 0, d, Epilogue());
  });
}

// Query rows per chunk of the INT8 and the unfused float attention: whole heads while a head's float scores take
// at most kAttnScoreBytes (isa.h), else multiples of 48 rows (the GEMM's 6-row micro-tiles, 16-row pieces) within it. A head's
// scores at seq 384 are 576 KiB, which with the layer's other rows did not stay in the Ice Lake Xeon's 1.25 MiB L2
// between the score GEMM, the softmax and P.V. 90% block static INT8 BERT-base there, against whole heads: 0.958x
// the pass time at 1 x 384, 0.918x at 1 x 512, 0.965x at 4 x 384; dynamic INT8 and dense INT8 at 1 x 384 0.986x /
// 0.991x, within the blocks' spread (bench/results/icelake_attention_rows_e2e_ab.md; at seq 256 chunks of 48-144
// rows were level, icelake_attention_rows_sizes_e2e_ab_r2.md); the float attention 0.978x at 1 x 384 on 90% block
// FP32, dense FP32 0.987x (icelake_attention_rows_fp32_e2e_ab.md). TRIMFORMER_ATTN_ROWS=N at construction: chunks of
// N rows.

int64_t EncoderEngine::attention_rows(int64_t seq) const {
  if (attn_rows_ > 0) return attn_rows_;
  if (seq * seq * static_cast<int64_t>(sizeof(float)) <= kAttnScoreBytes) return seq;
  return std::max<int64_t>(48, kAttnScoreBytes / (seq * static_cast<int64_t>(sizeof(float))) / 48 * 48);
}

// Attention with both matmuls in INT8: Q rows as u8 with per-row ranges, K rows as symmetric s8 (the "weight"
// of Q.K^T, so the VNNI packing reads K's rows directly), P rows as u8 in [0, rowmax], and V^T rows (channels)
// as symmetric s8. Softmax and the mask stay in float.
void EncoderEngine::attention_s8(const float* qkv, const QkvS8* ops, const float* mask_bias, int64_t batch,
                                 int64_t seq, float* ctx) {
  const int64_t nh = cfg_.heads, d = cfg_.head_dim, H = nh * d, ld = 3 * H;  // H: attention width
  const float alpha = 1.0f / std::sqrt(static_cast<float>(d));
  const KernelTable* kt = kt_;
  const int64_t dq = round4(d), sq = round4(seq);
  const int64_t tasks = batch * nh;
  AlignedBuf* scr = tl_ws->scratch.data();
  team_for(team(), tasks, [&](int64_t task) {
    const int64_t b = task / nh, h = task % nh;
    Carver c{scr[omp_get_thread_num()].as<char>()};
    uint8_t* qa = c.take<uint8_t>(seq * dq);
    float* qs = c.take<float>(seq);
    float* qz = c.take<float>(seq);
    int8_t* k8 = c.take<int8_t>(seq * d);
    float* ks = c.take<float>(seq);
    int32_t* ksum = c.take<int32_t>(seq);
    void* kpack = c.take<char>(kt->pack_s8_size(seq, d));
    float* scores = c.take<float>(seq * seq);
    uint8_t* pa = c.take<uint8_t>(seq * sq);
    float* ps = c.take<float>(seq);
    float* pz = c.take<float>(seq);
    float* vt = c.take<float>(d * seq);
    int8_t* v8 = c.take<int8_t>(d * seq);
    float* vs = c.take<float>(d);
    int32_t* vsum = c.take<int32_t>(d);
    void* vpack = c.take<char>(kt->pack_s8_size(d, seq));

    const float* q = qkv + b * seq * ld + h * d;
    const float* k = q + H;
    const float* v = q + 2 * H;
    if (ops) {  // Q's rows and K's packing as QKV wrote them (d a multiple of 16: dq = d, no padding)
      const int64_t head = b * nh + h;
      qa = ops->q + head * seq * d;
      qs = ops->q_scale + head * seq;
      qz = ops->q_zp + head * seq;
      kpack = ops->k + head * ops->k_bytes;
      std::memcpy(ks, ops->k_scale + head * seq, seq * sizeof(float));  // (scaled by alpha below)
      ksum = ops->k_sum + head * seq;
    } else {
      kt->quantize_rows_u8(q, ld, qa, dq, seq, d, qs, qz);
      if (kt->quant_pack_nk_s8) {
        kt->quant_pack_nk_s8(k, ld, seq, d, kpack, ks, ksum);
      } else {
        kt->quantize_rows_s8(k, ld, k8, d, seq, d, ks, ksum);
        kt->pack_s8(k8, d, seq, d, kpack);
      }
    }
    for (int64_t j = 0; j < seq; ++j) ks[j] *= alpha;  // fold the 1/sqrt(d) scale into K's scales
    if (ops) {  // V by channel as QKV wrote it: its rows quantized and packed as K's tokens are (the same bytes)
      kt->quant_pack_nk_s8(ops->vt + (b * nh + h) * d * seq, seq, d, seq, vpack, vs, vsum);
    } else if (kt->quant_pack_kn_s8) {
      kt->quant_pack_kn_s8(v, ld, seq, d, vpack, vs, vsum);
    } else {  // transpose V, quantize its rows (= channels), pack
      for (int64_t j = 0; j < seq; ++j)
        for (int64_t t = 0; t < d; ++t) vt[t * seq + j] = v[j * ld + t];
      kt->quantize_rows_s8(vt, seq, v8, seq, d, seq, vs, vsum);
      kt->pack_s8(v8, seq, d, seq, vpack);
    }
    // Query rows a chunk at a time (attention_rows): the chunk's scores, softmax and P.V, so that the scores are
    // still in L2 when the softmax and the second GEMM read them. The rows are independent: the same results.
    Epilogue se;  // scores: the chunk's Q rows (row_scale, row_zp set per chunk) against every key
    se.bias = mask_bias + b * seq;
    se.w_scale = ks;
    se.col_sum = ksum;
    Epilogue ve;  // P.V: the chunk's P rows, at the start of pa / ps / pz
    ve.w_scale = vs;
    ve.col_sum = vsum;
    ve.row_scale = ps;
    ve.row_zp = pz;
    const int64_t chunk = attention_rows(seq);
    for (int64_t r0 = 0; r0 < seq; r0 += chunk) {
      const int64_t rows = std::min(chunk, seq - r0);
      se.row_scale = qs + r0;
      se.row_zp = qz + r0;
      kt->gemm_s8(qa + r0 * dq, dq, kpack, seq, d, scores, seq, 0, rows, 0, seq, se);
      kt->softmax_u8_rows(scores, rows, seq, seq, pa, sq, ps, pz);
      kt->gemm_s8(pa, sq, vpack, d, seq, ctx + (b * seq + r0) * H + h * d, H, 0, rows, 0, d, ve);
    }
  });
}

void EncoderEngine::attention(const float* qkv, const float* mask_bias, int64_t batch, int64_t seq, float* ctx) {
  const int64_t nh = cfg_.heads, d = cfg_.head_dim, H = nh * d, ld = 3 * H;  // H: attention width
  const float alpha = 1.0f / std::sqrt(static_cast<float>(d));
  const KernelTable* kt = kt_;
  const size_t kbytes = kt->pack_f32_size(seq, d), vbytes = kt->pack_f32_size(d, seq);
  const int64_t tasks = batch * nh;
  AlignedBuf* scr = tl_ws->scratch.data();
  if (kt->attention_f32) {  // the level's fused kernel
    team_for(team(), tasks, [&](int64_t task) {
      const int64_t b = task / nh, h = task % nh;
      const float* q = qkv + b * seq * ld + h * d;
      kt->attention_f32(q, q + H, q + 2 * H, ld, seq, d, alpha, mask_bias + b * seq, ctx + b * seq * H + h * d, H,
                        scr[omp_get_thread_num()].as<void>());
    });
    return;
  }
  team_for(team(), tasks, [&](int64_t task) {
    const int64_t b = task / nh, h = task % nh;
    char* base = scr[omp_get_thread_num()].as<char>();
    float* kpack = reinterpret_cast<float*>(base);
    float* vpack = reinterpret_cast<float*>(base + (kbytes + 63) / 64 * 64);
    float* scores = reinterpret_cast<float*>(base + (kbytes + 63) / 64 * 64 + (vbytes + 63) / 64 * 64);
    const float* q = qkv + b * seq * ld + h * d;
    kt->pack_f32_nk(q + H, ld, seq, d, kpack);
    kt->pack_f32_kn(q + 2 * H, ld, d, seq, vpack);
    Epilogue se;
    se.alpha = alpha;
    se.bias = mask_bias + b * seq;
    const int64_t chunk = attention_rows(seq);  // query rows a chunk at a time, as attention_s8
    for (int64_t r0 = 0; r0 < seq; r0 += chunk) {
      const int64_t rows = std::min(chunk, seq - r0);
      kt->gemm_f32(q + r0 * ld, ld, kpack, seq, d, scores, seq, 0, rows, 0, seq, se);
      kt->softmax_rows(scores, rows, seq, seq);
      kt->gemm_f32(scores, seq, vpack, d, seq, ctx + (b * seq + r0) * H + h * d, H, 0, rows, 0, d, Epilogue());
    }
  });
}

void EncoderEngine::attention_f32_ops(const float* ops, const float* mask_bias, int64_t batch, int64_t seq,
                                      float* ctx) {
  const int64_t nh = cfg_.heads, d = cfg_.head_dim, H = nh * d;
  const float alpha = 1.0f / std::sqrt(static_cast<float>(d));
  const KernelTable* kt = kt_;
  AlignedBuf* scr = tl_ws->scratch.data();
  team_for(team(), batch * nh, [&](int64_t task) {
    const int64_t b = task / nh, h = task % nh;
    const float* block = ops + task * 3 * seq * d;
    kt->attention_f32_packed(block, d, block + seq * d, block + 2 * seq * d, seq, d, alpha, mask_bias + b * seq,
                             ctx + b * seq * H + h * d, H, scr[omp_get_thread_num()].as<void>());
  });
}

void EncoderEngine::embed(const int64_t* ids, const int64_t* mask, const int64_t* types, int64_t batch, int64_t seq,
                          float* x) {
  const int64_t H = cfg_.hidden;
  std::vector<int64_t> pos(batch * seq);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t count = 0;
    for (int64_t s = 0; s < seq; ++s) {
      const int64_t i = b * seq + s;
      if (cfg_.position_mode == 1) {
        const bool real = ids[i] != cfg_.pad_token_id;
        count += real;
        pos[i] = real ? count + cfg_.pad_token_id : cfg_.pad_token_id;
      } else {
        pos[i] = s;
      }
      if (pos[i] >= cfg_.max_positions) throw std::invalid_argument("sequence longer than the model's positions");
    }
  }
  (void)mask;
  const KernelTable* kt = kt_;
  const float* type0 = type_.empty() ? nullptr : type_.data();
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int64_t i = 0; i < batch * seq; ++i) {
    float* row = x + i * H;
    const float* w = word_.data() + ids[i] * H;
    const float* p = pos_.data() + pos[i] * H;
    if (type0) {
      const float* ty = type0 + (types ? types[i] : 0) * H;
      for (int64_t j = 0; j < H; ++j) row[j] = w[j] + ty[j] + p[j];
    } else {
      for (int64_t j = 0; j < H; ++j) row[j] = w[j] + p[j];
    }
    kt->layernorm(row, row, 1, H, H, emb_g_.data(), emb_b_.data(), cfg_.ln_eps);
  }
}

namespace {
// out = LayerNorm(in . W + b + residual) (gamma g, beta b): the projections that end a BERT sub-layer
LinearIO residual_ln(const float* in, float* out, const float* residual, const std::vector<float>& g,
                     const std::vector<float>& b) {
  LinearIO io;
  io.in = in;
  io.out = out;
  io.residual = residual;
  io.ln_gamma = g.data();
  io.ln_beta = b.data();
  return io;
}
}  // namespace

void EncoderEngine::run(const int64_t* ids, const int64_t* mask, const int64_t* types, int64_t batch, int64_t seq,
                        RunResult* out, int pooling, bool normalize) {
  if (batch <= 0 || seq <= 0) throw std::invalid_argument("batch and sequence length must be positive");
  const int64_t M = batch * seq, H = cfg_.hidden;
  attention_now_ = cfg_.attention_mode != 3 ? cfg_.attention_mode : seq <= cfg_.bf16_attention_max_seq ? 2 : 1;
  for (int64_t i = 0; i < M; ++i) {
    if (ids[i] < 0 || ids[i] >= cfg_.vocab) throw std::invalid_argument("input_ids out of the vocabulary range");
    if (types && (types[i] < 0 || types[i] >= std::max<int64_t>(cfg_.type_vocab, 1)))
      throw std::invalid_argument("token_type_ids out of range");
  }
  const int64_t pos_limit = cfg_.position_mode == 1 ? cfg_.max_positions - cfg_.pad_token_id - 1 : cfg_.max_positions;
  if (seq > pos_limit)
    throw std::invalid_argument("sequence length " + std::to_string(seq) + " exceeds the model's maximum of " +
                                std::to_string(pos_limit));
  ensure_buffers(batch, seq);
  float* x = x_.as<float>();
  float* mb = mask_bias_.as<float>();
  for (int64_t i = 0; i < M; ++i) mb[i] = (mask && mask[i] == 0) ? -1e30f : 0.0f;

  using clk = std::chrono::steady_clock;
  auto t0 = clk::now();
  auto lap = [&](const char* what) {
    if (!profile_) return;
    const auto t1 = clk::now();
    profile_ms_[what] += std::chrono::duration<double, std::milli>(t1 - t0).count();
    t0 = t1;
  };
  embed(ids, mask, types, batch, seq, x);
  lap("embed");
  const KernelTable* kt = kt_;
  // Sequences go through the layer stack in groups of about chunk_rows tokens: every op is row-wise or
  // per-sequence, so the results are the same, but a group's activations (qkv, the FFN's inner rows) stay in cache
  // between ops instead of streaming a whole batch's through DRAM; the cost is re-reading the weights per group.
  const int64_t per_chunk = cfg_.chunk_rows > 0 ? std::max<int64_t>(1, cfg_.chunk_rows / seq) : batch;
  // a block-sparse QKV before BF16 attention writes the attention's operands (one buffer for every layer)
  const bool any_bsr_qkv = std::any_of(layers_.begin(), layers_.end(),
                                       [](const EncoderLayer& L) { return L.qkv.kind == LinearKind::BsrS8; });
  // The team's ops inside one parallel region for the whole pass (team_for, parallel_linear under tl_team_error):
  // no region to open and close per op, and between block-sparse INT8 Linears that split their tokens the same
  // way (attention output -> FFN1 -> FFN2 -> the next layer's QKV, with the LayerNorms) no barrier either: each
  // thread goes on with its own rows. The attention, which reads every token's K and V and writes every head,
  // keeps a barrier on each side. Observers keep a region per op (their ranges merge between ops).
  const bool one_region = !region_per_op_ && !observe_ && threads_ > 1;
  QkvBf16 team_ops;  // one region: set up once by this thread, for the largest group (the layout fits smaller ones)
  if (one_region && any_bsr_qkv) team_ops = qkv_bf16_operands(ws_[0], std::min(per_chunk, batch), seq);
  QkvS8 team_s8;  // the same for the INT8 attention's Q, K and V
  if (one_region && any_bsr_qkv) team_s8 = qkv_s8_operands(ws_[0], std::min(per_chunk, batch), seq);
  auto op_done = [&](const char* what) {  // the profiler's lap; inside the one region, once every thread is done
    if (!profile_) return;
    if (tl_team_error) {
#pragma omp barrier
#pragma omp master
      lap(what);
      return;
    }
    lap(what);
  };
  auto run_group = [&](int64_t b0, int64_t nb) {  // the layer stack over sequences b0 .. b0 + nb - 1
    Workspace& w = *tl_ws;
    const int64_t Mc = nb * seq;
    float* xc = x + b0 * seq * H;
    const float* mbc = mb + b0 * seq;
    float* x1 = w.x1.as<float>();
    float* qkv = w.qkv.as<float>();
    float* ctx = w.ctx.as<float>();
    float* ff = w.ff.as<float>();
    const bool team = tl_team_error != nullptr;
    const QkvBf16 bf16_ops = team ? team_ops : any_bsr_qkv ? qkv_bf16_operands(w, nb, seq) : QkvBf16();
    const QkvS8 s8_ops = team ? team_s8 : any_bsr_qkv ? qkv_s8_operands(w, nb, seq) : QkvS8();
    // Inside the one region, from a token split into a Linear with the same split the threads go on without a
    // barrier, as long as the ops since the last barrier that prepare their input into the shared re-layout and
    // u8 rows (w.at, w.q8: a Linear that reads neither takes its input from the previous epilogue, in_at / in_q)
    // lay them out alike (same input width and block kind): then each thread writes and reads only its own
    // tokens' bytes there, and one still reading an op's input never meets another's writes for the next op
    const Linear* segment = nullptr;  // the first op since the last barrier that prepares into w.at / w.q8
    const auto same_layout = [](const Linear& a, const Linear& b) {
      return a.k == b.k && a.bsr_rows == b.bsr_rows && a.bsr_pair_slots == b.bsr_pair_slots &&
             a.bsr_narrow == b.bsr_narrow && a.gathered() == b.gathered();
    };
    // after op a, before op b (b_prepares: b writes w.at / w.q8): false = a barrier, and a new segment from b
    const auto stays = [&](const Linear& a, const Linear& b, bool b_prepares) {
      const bool go_on = team && splits_tokens(a, Mc) && splits_tokens(b, Mc) &&
                         token_align(a, Mc) == token_align(b, Mc) &&
                         (!b_prepares || !segment || same_layout(*segment, b));
      if (!go_on) segment = nullptr;
      if (b_prepares && !segment) segment = &b;
      return go_on;
    };
    for (size_t li = 0; li < layers_.size(); ++li) {
      EncoderLayer& L = layers_[li];
      LinearIO qio;
      qio.in = xc;
      qio.out = qkv;
      if (L.qkv.kind == LinearKind::BsrS8) qio.qkv = bf16_ops;
      // a block-sparse QKV before INT8 attention writes Q's and K's quantized operands and V by channel
      // (qkv_s8_operands)
      if (L.qkv.kind == LinearKind::BsrS8 && s8_ops.q && qkv_whole_heads(L.qkv, Mc)) {
        qio.qkv_s8 = s8_ops;
        if (!team || omp_get_thread_num() == 0) qkv_s8_layers_.fetch_add(1, std::memory_order_relaxed);
      }
      // a sparse FP32 QKV writes the fused float attention's operands (K and V in its panels) where the shapes
      // come in 16s: 0.97x the 90% unstructured FP32 BERT-base pass at batch 16, 0.98x at batch 1 on Zen 4
      // (bench/results/zen4_qkv_f32_operands_ab3.md)
      const bool qkv_ops = kt->attention_f32_packed && attention_now_ == 0 && !observe_ &&
                           (L.qkv.kind == LinearKind::SparseF32 || L.qkv.kind == LinearKind::NmF32) &&
                           seq % 16 == 0 && cfg_.head_dim % 16 == 0 && !qkv_ops_off_;
      if (qkv_ops) qio.qkv_f32 = QkvF32{qkv, seq, cfg_.heads, cfg_.head_dim, 0};
      linear(L.qkv, qio, Mc);
      op_done("qkv");
      if (qkv_ops) attention_f32_ops(qkv, mbc, nb, seq, ctx);
      else if (attention_now_ == 1) attention_s8(qkv, qio.qkv_s8.q ? &qio.qkv_s8 : nullptr, mbc, nb, seq, ctx);
      else if (attention_now_ == 2) attention_bf16(qkv, qio.qkv.q ? &qio.qkv : nullptr, mbc, nb, seq, ctx);
      else attention(qkv, mbc, nb, seq, ctx);
      op_done("attention");
      // attn_out and FFN2 finish with their LayerNorm (LinearIO::ln_gamma): the profile's "attn_out" and "ffn2"
      // include it
      LinearIO proj = residual_ln(ctx, x1, xc, L.ln1_g, L.ln1_b);
      segment = &L.attn_out;  // after the attention's barrier
      proj.rows_stay = stays(L.attn_out, L.ffn1, true);
      linear(L.attn_out, proj, Mc);
      op_done("attn_out");
      if (L.ffn1.int8 && L.ffn2.int8 && L.ffn2.static_act && !observe_) {
        // static INT8: FFN1's epilogue writes FFN2's u8 input directly (dense: no float round trip through
        // memory; block-sparse: from rows still hot, with ff as the float scratch)
        // Both block-sparse at a level with a re-layout: FFN1's tiles go straight into FFN2's (no u8 rows, no
        // bsr_pack_at for FFN2)
        // (not where FFN2's call of a few tokens runs over its u8 rows: takes_relaid_input)
        const bool relaid = takes_relaid_input(L.ffn2, Mc) && bsr_fills_next_at(cfg_.act);
        const bool at_direct = relaid && L.ffn1.kind == LinearKind::BsrS8 && !L.ffn2.gathered();
        // both gathered quads: FFN1's finished rows are FFN2's byte rows (their calls start at whole tiles)
        const bool bytes_direct = relaid && L.ffn1.gathered() && L.ffn2.gathered() && !bytes_direct_off_;
        LinearIO up;
        up.in = x1;
        up.out = ff;
        up.out_q = w.q8b.as<uint8_t>();
        if (at_direct || bytes_direct) up.out_at = w.at_next.as<uint8_t>();
        up.at_bytes = bytes_direct;
        up.next = &L.ffn2;
        up.act = cfg_.act;
        up.rows_stay = stays(L.ffn1, L.ffn2, !at_direct && !bytes_direct);
        linear(L.ffn1, up, Mc);
        op_done("ffn1");
        LinearIO down = residual_ln(nullptr, xc, x1, L.ln2_g, L.ln2_b);
        down.in_q = w.q8b.as<uint8_t>();
        if (at_direct || bytes_direct) down.in_at = w.at_next.as<uint8_t>();
        down.at_bytes = bytes_direct;
        down.rows_stay = li + 1 < layers_.size() && stays(L.ffn2, layers_[li + 1].qkv, true);
        linear(L.ffn2, down, Mc);
      } else if (ffn_f32_at_direct(L) && !observe_) {
        // both sparse FP32: FFN1's epilogue writes its Y^T rows straight into FFN2's re-layout (they are its
        // rows already: no transpose, no float rows of ff, no spf32_pack_at for FFN2). 90% unstructured FP32
        // BERT-base on Zen 4: 0.85x the pass time at batch 1 (every round), 0.92x at batch 16 in a 6-round run and
        // mixed in a noisier one (bench/results/zen4_spf32_ffn_at_direct_ab*.md)
        // One thread's group (side by side) runs the FFN a piece of tokens at a time, FFN1 then FFN2: FFN2's
        // re-layout of a 64-token piece (768 KiB at BERT-base's 3072 inputs) is then still in L2 when FFN2 reads
        // it, where a whole 128-token group's (1.5 MiB) was not
        const int64_t piece = this->team() == 1 && ffn_piece_ > 0 ? ffn_piece_ : Mc;
        for (int64_t t0 = 0; t0 < Mc; t0 += piece) {
          const int64_t mt = std::min(piece, Mc - t0);
          LinearIO up;
          up.in = x1 + t0 * L.ffn1.k;
          up.out = ff + t0 * L.ffn1.n;
          up.act = cfg_.act;
          up.out_at_f32 = w.at_next.as<float>();
          linear(L.ffn1, up, mt);
          if (piece == Mc) op_done("ffn1");
          LinearIO down = residual_ln(ff + t0 * L.ffn1.n, xc + t0 * L.ffn2.n, x1 + t0 * L.ffn2.n, L.ln2_g, L.ln2_b);
          down.in_at_f32 = w.at_next.as<float>();
          linear(L.ffn2, down, mt);
        }
      } else {
        linear(L.ffn1, x1, Mc, ff, cfg_.act, nullptr);
        op_done("ffn1");
        linear(L.ffn2, residual_ln(ff, xc, x1, L.ln2_g, L.ln2_b), Mc);
      }
      op_done("ffn2");
    }
  };
  // With small weights and a batch of at least two groups per thread, the groups run side by side, each on one
  // thread with its own workspace: a sequence's activations then stay in that core's L2 through the whole stack
  // (the ops' own splits across threads would share them); observers and the profiler keep the team mode. Each
  // thread takes the next group from a shared counter when it is done with one, so a core that a neighbour slows
  // runs fewer: 0.989x / 0.997x the pass time of fixed halves for 90% unstructured FP32 / INT8 BERT-base at batch
  // 16 on Zen 4 (bench/results/zen4_side_by_side_dynamic_ab.md; TRIMFORMER_SIDE_STATIC=1: fixed halves).
  const int64_t groups = (batch + per_chunk - 1) / per_chunk;
  const bool side_by_side = cfg_.chunk_rows > 0 && threads_ > 1 && batch >= 2 * threads_ && !observe_ && !profile_;
  if (side_by_side) {
    // a third of chunk_rows per group (256 tokens by default): one core's L2 holds such a group's activations
    // (group sizes measured in bench/results/batch_groups.md)
    const int64_t side_group = std::max<int64_t>(1, cfg_.chunk_rows / 3 / seq);
    const int64_t per_thread = (batch + threads_ - 1) / threads_;
    const int64_t group = std::min(side_group, per_thread);
    for (int t = 1; t < threads_; ++t) ensure_workspace(ws_[t], group * seq, seq, 1);  // ws_[0]: ensure_buffers
    TeamError error;
    std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads_)
    {
      const int t = omp_get_thread_num();
      tl_ws = &ws_[t];
      tl_team = 1;
      if (side_static_) {
        int64_t lo, hi;
        split_range(batch, 1, omp_get_num_threads(), t, &lo, &hi);
        error.guard([&] {
          for (int64_t b0 = lo; b0 < hi; b0 += group) run_group(b0, std::min(group, hi - b0));
        });
      } else {
        error.guard([&] {
          for (int64_t b0; (b0 = next.fetch_add(group)) < batch;) run_group(b0, std::min(group, batch - b0));
        });
      }
      tl_team = 0;
    }
    tl_ws = &ws_[0];
    error.rethrow();
  } else if (one_region) {
    TeamError error;
#pragma omp parallel num_threads(threads_)
    {
      tl_ws = &ws_[0];
      tl_team = 0;
      tl_team_error = &error;
      for (int64_t g = 0; g < groups; ++g)
        error.guard([&] { run_group(g * per_chunk, std::min(per_chunk, batch - g * per_chunk)); });
      tl_team_error = nullptr;
    }
    tl_ws = &ws_[0];
    error.rethrow();
  } else {
    tl_ws = &ws_[0];
    tl_team = 0;
    for (int64_t g = 0; g < groups; ++g) run_group(g * per_chunk, std::min(per_chunk, batch - g * per_chunk));
  }
  out->hidden.assign(x, x + M * H);
  out->pooled.clear();
  if (pooling != 0) {
    out->pooled.assign(batch * H, 0.0f);
    for (int64_t b = 0; b < batch; ++b) {
      float* dst = out->pooled.data() + b * H;
      if (pooling == 1) {
        std::memcpy(dst, x + b * seq * H, H * 4);
      } else {  // mean over the tokens the mask keeps (all tokens without a mask)
        int64_t count = 0;
        for (int64_t s = 0; s < seq; ++s) {
          if (mask && mask[b * seq + s] == 0) continue;
          const float* row = x + (b * seq + s) * H;
          for (int64_t j = 0; j < H; ++j) dst[j] += row[j];
          ++count;
        }
        const float inv = 1.0f / static_cast<float>(std::max<int64_t>(count, 1));
        for (int64_t j = 0; j < H; ++j) dst[j] *= inv;
      }
      if (normalize) {
        double ss = 0.0;
        for (int64_t j = 0; j < H; ++j) ss += static_cast<double>(dst[j]) * dst[j];
        const float inv = static_cast<float>(1.0 / std::max(std::sqrt(ss), 1e-12));
        for (int64_t j = 0; j < H; ++j) dst[j] *= inv;
      }
    }
  }
  lap("output");
  out->head.clear();
  out->head_dim = 0;
  if (head_.empty()) return;
  const int64_t rows = cfg_.head_pool == 1 ? batch : M;
  float* hin = head_in_.as<float>();
  float* htmp = head_tmp_.as<float>();
  if (cfg_.head_pool == 1) {
    for (int64_t b = 0; b < batch; ++b) std::memcpy(hin + b * H, x + b * seq * H, H * 4);
  } else {
    std::memcpy(hin, x, M * H * 4);
  }
  for (size_t j = 0; j < head_.size(); ++j) {
    linear(head_[j], hin, rows, htmp, cfg_.head_acts[j], nullptr);
    std::swap(hin, htmp);
  }
  const int64_t od = head_.back().n;
  out->head.assign(hin, hin + rows * od);
  out->head_dim = od;
}

void EncoderEngine::set_histograms(const std::map<std::string, std::pair<float, float>>& ranges, int bins) {
  auto set = [&](Linear& L) {
    auto it = ranges.find(L.name);
    if (it == ranges.end() || bins <= 0) {
      L.hist.clear();
      return;
    }
    L.hist_lo = it->second.first;
    L.hist_hi = it->second.second;
    L.hist.assign(bins, 0.0);
  };
  for (auto& L : layers_) { set(L.qkv); set(L.attn_out); set(L.ffn1); set(L.ffn2); }
  for (auto& L : head_) set(L);
}

std::map<std::string, std::vector<double>> EncoderEngine::histograms() const {
  std::map<std::string, std::vector<double>> r;
  auto add = [&](const Linear& L) {
    if (!L.hist.empty()) r[L.name] = L.hist;
  };
  for (const auto& L : layers_) { add(L.qkv); add(L.attn_out); add(L.ffn1); add(L.ffn2); }
  for (const auto& L : head_) add(L);
  return r;
}

std::map<std::string, std::pair<float, float>> EncoderEngine::observed_ranges() const {
  std::map<std::string, std::pair<float, float>> r;
  auto add = [&](const Linear& L) {
    if (L.obs_seen) r[L.name] = {L.obs_min, L.obs_max};
  };
  for (const auto& L : layers_) { add(L.qkv); add(L.attn_out); add(L.ffn1); add(L.ffn2); }
  for (const auto& L : head_) add(L);
  return r;
}

void EncoderEngine::reset_observers() {
  auto rs = [](Linear& L) { L.obs_seen = false; };
  for (auto& L : layers_) { rs(L.qkv); rs(L.attn_out); rs(L.ffn1); rs(L.ffn2); }
  for (auto& L : head_) rs(L);
}

}  // namespace tf
