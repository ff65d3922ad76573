# Build, test and run mom. Every target sets up what it needs and is safe to
# run again: Debian packages are installed only when missing, the virtualenv
# is (re)built only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
VENV_PY := $(VENV)/bin/python
# Written after a successful `pip install -e .[test]`; older than
# pyproject.toml means the install is stale.
STAMP  := $(VENV)/.installed

PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: all deps venv test run bench clean

all: test

# Debian packages (build headers, dbus, polkit, libvirt, qemu, busybox).
deps:
	@bash scripts/install-deps.sh $(PYTHON)

$(VENV_PY):
	$(PYTHON) -m venv --clear $(VENV)

# Order-only on deps: packages must be present to build the C extensions,
# but checking them must not force a reinstall.
$(STAMP): pyproject.toml | deps $(VENV_PY)
	$(VENV_PY) -m pip install -e '.[test]'
	@touch $@

venv: $(STAMP)

# pytest exits 5 when it collected no test: that is a failure here too, but
# say so plainly since make only reports "Error 5".
test: venv
	@echo "$(VENV_PY) -m pytest $(PYTEST_ARGS)"
	@rc=0; $(VENV_PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test was collected (pytest exit 5)" >&2; fi; \
	exit $$rc

run: venv
	@echo "Environment ready in $(VENV)."
	@echo "The simulated-host demo (momd managing simulated guests) arrives with a later issue (issue 6); nothing to run yet."

bench: venv
	$(VENV_PY) benchmarks/policy_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .cache build dist *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
