// Block-sparse INT8 GEMM for the avx2 level: the generic loops (bsr_s8_generic.inc) with this level's flags.
#define TF_ISA_NS avx2
#include "../core/isa.h"
#include "../kernels/decl.inc"

namespace tf {
namespace avx2 {
#include "bsr_s8_generic.inc"
}  // namespace avx2
}  // namespace tf
