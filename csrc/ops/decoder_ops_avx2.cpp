// Decoder ops compiled for the avx2 level (flags in CMakeLists.txt).
#define TF_ISA_NS avx2
#define TF_ISA_AVX2 1
#include "decoder_ops.inc"
