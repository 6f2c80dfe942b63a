# effx: `make book` builds the study (CPU by default, the GPU profile when CUDA is present),
# `make test` checks everything. Both install what they need into .venv first.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
PROFILE  ?= auto
NB       ?=
PARAMS   ?=
RUNNER   ?= process
MATHJAX  := book/_vendor/_static/mathjax/tex-chtml.js
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: help install system-packages book html notebook test clean-results clean list

system-packages:  ## Debian packages (chromium, speech clips, Fashion-MNIST) when root
	@bash scripts/install_system_packages.sh

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): environment.yml pyproject.toml scripts/pip_requirements.py
	@echo "== installing the environment into $(VENV) (environment.yml's pip list)"
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PYTHON) scripts/pip_requirements.py environment.yml > $(VENV)/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r $(VENV)/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)  ## create .venv with every dependency

$(MATHJAX): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed to install MathJax (npm registry) for offline math"; exit 1; }
	npm ci --no-audit --no-fund --silent
	rm -rf book/_vendor/_static/mathjax && mkdir -p book/_vendor/_static
	cp -r node_modules/mathjax/es5 book/_vendor/_static/mathjax
	touch $@

book: install system-packages $(MATHJAX)  ## run every notebook (PROFILE=auto|quick|gpu|full) and build the HTML
	status=0
	$(PY) -m effx.pipeline run --profile $(PROFILE) --runner $(RUNNER) || status=$$?
	$(MAKE) --no-print-directory html
	exit $$status

html: install $(MATHJAX)  ## build the HTML from the notebooks already executed
	$(PY) -m effx.pipeline toc
	$(VENV)/bin/jupyter-book build book --warningiserror --keep-going --quiet
	@echo "effx: book at $(CURDIR)/book/_build/html/index.html"

notebook: install  ## rerun one notebook: make notebook NB=attention_scaling PARAMS="-p lengths '[512, 1024]'"
	@[ -n "$(NB)" ] || { echo "effx: error: parameter 'NB' is required; allowed: $$($(PY) -c 'from effx.pipeline import notebooks; print(", ".join(notebooks()))')"; exit 2; }
	$(PY) -m effx.pipeline run --profile $(PROFILE) --runner $(RUNNER) --only $(NB) $(PARAMS)
	@echo "effx: now 'make html' shows it in the book"

list: install  ## notebooks and their parameter profiles
	$(PY) -m effx.pipeline list

test: install system-packages $(MATHJAX)  ## unit tests, every notebook at tiny sizes, a book build and a browser check
	$(PY) -m pytest -q tests

clean-results:  ## forget the measurements of one profile: make clean-results PROFILE=quick
	@[ "$(PROFILE)" != auto ] || { echo "effx: error: name the profile, e.g. PROFILE=quick"; exit 2; }
	rm -rf data/results/$(PROFILE)

clean:  ## remove the built book and executed notebooks (keeps .venv and results)
	rm -rf book/_build book/generated
