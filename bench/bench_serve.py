"""Serving throughput and latency of `trimformer serve` (trimformer.serve.ModelServer) with and without dynamic
batching, against the same pipeline called directly one text at a time (no HTTP) in the same run.

Closed loop: C client threads each send one real Wikipedia sentence per request (POST /predict) and send the next
one when the answer arrives. For each client count, the server (its own process, as `trimformer serve` runs it,
so that the clients do not hold its interpreter lock) runs each configuration max_batch:max_wait_ms: 1:0 is no
batching (the default), 32:0 joins what is already queued when a call starts, 32:5 also waits up to 5 ms for more.
Reported: requests/s, p50 / p90 latency per request, and the inputs per pipeline call. Clients and server share
the machine's cores.

    python bench/bench_serve.py --out bench/results/serve_minilm
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model  # noqa: E402
from trimformer import assets  # noqa: E402
from trimformer.pipelines import calibration_sentences, pipeline  # noqa: E402
from trimformer.serve import ModelServer  # noqa: E402


def closed_loop(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, float]:
    """C clients, one text per request, for `seconds`: requests/s and latency percentiles (ms)."""
    host, port = url.removeprefix("http://").split(":")
    lat: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]
    failures = [0]

    def client(c: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        mine: list[float] = []
        start.wait()
        i = c
        while time.perf_counter() < stop_at[0]:
            body = json.dumps({"inputs": texts[i % len(texts)]})
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures[0] += 1
            mine.append(time.perf_counter() - t0)
            i += clients
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures[0]:
        raise RuntimeError(f"{failures[0]} requests failed")
    return _stats(lat, wall)


def _stats(lat: list[float], seconds: float) -> dict[str, float]:
    """Requests, requests/s over `seconds`, and p50 / p90 latency (ms) of the per-request times `lat` (s)."""
    ms = np.array(lat) * 1e3
    return {"requests": len(lat), "req_per_s": len(lat) / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90))}


def _serve_child(model: str, task: str | None, threads: int, max_batch: int, max_wait_ms: float, conn) -> None:
    """The server process: build the pipeline, send the URL, serve until the parent says stop."""
    pipe = pipeline(task, model=model, threads=threads)
    server = ModelServer(pipe, port=0, max_batch=max_batch, max_wait_ms=max_wait_ms).start()
    conn.send(server.url)
    conn.recv()  # stop
    server.shutdown()
    conn.send({"requests": server.requests, "pipeline_calls": server.pipeline_calls})


class ServerProcess:
    def __init__(self, model: str, task: str | None, threads: int, max_batch: int, max_wait_ms: float):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited OpenMP threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_child, args=(model, task, threads, max_batch, max_wait_ms, child))
        self.proc.start()
        self.url = self.conn.recv()

    def stop(self) -> dict[str, int]:
        self.conn.send("stop")
        counts = self.conn.recv()
        self.proc.join()
        return counts


def direct(pipe, texts: list[str], seconds: float) -> dict[str, float]:
    """The pipeline called on one text at a time in this thread (no server): the per-text baseline."""
    lat = []
    t_end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        pipe([texts[i % len(texts)]])
        lat.append(time.perf_counter() - t0)
        i += 1
    return _stats(lat, float(np.sum(lat)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--task", default=None, help="pipeline task (default: the model's head)")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    ap.add_argument("--configs", default="1:0,32:0,32:5", help="comma-separated max_batch:max_wait_ms pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0, help="per configuration")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the configurations (samples pooled)")
    ap.add_argument("--out", default="bench/results/serve_minilm")
    args = ap.parse_args(argv)
    model = Path(args.model) if args.model else assets.minilm_path()
    pipe = pipeline(args.task, model=model, threads=args.threads)
    texts = calibration_sentences(256)
    clients = [int(c) for c in args.clients.split(",")]
    configs = [(int(c.split(":")[0]), float(c.split(":")[1])) for c in args.configs.split(",")]
    pipe(texts[:8])  # warm-up
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        results.setdefault("direct", []).append(direct(pipe, texts, args.seconds))
        for c in clients:
            for mb, w in configs:
                server = ServerProcess(str(model), args.task, args.threads, mb, w)
                try:
                    closed_loop(server.url, texts, c, min(1.0, args.seconds))  # warm-up
                    r = closed_loop(server.url, texts, c, args.seconds)
                finally:
                    counts = server.stop()
                r["inputs_per_call"] = counts["requests"] / max(counts["pipeline_calls"], 1)
                results.setdefault(f"{c}:{mb}:{w:g}", []).append(r)
                print(f"clients {c} max_batch {mb} wait {w:g} ms: {r['req_per_s']:.1f} req/s p50 {r['p50_ms']:.1f} ms "
                      f"p90 {r['p90_ms']:.1f} ms, {r['inputs_per_call']:.2f} inputs per call", file=sys.stderr)

    def pooled(rs: list[dict]) -> dict[str, float]:
        return {k: float(np.median([r[k] for r in rs])) for k in rs[0]}

    summary = {k: pooled(v) for k, v in results.items()}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": git,
            "command": "python " + " ".join(sys.argv), "cpu": cpu_model(), "model": str(model), "task": pipe.task,
            "engine": repr(pipe.engine), "threads": args.threads, "configs": args.configs,
            "seconds": args.seconds, "rounds": args.rounds}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": results, "summary": summary}, indent=2))
    base = summary["direct"]["req_per_s"]
    lines = [f"# Serving: {pipe.task} over HTTP ({model.name})", "",
             f"Command: `{meta['command']}`  ",
             f"Date: {meta['date']}; git {git}; CPU: {meta['cpu']}; {meta['engine']}; pipeline batch size "
             f"{pipe.batch_size}; "
             f"{args.rounds} rounds of {args.seconds:g} s per configuration, medians over rounds.", "",
             "One text per request (real Wikipedia sentences), closed loop. `direct`: the pipeline called on one text "
             "at a time in-process (no HTTP), measured in the same run; the ratio column is requests/s against it.",
             "", "| clients | max_batch | max_wait_ms | requests/s | vs direct | p50 ms | p90 ms | inputs per call |",
             "|---|---|---|---|---|---|---|---|",
             f"| direct | - | - | {base:.1f} | 1.00x | {summary['direct']['p50_ms']:.1f} | "
             f"{summary['direct']['p90_ms']:.1f} | 1 |"]
    for c in clients:
        for mb, w in configs:
            s = summary[f"{c}:{mb}:{w:g}"]
            lines.append(f"| {c} | {mb} | {w:g} | {s['req_per_s']:.1f} | {s['req_per_s'] / base:.2f}x | "
                         f"{s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['inputs_per_call']:.2f} |")
    lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
