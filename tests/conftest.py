import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from trimformer import _core, assets

# Every ISA level this CPU can run: kernels and the executor are tested at each one by forcing it.
_ORDER = ["scalar", "avx2", "avx512_vnni"]
ISA_LEVELS = _ORDER[: _ORDER.index(_core.detect_isa()) + 1]


@pytest.fixture(params=ISA_LEVELS)
def isa(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(int(os.environ.get("TRIMFORMER_TEST_SEED", "1234")))


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The packaged all-MiniLM-L6-v2 checkpoint directory (skips where the asset is not installed)."""
    try:
        return assets.minilm_path()
    except assets.AssetNotFoundError as e:
        pytest.skip(str(e))


def tiny_bert(seed: int = 0, hidden: int = 64, intermediate: int = 96, max_positions: int = 64):
    """A 2-layer random-weight BertModel (4 heads, vocabulary 100) for planner and executor tests."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=intermediate, vocab_size=100,
                                max_position_embeddings=max_positions), add_pooling_layer=False).eval()


def load_bench_script(relpath: str) -> ModuleType:
    """A script under bench/ (e.g. "micro/ab_env_kernels.py") as a module, with its directory on sys.path: the
    scripts import their neighbours (harness, peers, ab_builds)"""
    path = Path(__file__).parents[1] / "bench" / relpath
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
