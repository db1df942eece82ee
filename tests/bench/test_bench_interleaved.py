"""bench/bench_interleaved.py: runtimes take turns in blocks (order rotating, an untimed call first; a worker process
times its own block), and the ratios compare trimformer with ORT's best runtime and, cycle by cycle, with the
fastest ORT block and with DeepSparse of the same precision."""


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


def test_runtimes_must_pair_trimformer_with_a_peer_of_its_precision():
    for bad in ("ort-int8-dynamic", "trimformer-int8-static", "deepsparse-int8", "trimformer-fp32,ort-int8-static",
                "trimformer-int8-static,deepsparse-fp32", "trimformer-fp32,deepsparse-fp32,ort-fp32",
                "trimformer-int8-static,ort-int8-static,trimformer-fp32"):
        with pytest.raises(SystemExit):
            bench_interleaved.parse_args(["--runtimes", bad, "--out", "x"])
    for good in ("trimformer-int8-static,deepsparse-int8", "trimformer-fp32,deepsparse-fp32",
                 "trimformer-fp32,trimformer-int8-static,ort-int8-static,deepsparse-fp32"):
        assert bench_interleaved.parse_args(["--runtimes", good, "--out", "x"]).runtimes == good.split(",")


def test_a_worker_takes_its_turn_and_times_its_own_block():
    """A runner in a process of its own (peers.DeepSparseWorker) is asked for a block (it makes the untimed call
    and times the rest itself) in its turn, and skips the in-process warm-up."""
    log = []

    class Worker:
        def run_block(self, n):
            log.append(("w", n))
            return [7.0, 5.0, 6.0][:n]

    runners = {"a": lambda *a: log.append("a"), "w": Worker()}
    medians = bench_interleaved.interleave(runners, (), cycles=2, block=3, warmup=1, gap_s=0.0)
    assert medians["w"] == [6.0, 6.0]
    assert log == ["a", "a", "a", "a", "a", ("w", 3), ("w", 3), "a", "a", "a", "a"]


def test_ratios_against_deepsparse_of_the_same_precision_block_by_block():
    samples = {"trimformer-fp32": [10.0, 30.0, 10.0], "trimformer-int8-static": [4.0, 4.0, 4.0],
               "deepsparse-fp32": [20.0, 20.0, 10.0], "deepsparse-int8": [8.0, 16.0, 8.0]}
    s = bench_interleaved.summarize(samples)
    assert s["ratios"] == {} and s["best_ort"] is None  # no ORT runtime
    fp = s["ds_ratios"]["trimformer-fp32"]
    assert fp["peer"] == "deepsparse-fp32"
    assert fp["vs_peer_median"] == pytest.approx(10.0 / 20.0)
    assert fp["per_cycle_median"] == pytest.approx(1.0)  # 0.5, 1.5, 1.0 cycle by cycle
    assert s["ds_ratios"]["trimformer-int8-static"]["vs_peer_median"] == pytest.approx(0.5)
    # issue 3's goals against DeepSparse, as latency ratios
    assert bench_interleaved.ds_goal("unstructured", 0.9, 16, "trimformer-fp32") == 1.0
    assert bench_interleaved.ds_goal("block", 0.9, 16, "trimformer-int8-static") == 0.5
    assert bench_interleaved.ds_goal("block", 0.8, 1, "trimformer-int8-static") == pytest.approx(1 / 1.5)
    assert bench_interleaved.ds_goal("block", 0.9, 1, "trimformer-fp32") is None
    assert bench_interleaved.ds_goal("2:4", 0.5, 1, "trimformer-int8-static") is None
