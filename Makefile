# Every target builds .venv first if it is missing (a fresh clone needs nothing else).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_SILENT ?= true

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-full lint format figures bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP) ## Create .venv with the project and its dev tools

demo: $(STAMP) ## Offline Fig. 7 sweep on the toy world (tiny trained model, no download)
	$(PY) -m experiments.run -m experiment=fig7 preset=offline

test: $(STAMP) ## Fast test suite (not slow, no network); fails when no test ran (pytest exit 5)
	$(PY) -m pytest -q -p no:cacheprovider

test-full: $(STAMP) ## Every test, slow ones included
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP) ## ruff check
	$(PY) -m ruff check .

format: $(STAMP) ## ruff format + import sorting
	$(PY) -m ruff check --fix --select I .
	$(PY) -m ruff format .

figures: $(STAMP) ## Redraw Fig. 7 from a sweep: make figures SWEEP=logs/fig7/multiruns/<stamp>
	$(PY) -m experiments.figures $(SWEEP) --out $(SWEEP)/figures

bench: $(STAMP) ## Performance ratios (benchmarks/*.py)
	$(PY) -m benchmarks.sweep_cost
	$(PY) -m benchmarks.edit_profile

clean: ## Remove caches and run outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
