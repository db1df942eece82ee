"""Decoder LLM speed, side by side: trimformer (several weight formats) vs llama.cpp (llama-cpp-python, the same
SmolLM2-135M GGUF: the shipped Q4_1 and Q4_0 / Q8_0 / F16 conversions made with llama.cpp's own quantizer) vs
PyTorch fp32 (transformers), same machine, same thread count, in one run.

Per runtime and batch size: prefill tokens/s (a `--prompt`-token prompt per row) and decode tokens/s
(`--new` greedy tokens per row after that prompt), peak RSS. Every (runtime, config) runs in its own subprocess
(clean RSS, no shared thread pools), `--rounds` times round-robin over all configs (the machine is shared and
noisy: ratios are taken from medians within this run). Writes JSON + Markdown under --out.

    python bench/bench_llm.py --threads 2 --rounds 3 --out bench/results/llm_speed

A trimformer config is WEIGHTS[+a8][@MODEL]: MODEL is the shipped GGUF by default, `magS` (S = 50, 70, 2:4, ...)
the same model magnitude-pruned to that sparsity (a checkpoint made once under bench/.cache/llm_sparse with
`prune_llm(method="magnitude")`: speed depends on the density and pattern, not on which weights were kept), or a
checkpoint directory (e.g. a SparseGPT output). The sparse-format run:

    python bench/bench_llm.py --trimformer f32@mag50,sparse@mag50,w8a8@mag50,sparse-int8@mag50,... \
        --llama-cpp Q4_1 --torch '' --out bench/results/llm_sparse
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

TRIMFORMER_CONFIGS = ["gguf", "gguf+a8", "int4-g128", "int4-g128+a8", "int4-asym-g32+a8", "int8-wo", "w8a8", "bf16",
                      "f32"]
LLAMA_CPP_CONFIGS = ["Q4_1", "Q4_0", "Q8_0", "F16"]


def prompt_tokens(n: int, rows: int) -> list[list[int]]:
    """`rows` deterministic prompts of n tokens each from the Wikipedia calibration slice (not the perplexity one)."""
    from tokenizers import Tokenizer

    from trimformer import assets
    from trimformer.models.decoder import gguf_tokenizer_json

    tok = Tokenizer.from_str(gguf_tokenizer_json(assets.smollm2_gguf_path()))
    ids = tok.encode(assets.text_slice("calibration", max_chars=40 * n * rows)).ids
    if len(ids) < n * rows:
        raise RuntimeError("calibration slice too short for the prompts")
    return [ids[r * n:(r + 1) * n] for r in range(rows)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------- workers
SPARSE_CACHE = ROOT / "bench" / ".cache" / "llm_sparse"


def model_source(cfg: str) -> Path:
    """The model a trimformer config runs (see the module docstring): the GGUF, a pruned variant, or a directory."""
    from trimformer import assets

    _, _, model = cfg.partition("@")
    if not model:
        return Path(assets.smollm2_gguf_path())
    if model.startswith("mag"):
        return SPARSE_CACHE / model.replace(":", "_")
    return Path(model)


def prepare_models(configs: list[str]) -> None:
    """Make the magnitude-pruned checkpoints the configs name (once; kept under bench/.cache)."""
    from trimformer import assets

    for cfg in configs:
        _, _, model = cfg.partition("@")
        path = model_source(cfg.split(":", 1)[1]) if cfg.startswith("trimformer:") else None
        if not model.startswith("mag") or path is None or path.exists():
            continue
        from trimformer.compress.llm import prune_llm

        s = model[3:]
        sparsity = s if ":" in s else int(s) / 100.0
        print(f"pruning SmolLM2 by magnitude to {s} -> {path}", flush=True)
        prune_llm(assets.smollm2_gguf_path(), method="magnitude", sparsity=sparsity, out=path, progress=False)


def worker_trimformer(cfg: str, batch: int, n_prompt: int, n_new: int, threads: int, reps: int) -> dict:
    from trimformer.runtime.decoder import compile_decoder

    t0 = time.perf_counter()
    src = model_source(cfg)
    weights, _, act = cfg.split("@")[0].partition("+")  # "+a8": int8 activations on the 4-bit Linears (W4A8)
    eng = compile_decoder(src, weights=weights, threads=threads, activations="int8" if act == "a8" else None)
    load_s = time.perf_counter() - t0
    prompts = prompt_tokens(n_prompt, batch)
    ids = np.array(prompts, np.int64)
    nat = eng._native
    # warm-up (buffers, caches)
    nat.begin(batch, n_prompt + n_new)
    nat.forward(ids[:, :32].copy(), None, 0, None)
    prefill, decode = [], []
    generated = None
    for _ in range(reps):
        nat.begin(batch, n_prompt + n_new)
        t0 = time.perf_counter()
        logits = nat.forward(ids, None, 0, None)
        prefill.append(time.perf_counter() - t0)
        out = []
        t0 = time.perf_counter()
        for _step in range(n_new):
            nxt = logits.argmax(axis=1).astype(np.int64)
            out.append(nxt)
            logits = nat.forward(nxt[:, None].copy(), None, 0, None)
        decode.append(time.perf_counter() - t0)
        generated = np.stack(out, 1)[0, :16].tolist()
    return {"load_s": load_s, "prefill_s": prefill, "decode_s": decode, "weight_mib": eng.weight_bytes / 2**20,
            "first_tokens": generated, "formats": sorted(set(eng.formats.values()))}


def _llama_gguf(kind: str, tmp: Path) -> Path:
    """The shipped Q4_1 GGUF, or a conversion made with llama.cpp's quantizer (requantized from Q4_1)."""
    import llama_cpp as L

    from trimformer import assets

    src = assets.smollm2_gguf_path()
    if kind == "Q4_1":
        return src
    dst = tmp / f"smollm2-{kind}.gguf"
    if dst.exists():
        return dst
    p = L.llama_model_quantize_default_params()
    p.ftype = {"Q4_0": L.LLAMA_FTYPE_MOSTLY_Q4_0, "Q8_0": L.LLAMA_FTYPE_MOSTLY_Q8_0,
               "F16": L.LLAMA_FTYPE_MOSTLY_F16}[kind]
    p.allow_requantize = True
    p.nthread = 2
    rc = L.llama_model_quantize(str(src).encode(), str(dst).encode(), p)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {kind} failed ({rc})")
    return dst


def worker_llama_cpp(cfg: str, batch: int, n_prompt: int, n_new: int, threads: int, reps: int, tmp: Path) -> dict:
    import llama_cpp as L

    path = _llama_gguf(cfg, tmp)
    L.llama_backend_init()
    t0 = time.perf_counter()
    mp = L.llama_model_default_params()
    if os.environ.get("TF_BENCH_LLAMA_NO_EXTRA_BUFTS") == "1":
        # ggml's AMX buffer type crashes in some VMs (SIGSEGV in ggml_backend_amx_mul_mat): this also turns off
        # the CPU weight-repacking buffer types (Q4_0 interleaving), which the report then says
        mp.use_extra_bufts = False
    model = L.llama_model_load_from_file(str(path).encode(), mp)
    cp = L.llama_context_default_params()
    cp.n_ctx = batch * (n_prompt + n_new + 8)
    cp.n_batch = batch * n_prompt
    cp.n_ubatch = 512
    cp.n_seq_max = batch
    cp.n_threads = threads
    cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    load_s = time.perf_counter() - t0
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    prompts = prompt_tokens(n_prompt, batch)
    lb = L.llama_batch_init(batch * n_prompt, 0, batch)

    def submit(rows: list[list[int]], pos0: int) -> list[np.ndarray]:
        lb.n_tokens = 0
        last = []
        for s, toks in enumerate(rows):
            for j, t in enumerate(toks):
                i = lb.n_tokens
                lb.token[i] = t
                lb.pos[i] = pos0 + j
                lb.n_seq_id[i] = 1
                lb.seq_id[i][0] = s
                lb.logits[i] = j == len(toks) - 1
                lb.n_tokens += 1
            last.append(lb.n_tokens - 1)
        if L.llama_decode(ctx, lb) != 0:
            raise RuntimeError("llama_decode failed")
        return [np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)) for i in last]

    mem = L.llama_get_memory(ctx)
    submit([p[:32] for p in prompts], 0)  # warm-up
    prefill, decode = [], []
    generated = None
    for _ in range(reps):
        L.llama_memory_clear(mem, True)
        t0 = time.perf_counter()
        logits = submit(prompts, 0)
        prefill.append(time.perf_counter() - t0)
        out = []
        t0 = time.perf_counter()
        for step in range(n_new):
            nxt = [int(np.argmax(x)) for x in logits]
            out.append(nxt)
            logits = submit([[t] for t in nxt], n_prompt + step)
        decode.append(time.perf_counter() - t0)
        generated = [o[0] for o in out[:16]]
    L.llama_batch_free(lb)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return {"load_s": load_s, "prefill_s": prefill, "decode_s": decode, "gguf_mib": path.stat().st_size / 2**20,
            "first_tokens": generated}


def worker_torch(cfg: str, batch: int, n_prompt: int, n_new: int, threads: int, reps: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from trimformer import assets

    torch.set_num_threads(threads)
    p = assets.smollm2_gguf_path()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    ids = torch.tensor(prompt_tokens(n_prompt, batch))
    prefill, decode = [], []
    generated = None
    with torch.inference_mode():
        model(ids[:, :32])
        for _ in range(reps):
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            prefill.append(time.perf_counter() - t0)
            past, logits = out.past_key_values, out.logits[:, -1]
            toks = []
            t0 = time.perf_counter()
            for _step in range(n_new):
                nxt = logits.argmax(-1, keepdim=True)
                toks.append(nxt)
                out = model(nxt, past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1]
            decode.append(time.perf_counter() - t0)
            generated = torch.cat(toks, 1)[0, :16].tolist()
    return {"load_s": load_s, "prefill_s": prefill, "decode_s": decode, "first_tokens": generated}


# --------------------------------------------------------------------------------------------- driver
def run_worker(args: argparse.Namespace) -> None:
    kind, cfg = args.worker.split(":", 1)
    tmp = Path(args.tmp)
    if kind == "trimformer":
        r = worker_trimformer(cfg, args.batch, args.prompt, args.new, args.threads, args.reps)
    elif kind == "llama.cpp":
        r = worker_llama_cpp(cfg, args.batch, args.prompt, args.new, args.threads, args.reps, tmp)
    elif kind == "torch":
        r = worker_torch(cfg, args.batch, args.prompt, args.new, args.threads, args.reps)
    else:
        raise SystemExit(f"unknown worker {kind}")
    r["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="round-robin passes over every config")
    ap.add_argument("--reps", type=int, default=1, help="repetitions inside one worker per round")
    ap.add_argument("--trimformer", default=",".join(TRIMFORMER_CONFIGS))
    ap.add_argument("--llama-cpp", default=",".join(LLAMA_CPP_CONFIGS))
    ap.add_argument("--torch", default="fp32", help="'' to skip PyTorch")
    ap.add_argument("--out", default="bench/results/llm_speed")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--llama-no-extra-bufts", action="store_true",
                    help="load llama.cpp models without extra buffer types (AMX / weight repacking)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run_worker(args)
        return
    configs = ([f"trimformer:{c}" for c in args.trimformer.split(",") if c]
               + [f"llama.cpp:{c}" for c in args.llama_cpp.split(",") if c]
               + [f"torch:{c}" for c in args.torch.split(",") if c])
    batches = [int(b) for b in args.batches.split(",")]
    prepare_models(configs)
    tmp = Path(tempfile.mkdtemp(prefix="tf-bench-llm-"))
    results: dict[str, dict[str, list[dict]]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRIMFORMER_THREADS": str(args.threads)}
    if args.llama_no_extra_bufts:
        env["TF_BENCH_LLAMA_NO_EXTRA_BUFTS"] = "1"
    for rnd in range(args.rounds):
        for b in batches:
            for cfg in configs:
                cmd = [sys.executable, __file__, "--worker", cfg, "--batch", str(b), "--prompt", str(args.prompt),
                       "--new", str(args.new), "--threads", str(args.threads), "--reps", str(args.reps),
                       "--tmp", str(tmp)]
                t0 = time.perf_counter()
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
                    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                    if p.returncode != 0 or not line:
                        r = {"error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
                    else:
                        r = json.loads(line[-1][7:])
                except subprocess.TimeoutExpired:
                    r = {"error": f"timeout after {args.timeout} s"}
                results.setdefault(cfg, {}).setdefault(str(b), []).append(r)
                msg = r.get("error") or (f"prefill {b * args.prompt / min(r['prefill_s']):.0f} tok/s, "
                                         f"decode {b * args.new / min(r['decode_s']):.1f} tok/s, "
                                         f"rss {r['peak_rss_mib']:.0f} MiB")
                print(f"[round {rnd + 1}/{args.rounds}] batch {b} {cfg}: {msg} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    summary = summarize(results, args, batches)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(sys.argv), "machine": machine(), "threads": args.threads, "prompt": args.prompt,
           "llama_extra_bufts": not args.llama_no_extra_bufts,
           "new_tokens": args.new, "rounds": args.rounds, "raw": results, "summary": summary}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))


def machine() -> dict:
    from harness import cpu_model

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu": cpu_model()}
    from trimformer import _core

    # the prefill INT8 GEMM this machine runs (amx / vnni at the avx512 level; TRIMFORMER_NO_AMX=1 forces vnni)
    info["isa"] = _core.resolve_isa("")
    info["int8_gemm"] = _core.gemm_s8_kernel("")
    return info


def summarize(results: dict, args: argparse.Namespace, batches: list[int]) -> dict:
    """Median over rounds of each config's best-of-reps prefill / decode rate."""
    s: dict[str, dict[str, dict]] = {}
    for cfg, per_b in results.items():
        for b, runs in per_b.items():
            ok = [r for r in runs if "error" not in r]
            if not ok:
                s.setdefault(cfg, {})[b] = {"error": runs[-1].get("error")}
                continue
            bi = int(b)
            pre = statistics.median(bi * args.prompt / min(r["prefill_s"]) for r in ok)
            dec = statistics.median(bi * args.new / min(r["decode_s"]) for r in ok)
            s.setdefault(cfg, {})[b] = {"prefill_tok_s": pre, "decode_tok_s": dec,
                                        "peak_rss_mib": max(r["peak_rss_mib"] for r in ok), "rounds": len(ok),
                                        "first_tokens": ok[-1].get("first_tokens"),
                                        "weight_mib": ok[-1].get("weight_mib"), "formats": ok[-1].get("formats")}
    return s


SPARSE_PEERS = {"sparse": "f32", "bitmask-f32": "f32", "sparse-int8": "w8a8", "bitmask-int8": "w8a8"}


def sparse_table(s: dict, b: str) -> list[str]:
    """Each sparse config against the dense format of the same precision on the same pruned model."""
    rows = []
    for cfg, per in s.items():
        if not cfg.startswith("trimformer:") or "@" not in cfg:
            continue
        weights, model = cfg[len("trimformer:"):].split("@", 1)
        peer = SPARSE_PEERS.get(weights)
        r, p = per.get(b, {}), s.get(f"trimformer:{peer}@{model}", {}).get(b, {})
        if peer is None or "decode_tok_s" not in r or "decode_tok_s" not in p:
            continue
        rows.append(f"| {model} | {weights} vs {peer} | {r['weight_mib']:.0f} / {p['weight_mib']:.0f} | "
                    f"{r['decode_tok_s'] / p['decode_tok_s']:.2f}x | {r['prefill_tok_s'] / p['prefill_tok_s']:.2f}x |")
    if not rows:
        return []
    return ["", "Sparse formats vs the dense format of the same precision, same pruned model (`magS`: magnitude-"
            "pruned to S; the LM head stays dense in both):", "",
            "| model | formats | weight MiB sparse / dense | decode | prefill |", "|---|---|---|---|---|", *rows]


def markdown(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"# Decoder speed: SmolLM2-135M, {doc['threads']} threads, prompt {doc['prompt']}, "
             f"{doc['new_tokens']} new tokens", "",
             f"Command: `{doc['command']}`  ", f"Machine: {doc['machine'].get('cpu', '?')}, "
             f"{doc['machine'].get('cpus')} CPUs, ISA level {doc['machine'].get('isa', '?')}, INT8 GEMM "
             f"{doc['machine'].get('int8_gemm', '?')}. Median of {doc['rounds']} round-robin rounds, each config "
             "in its own process.", ""]
    ref = {"Q4_1": "llama.cpp:Q4_1", "Q4_0": "llama.cpp:Q4_0"}
    for b in sorted({b for v in s.values() for b in v}, key=int):
        lines += [f"## batch {b}", "", "| runtime | prefill tok/s | decode tok/s | decode vs llama.cpp Q4_1 | "
                  "decode vs Q4_0 | prefill vs Q4_1 | peak RSS MiB |", "|---|---|---|---|---|---|---|"]
        for cfg, per in s.items():
            r = per.get(b)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {cfg} | error: {r['error']} | | | | | |")
                continue

            def ratio(key: str, peer: str, r: dict = r, b: str = b) -> str:
                p = s.get(ref[peer], {}).get(b, {})
                return f"{r[key] / p[key]:.2f}x" if key in p else "-"

            lines.append(f"| {cfg} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | "
                         f"{ratio('decode_tok_s', 'Q4_1')} | {ratio('decode_tok_s', 'Q4_0')} | "
                         f"{ratio('prefill_tok_s', 'Q4_1')} | {r['peak_rss_mib']:.0f} |")
        w8, f32 = s.get("trimformer:w8a8", {}).get(b, {}), s.get("trimformer:f32", {}).get(b, {})
        if "prefill_tok_s" in w8 and "prefill_tok_s" in f32:
            lines += ["", f"W8A8 prefill vs trimformer FP32 prefill: {w8['prefill_tok_s'] / f32['prefill_tok_s']:.2f}x"]
        lines += sparse_table(s, b)
        lines.append("")
    lines += ["Formats: trimformer `gguf` runs the shipped Q4_1 blocks exactly (int4-asym, group 32, and the Q8_0 "
              "embedding/lm_head) with float32 activations; `+a8` quantizes the activations of the 4-bit Linears "
              "per token to int8 and uses integer dot products (VNNI `vpdpbusd`; AVX2 `vpmaddubsw`) (W4A8, as llama.cpp's Q4_1 x Q8_1 dots do; its "
              "perplexity is in llm_ppl_runtime.md); `int4-g128` is symmetric INT4 re-quantized (RTN) from the "
              "dequantized fp32 weights (576-input Linears: 4 groups of 128 + one of 64); `w8a8` is INT8 "
              "per-channel weights with per-token u8 activations (VNNI); `int8-wo` INT8 weight-only. llama.cpp "
              "Q4_0 / Q8_0 / F16 are llama.cpp's own conversions of the Q4_1 file (requantized). Peak RSS includes "
              "each process's Python, numpy and loader overhead.",
              "" if doc.get("llama_extra_bufts", True) else "llama.cpp ran with `use_extra_bufts=False`: its AMX "
              "buffer type crashes (SIGSEGV) in this VM, and the flag also disables its weight-repacking buffers.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
