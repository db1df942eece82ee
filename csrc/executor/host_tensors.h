// Helpers shared by the executors: validated access to the host tensors handed over at construction, and the
// static split of a range across an OpenMP team.
#pragma once
#include <algorithm>
#include <cstring>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "encoder.h"  // HostTensor

namespace tf {

// The tensor `name` with the given dtype and shape, or a clear error naming it.
inline const HostTensor& need(const std::map<std::string, HostTensor>& t, const std::string& name, char dtype,
                              const std::vector<int64_t>& shape) {
  auto it = t.find(name);
  if (it == t.end()) throw std::invalid_argument("missing tensor '" + name + "'");
  const HostTensor& h = it->second;
  if (h.dtype != dtype) throw std::invalid_argument("tensor '" + name + "' has the wrong dtype");
  if (h.shape != shape) {
    std::string s = "tensor '" + name + "' has shape [";
    for (auto d : h.shape) s += std::to_string(d) + ",";
    s += "], expected [";
    for (auto d : shape) s += std::to_string(d) + ",";
    throw std::invalid_argument(s + "]");
  }
  return h;
}

template <class T>
std::vector<T> copy_tensor(const std::map<std::string, HostTensor>& t, const std::string& name, char dtype,
                           const std::vector<int64_t>& shape) {
  const HostTensor& h = need(t, name, dtype, shape);
  int64_t n = 1;
  for (auto d : shape) n *= d;
  const T* p = static_cast<const T*>(h.data);
  return std::vector<T>(p, p + n);
}

// bf16 bit patterns widened to float32 (exact): the float32 fallback of bf16 weights on CPUs without AVX512_BF16.
inline std::vector<float> widen_bf16(const uint16_t* bits, int64_t n) {
  std::vector<float> wide(n);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(&wide[i], &u, 4);
  }
  return wide;
}

// Split [0, total) into `parts` contiguous chunks aligned to `align`; chunk i is [lo, hi).
inline void split_range(int64_t total, int64_t align, int parts, int i, int64_t* lo, int64_t* hi) {
  const int64_t units = (total + align - 1) / align;
  const int64_t per = units / parts, extra = units % parts;
  const int64_t u0 = i * per + std::min<int64_t>(i, extra);
  const int64_t u1 = u0 + per + (i < extra ? 1 : 0);
  *lo = std::min(total, u0 * align);
  *hi = std::min(total, u1 * align);
}

}  // namespace tf
