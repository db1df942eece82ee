// Sparse FP32 GEMMs for the avx2 level: the generic loops (spmm_f32_generic.inc) with this level's flags.
#define TF_ISA_NS avx2
#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace avx2 {
#include "spmm_f32_generic.inc"
}  // namespace avx2
}  // namespace tf
