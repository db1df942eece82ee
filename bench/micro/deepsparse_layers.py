"""Where DeepSparse's forward pass spends its time against ours, op by op, on the same sparse weights: DeepSparse's
own per-layer analysis (`deepsparse.model_debug_analysis`, its debug engine: slower in total than its normal
engine) beside our executor's per-op profile (bench/micro/profile_encoder.py, team mode). Both are development
profiles on a shared machine; compare the shares and the ratios of like ops, not the totals.

    python bench/micro/deepsparse_layers.py --pattern unstructured --quantize fp32 --batch 16 \
        --out bench/results/deepsparse_layers_unstructured90_fp32_b16

Needs bench/.venv-deepsparse (bench/deepsparse_env.sh). DeepSparse gets the ONNX graphs the side-by-side benchmark
feeds it (bench_dense.py: the classic-mask FP32 export, the QOperator static INT8 graph).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_encoder import profile  # noqa: E402

import peers  # noqa: E402

# runs in DeepSparse's environment: [onnx, inputs .npz, batch, threads, iters, json out]
CHILD = r"""
import json, shutil, sys, tempfile, os
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
import numpy as np, deepsparse
src, npz, batch, threads, iters, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
d = tempfile.mkdtemp()
path = os.path.join(d, "model.onnx")
shutil.copy(src, path)  # the engine rewrites the file's shapes in place
data = np.load(npz)
inp = [data[k] for k in data.files]
r = deepsparse.model_debug_analysis(path, inp, batch_size=batch, num_cores=threads, num_iterations=iters,
                                    num_warmup_iterations=3, input_shapes=[list(x.shape) for x in inp])
def kind(x):
    n = x["canonical_name"]
    if any(f"self/{p}/MatMul" in n for p in ("query", "key", "value")): return "qkv"
    if "self/MatMul" in n or "self/Add_output" in n or "Softmax" in n: return "attention"
    if "attention/output/dense" in n: return "attn_out"
    if "intermediate/dense" in n: return "ffn1"
    if "output/dense" in n: return "ffn2"
    if x["name"].startswith("shuffle"): return "shuffles (layout)"
    if x["name"].startswith("Naive"): return "naive subgraphs"
    return "other"
ops = {}
for x in r["layer_info"]:
    ops[kind(x)] = ops.get(kind(x), 0.0) + x["average_run_time_in_ms"]
json.dump({"total_ms": r["average_total_time"], "ops_ms": ops, "deepsparse": deepsparse.__version__,
           "layers": [{"name": x["name"], "canonical_name": x["canonical_name"], "ms": x["average_run_time_in_ms"],
                       "kernel_sparsity": x["kernel_sparsity"]} for x in r["layer_info"]]}, open(out, "w"), indent=1)
"""

# DeepSparse's ONNX names the FFN's two Linears "intermediate" (FFN1: hidden -> 4 hidden) and "output" (FFN2)
OPS = ["qkv", "attention", "attn_out", "ffn1", "ffn2", "shuffles (layout)", "naive subgraphs", "embed", "output",
       "other"]


def deepsparse_ops(info: peers.ModelInfo, quantize: str, batch: int, seq: int, threads: int, iters: int) -> dict:
    py = peers.deepsparse_python()
    if py is None:
        raise SystemExit(f"DeepSparse is not installed: run bench/deepsparse_env.sh ({peers.DEEPSPARSE_VENV})")
    if quantize == "fp32":
        onnx = peers.export_onnx(info)
    else:
        onnx = peers.ort_int8_static(info, peers.calibration_batches(info, n=8, seed=0))
    from harness import make_inputs

    ids, mask, tt = make_inputs(batch, seq, info.vocab_size)
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "inputs.npz"
        import numpy as np

        np.savez(npz, **{n: arrays[n] for n in info.input_names})
        out = Path(tmp) / "ds.json"
        done = subprocess.run([str(py), "-c", CHILD, str(onnx), str(npz), str(batch), str(threads), str(iters),
                               str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"DeepSparse analysis failed:\n{done.stderr[-3000:]}")
        res = json.loads(out.read_text())
    res["onnx"] = onnx.name
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bert-base")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--pattern", default="unstructured")
    ap.add_argument("--quantize", choices=["fp32", "int8-static"], default="fp32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    info = peers.prepare_model(args.model, sparsity=args.sparsity, pattern=args.pattern)
    ds = deepsparse_ops(info, args.quantize, args.batch, args.seq, args.threads, args.iters)
    ours = profile(args.model, args.sparsity, args.pattern, args.quantize, args.batch, args.seq, args.iters,
                   args.threads)
    command = "python bench/micro/deepsparse_layers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command, "case": vars(args) | {"out": str(args.out)}, "deepsparse": ds, "trimformer": ours}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    ours_total = sum(ours["ops_ms"].values())
    lines = [f"# DeepSparse's per-layer analysis against our per-op profile: {args.model}, {args.sparsity:.0%} "
             f"{args.pattern}, {args.quantize}, batch {args.batch} x seq {args.seq}, {args.threads} threads "
             f"({ours['date']})", "", f"Command: `{command}`", "",
             f"DeepSparse {ds['deepsparse']} (`model_debug_analysis` on `{ds['onnx']}`, {args.iters} iterations): "
             f"{ds['total_ms']:.1f} ms per pass in its debug engine. trimformer: {ours['wall_ms']:.1f} ms per pass "
             f"(profiler off), its ops' medians over profiled passes (team mode) sum to {ours_total:.1f} ms. "
             "Development profiles on a shared machine: compare the ratios of like ops, not the totals. "
             "DeepSparse's naive subgraphs hold what it runs outside its fused kernels (LayerNorms, and for INT8 "
             "the Q.K product); our attn_out and ffn2 include their LayerNorm.", "",
             "| op | DeepSparse ms | share | trimformer ms | share | trimformer / DeepSparse |",
             "|---|---:|---:|---:|---:|---:|"]
    for op in OPS:
        d, o = ds["ops_ms"].get(op), ours["ops_ms"].get(op)
        if d is None and o is None:
            continue
        ratio = f"{o / d:.2f}" if d and o else ""
        lines.append(f"| {op} | {d or 0:.1f} | {(d or 0) / ds['total_ms']:.0%} | {o or 0:.1f} | "
                     f"{(o or 0) / ours_total:.0%} | {ratio} |")
    sparse_ops = ("qkv", "attn_out", "ffn1", "ffn2")
    d_lin = sum(ds["ops_ms"].get(op, 0.0) for op in sparse_ops)
    o_lin = sum(ours["ops_ms"].get(op, 0.0) for op in sparse_ops)
    lines += ["", f"The four Linears: DeepSparse {d_lin:.1f} ms, trimformer {o_lin:.1f} ms ({o_lin / d_lin:.2f}x)."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
