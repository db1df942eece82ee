// Decoder ops compiled for the avx512 level (flags in CMakeLists.txt).
#define TF_ISA_NS avx512
#define TF_ISA_AVX512 1
#include "decoder_ops.inc"
