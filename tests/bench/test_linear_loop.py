"""bench/micro/linear_loop.py: a Linear's calls in a loop for a profiler."""

import pytest

from conftest import load_bench_script

linear_loop = load_bench_script("micro/linear_loop.py")


@pytest.mark.parametrize("activations", ["dynamic", "u8"])
def test_loop_runs_and_reports_its_best_call(monkeypatch, capsys, activations):
    monkeypatch.setattr(linear_loop, "SHAPES", {"attn_out": (40, 72)})
    assert linear_loop.main(["--tokens", "70", "--activations", activations, "--seconds", "0.05", "--calls", "2"]) == 0
    out = capsys.readouterr().out
    assert f"block-int8 attn_out 70 tokens, {activations} input: best" in out
    assert float(out.split("best ")[1].split(" ms")[0]) > 0


def test_bad_arguments_fail_clearly():
    with pytest.raises(SystemExit):
        linear_loop.main(["--tokens", "0"])
    with pytest.raises(SystemExit):
        linear_loop.main(["--shape", "nope"])
