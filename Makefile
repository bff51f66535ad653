# Clique: `make demo` and `make test` set up everything they need (virtualenv, pinned dependencies,
# cached control-plane binaries built from Go modules) on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# The virtualenv is rebuilt when the dependency pins change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: all test unit e2e demo venv binaries clean

all: test

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required; found " + sys.version.split()[0] + " at $(PYTHON). Set PYTHON=/path/to/python3.11")'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

venv: $(STAMP)

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok once into ~/.cache/clique.
binaries: $(STAMP)
	$(VENV)/bin/clique build

test: binaries
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

e2e: binaries
	$(VENV)/bin/python -m pytest tests/e2e $(PYTEST_ARGS)

# No `binaries` prerequisite: the offline results come first; the demo builds the binaries (once) itself.
demo: $(STAMP)
	$(VENV)/bin/clique demo --output demo-output

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis *.egg-info
