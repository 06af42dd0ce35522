# Everything runs inside .venv, created on first use. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= demo
RUNS := runs/$(PROFILE)
# notebooks 01-04 run in order; 05 (the report) reads their results, so it runs last, from `make report`
STUDIES := $(filter-out %05_results_report.ipynb,$(sort $(wildcard notebooks/0*.ipynb)))
PYTEST_ARGS ?=

.PHONY: help setup data demo-data run report reproduce check-results grade test test-fast test-compat gpu-bundle lab bench \
  clean

help:
	@echo "make data    download CIFAR-10 and ResNet50's ImageNet weights; say where the other data sets go"
	@echo "make run     set up .venv, write demo data, run every notebook on the '$(PROFILE)' profile into $(RUNS)/"
	@echo "make test    set up, lint (ruff), then the whole test suite (unit tests + every notebook on smoke parameters)"
	@echo "make test-fast   the unit tests only (no notebook runs, no subprocess training): about a minute"
	@echo "make lab     JupyterLab on the same environment (writes the demo data first)"
	@echo "make report  build $(RUNS)/report.html from the runs"
	@echo "make bench   speed benchmarks (ratios against the naive pipelines)"
	@echo "make reproduce PROFILE=cpu   every study and the report on real data, copied to results/cpu/"
	@echo "make check-results PROFILE=cpu   does runs/cpu reproduce results/cpu within tolerance?"
	@echo "make reproduce PROFILE=cpu SEEDS=\"0 1 2\"   once per seed into runs/cpu/seed<N>/: mean ± std (n)"
	@echo "make grade SUBMISSIONS=dir [NOTEBOOKS=03] [PROFILE=demo]   rerun each submission, gradebook in grades/"
	@echo "make gpu-bundle NOTEBOOK=03 [DATA=...]   what a GPU machine without papermill needs, in .gpu-bundle/"
	@echo "make test-compat   the oldest supported torch (2.11 / torchvision 0.26): unit tests, notebook 03's smoke"
	@echo "                   run, and the GPU bundle's dry run in a torch-only environment (several GB, minutes)"

# the first `make lab`/`make run` installs for minutes: say so, and let pip show its downloads (no -q)
$(VENV)/.installed: requirements.txt pyproject.toml
	@echo "==> First run: installing this project's packages into $(VENV) (requirements.txt: torch, torchvision,"
	@echo "    JupyterLab, papermill, pandas, matplotlib...). pip downloads about 6 GB: torch's default wheels bring"
	@echo "    CUDA libraries even on a machine without a GPU. Allow 4 minutes on a fast connection, more on a slow"
	@echo "    one; later runs skip this step."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
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

# with SEEDS the report reads the first seed's runs and sets every figure's mean ± std (n) over the seeds beside them
REPORT_RUNS = $(if $(SEEDS),$(RUNS)/seed$(firstword $(SEEDS)),$(RUNS))
report: setup
	$(PY) -m lib.runbook --profile $(PROFILE) --runs $(REPORT_RUNS) notebooks/05_results_report.ipynb
	$(VENV)/bin/jupyter nbconvert --log-level ERROR --to html --no-input $(REPORT_RUNS)/05_results_report.ipynb \
	  --output report.html --output-dir $(RUNS)

# The reference results: every study on real data (`make data`), the report, then the copy committed under
# results/$(PROFILE)/ (no checkpoints). Interrupted? Run it again: finished studies are skipped, partial ones resume.
# SEEDS="0 1 2": each study once per seed into $(RUNS)/seed<N>/, all published (results/$(PROFILE)/seed<N>/), and the
# seed statistics printed; `python -m lib.seeds $(RUNS) --tolerances FILE` derives tolerances from the spread.
SEEDS ?=
reproduce: setup
	$(PY) -m lib.runbook --profile $(PROFILE) --runs $(RUNS) $(if $(FRESH),--fresh) $(if $(SEEDS),--seeds $(SEEDS))
	$(MAKE) --no-print-directory report
	$(PY) -m lib.publish $(RUNS) results/$(PROFILE) --studies $(if $(SEEDS),$(foreach s,$(SEEDS),\
	  $(addprefix seed$(s)/,$(notdir $(basename $(STUDIES))))),$(notdir $(basename $(STUDIES))))
	$(if $(SEEDS),$(PY) -m lib.seeds $(RUNS))

# a rerun (yours, a student's) against the committed reference, metric by metric, within stated tolerances
check-results: setup
	$(PY) -m lib.compare results/$(PROFILE) $(RUNS)

# Rerun every submission (a folder of checkouts) and check its committed results/$(PROFILE)/: grades/gradebook.csv
# and .html. The submissions' notebooks run with your rights: grade in a container or a throwaway machine.
SUBMISSIONS ?= submissions
NOTEBOOKS ?= 03
GRADE_ARGS ?=
grade: demo-data
	$(PY) -m lib.grade $(SUBMISSIONS) --notebooks $(NOTEBOOKS) --profile $(PROFILE) --out grades $(GRADE_ARGS)

test: demo-data
	$(PY) -m ruff check lib bench tests
	$(PY) -m pytest $(PYTEST_ARGS)

# tests marked slow execute a notebook or spawn training subprocesses; the rest are unit tests
test-fast: demo-data
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# the repository root is the file browser's root (configs/ and runs/ in view); notebook 03 opens first; the demo
# data is written first, so `profile = "demo"` runs on a fresh clone
LAB_ARGS ?=
lab: demo-data
	$(VENV)/bin/jupyter lab --allow-root --ServerApp.root_dir=$(CURDIR) \
	  --LabApp.default_url=/lab/tree/notebooks/03_cifar10_resnet.ipynb $(LAB_ARGS)

# The GPU path (docs/gpu.md): the wheels papermill needs for Python 3.12, the data, run.sh; then on the
# GPU machine, from the repository root: bash .gpu-bundle/run.sh
NOTEBOOK ?= 03
DATA ?=
gpu-bundle: setup
	$(PY) -m lib.gpu_bundle make $(NOTEBOOK) $(if $(DATA),--data $(DATA))

# The oldest torch the package accepts, in two environments of its own (git-ignored): .venv-compat holds the project's
# requirements with torch 2.11.0 / torchvision 0.26.0 for the unit tests and notebook 03's smoke run; .venv-gpu-like
# holds only what a GPU image has (torch, torchvision, pandas, matplotlib, seaborn, PyYAML, tqdm, Pillow) for the GPU
# bundle's dry run. pip downloads about 3 GB the first time (torch's CUDA libraries); later runs take minutes.
COMPAT_PYTHON ?= python3.12
COMPAT_TORCH := torch==2.11.0 torchvision==0.26.0
GPU_IMAGE_PACKAGES := pandas matplotlib seaborn pyyaml tqdm pillow
test-compat: demo-data
	test -x .venv-compat/bin/python || $(COMPAT_PYTHON) -m venv .venv-compat
	grep -v -E '^torch(vision)?==' requirements.txt > .venv-compat/requirements-rest.txt
	.venv-compat/bin/python -m pip install --disable-pip-version-check --progress-bar on -q $(COMPAT_TORCH) \
	  -r .venv-compat/requirements-rest.txt
	.venv-compat/bin/python -m pip install --disable-pip-version-check -q --no-deps -e .
	PATH="$(CURDIR)/.venv-compat/bin:$$PATH" .venv-compat/bin/python -m pytest -p no:cacheprovider -m "not slow" \
	  $(PYTEST_ARGS)
	PATH="$(CURDIR)/.venv-compat/bin:$$PATH" .venv-compat/bin/python -m pytest -p no:cacheprovider \
	  tests/test_nb03.py::test_notebook_runs_on_smoke_parameters $(PYTEST_ARGS)
	test -x .venv-gpu-like/bin/python || $(COMPAT_PYTHON) -m venv .venv-gpu-like
	.venv-gpu-like/bin/python -m pip install --disable-pip-version-check -q $(COMPAT_TORCH) $(GPU_IMAGE_PACKAGES)
	bash tests/gpu_dry_run.sh .venv-gpu-like/bin/python

bench: setup
	$(PY) -m bench

clean:
	rm -rf runs/smoke build .pytest_cache
