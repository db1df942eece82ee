"""trimformer.compress: the PyTorch side (pruning now; distillation, quantization-aware training and recipes are
tracked in the compression issue). Needs the `compress` extra (torch, transformers)."""

from .pruning import encoder_linears, prune_magnitude

__all__ = ["encoder_linears", "prune_magnitude"]
