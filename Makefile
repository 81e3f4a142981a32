# Every target refreshes .venv first, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
DEMO   ?= demo_out

.PHONY: venv demo test bench-drive bench-hippocampus clean

venv: $(STAMP)

# torch is installed on its own first, so pip never resolves a (multi-GB CUDA) build itself.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: venv
	$(BIN)/medseg demo --out $(DEMO)

test: venv
	$(BIN)/ruff check medseg tests benchmarks
	$(BIN)/python -m pytest -q

bench-drive: venv
	$(BIN)/python benchmarks/drive_unet.py --budget 15m -- --monitor val_dice

bench-hippocampus: venv
	$(BIN)/python benchmarks/hippocampus_unet.py --budget 30m -- --monitor val_dice

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
