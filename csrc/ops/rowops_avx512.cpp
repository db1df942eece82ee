// Row ops compiled for the avx512 level (flags in CMakeLists.txt).
#define TF_ISA_NS avx512
#define TF_ISA_AVX512 1
#include "../core/isa.h"
#include "../kernels/decl.inc"
#include "rowops.inc"
