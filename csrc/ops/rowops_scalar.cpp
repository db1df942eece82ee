// Row ops compiled for the scalar level (flags in CMakeLists.txt).
#define TF_ISA_NS scalar
#define TF_ISA_SCALAR 1
#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "rowops.inc"
