"""A/B of native builds on the decoder's k-bit GEMVs: the weight-only (`kbit_gemv`, float activations) and the
W4A8 (`kbit_gemv_a8`) kernels on SmolLM2-135M's Linear shapes, each build loaded into this one process as its own
module and timed in interleaved rounds (1 thread, one token row, best of each round's calls); then, with
--decode, SmolLM2's decode speed (batch 1, 2 threads) with each build copied over the installed extension in
turn, a fresh process per run, round by round (ab_builds.py's atomic install; the original extension is put back
at the end).

Each build is a copy of `trimformer/_core.cpython-*.so` saved from a build of the commit under test:

    python bench/micro/kbit_gemv_builds_ab.py --build before=/tmp/before.so --build after=/tmp/after.so \
        --decode --out bench/results/kbit_gemv_ab
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import (  # noqa: E402
    command_line,
    install,
    load_build,
    parse_builds,
    round_order,
    swapping_builds,
)

from harness import cpu_model  # noqa: E402

# SmolLM2-135M: hidden 576, MLP 1536, 3 KV heads of 64; the tied lm_head is Q8_0 in the shipped GGUF
SHAPES = {"q/o 576x576": (576, 576), "k/v 192x576": (192, 576), "gate/up 1536x576": (1536, 576),
          "down 576x1536": (576, 1536), "lm_head 49152x576": (49152, 576)}
# (k-bit type, group): the GGUF's Q4_1 layout, symmetric INT4 g128, Q8_0's layout
TYPES = (("int4-asym", 32), ("int4", 128), ("int8", 32))

DECODE_WORKER = """
import sys, time, numpy as np
from trimformer import assets
from trimformer.runtime.decoder import compile_decoder
eng = compile_decoder(assets.smollm2_gguf_path(), weights="gguf", threads=2,
                      activations="int8" if sys.argv[1] == "a8" else None)
nat = eng._native
ids = np.arange(100, 612, dtype=np.int64)[None]
best = 0.0
for _ in range(int(sys.argv[2])):
    nat.begin(1, 1024)
    logits = nat.forward(ids, None, 0, None)
    t0 = time.perf_counter()
    for _ in range(128):
        logits = nat.forward(logits.argmax(axis=1).astype(np.int64)[:, None].copy(), None, 0, None)
    best = max(best, 128 / (time.perf_counter() - t0))
print(best)
"""


def kernel_ab(builds: dict[str, ModuleType], rounds: int, calls: int) -> list[dict]:
    from trimformer.formats.kbit import quantize_rtn
    from trimformer.formats.registry import pack_kbit

    rng = np.random.default_rng(0)
    rows = []
    for type_name, group in TYPES:
        for label, (n, k) in SHAPES.items():
            if label.startswith("lm_head") and type_name != "int8":
                continue
            w = rng.standard_normal((n, k)).astype(np.float32) * 0.1
            st = pack_kbit(*quantize_rtn(w, type_name, group), type_name, group)
            mode, kk, g = (int(v) for v in st[".kmeta"])
            x = rng.standard_normal((1, k)).astype(np.float32)
            args = (x, st[".kcodes"], st[".kscales"], st.get(".koffsets"), mode, kk, g, st[".klut"])
            kernels = {"f32": lambda m, a=args: m.kbit_gemv(*a, ""),
                       "a8": lambda m, a=args: m.kbit_gemv_a8(*a, "", False)}
            if not type_name.startswith("int4"):  # W4A8 is for 4-bit codes
                del kernels["a8"]
            for kind, fn in kernels.items():
                outs = {b: fn(m) for b, m in builds.items()}
                first = next(iter(outs.values()))
                scale = float(np.abs(first).max()) or 1.0
                best = dict.fromkeys(builds, float("inf"))
                for _ in range(rounds):
                    for b, m in builds.items():
                        t0 = time.perf_counter()
                        for _ in range(calls):
                            fn(m)
                        best[b] = min(best[b], (time.perf_counter() - t0) / calls)
                rows.append({"type": type_name, "group": group, "shape": label, "kernel": kind,
                             "us": {b: v * 1e6 for b, v in best.items()},
                             "max_rel_diff": max(float(np.abs(o - first).max()) / scale for o in outs.values())})
                print(f"{type_name} g{group} {label} {kind}: " +
                      " ".join(f"{b} {v * 1e6:.1f} us" for b, v in best.items()), file=sys.stderr)
    return rows


def decode_ab(paths: dict[str, Path], rounds: int, reps: int) -> dict[str, dict[str, list[float]]]:
    runs: dict[str, dict[str, list[float]]] = {b: {"gguf": [], "gguf+a8": []} for b in paths}
    with swapping_builds() as target:
        for r in range(rounds):
            for b in round_order(paths, r):
                install(paths[b], target)
                for cfg, act in (("gguf", "f32"), ("gguf+a8", "a8")):
                    out = subprocess.run([sys.executable, "-c", DECODE_WORKER, act, str(reps)], check=True,
                                         capture_output=True, text=True).stdout
                    runs[b][cfg].append(float(out.strip().splitlines()[-1]))
                    print(f"round {r + 1} {b} {cfg}: {runs[b][cfg][-1]:.1f} tok/s", file=sys.stderr)
    return runs


def markdown(doc: dict) -> str:
    names = list(doc["builds"])
    base = names[0]
    lines = [f"# k-bit GEMV builds A/B ({doc['date']})", "", f"Command: `{doc['command']}`", "",
             f"CPU: {doc['cpu']}; builds: " + ", ".join(f"{b} = `{p}`" for b, p in doc["builds"].items()), "",
             f"## Kernels (1 thread, one token row, best of {doc['rounds']} interleaved rounds)", "",
             "| type | shape | kernel | " + " | ".join(f"{b} us" for b in names) + " | " +
             " | ".join(f"{b} / {base}" for b in names[1:]) + " | max rel diff |",
             "|---|---|---|" + "---|" * (2 * len(names) - 1) + "---|"]
    for r in doc["kernels"]:
        lines.append(f"| {r['type']} g{r['group']} | {r['shape']} | {r['kernel']} | " +
                     " | ".join(f"{r['us'][b]:.1f}" for b in names) + " | " +
                     " | ".join(f"{r['us'][b] / r['us'][base]:.3f}x" for b in names[1:]) +
                     f" | {r['max_rel_diff']:.1e} |")
    if doc.get("decode"):
        lines += ["", f"## SmolLM2-135M decode, batch 1, 2 threads (tok/s: best of {doc['decode_reps']} runs of "
                  "128 tokens after a 512-token prompt, per process; one process per build, config and round)", "",
                  "| config | " + " | ".join(f"{b} rounds" for b in names) + " | " +
                  " | ".join(f"{b} median" for b in names) + " |", "|---|" + "---|" * (2 * len(names))]
        for cfg in ("gguf", "gguf+a8"):
            lines.append(f"| {cfg} | " + " | ".join(", ".join(f"{v:.1f}" for v in doc["decode"][b][cfg])
                                                   for b in names) + " | " +
                         " | ".join(f"{np.median(doc['decode'][b][cfg]):.1f}" for b in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", required=True, help="name=path of a saved _core extension")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--decode", action="store_true", help="also SmolLM2 decode speed per build")
    ap.add_argument("--decode-rounds", type=int, default=5)
    ap.add_argument("--decode-reps", type=int, default=2)
    ap.add_argument("--out", default="bench/results/kbit_gemv_builds_ab")
    args = ap.parse_args(argv)
    paths = parse_builds(args.build)
    if len(paths) < 2:
        ap.error("give at least two --build name=path")
    builds = {b: load_build(b, p) for b, p in paths.items()}
    doc = {"command": command_line(argv), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cpu": cpu_model(), "builds": {b: str(p) for b, p in paths.items()},
           "rounds": args.rounds, "kernels": kernel_ab(builds, args.rounds, args.calls)}
    if args.decode:
        doc["decode_reps"] = args.decode_reps
        doc["decode"] = decode_ab(paths, args.decode_rounds, args.decode_reps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {out}.json/.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
