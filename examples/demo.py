"""The main job end to end on the real packaged assets (`make demo`).

all-MiniLM-L6-v2 (a real BERT-architecture encoder) is compiled by trimformer three ways (FP32, INT8 dynamic,
INT8 static calibrated on Wikipedia text), checked against transformers, measured for embedding fidelity on real
Wikipedia sentences and for accuracy on the 11-topic Wikipedia task (nearest-centroid on sentence embeddings),
saved and reloaded, used through a pipeline, and timed on this machine. Results go to artifacts/demo/.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table
from tokenizers import Tokenizer

import trimformer as tf
from trimformer import assets

OUT = Path("artifacts/demo")
MAX_LEN = 128
console = Console()


def tokenize(tok: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}


def embed(engine: tf.Engine, tok: Tokenizer, texts: list[str], batch: int = 32, desc: str = "") -> np.ndarray:
    order = np.argsort([len(t) for t in texts])  # length-sorted batches: little padding
    out = np.zeros((len(texts), engine.spec.hidden), np.float32)
    steps = range(0, len(texts), batch)
    for i in track(steps, description=desc, console=console, transient=True) if desc else steps:
        idx = order[i:i + batch]
        b = tokenize(tok, [texts[j] for j in idx])
        out[idx] = engine.run(**b, pooling="mean", normalize=True)["pooled"]  # native masked mean + L2
    return out


def time_engine(engine: tf.Engine, batch: int, seq: int, iters: int = 20) -> float:
    ids = np.random.default_rng(0).integers(1000, 20000, (batch, seq))
    mask = np.ones_like(ids)
    for _ in range(3):
        engine.run(ids, mask)
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        engine.run(ids, mask)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    assets.ensure_assets(("minilm", "wiki"))
    model_dir = assets.minilm_path()
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(MAX_LEN)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    report: dict = {"model": "all-MiniLM-L6-v2", "python": sys.version.split()[0], "machine": platform.machine()}

    calib_texts = assets.wiki_sentences(256, split="train")
    calibration = [tokenize(tok, calib_texts[i:i + 32]) for i in range(0, len(calib_texts), 32)]
    console.rule("compile")
    engines = {}
    for name, q in (("fp32", None), ("int8-dynamic", "int8-dynamic"), ("int8-static", "int8-static")):
        t = time.perf_counter()
        engines[name] = tf.compile(model_dir, quantize=q, calibration=calibration)
        console.print(f"{name:13s} compiled in {time.perf_counter() - t:5.2f} s  ({engines[name]!r})")

    sentences = assets.wiki_sentences(512, split="test")
    try:  # parity with the reference implementation, when the compress extra is installed
        import torch
        from transformers import AutoModel

        ref_model = AutoModel.from_pretrained(model_dir).eval()
        b = tokenize(tok, sentences[:64])
        with torch.no_grad():
            ref = ref_model(**{k: torch.tensor(v) for k, v in b.items()}).last_hidden_state.numpy()
        got = engines["fp32"].run(**b)["last_hidden_state"]
        report["fp32_max_rel_err_vs_transformers"] = float(np.abs(got - ref).max() / np.abs(ref).max())
        console.print(f"FP32 vs transformers: max relative error {report['fp32_max_rel_err_vs_transformers']:.2e}")
    except ImportError:
        console.print("transformers not installed: parity check skipped")

    console.rule("embedding fidelity (512 real Wikipedia sentences)")
    embs = {name: embed(e, tok, sentences) for name, e in engines.items()}
    report["cosine_to_fp32"] = {}
    for name in ("int8-dynamic", "int8-static"):
        cos = (embs[name] * embs["fp32"]).sum(1)
        report["cosine_to_fp32"][name] = {"mean": float(cos.mean()), "min": float(cos.min()), "n": len(cos)}

    console.rule("topic classification (nearest centroid on embeddings; deterministic split)")
    train = assets.topic_split("train")[::4]  # every 4th training article keeps the demo short
    test = assets.topic_split("test")
    n_labels = len(assets.TOPIC_LABELS)
    report["topics"] = {"train_articles": len(train), "test_articles": len(test), "labels": n_labels}
    for name, eng in engines.items():
        tr = embed(eng, tok, [t for t, _ in train], desc=f"{name} train")
        te = embed(eng, tok, [t for t, _ in test], desc=f"{name} test")
        ytr = np.array([y for _, y in train])
        yte = np.array([y for _, y in test])
        centroids = np.stack([tr[ytr == c].mean(0) for c in range(n_labels)])
        pred = (te @ centroids.T).argmax(1)
        report["topics"][name] = float((pred == yte).mean())

    console.rule("save / load / pipeline")
    saved = tf.save(engines["int8-static"], OUT / "minilm-int8-static")
    back = tf.load(saved)
    b = tokenize(tok, sentences[:8])
    same = np.array_equal(back.run(**b)["last_hidden_state"], engines["int8-static"].run(**b)["last_hidden_state"])
    report["reload_identical"] = bool(same)
    size = sum(p.stat().st_size for p in saved.iterdir())
    report["saved_size_mb"] = round(size / 1e6, 2)
    console.print(f"saved {saved} ({report['saved_size_mb']} MB), reload identical: {same}")
    embedder = tf.pipeline("feature-extraction", model=saved, pooling="mean", normalize=True)
    query = embedder(["Which planet is the largest in the solar system?"])[0]
    corpus = sentences[:200]
    best = int(np.argmax(embs["int8-static"][:200] @ np.asarray(query)))
    report["search_example"] = {"query": "Which planet is the largest in the solar system?", "best": corpus[best]}

    console.rule("speed on this machine (trimformer alone; peers side by side: bench/bench_dense.py)")
    report["latency_ms"] = {}
    for name, eng in engines.items():
        report["latency_ms"][name] = {"b1_s128": time_engine(eng, 1, 128), "b16_s128": time_engine(eng, 16, 128, 5)}

    table = Table(title="all-MiniLM-L6-v2 in trimformer")
    for col in ("engine", "cos to FP32 mean/min", "topic acc", "b1 s128 ms", "b16 s128 seq/s"):
        table.add_column(col)
    for name in engines:
        c = report["cosine_to_fp32"].get(name)
        lat = report["latency_ms"][name]
        table.add_row(name, f"{c['mean']:.4f} / {c['min']:.4f}" if c else "1 (reference)",
                      f"{report['topics'][name]:.4f}", f"{lat['b1_s128']:.2f}", f"{16e3 / lat['b16_s128']:.1f}")
    console.print(table)
    console.print(f"search: {report['search_example']['query']!r} -> {report['search_example']['best']!r}")

    console.rule("decoder LLM: SmolLM2-135M from its GGUF (generation, perplexity, decode speed)")
    report["decoder"] = decoder_demo(console)
    (OUT / "report.json").write_text(json.dumps(report, indent=1))
    console.print(f"report written to {OUT / 'report.json'}")
    return 0


def decoder_demo(console) -> dict:
    """SmolLM2-135M: the shipped Q4_1 blocks run exactly, and as W8A8 (INT8 weights, per-token INT8 activations):
    an answer, perplexity on the first 2,048 tokens of the held-out slice, decode speed (trimformer alone;
    llama.cpp side by side: bench/bench_llm.py)."""
    from trimformer.llm_eval import evaluate_perplexity
    from trimformer.pipelines.text_generation import TextGenerationPipeline
    from trimformer.runtime.decoder import compile_decoder

    gguf = assets.smollm2_gguf_path()
    out = {}
    table = Table(title="SmolLM2-135M in trimformer")
    for col in ("weights", "perplexity (2048 tok)", "decode tok/s", "answer"):
        table.add_column(col)
    for name, weights, act in (("gguf Q4_1 exact", "gguf", None), ("gguf Q4_1 + int8 act (W4A8)", "gguf", "int8"),
                               ("w8a8", "w8a8", None)):
        eng = compile_decoder(gguf, weights=weights, activations=act, threads=2)
        ppl = evaluate_perplexity(eng, n_tokens=2048)["perplexity"]
        pipe = TextGenerationPipeline(eng)
        answer = pipe("What is the capital of France?", chat=True, return_full_text=False,
                      max_new_tokens=12)[0]["generated_text"].strip()
        eng.generate([[1, 504, 3575]], 8, stop_tokens=())  # warm-up
        t0 = time.perf_counter()
        n = len(eng.generate([[1, 504, 3575, 282, 4649]], 64, stop_tokens=())[0])
        tps = n / (time.perf_counter() - t0)
        out[name] = {"perplexity_2048": ppl, "decode_tok_s": tps, "answer": answer}
        table.add_row(name, f"{ppl:.3f}", f"{tps:.1f}", answer)
    console.print(table)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
