# Two commands do everything on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
# The CPU build of PyTorch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run test lint redis benchmarks chaos clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

run: install
	$(BIN)/parrotbot run --config config/offline.yaml

redis:
	bash tools/ensure-redis.sh

test: install redis
	$(BIN)/python -m pytest

# Not part of `make test`: minutes of CPU; writes tests/benchmarks/results.json and the table in docs/benchmarks.md.
benchmarks: install
	$(BIN)/python -m pytest tests/benchmarks -m benchmark -p no:cacheprovider -s

# Not part of `make test`: about 10 minutes of real daemons, launchers, Redis, moto and the X
# emulator under injected faults; writes tests/chaos/results.json and the table in docs/chaos.md.
chaos: install
	PYTHONPATH=$(CURDIR) $(BIN)/python -m tests.chaos

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
