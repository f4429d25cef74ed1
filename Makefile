# The one place the project's checks are defined; .ci/run and pre-commit call these targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps install lab-artifacts lab-registry lab-registry-down lint typecheck test test-unit test-lab bench golden

$(PY):
	python3 -m venv $(VENV)

# Debian packages (root): debootstrap, systemd-container, apt proxy, ssh, openssl.
deps:
	bash scripts/install-debian-deps.sh

install: $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'

# The lab's `local` artifact source (.provisioner/lab-artifacts, where the lab specs
# inventories/nspawn-*.yaml point): every binary and image built from upstream source
# through the Go module proxy, haproxy and keepalived from Debian. Cached under
# ~/.cache/provisioner: the first build takes tens of minutes on 2 cores, later ones seconds.
LAB_SPECS ?= inventories/nspawn-3cp-2w.yaml inventories/nspawn-flannel.yaml inventories/nspawn-vip.yaml
lab-artifacts: $(PY)
	for spec in $(LAB_SPECS); do $(VENV)/bin/provisioner artifacts build $$spec || exit 1; done

# The lab's private registry hub.test.com (Debian's distribution registry on the bridge
# address 192.168.56.1:443, lab CA, basic auth), holding the images lab-artifacts built.
# A lab fixture, not part of the product; `make lab-registry-down` stops it.
lab-registry: $(PY)
	$(PY) -m tests.fixtures.lab_registry up

lab-registry-down: $(PY)
	$(PY) -m tests.fixtures.lab_registry down

lint: $(PY)
	$(VENV)/bin/ruff check provisioner tests bench

typecheck: $(PY)
	$(VENV)/bin/mypy

# Everything: unit, golden, CLI and the end-to-end tests on local nspawn machines (root).
# The lab's artifacts are built first, in the open (the lab tests reuse them); the lab tests
# start the lab registry themselves (and stop it if they started it).
test: lint typecheck lab-artifacts
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
