"""A/B of native builds: the same encoder profiles (profile_encoder.py) run with two or more builds of the
`trimformer._core` extension, interleaved round by round so that a shared machine's drift hits every build alike.

Each build is a copy of the extension module (`_core.cpython-*.so`) saved from a build of the commit under test.
For every run the script copies that file over the installed module (and puts the original back at the end), then
runs profile_encoder.py in a fresh process. The result is one JSON with every run and a Markdown table of each
case's median wall time per build over the rounds, with the ops' medians beside it.

    python bench/micro/ab_builds.py --build before=/tmp/before.so --build after=/tmp/after.so \
        --case "b1s128:batch=1,seq=128" --case "b1s384:batch=1,seq=384" --rounds 2 \
        --out bench/results/ab_example
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import env_prefix  # noqa: E402  (the runs inherit the environment)

HERE = Path(__file__).resolve().parent
CASE_KEYS = {"model": str, "sparsity": float, "pattern": str, "quantize": str, "batch": int, "seq": int,
             "threads": int, "iters": int, "sparse": str, "attention": str, "reduce_range": int}
DEFAULTS = {"model": "bert-base", "sparsity": 0.9, "pattern": "block", "quantize": "int8-static", "batch": 1,
            "seq": 128, "threads": 2, "iters": 60, "sparse": "tune", "attention": "default",
            "reduce_range": 0}


def parse_case(text: str, keys: dict = CASE_KEYS, defaults: dict = DEFAULTS) -> tuple[str, dict]:
    """LABEL:key=value,... -> (LABEL, defaults with those keys set, each value converted by keys[key])"""
    label, _, spec = text.partition(":")
    case = dict(defaults)
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in keys:
            raise SystemExit(f"unknown case key {key!r} in {text!r}; known: {', '.join(keys)}")
        case[key] = keys[key](value)
    return label, case


def installed_module() -> Path:
    out = subprocess.run([sys.executable, "-c", "import trimformer._core as c; print(c.__file__)"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def install(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".ab-tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)  # atomic: a process never loads a half-copied module


def parse_builds(items: list[str]) -> dict[str, Path]:
    """NAME=PATH items -> {name: path}; every path must be a file."""
    builds = {}
    for item in items:
        name, _, path = item.partition("=")
        if not Path(path).is_file():
            raise SystemExit(f"build {name!r}: no file {path}")
        builds[name] = Path(path)
    return builds


def load_build(name: str, path: Path) -> ModuleType:
    """A saved build loaded into this process as a module of its own, "<name>._core" (the module's last name part
    picks its init function, PyInit__core), beside the installed one."""
    spec = importlib.util.spec_from_file_location(f"{name}._core", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def round_order(builds: dict[str, Path], rnd: int) -> list[str]:
    """The builds' names in round rnd: in turn, reversed every other round."""
    return list(builds) if rnd % 2 == 0 else list(reversed(builds))


@contextlib.contextmanager
def swapping_builds() -> Iterator[Path]:
    """The installed module's path, to install() builds over; the original is put back at the end, whatever
    happened."""
    module = installed_module()
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / module.name
        shutil.copyfile(module, original)
        try:
            yield module
        finally:
            install(original, module)


@contextlib.contextmanager
def settings(env: dict[str, str]):
    """os.environ with `env` set, restored afterwards"""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def command_line(argv: list[str] | None) -> str:
    """The command that ran this script, with the environment settings that shape a run (harness.env_prefix)."""
    return env_prefix() + "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])


def report_head(title: str, command: str, description: str, notes: list[str]) -> list[str]:
    """A report's first Markdown lines: the dated title, the command, what the tables hold, the --note lines."""
    lines = [f"# {title} ({time.strftime('%Y-%m-%d', time.gmtime())})", "", f"Command: `{command}`", "",
             description, ""]
    return lines + [f"- {n}" for n in notes] + ([""] if notes else [])


def write_report(out: str, data: dict, lines: list[str]) -> None:
    """out.json (data) and out.md (lines), the Markdown also printed."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(data, indent=1))
    path.with_suffix(".md").write_text("\n".join(lines))
    print(path.with_suffix(".md").read_text())


def env_setting(ap: argparse.ArgumentParser, text: str) -> tuple[str, str]:
    """--env's NAME=VALUE as (name, value), for an A/B of one setting against the default in one process. A variable
    already set in this environment fails too: the default runner would have it as well"""
    name, sep, value = text.partition("=")
    if not sep or not name:
        ap.error("--env takes NAME=VALUE")
    if os.environ.get(name) is not None:
        raise SystemExit(f"{name} is set in this environment: the default runner would have it too")
    return name, value


def setting_ratios(t: dict[str, list[float]], label: str, env: str) -> dict:
    """Two runners' seconds per cycle, "default" and "set" (with the setting env): the per-cycle ratios default /
    set as quartiles and each runner's median in ms (printed to stderr under label)"""
    q = np.percentile(np.array(t["default"]) / np.array(t["set"]), [25, 50, 75])
    print(f"{label}: default / {env} per cycle {q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f})", file=sys.stderr)
    return {"ratio_quartiles": q.tolist(), "median_ms": {k: float(np.median(v)) * 1e3 for k, v in t.items()}}


def setting_table(head: str, rows: list[dict], key: str) -> list[str]:
    """The Markdown table of setting_ratios rows (each row's `key` in the first column, headed `head`)"""
    lines = [f"| {head} | default ms (median) | with the setting ms (median) | ratio per cycle: median | quartiles |",
             "|---|---|---|---|---|"]
    for r in rows:
        q = r["ratio_quartiles"]
        lines.append(f"| {r[key]} | {r['median_ms']['default']:.4g} | {r['median_ms']['set']:.4g} | {q[1]:.3f} | "
                     f"{q[0]:.3f}-{q[2]:.3f} |")
    return lines


def run_profile(case: dict, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "profile_encoder.py"), "--out", str(out)]
    for key in CASE_KEYS:
        cmd += [f"--{key}", str(case[key])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.with_suffix(".json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="append", required=True, help="NAME=PATH of a saved _core module")
    ap.add_argument("--case", action="append", required=True,
                    help="LABEL:key=value,... (keys: " + ", ".join(CASE_KEYS) + ")")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--note", action="append", default=[], help="a line for the Markdown notes")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    builds = parse_builds(args.build)
    cases = dict(parse_case(c) for c in args.case)
    runs: list[dict] = []
    with swapping_builds() as module, tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for label, case in cases.items():
                for name in round_order(builds, rnd):
                    install(builds[name], module)
                    r = run_profile(case, Path(tmp) / f"{label}_{name}_{rnd}")
                    runs.append({"case": label, "build": name, "round": rnd, **r})
                    print(f"round {rnd} {label} {name}: {r['wall_ms']:.2f} ms", file=sys.stderr)
    command = command_line(argv)
    first = next(iter(builds))
    lines = report_head("A/B of native builds", command,
                        "Wall: median over the rounds of each run's median pass (profiler off); ratio against "
                        f"`{first}`. Ops: medians over the rounds of each run's per-op medians (profiled passes).",
                        args.note)
    for label, case in cases.items():
        desc = ", ".join(f"{k} {case[k]}" for k in CASE_KEYS)
        lines += [f"## {label} ({desc})", ""]
        ops = sorted({op for r in runs if r["case"] == label for op in r["ops_ms"]})
        lines += ["| build | wall ms | vs " + first + " | rounds | " + " | ".join(ops) + " |",
                  "|---|---:|---:|---|" + "---:|" * len(ops)]
        base = None
        for name in builds:
            mine = [r for r in runs if r["case"] == label and r["build"] == name]
            wall = float(np.median([r["wall_ms"] for r in mine]))
            base = wall if base is None else base
            per_op = [float(np.median([r["ops_ms"].get(op, 0.0) for r in mine])) for op in ops]
            lines.append(f"| {name} | {wall:.2f} | {wall / base:.3f} | "
                         + " ".join(f"{r['wall_ms']:.2f}" for r in mine) + " | "
                         + " | ".join(f"{v:.3f}" for v in per_op) + " |")
        lines.append("")
    write_report(args.out, {"command": command, "builds": {k: str(v) for k, v in builds.items()}, "cases": cases,
                            "runs": runs}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
