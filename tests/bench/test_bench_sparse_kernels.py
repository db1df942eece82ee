"""bench/bench_sparse_kernels.py: rows of every format against the dense baselines; with rounds, each format keeps
its best time over all rounds."""

import json

import pytest

from conftest import load_bench_script

bsk = load_bench_script("bench_sparse_kernels.py")


def test_rounds_keep_each_formats_best_time(monkeypatch):
    calls = []

    def fake_time_formats(w, formats, **kw):
        calls.append(kw["region_per_call"])
        dense, sparse = (1.0, 0.5) if len(calls) == 1 else (2.0, 0.1)  # round 1 the dense best, round 2 the sparse
        return {f: dense if f in ("int8", "f32") else sparse for f in formats}

    monkeypatch.setattr(bsk, "time_formats", fake_time_formats)
    monkeypatch.setattr(bsk, "core_roundtrip_ns", lambda: 100.0)
    rows = bsk.run({"tiny": (40, 72)}, [5], [0.9], ["block"], iters=1, threads=2, rounds=2)
    assert calls == [False, False]
    (row,) = rows
    assert row["dense_int8_ms"] == 1000.0 and row["dense_f32_ms"] == 1000.0  # round 1's
    assert row["formats"]["block-int8"]["ms"] == 100.0  # round 2's
    assert row["formats"]["block-int8"]["speedup_vs_dense_same_precision"] == pytest.approx(10.0)
    assert row["core_roundtrip_ns"] == [100.0] * 4


def test_csr_f32_walk_gets_its_own_column(monkeypatch):
    """time_formats(walk=True) adds the csr-f32 walk where the level has code; where it has none, csr-f32 is the
    walk and the column repeats its time, so every row of a pattern has the same columns."""
    def fake_time_formats(w, formats, **kw):
        assert kw["walk"] is True
        t = {f: 1.0 if f in ("int8", "f32") else 0.5 for f in formats}
        if "csr-f32" in formats and len(fake_time_formats.rows) == 0:  # code in the first row only
            t[bsk.CSR_F32_WALK] = 0.25
        fake_time_formats.rows.append(1)
        return t

    fake_time_formats.rows = []
    monkeypatch.setattr(bsk, "time_formats", fake_time_formats)
    monkeypatch.setattr(bsk, "core_roundtrip_ns", lambda: 100.0)
    rows = bsk.run({"tiny": (40, 72)}, [5], [0.9, 0.5], ["unstructured"], iters=1, threads=2)
    assert [r["formats"][bsk.CSR_F32_WALK]["speedup_vs_dense_same_precision"] for r in rows] == [4.0, 2.0]
    assert all(list(r["formats"]) == [*bsk.FORMATS["unstructured"], bsk.CSR_F32_WALK] for r in rows)


def test_tiny_run_writes_its_protocol(tmp_path):
    out = tmp_path / "sk"
    assert bsk.main(["--tiny", "--tokens", "1,5", "--iters", "1", "--rounds", "2", "--patterns", "block",
                     "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())["meta"]
    assert meta["rounds"] == 2 and meta["region_per_call"] is False
    text = out.with_suffix(".md").read_text()
    assert "Rounds: 2 pass(es)" in text and "share one parallel region" in text


def test_bad_rounds_fail_clearly(tmp_path):
    with pytest.raises(SystemExit):
        bsk.main(["--tiny", "--rounds", "0", "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("mode", ["static", "u8"])
def test_activations_mode_reaches_the_timings_and_the_report(tmp_path, monkeypatch, mode):
    """--activations goes to every time_formats call and into the report's protocol lines."""
    modes = []
    real = bsk.time_formats

    def spy(w, formats, **kw):
        modes.append(kw["activations"])
        return real(w, formats, **kw)

    monkeypatch.setattr(bsk, "time_formats", spy)
    out = tmp_path / "sk"
    assert bsk.main(["--tiny", "--tokens", "5", "--iters", "1", "--patterns", "block,2:4", "--sparsities", "0.9",
                     "--activations", mode, "--out", str(out)]) == 0
    assert modes == [mode, mode]
    assert json.loads(out.with_suffix(".json").read_text())["meta"]["activations"] == mode
    assert "INT8 activations: " + bsk.ACTIVATIONS_NOTE[mode] in out.with_suffix(".md").read_text()
