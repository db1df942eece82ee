"""bench/micro/llm_env_ab.py: its --env and argument checks (the A/B itself compiles SmolLM2: bench only)."""

import pytest

from conftest import load_bench_script

llm_env_ab = load_bench_script("micro/llm_env_ab.py")


def test_env_must_be_name_equals_value(tmp_path):
    with pytest.raises(SystemExit):
        llm_env_ab.main(["--env", "TRIMFORMER_ATTN_ROWS", "--out", str(tmp_path / "x")])


def test_a_setting_already_in_the_environment_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIMFORMER_ATTN_ROWS", "32")
    with pytest.raises(SystemExit, match="set in this environment"):
        llm_env_ab.main(["--env", "TRIMFORMER_ATTN_ROWS=64", "--out", str(tmp_path / "x")])


def test_bad_lengths_fail_before_compiling(tmp_path, monkeypatch):
    monkeypatch.delenv("TRIMFORMER_ATTN_ROWS", raising=False)
    with pytest.raises(SystemExit):
        llm_env_ab.main(["--env", "TRIMFORMER_ATTN_ROWS=64", "--prompts", "0", "--out", str(tmp_path / "x")])
