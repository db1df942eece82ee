"""Find kernel loops that keep vector accumulators in memory: compile a translation unit to assembly with its ISA
flags and report every innermost-looking loop (a backward branch over < 400 lines, with no call) that holds multiply-accumulate
instructions and also stores two or more ymm/zmm registers to the stack.

Why: GCC keeps an accumulator array in memory when any loop indexes it by a variable (a rolled store loop after the
k loop is enough); the k loop then stores every accumulator on every step. That halved the AVX2 GEMMs on Zen 1
and no unit test notices it. tests/runtime/test_codegen.py runs this over the dense GEMM micro-kernels.

    python bench/micro/asm_spills.py csrc/gemm/gemm_f32_avx2.cpp --flags "-mavx2 -mfma -mf16c"
"""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAC = re.compile(r"\b(vfmadd\w*|vpmaddwd|vpdpbusds?|vpmaddubsw|vdpbf16ps)\b")
STACK_STORE = re.compile(r"\bvmov\w+\s+%[yz]mm\d+, -?\d*\(%r[sb]p\)")  # rbp: frames realigned for 64-byte locals
LABEL = re.compile(r"^(\.L\d+):")
BRANCH = re.compile(r"^\s+j\w+\s+(\.L\d+)")
FUNC = re.compile(r"^([A-Za-z_][\w.$]*):")


@dataclass
class SpillingLoop:
    function: str
    label: str
    macs: int
    stack_stores: int


def assembly(source: Path, flags: list[str]) -> str:
    cmd = ["g++", "-O3", "-std=c++17", "-fopenmp", *flags, "-S", "-o", "-", str(source), f"-I{ROOT / 'csrc'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {source} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def spilling_loops(asm: str, max_loop_lines: int = 400) -> list[SpillingLoop]:
    lines = asm.split("\n")
    labels: dict[str, int] = {}
    function_at: list[str] = []
    current = "?"
    for i, line in enumerate(lines):
        f = FUNC.match(line)
        if f and not line.startswith(".L"):
            current = f.group(1)
        function_at.append(current)
        m = LABEL.match(line)
        if m:
            labels[m.group(1)] = i
    found = []
    for i, line in enumerate(lines):
        b = BRANCH.match(line)
        if not b or labels.get(b.group(1), i) >= i:
            continue
        body = lines[labels[b.group(1)] : i]
        if len(body) > max_loop_lines or any("\tcall\t" in x for x in body):
            continue  # not an innermost loop (a call saves live registers around itself)
        if any(x.strip() == "ret" for x in body):
            continue  # a jump back from a block placed after the function's return, not a loop
        macs = sum(bool(MAC.search(x)) for x in body)
        stores = sum(bool(STACK_STORE.search(x)) for x in body)
        if macs and stores >= 2:
            found.append(SpillingLoop(function_at[i], b.group(1), macs, stores))
    return found


def stack_stores_by_function(asm: str) -> dict[str, int]:
    """{function: ymm/zmm stores to the stack anywhere in it}, for functions whose registers should never go there
    (a tile's finishing pieces: an array of transposed rows that GCC keeps in memory costs every piece a store and a
    reload per row, and no numeric test notices)"""
    counts: dict[str, int] = {}
    current = None
    for line in asm.split("\n"):
        f = FUNC.match(line)
        if f and not line.startswith(".L"):
            current = f.group(1)
            counts.setdefault(current, 0)
        elif current is not None and STACK_STORE.search(line):
            counts[current] += 1
    return counts


def demangle(name: str) -> str:
    done = subprocess.run(["c++filt", name], capture_output=True, text=True, check=False)
    return done.stdout.strip() or name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", type=Path)
    ap.add_argument("--flags", default="-mavx2 -mfma -mf16c", help="the ISA flags CMakeLists.txt gives the file")
    args = ap.parse_args()
    for src in args.sources:
        loops = spilling_loops(assembly(src, args.flags.split()))
        print(f"{src}: {len(loops)} loop(s) with stack-resident accumulators")
        for loop in loops:
            print(f"  {demangle(loop.function)[:120]} {loop.label}: {loop.macs} MACs, {loop.stack_stores} stack stores")


if __name__ == "__main__":
    main()
