# Two entry points for a fresh clone (see README):  make reproduce   |   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
CLAIMS ?=
NO_RUNS ?=
NOTEBOOKS ?=
STAGES ?=
export REPRO_DATA_DIR ?= $(CURDIR)/data

.PHONY: setup data reproduce studies sensitivity test unit bench bench-grid lab check-lab check-sequence

# The venv is rebuilt when pyproject.toml (the pinned package list) changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e .
	$(PY) -m ipykernel install --sys-prefix --name repro --display-name "repro (.venv)" >/dev/null
	touch $@

## ... and notebooks/*.ipynb go through nbstripout on their way into git (.gitattributes; make lab strips them the
## same way on save: repro/lab.py), so saving a notebook never dirties the tree; results/ keep their outputs.
STRIP_KEYS := --extra-keys "metadata.language_info cell.metadata.execution"
setup: $(VENV)/.installed
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		git config filter.nbstripout.clean '"$(abspath $(PY))" -m nbstripout --keep-id $(STRIP_KEYS)'; \
		git config filter.nbstripout.smudge cat; \
		git config diff.ipynb.textconv '"$(abspath $(PY))" -m nbstripout --keep-id $(STRIP_KEYS) -t'; fi

## The study's datasets into REPRO_DATA_DIR (default ./data), built from their public sources and checked against
## repro/data/checksums.json (python -m repro.data verify checks an existing directory).
data: setup
	$(PY) -m repro.data download all

## Run every notebook on PROFILE through papermill into results/$(PROFILE)/, the workers first making the runs they
## read (finished work is skipped); CLAIMS=C3,C4 runs only those claims' notebooks, NOTEBOOKS=09 only those notebooks,
## NO_RUNS=1 makes no run (the notebooks read what is recorded).
reproduce: setup
	$(PY) -m repro.reproduce --profile $(PROFILE) $(if $(CLAIMS),--claims $(CLAIMS)) $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS)) \
		$(if $(NO_RUNS),--no-runs)

## The downstream grids of notebooks 03-10 with one single-threaded background worker per core (WORKERS= and
## THREADS= override; resumable; logs appended to results/$(PROFILE)/studies_<i>.log); STAGES=budget,C2 runs only
## those stages (python -m repro.studies --help lists them).
WORKERS ?=
THREADS ?= 1
studies: setup
	@$(PY) -m repro.studies --profile $(PROFILE) --threads $(THREADS) $(if $(WORKERS),--workers $(WORKERS)) --check
	mkdir -p results/$(PROFILE)
	nohup $(PY) -m repro.studies --profile $(PROFILE) --threads $(THREADS) $(if $(WORKERS),--workers $(WORKERS)) \
		$(if $(STAGES),--stages $(STAGES)) >> results/$(PROFILE)/studies.log 2>&1 &
	@$(PY) -c "from repro.experiments.launch import default_workers as d; print(f'{$(or $(WORKERS),d($(THREADS)))} \
	worker(s) of $(THREADS) thread(s) started; follow them with: tail -f results/$(PROFILE)/studies*.log')"

## The unit tests and every notebook on the smoke profile (nbval), as two single-threaded streams side by side. In
## one, notebook 01 builds the priors, one worker makes the smoke grids' runs, and nbval executes every notebook in
## order with REPRO_READ_ONLY set, so a notebook that tried to train a run would fail; the unit tests (isolated in
## temporary folders) run in the other. The first stream's log is kept in $(NBVAL_LOG) and its summary printed after
## the unit tests'; the exit code fails if either fails.
NBVAL_LOG := results/smoke/nbval.log
test: setup
	@mkdir -p $(dir $(NBVAL_LOG)); export REPRO_PROFILE=smoke OMP_NUM_THREADS=1 MKL_NUM_THREADS=1; \
	{ $(PY) -m repro.reproduce --profile smoke --notebooks 01 && $(PY) -m repro.studies --profile smoke --worker 0 \
	  && REPRO_READ_ONLY=1 $(PY) -m pytest notebooks --nbval-lax --nbval-current-env -p no:cacheprovider; \
	} > $(NBVAL_LOG) 2>&1 & nb=$$!; \
	trap 'kill $$nb 2>/dev/null' INT TERM; \
	echo "notebooks: running in the background (log: $(NBVAL_LOG)); unit tests:"; \
	$(PY) -m pytest tests -p no:cacheprovider; unit=$$?; \
	echo "notebooks (nbval), the end of $(NBVAL_LOG):"; wait $$nb; notebooks=$$?; tail -n 40 $(NBVAL_LOG); \
	exit $$(( unit || notebooks ))

## How much the verdicts rest on the registered degrees of freedom: every claim notebook but C1's re-read on a
## scratch copy of the recorded runs at the seeds' own degrees of freedom (minutes; trains nothing). REPORT.md shows
## the readings that change (claims/df_sensitivity.csv).
sensitivity: setup
	$(PY) -m repro.sensitivity --profile $(PROFILE)

unit: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) -m repro.bench all

## Re-time one recorded run of each group of PROFILE's grids in every training precision (fp32 = the recorded
## protocol's, bf16) with the current code; project the whole grid's CPU-hours both ways (about 80 minutes on cpu).
## ALL=1 re-times every run (many hours; resumes where it stopped).
bench-grid: setup
	$(PY) -m repro.bench grid --profile $(PROFILE) $(if $(ALL),--all)

## JupyterLab at the repository root (README, REPORT, results/ in its file browser), opened on notebooks/; PORT= and
## TOKEN= (default: Jupyter's own) choose where it listens and its token. Jupyter as root (a container) needs
## --allow-root.
PORT ?=
TOKEN ?=
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks \
		--FileContentsManager.pre_save_hook=repro.lab.strip_on_save \
		$(if $(PORT),--port=$(PORT)) $(if $(TOKEN),--IdentityProvider.token=$(TOKEN)) \
		$(if $(filter 0,$(shell id -u)),--allow-root)

## Not part of `make test`. check-lab: JupyterLab driven by a headless browser (Debian's chromium: apt-get install
## chromium) runs notebook 04 on smoke and must show its verdict, and saving it must leave git status clean
## (screenshots in results/smoke/check_lab/). check-sequence: a fresh clone's documented smoke sequence (notebook 01,
## the studies, every notebook) must finish with no flag and no tracked file changed (about half an hour).
check-lab: setup
	$(PY) -m pip install -q --disable-pip-version-check playwright==1.65.3
	$(PY) -m repro.reproduce --profile smoke --notebooks 01
	$(PY) -m repro.check_lab

check-sequence: setup
	REPRO_SEQUENCE=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests/test_sequence.py -p no:cacheprovider
