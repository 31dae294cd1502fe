# The README's two commands: `make run` and `make test`. Both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
INPUT ?= $(DATA)/real-masked
OUTPUT ?= out/unmasked

.PHONY: setup run test lint bench train-cpu evaluate clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m qmask.assets
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/qmask unmask $(INPUT) -o $(OUTPUT)
	@echo "results in $(OUTPUT)/"

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m qmask.bench

clean:
	rm -rf $(VENV) qmask/assets out
