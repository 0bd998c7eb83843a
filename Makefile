# The two quick-start commands are `make grid` and `make test`; everything else is a helper.
VENV ?= .venv
PYTHON ?= python3
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= cpu,all
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.torch_extensions
# the rules run `python -m llara.<stage>`: the project's environment comes first
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# where `snakemake --profile slurm` looks the profile up by name
SLURM_PROFILE_DIR ?= $(HOME)/.config/snakemake/slurm

.PHONY: setup grid test test-slow lint install-slurm-profile test-slurm slurm-start slurm-stop
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $@

grid: setup
	$(BIN)/snakemake --profile workflow/profiles/local

test: setup
	$(BIN)/python -m pytest

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
	$(BIN)/python -m pytest tests/slurm -m slurm --durations=0

slurm-start:
	bash workflow/ci/local-slurm.sh start

slurm-stop:
	bash workflow/ci/local-slurm.sh stop
