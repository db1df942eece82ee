"""bench/bench_dense.py's round-by-round INT8 ratios: each trimformer INT8 runtime against the fastest peer of
the same round, and none where a runtime missed a round."""


import pytest

from conftest import load_bench_script

pytest.importorskip("onnx")
bench_dense = load_bench_script("bench_dense.py")


def _entry(rounds_ms, rounds=None):
    pooled = sorted(rounds_ms)[len(rounds_ms) // 2]
    return {"status": "ok", "rounds": rounds or len(rounds_ms), "rounds_ok": len(rounds_ms),
            "results": [{"seq": 128, "batch": 1, "median_ms": pooled, "round_medians_ms": rounds_ms}]}


def _model():
    return {"runtimes": {
        "trimformer-int8-static": _entry([20.0, 22.0, 30.0]),
        "trimformer-int8-static-reduce-range": _entry([15.0, 16.0], rounds=3),  # missed a round
        "ort-int8-dynamic": _entry([100.0, 80.0, 100.0]),
        "ort-int8-static": _entry([90.0, 110.0, 120.0]),
    }}


def test_round_ratios_take_the_fastest_peer_of_each_round():
    model = _model()
    got = bench_dense.round_ratios(model, "trimformer-int8-static", bench_dense.ORT_INT8, 128, 1)
    assert got == pytest.approx([20.0 / 90.0, 22.0 / 80.0, 30.0 / 100.0])
    # a runtime that missed a round, or a peer that did not run: no per-round ratios
    assert bench_dense.round_ratios(model, "trimformer-int8-static-reduce-range", bench_dense.ORT_INT8, 128, 1) is None
    assert bench_dense.round_ratios(model, "trimformer-int8-static", (bench_dense.DS_INT8,), 128, 1) is None


def test_round_ratio_table_lists_each_int8_mode():
    model = _model()
    lines = bench_dense._round_ratio_lines(model, {"seqs": [128], "batches": [1], "rounds": 3},
                                           list(model["runtimes"]))
    rows = [ln for ln in lines if ln.startswith("| s128 b1 |")]
    assert [r.split(" | ")[1] for r in rows] == ["trimformer-int8-static", "trimformer-int8-static-reduce-range"]
    static = rows[0].split(" | ")
    assert static[2] == f"{22.0 / 100.0:.3f}x"  # pooled: its median over the fastest pooled ORT median
    assert static[3].startswith(f"{20.0 / 90.0:.3f}-{30.0 / 100.0:.3f}x")
    assert static[4] == "n/a" and rows[1].split(" | ")[3] == "n/a"
    assert bench_dense._round_ratio_lines(model, {"seqs": [128], "batches": [1], "rounds": 1},
                                          list(model["runtimes"])) == []
