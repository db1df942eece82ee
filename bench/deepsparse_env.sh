#!/usr/bin/env bash
# Creates bench/.venv-deepsparse with deepsparse==1.8.0 (the last real wheel; 1.9.0 is an EOL stub).
# It pins numpy<2 and an old onnx, so it cannot share the main environment; bench_dense.py drives it
# as a subprocess through bench/deepsparse_runner.py. Idempotent: re-running only re-checks the import.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${DEEPSPARSE_VENV:-$HERE/.venv-deepsparse}"
PY="${PYTHON:-python3.11}"
export NM_DISABLE_ANALYTICS=1

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade pip wheel
"$VENV/bin/python" -m pip install 'deepsparse==1.8.0' 'numpy<2'
"$VENV/bin/python" - <<'PY'
import deepsparse, numpy, onnx
print("deepsparse", deepsparse.__version__, "numpy", numpy.__version__, "onnx", onnx.__version__)
PY
