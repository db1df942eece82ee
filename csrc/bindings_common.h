// What the binding translation units share: numpy arrays in, borrowed host tensors out.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <map>
#include <string>

#include "executor/encoder.h"

namespace tf {
using AnyArray = nanobind::ndarray<nanobind::ro, nanobind::c_contig, nanobind::device::cpu>;
std::map<std::string, HostTensor> host_tensors(const std::map<std::string, AnyArray>& tensors);
void register_decoder(nanobind::module_& m);  // bindings_decoder.cpp
}  // namespace tf
