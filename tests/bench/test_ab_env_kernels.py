"""bench/micro/ab_env_kernels.py: two runners of one weight, built with and without a setting, take turns."""

import json
import os

import pytest

from conftest import load_bench_script

ab_env_kernels = load_bench_script("micro/ab_env_kernels.py")


def test_runners_take_turns_and_the_environment_is_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(ab_env_kernels, "SHAPES", {"qkv": (40, 72), "attn_out": (36, 67)})
    monkeypatch.delenv("TRIMFORMER_BSR_TRANSPOSE16", raising=False)
    out = tmp_path / "ab"
    argv = ["--env", "TRIMFORMER_BSR_TRANSPOSE16=1", "--tokens", "70", "--cycles", "3", "--block", "1",
            "--out", str(out)]
    assert ab_env_kernels.main(argv) == 0
    assert "TRIMFORMER_BSR_TRANSPOSE16" not in os.environ
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["shape"] for r in rows] == ["qkv", "attn_out"]
    for r in rows:
        assert {k: len(v) for k, v in r["per_cycle_s"].items()} == {"default": 3, "set": 3}
        lo, mid, hi = r["ratio_quartiles"]
        assert 0 < lo <= mid <= hi


@pytest.mark.parametrize("activations", ["static", "u8"])
def test_int8_input_modes(tmp_path, monkeypatch, activations):
    monkeypatch.setattr(ab_env_kernels, "SHAPES", {"attn_out": (36, 67)})
    monkeypatch.delenv("TRIMFORMER_BSR_TRANSPOSE16", raising=False)
    out = tmp_path / "ab"
    argv = ["--env", "TRIMFORMER_BSR_TRANSPOSE16=1", "--tokens", "70", "--cycles", "2", "--block", "1",
            "--activations", activations, "--out", str(out)]
    assert ab_env_kernels.main(argv) == 0
    assert f"INT8 input {activations}" in out.with_suffix(".md").read_text()
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert all(t > 0 for v in row["per_cycle_s"].values() for t in v)


def test_a_setting_already_in_the_environment_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ab_env_kernels, "SHAPES", {"qkv": (40, 72)})
    monkeypatch.setenv("TRIMFORMER_BSR_TRANSPOSE16", "1")
    with pytest.raises(SystemExit, match="already|set in this environment"):
        ab_env_kernels.main(["--env", "TRIMFORMER_BSR_TRANSPOSE16=1", "--cycles", "1", "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("argv", [["--env", "NOVALUE"], ["--env", "X=1", "--cycles", "0"],
                                  ["--env", "X=1", "--shapes", "nope"]])
def test_bad_arguments_fail_clearly(tmp_path, argv):
    with pytest.raises(SystemExit):
        ab_env_kernels.main([*argv, "--out", str(tmp_path / "x")])
