"""trimformer.compress: the PyTorch side of compression (needs the `compress` extra: torch, transformers).

- pruning: `prune` (magnitude layer-wise/global, OBS/SparseGPT; unstructured, 4x4 block, 2:4, 4:8),
  `GradualPruner` (cubic schedule), `FixedMasks`, `prune_ffn_neurons`, `prune_heads`;
- distillation: `distill`, `Distiller`, `DistillConfig` (logit KD, hidden MSE, MiniLM attention relations);
- quantization: `quantize` (static/dynamic INT8, SmoothQuant, QAT export), `prepare_qat`, `sensitivity_report`,
  `mixed_precision`;
- recipes: `load_recipe`, `run_recipe`; tasks: `finetune`, `TrainConfig`.
Every accuracy is measured by the runtime: see `trimformer.eval`.
"""

from .distill import DistillConfig, Distiller, distill
from .pruning import (
    FixedMasks,
    GradualPruner,
    PruneReport,
    encoder_linears,
    prune,
    prune_ffn_neurons,
    prune_heads,
    prune_magnitude,
)
from .quantization import (
    QuantScheme,
    UnsupportedSchemeError,
    mixed_precision,
    prepare_qat,
    quantize,
    sensitivity_report,
    smooth_attention_output,
)
from .recipes import Recipe, RecipeError, load_recipe, run_recipe
from .training import TrainConfig, finetune

__all__ = ["DistillConfig", "Distiller", "FixedMasks", "GradualPruner", "PruneReport", "QuantScheme", "Recipe",
           "RecipeError", "TrainConfig", "UnsupportedSchemeError", "distill", "encoder_linears", "finetune",
           "load_recipe", "mixed_precision", "prepare_qat", "prune", "prune_ffn_neurons", "prune_heads", "prune_magnitude",
           "quantize", "run_recipe", "sensitivity_report", "smooth_attention_output"]
