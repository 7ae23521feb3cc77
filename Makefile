# Two entry points for a fresh clone (see README):  make reproduce   |   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
CLAIMS ?=
export REPRO_DATA_DIR ?= $(CURDIR)/data

.PHONY: setup reproduce test unit bench lab

# The venv is rebuilt when pyproject.toml (the pinned package list) changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e .
	$(PY) -m ipykernel install --sys-prefix --name repro --display-name "repro (.venv)" >/dev/null
	touch $@

setup: $(VENV)/.installed

## Run every notebook on PROFILE through papermill into results/$(PROFILE)/ (finished work is skipped).
reproduce: setup
	$(PY) -m repro.reproduce --profile $(PROFILE) $(if $(CLAIMS),--claims $(CLAIMS))

## Unit tests, then every notebook on the smoke profile through nbval.
test: setup
	REPRO_PROFILE=smoke $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

unit: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) -m repro.bench all

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
