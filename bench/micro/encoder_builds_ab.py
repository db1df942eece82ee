"""A/B of native builds on whole encoder passes, pass by pass: the model is compiled once (with the installed
extension: its kernel choices and calibration) and saved; one worker process per saved build of `trimformer._core`
loads it with that build, and the workers then run one pass each in turn (A B B A ...) at this script's call, so
that a shared machine's drift, which moves single passes by 1.5x here, hits every build alike. (Two builds cannot
share one process: nanobind registers each class once per process.)

Reported per case: each build's median pass, and the median and quartiles of the per-pair ratios (a build's pass
over the first build's pass next to it), with the largest difference between the builds' outputs.

    python bench/micro/encoder_builds_ab.py --build before=/tmp/before.so --build after=/tmp/after.so \
        --case "b1s128:quantize=int8-static" --pairs 300 --out bench/results/encoder_ab_example
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import command_line, load_build, parse_builds, parse_case, report_head, write_report  # noqa: E402

from harness import cpu_model  # noqa: E402

# The idle worker's OpenMP threads spin a while after its pass before they sleep: the next pass (the other
# worker's) waits this long first, so that it does not share the cores with them
GAP_S = 0.005


def inputs(case: dict, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab_size - 1, size=(case["batch"], case["seq"])).astype(np.int64)
    return ids, np.ones_like(ids)


def worker(build: str, model_dir: str, batch: int, seq: int, vocab_size: int, threads: int) -> None:
    """Serve passes over stdin / stdout: "run" -> the pass's ms; "out PATH" -> the output saved there."""
    name, _, path = build.partition("=")
    sys.modules["trimformer._core"] = load_build(name, Path(path))  # before trimformer imports its own
    import trimformer

    eng = trimformer.load(model_dir, threads=threads)
    ids, mask = inputs({"batch": batch, "seq": seq}, vocab_size)
    for _ in range(3):
        eng.run(ids, mask)
    from trimformer.runtime import engine

    print("ready", engine._core.__file__, flush=True)  # the parent checks that this is the build
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "run":
            t0 = time.perf_counter()
            eng.run(ids, mask)
            print((time.perf_counter() - t0) * 1e3, flush=True)
        elif cmd == "out":
            np.save(arg, eng.run(ids, mask)["last_hidden_state"])
            print("saved", flush=True)
        else:
            return


def case_ab(case: dict, builds: dict[str, Path], pairs: int, tmp: Path) -> dict:
    import peers
    import trimformer

    info = peers.prepare_model(case["model"], sparsity=case["sparsity"], pattern=case["pattern"])
    ids, mask = inputs(case, info.vocab_size)
    quantize = case["quantize"]
    calib = [{"input_ids": ids[:1], "attention_mask": mask[:1]}] if quantize == "int8-static" else None
    eng = trimformer.compile_encoder(info.hf_dir, quantize=None if quantize == "fp32" else quantize,
                                     calibration=calib, threads=case["threads"],
                                     sparse="tune" if case["sparse"] == "tune" else None,
                                     attention=None if case["attention"] == "default" else case["attention"],
                                     reduce_range=bool(case["reduce_range"]))
    model_dir = tmp / "model"
    trimformer.save(eng, model_dir)
    workers = {}
    for name, path in builds.items():
        cmd = [sys.executable, __file__, "--worker", f"{name}={path}", "--model", str(model_dir), "--batch",
               str(case["batch"]), "--seq", str(case["seq"]), "--vocab", str(info.vocab_size), "--threads",
               str(case["threads"])]
        workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for name, w in workers.items():
            if w.stdout.readline().split() != ["ready", str(builds[name])]:
                raise SystemExit(f"worker {name} did not start with its build")

        def ask(name: str, line: str) -> str:
            workers[name].stdin.write(line + "\n")
            workers[name].stdin.flush()
            return workers[name].stdout.readline().strip()

        outs = {}
        for name in workers:
            ask(name, f"out {tmp / name}.npy")
            outs[name] = np.load(tmp / f"{name}.npy")
        names = list(builds)
        max_diff = max(float(np.abs(o - outs[names[0]]).max()) for o in outs.values())
        times: dict[str, list[float]] = {name: [] for name in names}
        for i in range(pairs):
            for name in (names if i % 2 == 0 else names[::-1]):
                time.sleep(GAP_S)
                times[name].append(float(ask(name, "run")))
    finally:
        for w in workers.values():
            if w.poll() is None:
                w.stdin.write("quit\n")
                w.stdin.flush()
                w.wait(timeout=60)
    base = np.array(times[names[0]])
    rows = {}
    for name in names:
        t = np.array(times[name])
        ratio = t / base
        rows[name] = {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
                      "ratio_median": float(np.median(ratio)), "ratio_q1": float(np.percentile(ratio, 25)),
                      "ratio_q3": float(np.percentile(ratio, 75)), "ms": [round(x, 4) for x in t]}
    return {"case": case, "isa": eng.isa, "formats": dict(eng.formats), "max_output_diff": max_diff,
            "builds": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    if "--worker" in (argv if argv is not None else sys.argv):
        wp = argparse.ArgumentParser()
        for key in ("--worker", "--model"):
            wp.add_argument(key)
        for key in ("--batch", "--seq", "--vocab", "--threads"):
            wp.add_argument(key, type=int)
        w = wp.parse_args(argv)
        worker(w.worker, w.model, w.batch, w.seq, w.vocab, w.threads)
        return 0
    ap.add_argument("--build", action="append", required=True, help="NAME=PATH of a saved _core module")
    ap.add_argument("--case", action="append", required=True, help="LABEL:key=value,... (as ab_builds.py)")
    ap.add_argument("--pairs", type=int, default=200, help="passes per build, alternating")
    ap.add_argument("--note", action="append", default=[], help="a line for the Markdown notes")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    paths = parse_builds(args.build)
    cases = dict(parse_case(c) for c in args.case)
    results = {}
    for label, case in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            results[label] = case_ab(case, paths, args.pairs, Path(tmp))
    first = next(iter(paths))
    lines = report_head(
        "Encoder pass A/B of native builds, pass by pass", command_line(argv),
        f"CPU: {cpu_model()}. Per case: the median pass (ms) of each build over {args.pairs} passes alternating "
        f"with the others', and the per-pair ratio to `{first}` (median, quartiles): < 1 is faster. The model is "
        "compiled once with the installed extension and saved; every build runs that saved model.", args.note)
    lines += ["| case | build | median ms | p10 ms | ratio to first (median) | quartiles | max output diff |",
              "|---|---|---:|---:|---:|---|---:|"]
    for label, res in results.items():
        for name, row in res["builds"].items():
            lines.append(f"| {label} | {name} | {row['median_ms']:.3f} | {row['p10_ms']:.3f} | "
                         f"{row['ratio_median']:.3f} | {row['ratio_q1']:.3f}-{row['ratio_q3']:.3f} | "
                         f"{res['max_output_diff']:.3g} |")
    write_report(args.out, {"builds": {k: str(v) for k, v in paths.items()}, "cases": results}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
