// Decoder ops compiled for the scalar level (flags in CMakeLists.txt).
#define TF_ISA_NS scalar

#include "decoder_ops.inc"
