"""bench/bench_nm.py's table: an N:M pass within TIE_MARGIN of the dense one is a tie, not a goal met (the passes
themselves compile BERT-base: bench only)."""

from conftest import load_bench_script

bench_nm = load_bench_script("bench_nm.py")


def test_goal_column_reads_a_tie_within_the_margin(tmp_path):
    def row(ratio, formats):
        return {"model": "bert-base", "precision": "int8-static", "batch": 1, "seq": 128, "dense_ms": 10.0,
                "sparse_ms": 10.0 * ratio, "ratio": ratio, "sparse_formats": formats}

    m = bench_nm.TIE_MARGIN
    report = {"pattern": "2:4", "threads": 2, "rounds": 3, "date": "today", "command": "python bench/bench_nm.py",
              "rows": [row(1 - 2 * m, {"nm-int8": 48}), row(1 - m / 2, {"nm-int8": 48}),
                       row(1 + 2 * m, {"nm-int8": 48}), row(0.5, {"int8": 48})]}
    out = tmp_path / "nm"
    bench_nm.write_markdown(report, out)
    goals = [line.split(" | ")[6] for line in (tmp_path / "nm.md").read_text().splitlines()
             if line.startswith("| bert-base")]
    assert goals[0] == "met"
    assert goals[1] == "**not met** (a tie)"
    assert goals[2] == "**not met**"
    assert goals[3].startswith("**not met** (no sparse layer kept")  # the dense kernels whatever it reads
