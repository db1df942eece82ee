import os
import time

import pytest

from trimformer import _core


def test_core_roundtrip_between_two_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    ns = _core.core_roundtrip_ns(cpus[0], cpus[1], 2000)
    assert 1.0 < ns < 1e6  # a line's round trip: nanoseconds, not zero, not a stalled partner
    assert os.sched_getaffinity(0) == set(cpus)  # the caller's mask is restored
    t0 = time.perf_counter()
    assert 1.0 < _core.core_roundtrip_ns(cpus[0], cpus[1], 10**12) < 1e6  # capped at about half a second
    assert time.perf_counter() - t0 < 10


def test_core_roundtrip_refuses_bad_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="two different"):
        _core.core_roundtrip_ns(cpus[0], cpus[0], 10)
    with pytest.raises(ValueError, match="affinity"):
        _core.core_roundtrip_ns(cpus[0], max(cpus) + 1, 10)
    with pytest.raises(ValueError, match="positive"):
        _core.core_roundtrip_ns(cpus[0], cpus[-1] if len(cpus) > 1 else cpus[0] + 1, 0)
