"""compress/obs.py: SparseGPT / GPTQ respect their patterns and grids and beat magnitude / RTN."""

import numpy as np
import pytest
import torch

from trimformer.compress.obs import HessianAccumulator, KbitQuantizer, gptq_quantize, sparsegpt_prune
from trimformer.formats import kbit
from trimformer.formats.sparsity import magnitude_mask


def _layer(seed: int, n: int = 48, k: int = 128, tokens: int = 1024):
    """A random layer and correlated inputs (low-rank mixing plus outlier features, like real activations)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    mix = torch.randn(k // 4, k, generator=g)
    x = torch.randn(tokens, k // 4, generator=g) @ mix + 0.1 * torch.randn(tokens, k, generator=g)
    x[:, :3] *= 8.0
    acc = HessianAccumulator(k)
    for chunk in x.split(300):
        acc.add(chunk.unsqueeze(0))
    return w, x, acc


def _err(w, w2, x):
    return float(torch.linalg.norm(x @ w.T - x @ w2.T))


def test_hessian_accumulator_is_the_average():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 9, generator=g)
    acc = HessianAccumulator(9)
    acc.add(x[:10])
    acc.add(x[10:].reshape(3, 9, 9))
    assert acc.n_samples == 37
    torch.testing.assert_close(acc.hessian, 2.0 / 37 * x.T @ x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="last dimension"):
        acc.add(torch.zeros(2, 8))


@pytest.mark.parametrize("type_name,group", [("int4", 32), ("int3", 64), ("int4-asym", 128), ("nf4", 64),
                                             ("fp4", 32), ("int8", None), ("fp8-e4m3", None)])
def test_gptq_on_grid_and_better_than_rtn(type_name, group):
    w, x, acc = _layer(1)
    deq, codes, scales, offsets = gptq_quantize(w, acc.hessian, type_name, group)
    g = group or w.shape[1]
    assert codes.shape == w.shape and scales.shape == (w.shape[0], w.shape[1] // g) == offsets.shape
    assert int(codes.max()) < 2 ** kbit.get_kbit_type(type_name).bits
    np.testing.assert_array_equal(deq.numpy(), kbit.dequantize(codes, scales, offsets, type_name))
    rtn = torch.from_numpy(kbit.dequantize(*kbit.quantize_rtn(w.numpy(), type_name, group), type_name))
    assert _err(w, deq, x) < _err(w, rtn, x)


def test_gptq_act_order_keeps_original_layout():
    w, x, acc = _layer(2)
    deq, codes, scales, offsets = gptq_quantize(w, acc.hessian, "int4", 32, act_order=True)
    np.testing.assert_array_equal(deq.numpy(), kbit.dequantize(codes, scales, offsets, "int4"))
    rtn = torch.from_numpy(kbit.dequantize(*kbit.quantize_rtn(w.numpy(), "int4", 32), "int4"))
    assert _err(w, deq, x) < _err(w, rtn, x)
    # codes are the nearest levels for the stored scales (GPTQ only moves weights, never off-grid)
    np.testing.assert_array_equal(kbit.quantize_with_params(deq.numpy(), scales, offsets, "int4"), codes)


def test_gptq_with_mask_keeps_zeros():
    w, x, acc = _layer(3)
    keep = torch.from_numpy(magnitude_mask(w.numpy(), 0.5, "2:4"))
    deq, codes, scales, offsets = gptq_quantize(w, acc.hessian, "int4", 64, mask=keep)
    assert torch.all(deq[~keep] == 0)
    np.testing.assert_array_equal(deq.numpy(), kbit.dequantize(codes, scales, offsets, "int4"))
    with pytest.raises(ValueError, match="exact zero"):
        gptq_quantize(w, acc.hessian, "int4-asym", 64, mask=keep)
    with pytest.raises(ValueError, match="mask shape"):
        gptq_quantize(w, acc.hessian, "int4", 64, mask=keep[:, :10])


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("unstructured", 0.7), ("2:4", 0.5),
                                              ("4:8", 0.5), ("block", 0.5)])
def test_sparsegpt_patterns_and_better_than_magnitude(pattern, sparsity):
    w, x, acc = _layer(4, n=40, k=96)
    out, keep = sparsegpt_prune(w, acc.hessian, sparsity, pattern, block_size=32)
    assert out.dtype == torch.float32 and keep.dtype == torch.bool and keep.shape == w.shape
    assert torch.all(out[~keep] == 0)
    assert abs((1 - keep.float().mean().item()) - sparsity) < 0.01
    kn = keep.numpy()
    if pattern in ("2:4", "4:8"):
        n_keep, m = (int(v) for v in pattern.split(":"))
        assert np.all(kn.reshape(w.shape[0], -1, m).sum(-1) == n_keep)
    if pattern == "block":
        tiles = kn.reshape(10, 4, 24, 4)
        assert np.all(tiles.all(axis=(1, 3)) | ~tiles.any(axis=(1, 3)))
    mag = w * torch.from_numpy(magnitude_mask(w.numpy(), sparsity, pattern))
    assert _err(w, out, x) < _err(w, mag, x)


def test_sparsegpt_joint_quantization():
    w, x, acc = _layer(5)
    quant = KbitQuantizer("int4", 32)
    out, keep = sparsegpt_prune(w, acc.hessian, 0.5, "unstructured", quantizer=quant)
    assert torch.all(out[~keep] == 0)
    np.testing.assert_array_equal(out.numpy(), kbit.dequantize(quant.codes, quant.scales, quant.offsets, "int4"))
    # joint beats prune-then-RTN
    pruned, keep2 = sparsegpt_prune(w, acc.hessian, 0.5, "unstructured")
    rtn = torch.from_numpy(kbit.dequantize(*kbit.quantize_rtn(pruned.numpy(), "int4", 32), "int4")) * keep2
    assert _err(w, out, x) < _err(w, rtn, x)


def test_bad_arguments():
    w, x, acc = _layer(6, n=8, k=30, tokens=64)
    with pytest.raises(ValueError, match="pattern"):
        sparsegpt_prune(w, acc.hessian, 0.5, "3:5")
    with pytest.raises(ValueError, match="divisible"):
        sparsegpt_prune(w, acc.hessian, 0.5, "4:8")
    with pytest.raises(ValueError, match="sparsity"):
        sparsegpt_prune(w, acc.hessian, 1.5)
    with pytest.raises(ValueError, match="Hessian shape"):
        gptq_quantize(w, acc.hessian[:5, :5], "int4", None)
    with pytest.raises(ValueError, match="positive"):
        gptq_quantize(w, acc.hessian, "int4", -16)
    with pytest.raises(ValueError, match="unknown"):
        gptq_quantize(w, acc.hessian, "int7", None)


def test_dead_inputs_are_zeroed():
    w, x, acc = _layer(7, n=8, k=32, tokens=256)
    h = acc.hessian.clone()
    h[5, :] = 0
    h[:, 5] = 0
    deq, *_ = gptq_quantize(w, h, "int4", 32)
    assert torch.all(deq[:, 5] == 0)


def test_gptq_ragged_last_group_matches_dequantize():
    # k = 30 at group 16: one group of 16 and one of 14, each with its own scale
    w, x, acc = _layer(7, n=8, k=30, tokens=128)
    deq, codes, scales, offsets = gptq_quantize(w, acc.hessian, "int4", 16)
    assert scales.shape == (8, 2)
    from trimformer.formats.kbit import dequantize

    np.testing.assert_allclose(deq.numpy(), dequantize(codes, scales, offsets, "int4", 16), rtol=1e-6, atol=1e-7)



@pytest.mark.parametrize("type_name,group", [("int4", 32), ("int4-asym", 32), ("nf4", 16), ("int3", None)])
def test_rtn_mse_scale_search(type_name, group):
    """mse=False is exactly kbit.quantize_rtn; the search never raises a group's squared error and lowers it
    overall (shrunk ranges trade clipping for finer steps)."""
    from trimformer.compress.obs import rtn_quantize

    g = torch.Generator().manual_seed(8)
    w = torch.randn(24, 96, generator=g) * torch.linspace(0.5, 2.0, 96)
    w[3, 7] = 9.0  # an outlier: clipping it pays off for the rest of its group
    for a, b in zip(rtn_quantize(w, type_name, group), kbit.quantize_rtn(w.numpy(), type_name, group), strict=True):
        np.testing.assert_array_equal(a, b)
    codes, scales, offsets = rtn_quantize(w, type_name, group, mse=True)
    np.testing.assert_array_equal(kbit.quantize_with_params(w.numpy(), scales, offsets, type_name, group), codes)
    mse_deq = kbit.dequantize(codes, scales, offsets, type_name, group)
    plain = kbit.dequantize(*kbit.quantize_rtn(w.numpy(), type_name, group), type_name, group)
    gs = group or w.shape[1]
    e_mse = ((mse_deq - w.numpy()) ** 2).reshape(24, -1, gs).sum(-1)
    e_plain = ((plain - w.numpy()) ** 2).reshape(24, -1, gs).sum(-1)
    assert np.all(e_mse <= e_plain * (1 + 1e-5) + 1e-9)
    assert e_mse.sum() < 0.95 * e_plain.sum()


def test_rtn_mse_ragged_and_zero_groups():
    from trimformer.compress.obs import rtn_quantize

    w = torch.randn(4, 40, generator=torch.Generator().manual_seed(9))
    w[1] = 0.0  # all-zero groups keep scale 0 and dequantize exactly
    codes, scales, offsets = rtn_quantize(w, "int4", 16, mse=True)
    assert scales.shape == (4, 3) and np.all(scales[1] == 0)
    deq = kbit.dequantize(codes, scales, offsets, "int4", 16)
    assert np.all(deq[1] == 0)


@pytest.mark.parametrize("type_name", ["int4", "int4-asym"])
def test_gptq_mse_on_grid_and_better_than_rtn(type_name):
    w, x, acc = _layer(10)
    w[5, 9] = 12.0
    deq, codes, scales, offsets = gptq_quantize(w, acc.hessian, type_name, 32, act_order=True, mse=True)
    np.testing.assert_array_equal(deq.numpy(), kbit.dequantize(codes, scales, offsets, type_name))
    np.testing.assert_array_equal(kbit.quantize_with_params(deq.numpy(), scales, offsets, type_name), codes)
    plain, *_ = gptq_quantize(w, acc.hessian, type_name, 32, act_order=True)
    assert not torch.equal(plain, deq)  # the search changed some groups' parameters
    from trimformer.compress.obs import rtn_quantize

    rtn = torch.from_numpy(kbit.dequantize(*rtn_quantize(w, type_name, 32, mse=True), type_name))
    assert _err(w, deq, x) < _err(w, rtn, x)
    # joint SparseGPT + quantization takes the search too
    quant = KbitQuantizer("int4", 32, mse=True)
    out, keep = sparsegpt_prune(w, acc.hessian, 0.5, quantizer=quant)
    assert torch.all(out[~keep] == 0)
    np.testing.assert_array_equal(out.numpy(), kbit.dequantize(quant.codes, quant.scales, quant.offsets, "int4"))
