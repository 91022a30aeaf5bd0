# Everything a user needs: `make repro` builds the study, `make test` checks the code.
# Python 3.10 to 3.13. `make PYTHON=python3.13 setup` picks one; without PYTHON, the one the venv was made with,
# else the first that runs of python3.11 (the committed results were made with it), 3.13, 3.12, 3.10.
PYTHON ?=
VENV ?= .venv
# A make variable reaches a shell only as one word: single-quoted, each ' inside written '\''.
quote = '$(subst ','\'',$(1))'
BIN := $(VENV)/bin
FOUND := $(shell PYTHON=$(call quote,$(PYTHON)) sh scripts/find_python.sh $(call quote,$(VENV)) 2>/dev/null)
PY := $(word 1,$(FOUND))
PY_VERSION := $(word 2,$(FOUND))
# One lock per set of Python versions whose pinned packages are the same.
LOCK := requirements/py$(if $(filter 3.10,$(PY_VERSION)),3.10,3.11-3.13).txt
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
# Stages that do not depend on each other run at once, JOBS at a time (scripts/lanes.py), one per core unless
# told: each trains on one thread. `make repro JOBS=1` is plain `dvc repro`, after the same checks.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: setup repro evidence worker aggregate slurm slurm-status test test-fast lint check-lock compare plots bench prune prune-remote clean

setup: $(VENV)/.installed

# The stamp holds the Python version: a venv made with another one (or none found) is remade from scratch.
$(VENV)/.installed: $(LOCK)
	@[ -n "$(PY_VERSION)" ] || { PYTHON=$(call quote,$(PYTHON)) sh scripts/find_python.sh $(call quote,$(VENV)) >/dev/null; exit 1; }
	@echo "Making "$(call quote,$(VENV))" with "$(call quote,$(PY))" (Python $(PY_VERSION)) from $(LOCK)"
	$(call quote,$(PY)) -m venv --clear $(call quote,$(VENV))
	$(call quote,$(BIN)/pip) install --quiet --upgrade pip
	$(call quote,$(BIN)/pip) install --quiet -r $(LOCK)
	echo $(PY_VERSION) > $(call quote,$@)
ifneq ($(shell cat $(call quote,$(VENV)/.installed) 2>/dev/null),$(PY_VERSION))
.PHONY: $(VENV)/.installed
endif

# What lanes check before they start DVC (scripts/preflight.py), JOBS=1 checks before plain `dvc repro`: params.yaml
# whole (DVC passes each stage's command to a shell), the lock files, a user's files in a folder output.
repro: setup
	$(if $(filter 1,$(JOBS)),python -m scripts.preflight && dvc repro,python -m scripts.lanes -j $(call quote,$(JOBS)))

# The evidence (evidence/dvc.yaml; hours), with the quick-study stages it reads (data/prepared, the range
# tests). Then commit reports/evidence, reports/answer.md, reports/answer/ and evidence/dvc.lock.
evidence: setup
	python -m scripts.lanes -j $(call quote,$(JOBS)) evidence/dvc.yaml

# Past one machine (docs/workers.md): `make worker SHARD=0/2` (or STAGES='train@base wide3') trains this machine's share
# and sends it to the default DVC remote; `make aggregate` brings everything back and makes the report.
# PIPELINE=evidence/dvc.yaml does the same for the evidence.
PIPELINE ?= dvc.yaml
worker: setup
	python -m scripts.worker -j $(call quote,$(JOBS)) --pipeline $(call quote,$(PIPELINE)) \
		$(if $(SHARD),--shard $(call quote,$(SHARD))) $(if $(STAGES),--stages $(call quote,$(STAGES)))

aggregate: setup
	python -m scripts.worker --aggregate --pipeline $(call quote,$(PIPELINE))

# The same on a SLURM cluster (docs/slurm.md): `make slurm WORKERS=4` submits the workers as a job array of 4, CPUS
# cores each, then `make aggregate` here once all have succeeded; ONLY=1,3 submits only those shares (and the
# aggregator). `make slurm-status [JOB=<array id>]`: how each share ended, and what reruns the failed ones.
CPUS ?= 1
slurm: setup
	python -m scripts.slurm --workers $(call quote,$(WORKERS)) --pipeline $(call quote,$(PIPELINE)) \
		--cpus $(call quote,$(CPUS)) --venv $(call quote,$(VENV)) $(if $(ONLY),--only $(call quote,$(ONLY)))

slurm-status: setup
	@python -m scripts.slurm --status $(if $(JOB),$(call quote,$(JOB)))

# Partial uploads (.<22 characters>.tmp) older than a day that a push cut short left on the default remote (a
# folder or SSH): DVC never removes them. `python -m scripts.prune_remote --dry-run` lists them.
prune-remote: setup
	python -m scripts.prune_remote

# One worker per core; each test module runs whole on one worker, so that its module-scoped fixtures (tiny projects
# built with dvc, the SLURM cluster, the sshd) are made once and never twice side by side. The modules go out in the
# order tests/conftest.py gives them: the longest first.
test: setup
	python -m pytest -n auto --dist loadscope --no-loadscope-reorder

# The edit-test loop: only the tests that start no dvc or TensorFlow subprocess.
test-fast: setup
	python -m pytest -m "not slow" -n auto --dist worksteal

lint: setup
	ruff check .

# Fails when dvc.lock, or an evidence stage's entry in evidence/dvc.lock, no longer matches code and params
# (the committed results would be stale); evidence stages not yet run are listed, and allowed.
check-lock: setup
	@python -m scripts.check_lock

clean:
	rm -rf $(call quote,$(VENV))

# Outputs of architectures removed from params.yaml (DVC leaves them); never anything a user put there.
# `python -m scripts.prune --dry-run` lists them without removing. Then the report, whose deps they were.
prune: setup
	python -m scripts.prune
	dvc repro

# Markdown comparison of the workspace with a branch: `make compare REV=main > comparison.md`
REV ?= main
compare: setup
	@python -m scripts.compare $(call quote,$(REV))

# `dvc plots show` for a machine that reaches package registries but not DVC's CDN: the same Vega libraries, fetched
# once with npm into dvc_plots/lib/. Some plots only: `python -m scripts.plots_html reports/history/base.csv`.
plots: setup
	@python -m scripts.plots_html

# The notebook way against `dvc repro -f`, same machine, same data (needs data/raw);
# then what compute.numerics and compute.threads cost.
bench: setup
	python -m bench.run
	python -m bench.numerics
