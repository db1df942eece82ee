"""bench/sparse_goals.py: the goal table judged from measurement files (synthetic ones here: the measurements
themselves take tens of minutes and belong to bench/, not to tests)."""

import json

import pytest

from conftest import load_bench_script

goals = load_bench_script("sparse_goals.py")


def _ratio(median, q1=None, q3=None, peer=None):
    r = {"per_cycle_q1": q1 or median, "per_cycle_q3": q3 or median, "per_cycle_median": median}
    return {**r, "vs_peer_median": median, "peer": peer} if peer else {**r, "vs_best_ort_median": median}


def _interleaved(ort=None, ds=None, ds_fp32=None, linear_bytes=10_000_000):
    summary = {"best_ort": "ort-int8-static", "ratios": {}, "ds_ratios": {}}
    if ort is not None:
        summary["ratios"]["trimformer-int8-static"] = _ratio(ort)
    if ds is not None:
        summary["ds_ratios"]["trimformer-int8-static"] = _ratio(ds, peer="deepsparse-int8")
    if ds_fp32 is not None:
        summary["ds_ratios"]["trimformer-fp32"] = _ratio(ds_fp32, peer="deepsparse-fp32")
    notes = {"trimformer-int8-static": {"linear_bytes": linear_bytes, "fp32_linear_bytes": 339_738_624}}
    return {"summary": summary, "notes": notes}


def _kernel_row(m, shape, speedup):
    return {"m": m, "shape": f"bert-base {shape}", "formats": {"block-int8": {"speedup_vs_dense_int8": speedup}}}


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(goals, "RESULTS", tmp_path)

    def write(name, doc):
        (tmp_path / f"goals_t_{name}.json").write_text(json.dumps(doc))

    return write


def _status(table, start):
    return [g.status() for g in table if g.goal.startswith(start)]


def test_every_goal_judged_from_its_file(results):
    results("block90_b1", _interleaved(ort=0.18, ds=0.3))
    results("block80_b1", _interleaved(ort=0.30, ds=0.4))  # ORT target 1/3.5 = 0.286: missed
    results("block90_b16", _interleaved(ds=0.45))
    results("unstructured90_b1", _interleaved(ds=0.7, ds_fp32=0.95))
    results("unstructured90_b16", _interleaved(ds=0.7, ds_fp32=1.04))
    rows = [{"model": "bert-base", "precision": p, "batch": b, "seq": 128, "dense_ms": 10.0, "sparse_ms": 10.0 * r,
             "ratio": r} for p, b, r in (("fp32", 1, 0.97), ("fp32", 16, 0.99), ("int8-static", 1, 1.01))]
    results("nm24", {"rows": rows})
    results("kernels", {"rows": [_kernel_row(128, "qkv", 6.0), _kernel_row(128, "attn_out", 5.2),
                                 _kernel_row(768, "qkv", 5.5), _kernel_row(768, "attn_out", 4.8)]})
    table = goals.judge("t")
    assert _status(table, "90% block INT8, b1 s128") == ["met", "met"]
    assert _status(table, "80% block INT8, b1 s128") == ["not met", "met"]
    assert _status(table, "90% block INT8, b16") == ["met"]
    assert _status(table, "90% unstructured FP32, b1 s128") == ["met"]
    assert _status(table, "90% unstructured FP32, b16") == ["not met"]
    assert _status(table, "90% unstructured INT8") == ["met", "met"]
    # faster than dense only below 1 - TIE_MARGIN: 0.99 and 1.01 are ties
    assert _status(table, "2:4") == ["met", "not met", "not met"]
    kernel = [g for g in table if g.goal.startswith("kernel")]
    assert [g.status() for g in kernel] == ["met", "not met"]
    assert "attn_out 4.80x" in kernel[1].measured
    size = [g for g in table if "weight bytes" in g.goal]
    assert size[0].status() == "met" and size[0].measured.startswith("0.0294")


def test_missing_files_read_no_file_and_the_table_is_written(results, tmp_path):
    results("block90_b1", _interleaved(ort=0.18, ds=0.3, linear_bytes=20_000_000))  # 0.059 of FP32: size missed
    table = goals.judge("t")
    assert {g.status() for g in table if not g.goal.startswith("90% block INT8, b1 s128")} >= {"no file"}
    assert [g.status() for g in table if "weight bytes" in g.goal] == ["not met"]
    out = goals.write_table("t", table, {"command": "python bench/sparse_goals.py --tag t --judge-only",
                                         "cpu": "test", "git": "abc", "date": "today"})
    md = out.with_suffix(".md").read_text()
    assert "| 90% block INT8, b1 s128: latency vs ORT's best dense INT8 | <= 0.2x | 0.180x" in md
    assert json.loads(out.with_suffix(".json").read_text())["goals"][0]["status"] == "met"


def test_bad_arguments_fail_before_running_anything(results):
    with pytest.raises(SystemExit):
        goals.main(["--tag", "t", "--only", "nope"])
    with pytest.raises(SystemExit):
        goals.main(["--tag", "../x", "--judge-only"])
