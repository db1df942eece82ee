"""bench/bench_interleaved.py: runtimes take turns in blocks (order rotating, an untimed call first), and the
ratios compare trimformer with ORT's best runtime and, cycle by cycle, with the fastest ORT block."""


import numpy as np
import pytest

from conftest import load_bench_script

pytest.importorskip("onnx")
bench_interleaved = load_bench_script("bench_interleaved.py")


def test_runtimes_take_turns_in_rotating_blocks():
    log = []
    runners = {name: (lambda *a, name=name: log.append(name)) for name in ("a", "b", "c")}
    medians = bench_interleaved.interleave(runners, (), cycles=4, block=2, warmup=1, gap_s=0.0)
    assert {k: len(v) for k, v in medians.items()} == {"a": 4, "b": 4, "c": 4}
    assert log[:3] == ["a", "b", "c"]  # warm-up
    blocks = [log[i] for i in range(3, len(log), 3)]  # each block: an untimed call, then 2 timed
    assert blocks == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]


def test_ratios_against_the_best_ort_runtime_and_the_fastest_ort_block_per_cycle():
    samples = {"trimformer-int8-static": [10.0, 12.0, 10.0],
               "ort-int8-dynamic": [50.0, 100.0, 50.0],  # lowest median
               "ort-int8-static": [60.0, 40.0, 60.0]}  # fastest in cycle 1
    s = bench_interleaved.summarize(samples)
    assert s["best_ort"] == "ort-int8-dynamic"
    r = s["ratios"]["trimformer-int8-static"]
    assert r["vs_best_ort_median"] == pytest.approx(10.0 / 50.0)
    assert r["per_cycle_median"] == pytest.approx(float(np.median([10 / 50, 12 / 40, 10 / 50])))
    assert set(s["ratios"]) == {"trimformer-int8-static"}


def test_runtimes_must_pair_trimformer_with_ort():
    for bad in ("ort-int8-dynamic", "trimformer-int8-static", "trimformer-int8-static,deepsparse-int8"):
        with pytest.raises(SystemExit):
            bench_interleaved.parse_args(["--runtimes", bad, "--out", "x"])
