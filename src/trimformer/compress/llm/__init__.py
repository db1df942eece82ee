"""Decoder-LLM compression (issue 5): RTN, GPTQ, SparseGPT, magnitude pruning, SmoothQuant and LLM.int8(),
layer by layer, written as the compressed-LLM checkpoint directory (docs/llm.md). Needs torch + transformers
(+ gguf for the SmolLM2 asset)."""

from .api import (
    PRUNE_METHODS,
    QUANT_METHODS,
    CompressionResult,
    layer_group_size,
    parse_format,
    parse_sparsity,
    prune_llm,
    quantize_llm,
)
from .checkpoint import COMPRESSION_FILE, load_compressed_llm, read_compression
from .model import load_llm

__all__ = [
    "COMPRESSION_FILE",
    "PRUNE_METHODS",
    "QUANT_METHODS",
    "CompressionResult",
    "layer_group_size",
    "load_compressed_llm",
    "load_llm",
    "parse_format",
    "parse_sparsity",
    "prune_llm",
    "quantize_llm",
    "read_compression",
]
