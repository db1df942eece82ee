"""Timing protocol shared by every runtime in the dense benchmark.

Kept to numpy + stdlib on purpose: deepsparse_runner.py imports it inside the DeepSparse venv
(numpy<2, no torch), so every runtime is measured by the very same code.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# numpy's OpenBLAS keeps its worker threads spinning after each BLAS call (the benchmark's own output checks make
# some), and on a 2-core machine they take a core from whichever runtime is timed next in the process: our MiniLM-L6
# batch-1 INT8 pass read about 6.2 ms in two runs (bench/results/sparse_e2e_unstructured_0.9_minilm_zen4_6f44f27.md,
# _r2.md) and 2.26 ms in the next, BLAS limited to one thread (_blas1.md).
# So the benchmark processes run BLAS on one thread: in this process through threadpoolctl where it is installed,
# in child processes (the DeepSparse runner) through the environment. The runtimes timed keep their own threads.
# BENCH_BLAS_THREADS=keep leaves BLAS as it is (an A/B of this setting).
BLAS_THREADS_LIMITED = False
if os.environ.get("BENCH_BLAS_THREADS") != "keep":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits

        BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
        BLAS_THREADS_LIMITED = True
    except Exception:  # not installed (the DeepSparse venv): the environment variable above, read at numpy's import
        BLAS_THREADS_LIMITED = os.environ.get("OPENBLAS_NUM_THREADS") == "1"

# A runner takes (input_ids, attention_mask, token_type_ids) int64 arrays [batch, seq] and returns
# last_hidden_state [batch, seq, hidden]. Runners that have no token types ignore the third array.
Runner = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Inputs = tuple[np.ndarray, np.ndarray, np.ndarray]

BUDGET_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Timing:
    batch: int
    seq: int
    iters: int
    warmup: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # sequences/s = batch / median
    samples_ms: list[float] = field(default_factory=list)

    def to_dict(self, with_samples: bool = True) -> dict[str, object]:
        d = asdict(self)
        if not with_samples:
            d.pop("samples_ms")
        return d


def env_prefix() -> str:
    """The environment a run's kernels depend on, as the shell prefix of its recorded command: every TRIMFORMER_*
    setting that is set (TRIMFORMER_NO_AMX: dense INT8 / BF16 on VNNI / vdpbf16ps instead of AMX tiles; the A/B
    switches of docs/contract.md), or "" when none is."""
    return "".join(f"{k}={v} " for k, v in sorted(os.environ.items()) if k.startswith("TRIMFORMER_") and v)


def core_roundtrip_ns(iters: int = 5000) -> float | None:
    """The round trip of one cache line between the first two CPUs this process may run on (trimformer's
    _core.core_roundtrip_ns), or None where it cannot be measured (one CPU, no trimformer build). On a VM it says
    where the host put the cores: on the 2-vCPU Zen 4 machines about 100 ns near, about 320 ns apart, and
    2-thread passes that hand rows between the threads slow down apart (bench/results/zen4_core_distance_ab.md)."""
    try:
        from trimformer import _core

        cpus = sorted(os.sched_getaffinity(0))[:2]
        if len(cpus) < 2:
            return None
        return round(float(_core.core_roundtrip_ns(cpus[0], cpus[1], iters)), 1)
    except Exception:
        return None


def format_roundtrips(pair: Sequence[float | None] | None) -> str:
    """A [before, after] pair of core_roundtrip_ns values as report text: "98 / 331", "n/a" where missing."""
    if not pair:
        return "n/a"
    return " / ".join("n/a" if v is None else f"{v:.0f}" for v in pair)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none), for result headers."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def make_inputs(batch: int, seq: int, vocab_size: int, seed: int = 0) -> Inputs:
    """Deterministic random tokens with a full mask, framed by [CLS]/[SEP]-like ids."""
    rng = np.random.default_rng(seed + 7919 * batch + seq)
    # Ids >= 1000 avoid BERT's special/unused rows; the values only matter for reproducibility.
    ids = rng.integers(1000, vocab_size, size=(batch, seq), dtype=np.int64)
    ids[:, 0] = 101
    ids[:, -1] = 102
    mask = np.ones((batch, seq), dtype=np.int64)
    tt = np.zeros((batch, seq), dtype=np.int64)
    return ids, mask, tt


def make_check_inputs(seq: int, vocab_size: int, seed: int = 0) -> Inputs:
    """Batch of 2 whose second row is padded by a quarter, so a runtime that ignores the mask shows."""
    ids, mask, tt = make_inputs(2, seq, vocab_size, seed + 1)
    pad = max(1, seq // 4)
    mask[1, seq - pad :] = 0
    ids[1, seq - pad :] = 0
    return ids, mask, tt


def time_runner(
    runner: Runner,
    inputs: Inputs,
    iters: int,
    warmup: int,
    max_time_s: float | None = None,
    min_iters: int = 3,
) -> Timing:
    """Warm up, then time `iters` calls one by one (perf_counter around each call).

    max_time_s caps the timed loop (after at least min_iters calls) and the warm-up (a quarter of it,
    after one call) so slow peers at large shapes do not take minutes on a 2-core machine; the real
    counts are recorded in `iters` and `warmup`.
    """
    ids, mask, tt = inputs
    start = time.perf_counter()
    done = 0
    for _ in range(warmup):
        runner(ids, mask, tt)
        done += 1
        # Warm-up gets a quarter of the time cap: one call already pages in weights and packs buffers.
        if max_time_s is not None and time.perf_counter() - start > max_time_s / 4:
            break
    samples: list[float] = []
    start = time.perf_counter()
    for i in range(max(1, iters)):
        t0 = time.perf_counter()
        runner(ids, mask, tt)
        samples.append((time.perf_counter() - t0) * 1e3)
        if max_time_s is not None and i + 1 >= min_iters and time.perf_counter() - start > max_time_s:
            break
    arr = np.asarray(samples)
    median = float(np.median(arr))
    batch, seq = ids.shape
    return Timing(
        batch=int(batch),
        seq=int(seq),
        iters=len(samples),
        warmup=done,
        median_ms=median,
        p90_ms=float(np.percentile(arr, 90)),
        mean_ms=float(arr.mean()),
        min_ms=float(arr.min()),
        throughput=float(batch / (median / 1e3)),
        samples_ms=[round(s, 4) for s in samples],
    )


def alternate_by_time(calls: dict[str, Callable[[], object]], rounds: int, seconds: float) -> dict[str, float]:
    """Median ms per call of each entry, timed in `rounds` rounds over the entries in turn (one untimed call, then
    calls for `seconds`), samples pooled: variants compared in one process on a shared machine."""
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, call in calls.items():
            call()
            end = time.time() + seconds
            while time.time() < end:
                t0 = time.perf_counter()
                call()
                samples[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


def max_throughput_under_budget(
    time_at_batch: Callable[[int], Timing],
    budget_ms: float,
    batches: Sequence[int] = BUDGET_BATCHES,
) -> dict[str, object]:
    """Fast DistilBERT's production protocol: the best throughput whose p90 latency fits the budget.

    Batches are tried in increasing order and the sweep stops at the first one over budget: latency
    grows with batch, so larger ones cannot fit either (saves minutes on slow peers).
    """
    tried: list[dict[str, object]] = []
    best: Timing | None = None
    for b in batches:
        t = time_at_batch(b)
        ok = t.p90_ms <= budget_ms
        tried.append(
            {
                "batch": b,
                "p90_ms": t.p90_ms,
                "median_ms": t.median_ms,
                "throughput": t.throughput,
                "within_budget": ok,
            }
        )
        if not ok:
            break
        if best is None or t.throughput > best.throughput:
            best = t
    return {
        "budget_ms": budget_ms,
        "best_batch": best.batch if best else None,
        "best_throughput": best.throughput if best else None,
        "best_p90_ms": best.p90_ms if best else None,
        "tried": tried,
    }


def compare_outputs(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Cosine similarity to the reference over unpadded tokens (padded rows are implementation-defined)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} != reference shape {ref.shape}")
    keep = mask.astype(bool)
    a, b = out[keep], ref[keep]  # [tokens, hidden]
    cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
    tok = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)
    return {
        "cosine": cos,
        "min_token_cosine": float(tok.min()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }
