"""Kernel rates at one ISA level, with ONNX Runtime's MLAS GEMMs on the same shapes in the same run.

- dense GEMM (FP32, INT8 u8 x s8): `_core.time_gemm` (native loop, packed weights) vs ORT MatMul / MatMulInteger
  sessions holding the same shapes, at 1 and 2 threads;
- k-bit decode GEMV (one token row): `_core.kbit_gemv` at the level vs the plain reference loops (the scalar level),
  timed through the Python test binding (each call also copies the offsets and allocates the output: an upper
  bound on the kernel's time).

    python bench/micro/kernel_rates.py --isa avx2 --out bench/results/kernel_rates_avx2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from trimformer import _core
from trimformer.formats.kbit import quantize_rtn
from trimformer.formats.registry import pack_kbit

GEMM_SHAPES = [(128, 768, 768), (128, 3072, 768), (2048, 1536, 384), (2048, 384, 1536), (512, 1536, 576),
               (512, 576, 1536)]
KBIT = [("int4-asym", 32), ("int4", 128), ("nf4", 64), ("int8", 576)]


def _best(fn, reps: int) -> float:
    return min(fn() for _ in range(reps))


def ort_gemm_s(m: int, n: int, k: int, int8: bool, threads: int, iters: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        w = rng.integers(-127, 128, (k, n), dtype=np.int8)
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        node = helper.make_node("MatMulInteger", ["A", "W", "az"], ["Y"])
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(3, np.uint8), "az")]
        a_t, y_t = TensorProto.UINT8, TensorProto.INT32
    else:
        w = rng.standard_normal((k, n)).astype(np.float32)
        a = rng.standard_normal((m, k)).astype(np.float32)
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
        inits = [numpy_helper.from_array(w, "W")]
        a_t, y_t = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", a_t, [m, k])],
                              [helper.make_tensor_value_info("Y", y_t, [m, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"A": a})

    def once() -> float:
        t = time.perf_counter()
        for _ in range(iters):
            sess.run(None, {"A": a})
        return (time.perf_counter() - t) / iters

    return _best(once, 3)


def vnni_s8_s(m: int, n: int, k: int, isa: str, threads: int) -> float:
    """Our INT8 GEMM with AMX switched off (TRIMFORMER_NO_AMX is read once per process: a child process)."""
    code = (f"from trimformer import _core; assert _core.gemm_s8_kernel({isa!r}) == 'vnni'; "
            f"print(min(_core.time_gemm('s8', {m}, {n}, {k}, iters=5, isa={isa!r}, threads={threads}) "
            f"for _ in range(3)))")
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TRIMFORMER_NO_AMX="1"),
                         capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def kbit_gemv_s(type_name: str, group: int, isa: str, iters: int) -> float:
    rng = np.random.default_rng(0)
    n, k = 3072, 576
    st = pack_kbit(*quantize_rtn(rng.standard_normal((n, k)).astype(np.float32), type_name, group), type_name, group)
    x = rng.standard_normal((1, k)).astype(np.float32)
    mode, kk, g = (int(v) for v in st[".kmeta"])

    def call():
        return _core.kbit_gemv(x, st[".kcodes"], st[".kscales"], st.get(".koffsets"), mode, kk, g, st[".klut"],
                               isa=isa)

    call()

    def once() -> float:
        t = time.perf_counter()
        for _ in range(iters):
            call()
        return (time.perf_counter() - t) / iters

    return _best(once, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", default="", help="level to time (default: the CPU's best)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    isa = _core.resolve_isa(args.isa)
    s8_kernel = _core.gemm_s8_kernel(isa)
    rows, kbit_rows = [], []
    for m, n, k in GEMM_SHAPES:
        for threads in (1, 2):
            row = {"m": m, "n": n, "k": k, "threads": threads}
            for kind, int8 in (("f32", False), ("s8", True)):
                ours = min(_core.time_gemm(kind, m, n, k, iters=5, isa=isa, threads=threads) for _ in range(3))
                ort = ort_gemm_s(m, n, k, int8, threads, 5)
                row[f"{kind}_gmacs"] = m * n * k / ours / 1e9
                row[f"{kind}_ort_gmacs"] = m * n * k / ort / 1e9
            if s8_kernel == "amx":
                row["s8_vnni_gmacs"] = m * n * k / vnni_s8_s(m, n, k, isa, threads) / 1e9
            rows.append(row)
    for type_name, group in KBIT:
        ours = kbit_gemv_s(type_name, group, isa, 100)
        ref = kbit_gemv_s(type_name, group, "scalar", 20)
        kbit_rows.append({"type": type_name, "group": group, "us": ours * 1e6, "ref_us": ref * 1e6,
                          "gmacs": 3072 * 576 / ours / 1e9, "ref_gmacs": 3072 * 576 / ref / 1e9})
    cpu = platform.processor() or platform.machine()
    out = Path(args.out)
    doc = {"isa": isa, "s8_kernel": s8_kernel, "cpu": cpu, "gemm": rows, "kbit": kbit_rows}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    lines = [f"# Kernel rates at the {isa} level, ORT (MLAS) in the same run",
             "",
             f"Command: `python bench/micro/kernel_rates.py --isa {args.isa or isa} --out {args.out}`  ",
             f"Date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; CPU flags: "
             f"{', '.join(f for f in ('avx2', 'avx512f', 'avx512_vnni', 'amx_int8') if _has_flag(f))}. "
             f"Best of 3 x 5 calls. trimformer INT8 kernel: {s8_kernel}"
             + (" (the VNNI column: the same GEMM with TRIMFORMER_NO_AMX=1, in a child process)."
                if s8_kernel == "amx" else "."),
             "",
             "| m x n x k | threads | trimformer FP32 GMAC/s | ORT FP32 | trimformer INT8 | ORT INT8 |"
             + (" trimformer INT8 VNNI |" if s8_kernel == "amx" else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if s8_kernel == "amx" else "")]
    for r in rows:
        lines.append(f"| {r['m']} x {r['n']} x {r['k']} | {r['threads']} | {r['f32_gmacs']:.1f} | "
                     f"{r['f32_ort_gmacs']:.1f} | {r['s8_gmacs']:.1f} | {r['s8_ort_gmacs']:.1f} |"
                     + (f" {r['s8_vnni_gmacs']:.1f} |" if "s8_vnni_gmacs" in r else ""))
    lines += ["", "k-bit decode GEMV, 3072 x 576, one token row, 1 thread, through the Python test binding:", "",
              f"| type | group | {isa} us | GMAC/s | reference loops us | GMAC/s |", "|---|---:|---:|---:|---:|---:|"]
    for r in kbit_rows:
        lines.append(f"| {r['type']} | {r['group']} | {r['us']:.0f} | {r['gmacs']:.2f} | {r['ref_us']:.0f} | "
                     f"{r['ref_gmacs']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _has_flag(flag: str) -> bool:
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    main()
