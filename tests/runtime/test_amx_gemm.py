"""The AMX INT8 GEMM (tiles; the avx512 level's gemm_s8 for calls of >= 16 rows when the CPU and OS have AMX-INT8)
against the exact integer reference over odd shapes: row tails (not multiples of the 32-row block), K tails (not
multiples of the 64-deep tile step), column tails (not multiples of the 32-column block), the requantizing
epilogue; and the VNNI path (TRIMFORMER_NO_AMX=1, in a subprocess) giving bit-identical results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trimformer import _core

pytestmark = pytest.mark.skipif(_core.gemm_s8_kernel("") != "amx", reason="CPU/OS without AMX-INT8")

# the test binding splits the rows in two calls, so m >= 32 puts both halves on tiles
SHAPES = [(32, 1, 1), (33, 31, 3), (40, 64, 63), (64, 65, 64), (65, 130, 65), (100, 33, 129), (129, 97, 388),
          (67, 200, 771)]


def _reference(a, w, ws, a_scale, zp):
    acc = a.astype(np.int64) @ w.T.astype(np.int64)
    colsum = w.astype(np.int64).sum(1)
    return ((acc.astype(np.float32) - np.float32(zp) * colsum.astype(np.float32)) * (np.float32(a_scale) * ws))


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_amx_gemm_is_exact(rng, m, n, k):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = rng.random(n, dtype=np.float32) + 0.01
    got = _core.gemm_s8(a, w, ws, 0.0173, 131)
    np.testing.assert_array_equal(got, _reference(a, w, ws, 0.0173, 131).astype(np.float32))


@pytest.mark.parametrize("m,n,k", [(37, 70, 33), (64, 130, 64), (96, 65, 200)])
def test_amx_requantizing_epilogue(rng, m, n, k):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = (rng.random(n, dtype=np.float32) + 0.5) * 1e-3
    bias = rng.standard_normal(n, dtype=np.float32)
    as_float = _core.gemm_s8(a, w, ws, 0.02, 9, bias=bias, act=1)
    q = _core.gemm_s8(a, w, ws, 0.02, 9, bias=bias, act=1, out_scale=0.01, out_zp=17)
    np.testing.assert_array_equal(q, _core.quantize_u8(as_float, 0.01, 17))


_CHILD = """
import json, sys
import numpy as np
from trimformer import _core
rng = np.random.default_rng(5)
a = rng.integers(0, 256, (77, 203), dtype=np.uint8)
w = rng.integers(-127, 128, (130, 203), dtype=np.int8)
ws = rng.random(130, dtype=np.float32)
bias = rng.standard_normal(130, dtype=np.float32)
out = _core.gemm_s8(a, w, ws, 0.02, 7, bias=bias, act=3)
print(json.dumps({"kernel": _core.gemm_s8_kernel(""), "out": out.tobytes().hex()}))
"""


def _with_and_without_amx(child: str) -> dict[str, dict]:
    """The JSON that `child` prints last, run in a fresh process with TRIMFORMER_NO_AMX=0 and =1."""
    runs = {}
    for off in ("0", "1"):
        env = dict(os.environ, TRIMFORMER_NO_AMX=off)
        res = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True)
        runs[off] = json.loads(res.stdout.strip().splitlines()[-1])
    return runs


def test_amx_and_vnni_are_bit_identical():
    runs = _with_and_without_amx(_CHILD)
    assert runs["0"]["kernel"] == "amx" and runs["1"]["kernel"] == "vnni"
    assert runs["0"]["out"] == runs["1"]["out"]


_CHILD_BF16 = """
import json
import numpy as np
from trimformer import _core
from trimformer.formats.registry import to_bf16_bits
rng = np.random.default_rng(6)
a = rng.standard_normal((77, 203), dtype=np.float32)
w = to_bf16_bits(rng.standard_normal((130, 203), dtype=np.float32))
out = _core.gemm_bf16(a, w, bias=rng.standard_normal(130, dtype=np.float32), act=1)
print(json.dumps({"kernel": _core.gemm_bf16_kernel(), "out": out.tolist()}))
"""


@pytest.mark.skipif(_core.gemm_bf16_kernel() != "amx", reason="CPU/OS without AMX-BF16")
def test_amx_bf16_agrees_with_vdpbf16ps():
    # the tile sums its pairs in its own order: the same products, float rounding apart
    runs = _with_and_without_amx(_CHILD_BF16)
    assert runs["0"]["kernel"] == "amx" and runs["1"]["kernel"] == "avx512_bf16"
    np.testing.assert_allclose(runs["0"]["out"], runs["1"]["out"], rtol=1e-5, atol=1e-4)


_CHILD_BF16_LINEAR = """
import json
import numpy as np
from trimformer import _core
from trimformer.formats.registry import get_format
rng = np.random.default_rng(8)
w = rng.standard_normal((70, 130)).astype(np.float32)
x = rng.standard_normal((33, 130)).astype(np.float32)
r = _core.LinearRunner({"l" + s: t for s, t in get_format("bf16").encode(w).items()}, "l", "", 2)
print(json.dumps({"kernel": _core.bf16_linear_kernel(), "kind": r.kind, "out": r.run(x, 1, None).tolist()}))
"""


@pytest.mark.skipif(_core.gemm_bf16_kernel() == "none", reason="CPU without AVX512_BF16")
def test_bf16_linears_run_where_it_measures_faster():
    # with AMX the BF16 tiles; without, vdpbf16ps only where it beats the float32 GEMM (bf16_gemm_preferred), else
    # the same bf16 weights widened to float32: either way within bf16 activation rounding of each other
    runs = _with_and_without_amx(_CHILD_BF16_LINEAR)
    for run in runs.values():
        assert run["kind"] == ("f32" if run["kernel"] == "f32" else "bf16")
    # without AMX each process times the two GEMMs itself: where they are close, two processes may choose apart
    without_amx = ("avx512_bf16", "f32")
    assert runs["1"]["kernel"] in without_amx
    if _core.gemm_bf16_kernel() == "amx":
        assert runs["0"]["kernel"] == "amx"
    else:
        assert runs["0"]["kernel"] in without_amx
    a, b = np.asarray(runs["0"]["out"]), np.asarray(runs["1"]["out"])
    assert np.abs(a - b).max() <= 2e-2 * np.abs(a).max()
