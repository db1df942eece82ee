"""bench/micro/rowop_builds_ab.py: saved builds loaded side by side in one process, their row ops timed in turn
(run in a subprocess: loading builds beside the test process's own extension re-registers its classes)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "micro" / "rowop_builds_ab.py"


def _two_copies(tmp_path: Path) -> list[str]:
    """--build arguments for two copies of the installed extension (two files: each loads as a module of its own)"""
    from trimformer import _core

    builds = []
    for name in ("a", "b"):
        path = tmp_path / name / "_core.so"
        path.parent.mkdir()
        shutil.copyfile(_core.__file__, path)
        builds += ["--build", f"{name}={path}"]
    return builds


def test_two_copies_of_one_build_give_the_same_bits(tmp_path):
    builds = _two_copies(tmp_path)
    out = tmp_path / "ab"
    subprocess.run([sys.executable, str(SCRIPT), *builds, "--op", "layernorm", "--shapes", "5x40,9x17", "--rounds",
                    "3", "--calls", "2", "--out", str(out)], check=True, capture_output=True)
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["rows"], r["cols"]) for r in rows] == [(5, 40), (9, 17)]
    for r in rows:
        assert r["same_bits"]
        assert {k: len(v) for k, v in r["best_us"].items()} == {"a": 3, "b": 3}
        assert r["ratio_vs_first"]["a"] == 1.0 and r["ratio_vs_first"]["b"] > 0
    assert "| 5 x 40 |" in out.with_suffix(".md").read_text()


def test_bad_shapes_are_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), *_two_copies(tmp_path), "--shapes", "5by40", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode != 0 and "--shapes takes ROWSxCOLS" in proc.stderr and "Traceback" not in proc.stderr
