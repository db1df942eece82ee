"""Bitmask-sparse kernels (decode GEMV, prefill expansion) against numpy over odd shapes, random sparsity
patterns (unstructured, 2:4, empty rows, fully dense rows) and every ISA level; the INT8 kernel also with
AVX512_VBMI2 switched off (the portable path of AVX-512 CPUs without byte expand-loads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trimformer import _core
from trimformer.formats.registry import get_format
from trimformer.formats.sparsity import magnitude_mask

SHAPES = [(1, 1), (37, 77), (16, 64), (50, 200), (3, 5), (33, 129), (9, 576), (2, 1000)]


def _sparse(rng, shape, sparsity, pattern="unstructured"):
    w = rng.standard_normal(shape).astype(np.float32)
    w *= magnitude_mask(w, sparsity, pattern)
    if shape[0] > 2:
        w[1] = 0.0  # an empty row
        w[2] = rng.standard_normal(shape[1])  # a dense one
    return w


def _int8_reference(q, rs, zp, codes):
    k = codes.shape[1]
    acc = q[:, :k].astype(np.int64) @ codes.astype(np.int64).T
    return acc, codes.astype(np.int64).sum(1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 9])
@pytest.mark.parametrize("sparsity,pattern", [(0.0, "unstructured"), (0.5, "unstructured"), (0.7, "unstructured"),
                                              (0.97, "unstructured"), (0.5, "2:4"), (1.0, "unstructured")])
def test_bitmask_f32_gemv_and_expand(shape, m, sparsity, pattern, isa, rng):
    w = _sparse(rng, shape, sparsity, pattern)
    st = get_format("bitmask-f32").encode(w)
    x = rng.standard_normal((m, shape[1])).astype(np.float32)
    y, dense = _core.bitmask_f32(x, st[".bm_mask"], st[".bm_values"], shape[1], isa)
    np.testing.assert_array_equal(dense, w)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))


def _check_int8(rng, shape, m, sparsity, pattern, isa):
    w = _sparse(rng, shape, sparsity, pattern)
    st = get_format("bitmask-int8").encode(w)
    k = shape[1]
    ldq = k + int(rng.integers(0, 9))
    q = rng.integers(0, 256, (m, ldq)).astype(np.uint8)
    rs = (rng.random(m) + 0.1).astype(np.float32)
    zp = rng.integers(0, 256, m).astype(np.float32)
    y, dense = _core.bitmask_s8(q, rs, zp, st[".bm_mask"], st[".bm_qvalues"], st[".wscale"], k, isa)
    codes = np.rint(get_format("bitmask-int8").decode(st) / st[".wscale"][:, None]).astype(np.int64)
    np.testing.assert_array_equal(dense, codes)
    acc, col_sum = _int8_reference(q, rs, zp, codes)
    ref = (acc - zp[:, None] * col_sum[None, :]) * (rs[:, None] * st[".wscale"][None, :])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("m", [1, 3, 4, 8])
@pytest.mark.parametrize("sparsity,pattern", [(0.0, "unstructured"), (0.5, "unstructured"), (0.9, "unstructured"),
                                              (0.5, "2:4"), (1.0, "unstructured")])
def test_bitmask_int8_gemv_and_expand(shape, m, sparsity, pattern, isa, rng):
    _check_int8(rng, shape, m, sparsity, pattern, isa)


def test_bitmask_int8_portable_path_without_vbmi2():
    """TRIMFORMER_NO_VBMI2=1 makes the avx512 level run the portable INT8 kernel; it must agree too."""
    if "avx512_vnni" not in _core.detect_isa():
        pytest.skip("no AVX-512 level on this CPU")
    code = (
        "import json, numpy as np\n"
        "from trimformer import _core\n"
        "import tests.runtime.test_bitmask_kernels as t\n"
        "rng = np.random.default_rng(5)\n"
        "for shape in t.SHAPES:\n"
        "    for m in (1, 5):\n"
        "        t._check_int8(rng, shape, m, 0.5, 'unstructured', 'avx512_vnni')\n"
        "print(json.dumps(_core.bitmask_s8_kernel('avx512_vnni')))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRIMFORMER_NO_VBMI2": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == "portable"


def test_bitmask_kernel_rejects_inconsistent_inputs(rng):
    w = _sparse(rng, (5, 70), 0.5)
    st = get_format("bitmask-f32").encode(w)
    x = rng.standard_normal((1, 70)).astype(np.float32)
    with pytest.raises(ValueError, match="popcount"):
        _core.bitmask_f32(x, st[".bm_mask"], st[".bm_values"][:-1], 70)
    bad = st[".bm_mask"].copy()
    bad[0, -1] |= 0x80  # input 127 of a 70-input row
    with pytest.raises(ValueError, match="past k"):
        _core.bitmask_f32(x, bad, st[".bm_values"], 70)


def test_bitmask_int8_kernel_per_level():
    """The avx2 level has its own INT8 expand kernel (pshufb tables); scalar runs the reference loops."""
    assert _core.bitmask_s8_kernel("scalar") == "portable"
    if "avx2" in _core.detect_isa() or "avx512_vnni" in _core.detect_isa():
        assert _core.bitmask_s8_kernel("avx2") == "avx2"
