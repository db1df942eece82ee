"""The native core must never execute an instruction an older x86-64 lacks outside the ISA it was asked for.

Forcing each level (the other tests) proves the results; this test proves the isolation: in the compiled module,
every function that touches ymm/zmm registers or mask registers belongs to the avx2 / avx512 kernel namespaces,
so the baseline code path (executor, bindings, scalar kernels) is plain x86-64. It catches, for example, an inline
helper compiled in an AVX-512 translation unit that the linker picked for everyone.
"""

import re
import shutil
import subprocess

import pytest

from trimformer import _core

WIDE = re.compile(r"%[yz]mm\d+|%k[1-7]\b")


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) not installed")
def test_wide_instructions_only_in_isa_namespaces():
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", _core.__file__], capture_output=True,
                         text=True, check=True).stdout
    offenders: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line.endswith(">:"):
            current = line[line.index("<") + 1:-2]
            continue
        if current and WIDE.search(line):
            allowed = "tf::avx2::" in current or "tf::avx512::" in current
            if not allowed and current not in offenders:
                offenders[current] = line.strip()
    assert not offenders, "wide-register code outside the ISA namespaces:\n" + "\n".join(
        f"{fn}: {insn}" for fn, insn in list(offenders.items())[:20])
    assert "tf::avx512::" in out and "tf::avx2::" in out  # the kernels are there
