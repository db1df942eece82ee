"""Code generation of the dense GEMM micro-kernels: no hot loop may keep its accumulators on the stack (the AVX2
GEMMs once ran at half speed that way, with every numeric test passing). Static: compiles to assembly, runs no
kernel, so it checks every ISA level on any x86-64 machine."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def _scanner():
    spec = importlib.util.spec_from_file_location("asm_spills", ROOT / "bench" / "micro" / "asm_spills.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("asm_spills", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _cmake_flags(var: str) -> list[str]:
    text = (ROOT / "CMakeLists.txt").read_text()
    m = re.search(rf"set\({var} ([^)]*)\)", text)
    assert m, f"{var} not found in CMakeLists.txt"
    return m.group(1).split()


KERNELS = [
    ("csrc/gemm/gemm_f32_avx2.cpp", "TF_AVX2_FLAGS", []),
    ("csrc/gemm/gemm_s8_avx2.cpp", "TF_AVX2_FLAGS", []),
    ("csrc/sparse/spmm_f32_avx2.cpp", "TF_AVX2_FLAGS", []),
    ("csrc/sparse/bsr_s8_avx2.cpp", "TF_AVX2_FLAGS", []),
    ("csrc/gemm/gemm_f32_avx512.cpp", "TF_AVX512_FLAGS", []),
    ("csrc/gemm/gemm_s8_avx512vnni.cpp", "TF_AVX512_FLAGS", []),
    ("csrc/gemm/gemm_bf16_avx512.cpp", "TF_AVX512_FLAGS", ["-mavx512bf16"]),
    ("csrc/sparse/bsr_s8_avx512vnni.cpp", "TF_AVX512_FLAGS", []),
    ("csrc/sparse/spmm_f32_avx512vnni.cpp", "TF_AVX512_FLAGS", []),
    ("csrc/sparse/perm_s8_avx512vbmi.cpp", "TF_AVX512_FLAGS", ["-mavx512vbmi"]),
]


# the AVX2 FP32 micro-kernel before the fix, reduced: unrolled k loop, rolled partial-store loop
ROLLED_STORE_KERNEL = """#include <immintrin.h>
#include <cstring>
template <int R>
void micro(const float* a, long lda, const float* b, long k, float* c, long ldc, long cols) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (long kk = 0; kk < k; ++kk) {
    const __m256 b0 = _mm256_load_ps(b + kk * 16), b1 = _mm256_load_ps(b + kk * 16 + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * lda + kk);
      c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
    }
  }
  alignas(32) float tmp[16];
  for (int i = 0; i < R; ++i) {
    _mm256_store_ps(tmp, c0[i]);
    _mm256_store_ps(tmp + 8, c1[i]);
    std::memcpy(c + i * ldc, tmp, cols * 4);
  }
}
template void micro<6>(const float*, long, const float*, long, float*, long, long);
"""


@pytest.mark.parametrize("source,var,extra", KERNELS, ids=[k[0].split("/")[-1] for k in KERNELS])
def test_gemm_accumulators_stay_in_registers(source, var, extra):
    scan = _scanner()
    loops = scan.spilling_loops(scan.assembly(ROOT / source, _cmake_flags(var) + extra))
    assert not loops, [(scan.demangle(x.function)[:100], x.macs, x.stack_stores) for x in loops]


def test_scanner_sees_a_rolled_store_loop(tmp_path):
    src = tmp_path / "rolled.cpp"
    src.write_text(ROLLED_STORE_KERNEL)
    scan = _scanner()
    assert scan.spilling_loops(scan.assembly(src, _cmake_flags("TF_AVX2_FLAGS")))


# The tiles' finishing functions transpose 16 rows of Y^T back to token rows and finish them in registers. If GCC
# keeps the 16 rows in an array in memory (a variable index, one array filled by two forms, a call inside the row
# loop), every piece stores and reloads all 16: 0.89-0.96x the block-sparse INT8 kernels' time once they stopped
# (bench/results/icelake_finish_registers_kernels_ab_128.md). Activations done in registers only (none, ReLU):
# GELU-tanh and tanh call out of line, and GELU-erf's constants take registers of their own.
FINISHERS = [
    ("csrc/sparse/bsr_s8_avx512vnni.cpp", re.compile(r"finish_pieceILNS_\d+ActE[03]E")),
    ("csrc/sparse/spmm_f32_avx512vnni.cpp", re.compile(r"store_rowsILNS_\d+ActE[03]E")),
]


@pytest.mark.parametrize("source,pattern", FINISHERS, ids=[f[0].split("/")[-1] for f in FINISHERS])
def test_finishing_pieces_keep_their_rows_in_registers(source, pattern):
    scan = _scanner()
    counts = scan.stack_stores_by_function(scan.assembly(ROOT / source, _cmake_flags("TF_AVX512_FLAGS")))
    finishers = {f: n for f, n in counts.items() if pattern.search(f)}
    assert len(finishers) >= 4, sorted(counts)[:20]
    assert not any(finishers.values()), {scan.demangle(f)[:100]: n for f, n in finishers.items() if n}
