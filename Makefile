# The two commands of the README: `make run` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.qnas-installed
QNAS_DATA ?= ../shared/data
export QNAS_DATA

.PHONY: setup run test

$(PY):
	python3 -m venv $(VENV)

# PyTorch first (the torch/torchvision pair that works on the CPU here), then the package with its
# dev extras under a constraints file so nothing swaps that pair.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
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
