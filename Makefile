# The one place the project's checks are defined; .ci/run and pre-commit call these targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps install lab-artifacts lint typecheck test test-unit test-lab bench golden

$(PY):
	python3 -m venv $(VENV)

# Debian packages (root): debootstrap, systemd-container, apt proxy, ssh, openssl.
deps:
	bash scripts/install-debian-deps.sh

install: $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'

# The lab's `local` artifact source, from Debian packages (etcd, containerd, runc, CNI
# plugins, haproxy, keepalived) and the crictl stand-in: the official releases cannot be
# downloaded here. inventories/nspawn-3cp-2w.yaml points at it.
LAB_ARTIFACTS ?= .provisioner/lab-artifacts
lab-artifacts: $(PY)
	$(PY) -m tests.fixtures.debian_artifacts $(LAB_ARTIFACTS)

lint: $(PY)
	$(VENV)/bin/ruff check provisioner tests bench

typecheck: $(PY)
	$(VENV)/bin/mypy

# Everything: unit, golden, CLI and the end-to-end tests on local nspawn machines (root).
test: lint typecheck
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# Without the lab machines (no root needed).
test-unit:
	$(VENV)/bin/pytest -q -m "not lab" $(PYTEST_ARGS)

test-lab:
	$(VENV)/bin/pytest -q -m lab $(PYTEST_ARGS)

# Rewrite golden files after an intended change; review the diff before committing.
golden:
	UPDATE_GOLDEN=1 $(VENV)/bin/pytest -q tests/test_golden.py

bench:
	$(PY) bench/render.py
