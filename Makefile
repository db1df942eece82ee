# The two commands that matter: `make demo` (the main job, end to end, on the real packaged assets)
# and `make test` (the test suite; .ci/run calls exactly this).
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: setup demo test lint bench-dense clean

# torch is installed first, pinned to the CPU wheel already on these machines: an unpinned requirement
# would pull a multi-GB CUDA build.
setup:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q scikit-build-core nanobind
	$(PIP) install -q --no-build-isolation -e ".[compress,bench,llm,dev]"
	$(PYTHON) -c "from trimformer import assets; assets.ensure_assets(('minilm', 'smollm2', 'wiki'))"

demo: setup
	$(PYTHON) examples/demo.py

test: setup
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check src tests bench examples

bench-dense: setup
	$(PYTHON) bench/bench_dense.py

clean:
	rm -rf build dist src/*.egg-info
