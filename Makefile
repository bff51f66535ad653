# Clique: `make demo` and `make test` set up everything they need (virtualenv, pinned dependencies,
# cached control-plane binaries built from Go modules) on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# The virtualenv is rebuilt when the dependency pins change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
# Test files run in 3 worker processes (pytest-xdist), a file's tests in one worker (--dist loadfile: its module
# fixtures, e.g. its own control plane, are started once). e2e tests mostly wait on the API server, so 3 workers
# on 2 cores cut the wall time by about a third; PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 3
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

.PHONY: all test unit e2e demo venv binaries clean

all: test

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required; found " + sys.version.split()[0] + " at $(PYTHON). Set PYTHON=/path/to/python3.11")'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

venv: $(STAMP)

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and the LeaderWorkerSet and Kueue
# controllers the e2e tests run once into ~/.cache/clique (before the tests: a build inside a test would count
# against its timeout, and parallel workers would wait on one another's build lock).
binaries: $(STAMP)
	$(VENV)/bin/clique build --with lws --with kueue

test: binaries
	$(VENV)/bin/python -m pytest $(XDIST) $(PYTEST_ARGS)

unit: $(STAMP)
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

e2e: binaries
	$(VENV)/bin/python -m pytest tests/e2e $(XDIST) $(PYTEST_ARGS)

# No `binaries` prerequisite: the offline results come first; the demo builds the binaries (once) itself.
demo: $(STAMP)
	$(VENV)/bin/clique demo --output demo-output

clean:
	rm -rf $(VENV) demo-output .pytest_cache .hypothesis *.egg-info
