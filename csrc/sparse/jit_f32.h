// csr-f32 as generated code (docs/kernels.md "Generated csr-f32 code"): the loader turns a weight's rows into x86
// functions, one per group of up to kJitRows output rows, that the avx512 kernel calls per 16 tokens. Plain C++:
// it writes instruction bytes and never runs them itself, so it lives outside the ISA namespaces.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/isa.h"

namespace tf {

// The generated code and its values, in executable pages it owns (unmapped on destruction).
class JitF32Code {
 public:
  JitF32Code() = default;
  ~JitF32Code();
  JitF32Code(const JitF32Code&) = delete;
  JitF32Code& operator=(const JitF32Code&) = delete;
  // Code for rows of the CSR weight (row pointers, input indices, values) in the blocks whose first rows are
  // block_start (ascending, from 0, each a multiple of 16; the last block ends at n): every block split into
  // groups of at most kJitRows rows. At rows are at_stride bytes apart, Y^T rows y_stride bytes apart. Returns
  // false (and holds nothing) where the system refuses executable memory.
  bool build(int64_t n, const int32_t* rowptr, const int32_t* cols, const float* values,
             const std::vector<int32_t>& block_start, int32_t at_stride, int32_t y_stride);
  const SparseF32Jit& view() const { return view_; }
  size_t code_bytes() const { return code_size_; }
  const void* code() const { return code_; }
  const std::vector<float>& values() const { return values_; }

 private:
  void* code_ = nullptr;
  size_t code_size_ = 0, mapped_ = 0;
  std::vector<float> values_;
  std::vector<JitGroupF32> groups_;
  std::vector<int32_t> blocks_;  // block b: groups blocks_[b] .. blocks_[b + 1] - 1
  SparseF32Jit view_;
};

}  // namespace tf
