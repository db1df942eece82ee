"""The registry of weight formats, shared by the compressor, the packer (save/load) and the native kernels.

A format turns a dense float32 Linear weight [out, in] into the tensors stored on disk (by suffix), and back.
The native engine recognises the stored suffixes (`.weight` for float32, `.qweight` + `.wscale` for INT8) and
packs them for the active ISA at load time, so files stay portable across CPUs. Adding a format is one entry
here plus its kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WeightFormat:
    name: str
    description: str
    # dense float32 [out, in] -> {suffix: array}
    encode: Callable[[np.ndarray], dict[str, np.ndarray]]
    # {suffix: array} -> dense float32 [out, in]
    decode: Callable[[dict[str, np.ndarray]], np.ndarray]
    suffixes: tuple[str, ...]
    bits_per_weight: float
    int8_activations: bool = False  # the kernel consumes u8 activations (static mode calibrates their range)
    sparse: bool = False  # only non-zeros (and their positions) are stored and computed

    def logical_shape(self, tensors: dict[str, np.ndarray]) -> tuple[int, int]:
        """[out, in] of the dense weight these stored tensors represent (without decoding it)."""
        for key in (".bsr_shape", ".csr_shape", ".b41_shape", ".nm_shape", ".bm_shape"):
            if key in tensors:
                shape = np.asarray(tensors[key]).ravel()
                return int(shape[0]), int(shape[1])
        rows, cols = np.shape(tensors[self.suffixes[0]])
        return int(rows), int(cols)


def _f32_encode(w: np.ndarray) -> dict[str, np.ndarray]:
    return {".weight": np.ascontiguousarray(w, dtype=np.float32)}


def _f32_decode(t: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(t[".weight"], dtype=np.float32)


def quantize_int8_per_channel(w: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel INT8 in [-qmax, qmax]: w ~= q * scale[:, None]."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / float(qmax), 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -qmax, qmax).astype(np.int8)
    return q, scale


# block-int7's weight range: u8 activations times weights in [-64, 64] leave vpmaddubsw's 16-bit pair sums
# unsaturated (255 * 64 * 2 = 32640 <= 32767), so levels without VNNI multiply them 8-bit (KernelTable::
# bsr_narrow_values), with half the multiply instructions of the 16-bit path that exact 8-bit weights need there
NARROW_QMAX = 64


def _int8_encode(w: np.ndarray) -> dict[str, np.ndarray]:
    q, scale = quantize_int8_per_channel(w)
    return {".qweight": q, ".wscale": scale}


def _int8_decode(t: dict[str, np.ndarray]) -> np.ndarray:
    return t[".qweight"].astype(np.float32) * np.asarray(t[".wscale"], np.float32)[:, None]


def _block_int8_encode(w: np.ndarray, qmax: int = 127) -> dict[str, np.ndarray]:
    from .sparsity import encode_block_int8

    q, scale = quantize_int8_per_channel(w, qmax)
    return {**encode_block_int8(q), ".wscale": scale}


def _block_int8_decode(t: dict[str, np.ndarray]) -> np.ndarray:
    from .sparsity import decode_block_int8

    return decode_block_int8(t).astype(np.float32) * np.asarray(t[".wscale"], np.float32)[:, None]


def _quantized(encode: Callable[[np.ndarray], dict[str, np.ndarray]]) -> Callable[[np.ndarray], dict]:
    """Per-channel INT8 quantization, then `encode` on the INT8 weight (quantization keeps zeros zero)."""
    def run(w: np.ndarray) -> dict[str, np.ndarray]:
        q, scale = quantize_int8_per_channel(w)
        return {**encode(q), ".wscale": scale}
    return run


def _dequantized(decode: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Callable[[dict], np.ndarray]:
    def run(t: dict[str, np.ndarray]) -> np.ndarray:
        return decode(t).astype(np.float32) * np.asarray(t[".wscale"], np.float32)[:, None]
    return run


def _bf16_values(t: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """t with its float32 values under `key` stored as bf16 bit patterns (round to nearest even)."""
    return {**t, key: to_bf16_bits(t[key])}


def _widened(t: Mapping[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    return {**t, key: from_bf16_bits(t[key])}


def _sparse_formats() -> tuple[WeightFormat, ...]:
    from . import sparsity as sp

    f32 = lambda w: np.ascontiguousarray(w, dtype=np.float32)  # noqa: E731
    return (
        WeightFormat("csr-f32", "unstructured sparse float32: every non-zero with its input index (CSR)",
                     lambda w: sp.encode_csr(f32(w), ".csr_values"), lambda t: sp.decode_csr(t, ".csr_values"),
                     (".csr_shape", ".csr_rowptr", ".csr_cols", ".csr_values"), 32, sparse=True),
        WeightFormat("csr-int8", "unstructured sparse INT8 (CSR on disk; run on the 1x4 input quads holding a "
                     "non-zero, at avx2 on input pairs)", _quantized(lambda q: sp.encode_csr(q, ".csr_qvalues")),
                     _dequantized(lambda t: sp.decode_csr(t, ".csr_qvalues")),
                     (".csr_shape", ".csr_rowptr", ".csr_cols", ".csr_qvalues", ".wscale"), 8,
                     int8_activations=True, sparse=True),
        WeightFormat("block-f32", "block-sparse float32: 4x1 blocks (4 output rows x 1 input) with a non-zero",
                     lambda w: sp.encode_block4x1(f32(w)), sp.decode_block4x1,
                     (".b41_shape", ".b41_rowptr", ".b41_cols", ".b41_values"), 32, sparse=True),
        WeightFormat("block-bf16", "block-sparse bfloat16 (4x1 blocks like block-f32; the values are widened to "
                     "float32 at load and run by the float32 kernel: bf16 halves the stored bytes, not the compute)",
                     lambda w: _bf16_values(sp.encode_block4x1(f32(w)), ".b41_values"),
                     lambda t: sp.decode_block4x1(_widened(t, ".b41_values")),
                     (".b41_shape", ".b41_rowptr", ".b41_cols", ".b41_values"), 16, sparse=True),
        WeightFormat("nm-f32", "N:M semi-structured float32 (2:4 or 4:8 along the inputs; values + in-group "
                     "indices at log2(M) bits)", lambda w: sp.encode_nm(f32(w), ".nm_values"),
                     lambda t: sp.decode_nm(t, ".nm_values").astype(np.float32),
                     (".nm_shape", ".nm_values", ".nm_index"), 32, sparse=True),
        WeightFormat("nm-bf16", "N:M semi-structured bfloat16 (nm-f32's layout with bf16 values; widened to float32 "
                     "at load and run by the nm-f32 kernel: bf16 halves the stored value bytes, not the compute)",
                     lambda w: _bf16_values(sp.encode_nm(f32(w), ".nm_values"), ".nm_values"),
                     lambda t: sp.decode_nm(_widened(t, ".nm_values"), ".nm_values").astype(np.float32),
                     (".nm_shape", ".nm_values", ".nm_index"), 16, sparse=True),
        WeightFormat("nm-int8", "N:M semi-structured INT8 (values + in-group indices; run on 1x4 input quads, "
                     "2:4 at avx2 on input pairs)",
                     _quantized(lambda q: sp.encode_nm(q, ".nm_qvalues")),
                     _dequantized(lambda t: sp.decode_nm(t, ".nm_qvalues")),
                     (".nm_shape", ".nm_qvalues", ".nm_index", ".wscale"), 8, int8_activations=True, sparse=True),
        # decoder runtime (csrc/sparse/bitmask.inc): decode is bound by the bytes streamed per token, so a bit per
        # weight + the packed non-zeros beats indices at the 50-70% sparsity of SparseGPT and at 2:4
        WeightFormat("bitmask-f32", "sparse float32: a bit per weight + the non-zeros packed per row (decoder: "
                     "expand-load GEMV for decode, expanded chunks + dense GEMM for prefill)",
                     lambda w: sp.encode_bitmask(f32(w), ".bm_values"), lambda t: sp.decode_bitmask(t, ".bm_values"),
                     (".bm_shape", ".bm_mask", ".bm_values"), 32, sparse=True),
        WeightFormat("bitmask-int8", "sparse INT8 per-channel (W8A8, u8 activations per token): a bit per weight + "
                     "the non-zero codes packed per row (decoder)",
                     _quantized(lambda q: sp.encode_bitmask(q, ".bm_qvalues")),
                     _dequantized(lambda t: sp.decode_bitmask(t, ".bm_qvalues")),
                     (".bm_shape", ".bm_mask", ".bm_qvalues", ".wscale"), 8, int8_activations=True, sparse=True),
    )


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), rounding to nearest even like the hardware converter."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat("f32", "dense float32", _f32_encode, _f32_decode, (".weight",), 32),
        WeightFormat("int8", "dense INT8, symmetric per-output-channel scales", _int8_encode, _int8_decode,
                     (".qweight", ".wscale"), 8, int8_activations=True),
        WeightFormat("block-int8", "block-sparse INT8: only 4x4 blocks with a non-zero are stored and computed",
                     _block_int8_encode, _block_int8_decode,
                     (".bsr_shape", ".bsr_rowptr", ".bsr_cols", ".bsr_values", ".wscale"), 8,
                     int8_activations=True, sparse=True),
        WeightFormat("block-int7", "block-sparse INT8 with weights in [-64, 64] (scale max|w| / 64, about 7 bits): "
                     "block-int8's layout; at avx2 (no VNNI) multiplied 8-bit by vpmaddubsw, which cannot saturate at "
                     "this range, where block-int8 takes 16-bit products. Offered only with reduce_range",
                     lambda w: _block_int8_encode(w, NARROW_QMAX), _block_int8_decode,
                     (".bsr_shape", ".bsr_rowptr", ".bsr_cols", ".bsr_values", ".wscale"), 8,
                     int8_activations=True, sparse=True),
        WeightFormat("bf16", "dense bfloat16 (AMX / AVX512-BF16 kernel; widened to float32 without AVX512_BF16, "
                     "and in the encoder where the float32 GEMM measures faster)",
                     lambda w: {".bweight": to_bf16_bits(w)}, lambda t: from_bf16_bits(t[".bweight"]),
                     (".bweight",), 16),
        *_sparse_formats(),
    )
}


# ---- weight-only k-bit formats (decoder runtime): one parametric family over formats/kbit.py's types ----
# Native modes (csrc/core/decoder_kernels.h KbitMode): codes of <= 4 bits are stored two per byte and decoded
# through a 16-entry table; 8-bit types are stored one per byte and decoded arithmetically.
_KBIT_MODE = {"int8": 1, "int8-asym": 2, "fp8-e4m3": 3, "fp8-e5m2": 4}


def pack_kbit(codes: np.ndarray, scales: np.ndarray, offsets: np.ndarray | None, type_name: str,
              group_size: int) -> dict[str, np.ndarray]:
    """Stored tensors of a k-bit weight given its codes [n, k] and group parameters (formats/kbit.py layout)."""
    from .kbit import get_kbit_type

    t = get_kbit_type(type_name)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [n, k], got shape {codes.shape}")
    n, k = codes.shape
    if not 0 < group_size <= k:
        raise ValueError(f"group_size must be in [1, in_features={k}], got {group_size}")
    g = -(-k // group_size)  # groups per row; the last may be shorter
    scales = np.ascontiguousarray(scales, dtype=np.float32).reshape(n, g)
    if int(codes.max(initial=0)) >= (1 << t.bits):
        raise ValueError(f"codes exceed {t.bits} bits")
    lut = np.zeros(16, np.float32)
    if t.bits <= 4:
        mode = 0
        lut[: t.lut.size] = t.lut
        kp = (k + 31) // 32 * 32
        padded = np.zeros((n, kp), np.uint8)
        padded[:, :k] = codes
        chunks = padded.reshape(n, kp // 32, 2, 16)  # per 32-code chunk: byte j = code j | code (j + 16) << 4
        stored = (chunks[:, :, 0, :] | (chunks[:, :, 1, :] << 4)).reshape(n, kp // 2)
    else:
        mode = _KBIT_MODE[type_name]
        stored = codes ^ np.uint8(0x80) if type_name == "int8" else codes  # int8: code - 128 as a signed byte
    out = {".kcodes": np.ascontiguousarray(stored, dtype=np.uint8), ".kscales": scales,
           ".kmeta": np.array([mode, k, group_size], np.int32), ".klut": lut}
    if t.affine:
        if offsets is None:
            raise ValueError(f"{type_name} is affine: offsets are required")
        out[".koffsets"] = np.ascontiguousarray(offsets, dtype=np.float32).reshape(n, g)
    return out


def unpack_kbit(t: dict[str, np.ndarray]) -> np.ndarray:
    """Dense float32 [n, k] of stored k-bit tensors (the reference the kernels are tested against)."""
    mode, k, group = (int(v) for v in t[".kmeta"])
    stored = np.asarray(t[".kcodes"], np.uint8)
    n = stored.shape[0]
    if mode == 0:
        chunks = stored.reshape(n, -1, 16)
        codes = np.stack([chunks & 15, chunks >> 4], axis=2).reshape(n, -1)[:, :k]
        vals = np.asarray(t[".klut"], np.float32)[codes]
    elif mode == 1:
        vals = stored.view(np.int8).astype(np.float32)
    elif mode == 2:
        vals = stored.astype(np.float32)
    else:
        from .kbit import get_kbit_type

        vals = get_kbit_type("fp8-e4m3" if mode == 3 else "fp8-e5m2").lut[stored]
    g = -(-k // group)
    w = vals * np.repeat(np.asarray(t[".kscales"], np.float32).reshape(n, g), group, axis=1)[:, :k]
    if ".koffsets" in t:
        w = w + np.repeat(np.asarray(t[".koffsets"], np.float32).reshape(n, g), group, axis=1)[:, :k]
    return w.astype(np.float32)


def parse_kbit_format(name: str) -> tuple[str, int | None] | None:
    """'int4-g128' -> ('int4', 128); 'fp8-e4m3' -> ('fp8-e4m3', None: per channel); None if not a k-bit name."""
    from .kbit import KBIT_TYPES

    base, _, grp = name.rpartition("-g")
    if base in KBIT_TYPES and grp.isdigit():
        return base, int(grp)
    if name in KBIT_TYPES:
        return name, None
    return None


def kbit_format(name: str) -> WeightFormat:
    """The weight-only k-bit format `TYPE-gGROUP` (or `TYPE` for one group per output channel), RTN-encoded."""
    parsed = parse_kbit_format(name)
    if parsed is None:
        raise ValueError(f"'{name}' is not a k-bit format (TYPE[-gGROUP], TYPE one of formats/kbit.py's types)")
    type_name, group = parsed

    def encode(w: np.ndarray) -> dict[str, np.ndarray]:
        from .kbit import quantize_rtn, resolve_group_size

        g = resolve_group_size(w.shape[1], group)
        codes, scales, offsets = quantize_rtn(w, type_name, g)
        return pack_kbit(codes, scales, offsets, type_name, g)

    from .kbit import get_kbit_type

    bits = get_kbit_type(type_name).bits
    return WeightFormat(name, f"weight-only {type_name}, group {group or 'per channel'}", encode, unpack_kbit,
                        (".kcodes", ".kscales", ".kmeta", ".klut"), (4 if bits <= 4 else 8) + 32 / (group or 4096))


def get_format(name: str) -> WeightFormat:
    if name in FORMATS:
        return FORMATS[name]
    if parse_kbit_format(name) is not None:
        return kbit_format(name)
    raise ValueError(f"unknown weight format '{name}'; known: {', '.join(FORMATS)}, or a k-bit TYPE[-gGROUP]")


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric u8 scale and zero point for an observed range (the range always includes 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0
    if not scale > 0:
        scale = 1.0
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return scale, zp
