# The two quick-start commands are `make grid` and `make test`; everything else is a helper.
VENV ?= .venv
PYTHON ?= python3
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= cpu,all
# `make setup-gpu`: torch's CUDA build from this index first (name the one for your CUDA), then the
# project with faiss-gpu and the same pins as the CPU install (constraints/gpu.txt: no torch, no faiss-cpu)
TORCH_INDEX ?= https://download.pytorch.org/whl/cu124
GPU_CONSTRAINTS ?= constraints/gpu.txt
GPU_EXTRAS ?= gpu,all
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.torch_extensions
# the rules find their interpreter themselves (the one that runs Snakemake); this only makes a bare
# `python` in a helper or a shell started from make the project's too
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# where `snakemake --profile slurm` looks the profile up by name
SLURM_PROFILE_DIR ?= $(HOME)/.config/snakemake/slurm

.PHONY: setup setup-gpu grid test test-extended test-slow lint install-slurm-profile test-slurm rehearsal slurm-start slurm-stop
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@if [ -e "$(VENV)/.gpu" ]; then \
		echo "$(VENV) is a CUDA environment (made by make setup-gpu): run make setup-gpu to update it" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $@

# A CUDA machine (reaches TORCH_INDEX and PyPI): make setup-gpu [TORCH_INDEX=https://download.pytorch.org/whl/cu121]
setup-gpu:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --index-url $(TORCH_INDEX) torch
	$(BIN)/pip install -c $(GPU_CONSTRAINTS) -e ".[$(GPU_EXTRAS)]"
	$(BIN)/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count())"
	touch $(VENV)/.gpu $(VENV)/.installed

grid: setup
	$(BIN)/snakemake --profile workflow/profiles/local

test: setup
	$(BIN)/python -m pytest

test-extended: setup
	$(BIN)/python -m pytest -m "extended and not slow"

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# SLURM: `snakemake --profile slurm` from anywhere (a link, so the profile follows the repository).
install-slurm-profile:
	@if [ -e "$(SLURM_PROFILE_DIR)" ] && [ ! -L "$(SLURM_PROFILE_DIR)" ]; then \
		echo "$(SLURM_PROFILE_DIR) exists and is not a link: move it away first" >&2; exit 1; fi
	mkdir -p "$(dir $(SLURM_PROFILE_DIR))"
	ln -sfn "$(CURDIR)/workflow/profiles/slurm" "$(SLURM_PROFILE_DIR)"
	@echo "installed: $(SLURM_PROFILE_DIR) -> $(CURDIR)/workflow/profiles/slurm; run: snakemake --profile slurm"

# The SLURM tests need a cluster: `make slurm-start` (root, Debian: a local one-node cluster) first.
test-slurm: setup
	$(BIN)/python -m pytest tests/slurm -m "slurm and not rehearsal" --durations=0

# The rehearsal of the paper's DAG (config/rehearsal.yaml) on the two-node local cluster: starts it
# (or keeps the one running; a one-node cluster must be stopped first), runs the grid with the SLURM
# profile, checks the outcome (tests/slurm/test_rehearsal.py) and writes its wall time to
# REHEARSAL_DIR/wall.json. About 18 minutes on 2 cores (125 SLURM jobs).
REHEARSAL_DIR ?= $(CURDIR)/.rehearsal
rehearsal: setup
	bash workflow/ci/local-slurm.sh start --nodes 2
	LLARA_REHEARSAL_DIR=$(REHEARSAL_DIR)/run LLARA_REHEARSAL_RECORD=$(REHEARSAL_DIR)/wall.json \
		$(BIN)/python -m pytest tests/slurm/test_rehearsal.py -m "slurm and rehearsal" --durations=0 -rA
	@cat $(REHEARSAL_DIR)/wall.json

slurm-start:
	bash workflow/ci/local-slurm.sh start

slurm-stop:
	bash workflow/ci/local-slurm.sh stop
