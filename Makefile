# Everything a user needs: `make repro` builds the study, `make test` checks the code.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test check-lock lr-study studies compare bench prune clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest

# Fails when dvc.lock no longer matches code and params (the committed report would be stale).
check-lock: setup
	@out=$$(dvc repro --dry --allow-missing 2>&1); status=$$?; \
	if [ $$status -ne 0 ] || printf '%s' "$$out" | grep -q "Running stage"; then \
		printf '%s\n' "$$out"; echo "dvc.lock is stale: run 'make repro' and commit dvc.lock and reports/"; exit 1; \
	fi; echo "dvc.lock matches code and params"

clean:
	rm -rf $(VENV)

# Opt-in: train every arch at a grid of fixed rates and at every rule's pick (reports/lr_study.json).
lr-study: setup
	dvc repro lr_range
	python -m scripts.lr_study
	dvc repro

# Opt-in: the pipeline rerun per `studies:` entry of params.yaml (reports/studies/), then the report.
# One study only: `make studies STUDY=five_seeds`.
STUDY ?=
studies: setup
	dvc repro
	python -m scripts.study $(STUDY)
	dvc repro

# Outputs of architectures removed from params.yaml (DVC leaves them); never anything a user put there.
# `python -m scripts.prune --dry-run` lists them without removing. Then the report, whose deps they were.
prune: setup
	python -m scripts.prune
	dvc repro

# Markdown comparison of the workspace with a branch: `make compare REV=main > comparison.md`
REV ?= main
compare: setup
	@python -m scripts.compare $(REV)

# The notebook way against `dvc repro -f`, same machine, same data (needs data/raw);
# then what compute.numerics and compute.threads cost.
bench: setup
	python -m bench.run
	python -m bench.numerics
