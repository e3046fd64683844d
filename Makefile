# The two commands of the README: `make run` and `make test`. Both set up .venv on first use, from the lock.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.qnas-installed
LOCK := requirements.lock
QNAS_DATA ?= ../shared/data
export QNAS_DATA

.PHONY: setup run test lock

$(PY):
	python3 -m venv $(VENV)

# Exactly the dependency set the suite last passed with (every transitive package pinned), then qnas itself
# without resolving anything again. A Python other than the lock's is refused with one line.
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	@$(PY) -c "import sys; want = open('$(LOCK)').readline().split('python ')[1].split()[0]; \
	have = '%d.%d' % sys.version_info[:2]; \
	sys.exit(0 if have == want else f'error: $(LOCK): made for Python {want}, this venv has {have}; use python{want} or run make lock')"
	$(PY) -m pip install -r $(LOCK)
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/qnas run experiments/quickstart.yaml

# Where possible (root, util-linux `unshare`), the tests run in a loopback-only network namespace: the Ray
# tests start a local cluster, and nothing may leave the machine. Elsewhere the Ray tests skip, saying why.
test: setup
	@if unshare -n true 2>/dev/null && command -v ip >/dev/null; then \
		echo "unshare -n: running pytest in a loopback-only network namespace"; \
		unshare -n sh -c 'ip link set lo up && exec $(PY) -m pytest -q'; \
	else $(PY) -m pytest -q; fi

# Refresh the lock: the newest releases pyproject.toml's ranges admit, resolved in a throw-away venv (the PyTorch
# pair of constraints.txt first), frozen into $(LOCK). Then `make test` installs from it and is the gate.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -r constraints.txt
	$(LOCK_VENV)/bin/python -m pip install -c constraints.txt -e '.[dev]'
	$(LOCK_VENV)/bin/python -c "import platform, sys; print('# qnas dependency lock for python %d.%d on %s (make lock; \
	installed by make setup/run/test)' % (*sys.version_info[:2], platform.machine()))" > $(LOCK).tmp
	$(LOCK_VENV)/bin/python -m pip freeze --exclude-editable --all | grep -v '^pip==' >> $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "wrote $(LOCK); now run: make test"
