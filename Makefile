# Every target refreshes .venv first, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
DEMO   ?= demo_out

.PHONY: venv browser demo test bench-drive bench-hippocampus bench-compare bench-nnunet bench-zoo clean

venv: $(STAMP)

# torch is installed on its own first, so pip never resolves a (multi-GB CUDA) build itself.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: venv
	$(BIN)/medseg demo --out $(DEMO)

# Headless Chromium + chromedriver (Debian packages) for tests/test_report_browser.py; installed only when missing
# and we are root, otherwise a note (the test skips without them, and fails under CI=true).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) \
	    || echo "note: apt-get could not install chromium chromium-driver; the browser test will be skipped (failed under CI=true)"; \
	else echo "note: the browser test needs Chromium: sudo apt-get install chromium chromium-driver (or run make browser as root)"; fi

test: venv browser
	$(BIN)/ruff check medseg tests benchmarks
	$(BIN)/python -m pytest -q

bench-drive: venv
	$(BIN)/python benchmarks/drive_unet.py --budget 15m -- --monitor val_dice

bench-hippocampus: venv
	$(BIN)/python benchmarks/hippocampus_unet.py --budget 30m -- --monitor val_dice

# the six models on DRIVE, 15 minutes each, two side by side on one thread each (about 50 minutes on 2 cores)
bench-compare: venv
	$(BIN)/python benchmarks/drive_compare.py --budget 15m

# the dataset zoo: no flags but a budget on every dataset (about 2 h on 2 cores); appends its table to BENCHMARKS.md
ZOO_DATASETS ?= drive,hippocampus,hippocampus_slices,kvasir_seg,monuseg,synthetic_patient_folders,synthetic_rater_tagged,synthetic_speckle_blobs
bench-zoo: venv
	$(BIN)/python -m benchmarks.zoo --datasets $(ZOO_DATASETS) --append

# medseg vs nnU-Net (issue 7): nnU-Net in its own venv (benchmarks/.nnunet-venv), same cases, split and machine;
# on 2 CPU cores about 70 min for Hippocampus (nnU-Net's one epoch 32 min) and well over 2 h for DRIVE. Appends to BENCHMARKS.md.
NNUNET_DATASETS ?= hippocampus drive
NNUNET_BUDGET   ?= 30m
bench-nnunet: venv
	for d in $(NNUNET_DATASETS); do 	  $(BIN)/python -m benchmarks.vs_nnunet --dataset $$d --budget $(NNUNET_BUDGET) --append || exit 1; 	done

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
