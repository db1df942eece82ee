// Sparse FP32 GEMMs for the scalar level: the generic loops (spmm_f32_generic.inc) with this level's flags.
#define TF_ISA_NS scalar
#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace scalar {
#include "spmm_f32_generic.inc"
}  // namespace scalar
}  // namespace tf
