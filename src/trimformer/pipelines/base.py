"""Shared machinery of the pipelines: resolving the model and the tokenizer, length-sorted batching."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from ..runtime.engine import Engine

#: pipeline task -> the EncoderSpec.task an Engine needs for it (None: any head works)
HEAD_OF_TASK: dict[str, str | None] = {
    "feature-extraction": None,
    "sentence-embedding": None,
    "text-classification": "sequence-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
}
#: EncoderSpec.task -> the pipeline task that uses the head
TASK_OF_HEAD: dict[str, str] = {
    "feature-extraction": "feature-extraction",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
}
_PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "[pad]")


class TokenizerNotFoundError(FileNotFoundError):
    """No tokenizer was given and none ships with the model."""


def resolve_engine(model: Any, *, threads: int | None = None, quantize: str | None = None,
                   tokenizer: Any = None, calibration_samples: int = 128) -> Engine:
    """An Engine from an Engine, a saved trimformer directory, an HF checkpoint directory or a transformers model.

    quantize applies only when compiling (HF checkpoint or in-memory model); "int8-static" calibrates on real
    Wikipedia sentences (``trimformer.assets``) tokenized with the model's tokenizer.
    """
    from .. import compile as tf_compile
    from .. import load as tf_load

    if model is None:
        raise ValueError("pipeline() needs model=: an Engine, a saved trimformer directory or an HF checkpoint "
                         "directory (trimformer never downloads models)")
    if isinstance(model, Engine):
        if quantize is not None and quantize != model.quantize:
            raise ValueError(f"quantize={quantize!r} only applies when compiling; this Engine is already "
                             f"compiled with quantize={model.quantize!r}")
        if threads is not None:
            model.threads = threads
        return model
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such model directory")
        if (path / "model.json").is_file():
            engine = tf_load(path, threads=threads)
            if quantize is not None and quantize != engine.quantize:
                raise ValueError(f"quantize={quantize!r} only applies when compiling; {path} is a saved trimformer "
                                 f"model with quantize={engine.quantize!r}")
            return engine
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: neither a trimformer model (model.json) nor a Hugging Face "
                                    "checkpoint (config.json)")
    elif not hasattr(model, "config"):
        raise TypeError(f"model must be an Engine, a directory or a transformers model, not {type(model).__name__}")
    calibration = None
    if quantize == "int8-static":
        from .calibration import calibration_batches

        if tokenizer is None:
            name = model if isinstance(model, (str, Path)) else getattr(model.config, "_name_or_path", "")
            tokenizer = name if name and Path(name).is_dir() else None
        tok = load_tokenizer(tokenizer)
        calibration = calibration_batches(tok, n_samples=calibration_samples)
    return tf_compile(model, quantize=quantize, calibration=calibration, threads=threads)


def _tokenizer_from_vocab(directory: Path) -> Tokenizer:
    """A BERT WordPiece tokenizer built from vocab.txt (+ tokenizer_config.json's do_lower_case)."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    lower = True
    cfg_file = directory / "tokenizer_config.json"
    if cfg_file.is_file():
        try:
            lower = bool(json.loads(cfg_file.read_text()).get("do_lower_case", True))
        except (json.JSONDecodeError, AttributeError):
            pass
    tok = Tokenizer(models.WordPiece.from_file(str(directory / "vocab.txt"), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lower)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise TokenizerNotFoundError(f"{directory}/vocab.txt has no [CLS]/[SEP] tokens and there is no tokenizer.json")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tok.decoder = decoders.WordPiece()
    return tok


def load_tokenizer(source: Any) -> Tokenizer:
    """A private copy of a fast tokenizer from a `tokenizers.Tokenizer`, a tokenizer.json path or a directory.

    A directory needs tokenizer.json (or a BERT vocab.txt). A transformers fast tokenizer is accepted too (its
    backend tokenizer is copied).
    """
    if source is None:
        raise TokenizerNotFoundError("no tokenizer: pass tokenizer= (a tokenizer.json path, a directory holding "
                                     "one, or a tokenizers.Tokenizer)")
    backend = getattr(source, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        source = backend
    if isinstance(source, Tokenizer):
        return Tokenizer.from_str(source.to_str())
    if not isinstance(source, (str, Path)):
        raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, a path or a directory, not {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(path / "tokenizer.json"))
        if (path / "vocab.txt").is_file():
            return _tokenizer_from_vocab(path)
        raise TokenizerNotFoundError(f"{path}: no tokenizer.json (nor a BERT vocab.txt); pass tokenizer=")
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"{path}: not a tokenizers tokenizer.json ({e})") from None
    raise TokenizerNotFoundError(f"{path}: no such tokenizer file or directory")


def usable_positions(engine: Engine) -> int:
    """Longest sequence the model's position table allows (RoBERTa positions start after the pad index)."""
    spec = engine.spec
    if spec.position_mode == 1:
        return spec.max_positions - spec.pad_token_id - 1
    return spec.max_positions


def default_max_length(engine: Engine) -> int:
    return min(512, usable_positions(engine))


class Pipeline:
    """Base class: tokenizes, runs length-sorted batches through the Engine, returns results in input order."""

    task: str = ""

    def __init__(self, engine: Engine, tokenizer: Tokenizer, *, batch_size: int = 32, max_length: int | None = None,
                 **defaults: Any):
        need = HEAD_OF_TASK.get(self.task)
        if need is not None and engine.spec.task != need:
            raise ValueError(
                f"task '{self.task}' needs a model with a {need} head, but this model's task is "
                f"'{engine.spec.task}' (use pipeline('{TASK_OF_HEAD.get(engine.spec.task, engine.spec.task)}'))"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        limit = usable_positions(engine)
        max_length = default_max_length(engine) if max_length is None else int(max_length)
        if not 2 < max_length <= limit:
            raise ValueError(f"max_length must be in 3..{limit} for this model, got {max_length}")
        self.engine = engine
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.pad_id = self._find_pad_id()
        self.defaults = self._check_params(defaults)
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)

    @property
    def model(self) -> Engine:
        return self.engine

    def _find_pad_id(self) -> int:
        pad = self.tokenizer.padding
        if pad and pad.get("pad_id") is not None:
            return int(pad["pad_id"])
        for t in _PAD_TOKENS:
            i = self.tokenizer.token_to_id(t)
            if i is not None:
                return int(i)
        return int(self.engine.spec.pad_token_id)

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate call-time/constructor options (subclasses list the ones they accept)."""
        allowed = self.parameters()
        unknown = set(params) - set(allowed)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(unknown)}; accepted: {sorted(allowed)}")
        return dict(params)

    def parameters(self) -> dict[str, Any]:
        """Accepted options and their defaults."""
        return {}

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        opts = self.parameters()
        opts.update(self.defaults)
        opts.update(self._check_params(kwargs))
        return opts

    # ---------------------------------------------------------------------------------------------- running

    def encode(self, inputs: Sequence[str | tuple[str, str]]) -> list[Encoding]:
        if not inputs:
            return []
        for i, item in enumerate(inputs):  # named here, not by the tokenizer's "TextEncodeInput must be Union[...]"
            pair = isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, str) for t in item)
            if not isinstance(item, str) and not pair:
                raise TypeError(f"input {i} is {type(item).__name__} {item!r:.60}: a pipeline takes a text, a (text, "
                                "text pair) or a list of them")
        return self.tokenizer.encode_batch([tuple(x) if isinstance(x, list) else x for x in inputs],
                                           add_special_tokens=True)

    def forward(self, encodings: Sequence[Encoding], keys: Iterable[str] = ("last_hidden_state",)) -> list[dict]:
        """Run encodings in length-sorted batches; per encoding, its outputs without padding, in input order."""
        keys = tuple(keys)
        per_token = {"last_hidden_state", "start_logits", "end_logits"}
        if self.engine.spec.head_pool == "token":
            per_token.add("logits")
        out: list[dict[str, np.ndarray]] = [{} for _ in range(len(encodings))]
        for idx, batch in self.batches(encodings):
            res = self.engine.run(**batch)
            lengths = batch["attention_mask"].sum(axis=1)
            for row, i in enumerate(idx):
                out[i] = {k: res[k][row, : lengths[row]] if k in per_token else res[k][row] for k in keys}
        return out

    def batches(self, encodings: Sequence[Encoding]) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """(input indices, padded engine inputs) per batch, shortest sequences first."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        use_types = self.engine.spec.type_vocab > 1
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc = encodings[i]
                m = len(enc.ids)
                ids[row, :m] = enc.ids
                mask[row, :m] = 1
                types[row, :m] = enc.type_ids
            batch = {"input_ids": ids, "attention_mask": mask}
            if use_types:
                batch["token_type_ids"] = types
            yield idx, batch

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, engine={self.engine!r}, max_length={self.max_length})"


def as_list(inputs: Any, single_types: tuple[type, ...] = (str,)) -> tuple[list[Any], bool]:
    """(inputs as a list, whether a single input was given)."""
    if isinstance(inputs, single_types):
        return [inputs], True
    if inputs is None:
        raise ValueError("no inputs given")
    if isinstance(inputs, (bytes, bytearray)) or not isinstance(inputs, Iterable):
        raise TypeError(f"inputs must be a text or a list of texts, not {type(inputs).__name__}")
    return list(inputs), False


def jsonable(x: Any) -> Any:
    """Pipeline results as JSON values: numpy arrays and scalars to lists and numbers (`trimformer run --json`,
    the server's answers)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
