# Everything runs inside .venv, created on first use. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= demo
RUNS := runs/$(PROFILE)
# notebooks 01-04 run in order; 05 (the report) reads their results, so it runs last, from `make report`
STUDIES := $(filter-out %05_results_report.ipynb,$(sort $(wildcard notebooks/0*.ipynb)))
PYTEST_ARGS ?=

.PHONY: help setup data demo-data run report reproduce check-results test test-fast lab bench clean

help:
	@echo "make data    download CIFAR-10 and ResNet50's ImageNet weights; say where the other data sets go"
	@echo "make run     set up .venv, write demo data, run every notebook on the '$(PROFILE)' profile into $(RUNS)/"
	@echo "make test    set up, lint (ruff), then the whole test suite (unit tests + every notebook on smoke parameters)"
	@echo "make test-fast   the unit tests only (no notebook runs, no subprocess training): about a minute"
	@echo "make lab     JupyterLab on the same environment"
	@echo "make report  build $(RUNS)/report.html from the runs"
	@echo "make bench   speed benchmarks (ratios against the naive pipelines)"
	@echo "make reproduce PROFILE=cpu   every study and the report on real data, copied to results/cpu/"
	@echo "make check-results PROFILE=cpu   does runs/cpu reproduce results/cpu within tolerance?"

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

# the git filter that strips outputs from saved notebooks (.gitattributes); JupyterLab saves widget state, so
# progress bars survive a reopen
setup: $(VENV)/.installed
	@git config filter.nbclean.clean "$(PY) -m lib.nbclean" 2>/dev/null || true
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": true}}' \
	  > $(VENV)/share/jupyter/lab/settings/overrides.json

data: setup
	$(PY) -m lib.fetch

demo-data: setup
	$(PY) -m lib.demo

# a second `make run` skips finished studies and resumes partial ones; FRESH=1 runs them all again (overwrite)
run: demo-data
	$(PY) -m lib.runbook --profile $(PROFILE) --runs $(RUNS) $(if $(FRESH),--fresh)
	@if [ -f notebooks/05_results_report.ipynb ]; then $(MAKE) --no-print-directory report; fi
	$(PY) -m lib.summary $(RUNS)

report: setup
	$(PY) -m lib.runbook --profile $(PROFILE) --runs $(RUNS) notebooks/05_results_report.ipynb
	$(VENV)/bin/jupyter nbconvert --log-level ERROR --to html --no-input $(RUNS)/05_results_report.ipynb \
	  --output report.html --output-dir $(RUNS)

# The reference results: every study on real data (`make data`), the report, then the copy committed under
# results/$(PROFILE)/ (no checkpoints). Interrupted? Run it again: finished studies are skipped, partial ones resume.
reproduce: setup
	$(PY) -m lib.runbook --profile $(PROFILE) --runs $(RUNS) $(if $(FRESH),--fresh)
	$(MAKE) --no-print-directory report
	$(PY) -m lib.publish $(RUNS) results/$(PROFILE) --studies $(notdir $(basename $(STUDIES)))

# a rerun (yours, a student's) against the committed reference, metric by metric, within stated tolerances
check-results: setup
	$(PY) -m lib.summary --compare results/$(PROFILE) $(RUNS)

test: demo-data
	$(PY) -m ruff check lib bench tests
	$(PY) -m pytest $(PYTEST_ARGS)

# tests marked slow execute a notebook or spawn training subprocesses; the rest are unit tests
test-fast: demo-data
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# the repository root is the file browser's root (configs/ and runs/ in view); notebook 03 opens first
LAB_ARGS ?=
lab: setup
	$(VENV)/bin/jupyter lab --allow-root --ServerApp.root_dir=$(CURDIR) \
	  --LabApp.default_url=/lab/tree/notebooks/03_cifar10_resnet.ipynb $(LAB_ARGS)

bench: setup
	$(PY) -m bench

clean:
	rm -rf runs/smoke build .pytest_cache
