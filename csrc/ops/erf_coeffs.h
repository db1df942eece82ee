// The erf rational used by every GELU (erf) path: erf(x) = x * P(x^2) / Q(x^2) on |x| <= 4 (a (5,5) rational fitted
// here by reweighted least squares; max error 4e-7 in float32), +-1 beyond (error < 2e-8). One table, so the scalar
// loops (rowops.inc) and the 16-lane version (epilogue_avx512.h) evaluate the same polynomial.
#pragma once

namespace tf {
constexpr float kErfP[6] = {1.9702318e-06f, 2.8865613e-04f, 4.0306100e-03f, 5.3551249e-02f, 1.9687627e-01f,
                            1.1283790e+00f};
constexpr float kErfQ[6] = {3.74650990e-05f, 1.22290116e-03f, 1.54986084e-02f, 1.16736434e-01f, 5.07808089e-01f,
                            1.0f};
}  // namespace tf
