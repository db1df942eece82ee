// What the binding translation units share: numpy arrays in, borrowed host tensors out.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "executor/encoder.h"

namespace tf {
using AnyArray = nanobind::ndarray<nanobind::ro, nanobind::c_contig, nanobind::device::cpu>;
std::map<std::string, HostTensor> host_tensors(const std::map<std::string, AnyArray>& tensors);
// A numpy array that owns (and frees) the vector's storage.
template <class T>
nanobind::ndarray<nanobind::numpy, T> to_numpy(std::vector<T>&& v, std::vector<size_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  nanobind::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nanobind::ndarray<nanobind::numpy, T>(heap->data(), shape.size(), shape.data(), owner);
}
void register_decoder(nanobind::module_& m);  // bindings_decoder.cpp
}  // namespace tf
