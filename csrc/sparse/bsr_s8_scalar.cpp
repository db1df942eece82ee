// Block-sparse INT8 GEMM for the scalar level: the generic loops (bsr_s8_generic.inc) with this level's flags.
#define TF_ISA_NS scalar
#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace scalar {
#include "bsr_s8_generic.inc"
}  // namespace scalar
}  // namespace tf
