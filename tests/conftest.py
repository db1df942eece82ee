import os
from pathlib import Path

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
