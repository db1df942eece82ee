"""trimformer's on-disk model: `model.json` (versioned schema) + `weights.safetensors` (+ tokenizer files).

Writes are atomic: everything goes to a temporary sibling directory that replaces the target by rename, so a
killed save leaves the previous model intact. Loads are memory-mapped and validated against the schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .formats.registry import get_format
from .formats.safetensors_io import SafetensorsError, SafetensorsFile, save_safetensors
from .models.decoder import DecoderSpec
from .models.encoder import EncoderSpec
from .runtime.decoder import DecoderEngine
from .runtime.engine import _TOKENIZER_FILES, Engine, resolve_threads

SCHEMA_VERSION = 1
FORMAT_NAME = "trimformer"


class ModelFormatError(ValueError):
    """A saved trimformer model is missing, corrupt, or from an unknown schema version."""


@contextlib.contextmanager
def replacing_directory(path: str | Path) -> Iterator[Path]:
    """A new empty directory beside `path` for the block to write into. When the block ends without an error it
    takes `path`'s place (what was there is moved aside, then removed; moved back if the swap fails); on an error
    it is removed and `path` is left as it was. A killed process leaves at most a hidden `.NAME.tmp-*` or
    `.NAME.old-*` sibling, never a half-written `path`. Every directory trimformer writes goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if not path.exists():
            os.rename(tmp, path)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        old.rmdir()  # a fresh name to move the current one to
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save(engine: Engine | DecoderEngine, path: str | Path) -> Path:
    """Write `engine` (an encoder Engine or a DecoderEngine) to directory `path` atomically and return the path."""
    from . import __version__

    if not isinstance(engine, (Engine, DecoderEngine)):
        raise TypeError(f"save() takes a compiled Engine or DecoderEngine, not {type(engine).__name__}")
    path = Path(path)
    tensors = {}
    for name, arr in engine.tensors.items():
        tensors[name] = {"dtype": str(np.asarray(arr).dtype), "shape": list(np.shape(arr))}
    decoder = getattr(engine, "kind", "encoder") == "decoder"
    doc = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "kind": "decoder" if decoder else "encoder",
        "trimformer_version": __version__,
        "spec": engine.spec.to_json(),
        "linear_formats": engine.formats,
        "tensors": tensors,
        "extra": engine.extra,
    }
    if not decoder:
        doc["quantize"] = engine.quantize
        doc["attention"] = engine.attention
    with replacing_directory(path) as tmp:
        save_safetensors(engine.tensors, tmp / "weights.safetensors", metadata={"format": FORMAT_NAME})
        if decoder and engine.tokenizer_json is not None:
            (tmp / "tokenizer.json").write_text(engine.tokenizer_json)
        elif not decoder and engine.tokenizer_path is not None:
            for f in _TOKENIZER_FILES:
                if (engine.tokenizer_path / f).is_file():
                    shutil.copy2(engine.tokenizer_path / f, tmp / f)
        (tmp / "model.json").write_text(json.dumps(doc, indent=1))
        with open(tmp / "model.json", "rb") as fh:
            os.fsync(fh.fileno())
    return path


def load(path: str | Path, threads: int | None = None, isa: str | None = None) -> Engine:
    """Load a model saved by `save` (weights memory-mapped, then packed for this CPU)."""
    threads = resolve_threads(threads)  # a bad count is the caller's error, not the model's: checked first
    path = Path(path)
    meta_file = path / "model.json"
    if not meta_file.is_file():
        raise ModelFormatError(f"{path}: not a trimformer model (no model.json)")
    try:
        doc = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{meta_file}: corrupt ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{meta_file}: not a trimformer model.json")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ModelFormatError(
            f"{meta_file}: schema version {version!r} is not supported by this trimformer (supports {SCHEMA_VERSION})"
        )
    kind = doc.get("kind")
    if kind not in ("encoder", "decoder"):
        raise ModelFormatError(f"{meta_file}: unknown model kind {kind!r}")
    try:
        spec = DecoderSpec.from_json(doc["spec"]) if kind == "decoder" else EncoderSpec.from_json(doc["spec"])
        formats = dict(doc["linear_formats"])
        listed = dict(doc["tensors"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{meta_file}: malformed ({e})") from None
    for fmt in set(formats.values()) if kind == "encoder" else ():  # decoder tensors are validated natively
        try:
            get_format(fmt)
        except ValueError as e:
            raise ModelFormatError(f"{meta_file}: {e}") from None
    try:
        st = SafetensorsFile(path / "weights.safetensors")
    except SafetensorsError as e:
        raise ModelFormatError(str(e)) from None
    tensors = {}
    for name, info in listed.items():
        if name not in st:
            raise ModelFormatError(f"{path}: weights.safetensors lacks tensor '{name}'")
        arr = st.get(name)
        if list(arr.shape) != list(info["shape"]) or str(arr.dtype) != info["dtype"]:
            raise ModelFormatError(
                f"{path}: tensor '{name}' is {arr.dtype}{list(arr.shape)}, model.json says {info['dtype']}{info['shape']}"
            )
        tensors[name] = arr
    if kind == "decoder":
        tok_file = path / "tokenizer.json"
        try:
            return DecoderEngine(spec, tensors, formats, threads=threads, isa=isa, extra=doc.get("extra"),
                                 tokenizer_json=tok_file.read_text() if tok_file.is_file() else None)
        except ValueError as e:
            raise ModelFormatError(f"{path}: {e}") from None
    tok = path if any((path / f).exists() for f in _TOKENIZER_FILES) else None
    try:
        return Engine(spec, tensors, formats, quantize=doc.get("quantize"), threads=threads, isa=isa,
                      tokenizer_path=tok, extra=doc.get("extra"), attention=doc.get("attention", "f32"))
    except ValueError as e:
        raise ModelFormatError(f"{path}: {e}") from None
