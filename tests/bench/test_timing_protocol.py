"""bench/micro/timing_protocol.py: both timing protocols of LinearRunner.time, sparse and dense, every shape."""

import json

import pytest

from conftest import load_bench_script

timing_protocol = load_bench_script("micro/timing_protocol.py")


def test_report_times_both_protocols_for_each_shape(tmp_path, monkeypatch):
    monkeypatch.setattr(timing_protocol, "SHAPES", {"small": (40, 72), "tall": (130, 36)})
    out = tmp_path / "tp"
    assert timing_protocol.main(["--tokens", "1,5", "--cycles", "2", "--block", "1", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["shape"], r["tokens"]) for r in rows] == [("small", 1), ("tall", 1), ("small", 5), ("tall", 5)]
    for r in rows:
        assert set(r["us"]) == {f"{f} {p}" for f in ("int8", "block-int8") for p in ("one region", "region per call")}
        assert all(v > 0 for v in r["us"].values())
        assert all(len(v) == 2 for v in r["per_cycle_us"].values())
    assert out.with_suffix(".md").read_text().count("| small |") == 2


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(SystemExit):
        timing_protocol.main(["--cycles", "0", "--out", str(tmp_path / "x")])


def test_warm_compare_times_first_and_later_calls(tmp_path, monkeypatch):
    monkeypatch.setattr(timing_protocol, "SHAPES", {"small": (40, 72)})
    out = tmp_path / "tw"
    assert timing_protocol.main(["--compare", "warm", "--activations", "u8", "--tokens", "3,70", "--cycles", "2",
                                 "--block", "2", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["shape"], r["tokens"]) for r in rows] == [("small", 3), ("small", 70)]
    for r in rows:
        assert set(r["us"]) == {f"{f} {p}" for f in ("int8", "block-int8") for p in ("first call", "after a warm call")}
        assert all(v > 0 for v in r["us"].values())
    assert "first call" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        timing_protocol.main(["--shapes", "nope", "--out", str(tmp_path / "y")])
