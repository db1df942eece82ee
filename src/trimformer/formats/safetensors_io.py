"""Safetensors reading without torch: memory-mapped, validated, bf16/f16 widened to float32 on request.

The `safetensors` package's numpy loader reads whole files into memory and cannot represent bf16; trimformer's
loader maps the file and checks every header entry against the file size, so a truncated or corrupt file is a
clear error instead of a crash.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; widened by `as_float32`
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "BOOL": np.dtype("?"),
}

_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file is missing, truncated or malformed."""


class SafetensorsFile:
    """A memory-mapped safetensors file. Arrays returned by `get` are read-only views into the mapping."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise SafetensorsError(f"{self.path}: no such file")
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{self.path}: file too short to be safetensors ({size} bytes)")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise SafetensorsError(f"{self.path}: header length {hlen} does not fit the file ({size} bytes)")
            try:
                header = json.loads(fh.read(hlen))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SafetensorsError(f"{self.path}: corrupt header ({e})") from None
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: header is not a JSON object")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._base = 8 + hlen
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(f"{self.path}: bad header entry for '{name}': {info!r}") from None
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if end - begin != nbytes or begin < 0 or self._base + end > size:
                raise SafetensorsError(
                    f"{self.path}: tensor '{name}' (bytes {begin}..{end}) is truncated or inconsistent with its "
                    f"shape {list(shape)} {info['dtype']} (file has {size - self._base} data bytes)"
                )
            self._entries[name] = (dtype, shape, begin, info["dtype"])

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def dtype_name(self, name: str) -> str:
        return self._entries[name][3]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def get(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise KeyError(f"{self.path}: no tensor named '{name}'")
        dtype, shape, begin, _ = self._entries[name]
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return np.zeros(shape, dtype)
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=self._base + begin).reshape(shape)

    def as_float32(self, name: str) -> np.ndarray:
        arr = self.get(name)
        if self.dtype_name(name) == "BF16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.astype(np.float32, copy=False)


def save_safetensors(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
