# fleet: every target builds .venv from nothing when it is missing or stale.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := tests/tools
HELM := $(TOOLS)/bin/helm

.PHONY: demo test lint typecheck unit bench clean browser tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo's Helm bundle needs Helm 4: built from its Go module alone (a minute or so the first time).
demo: $(STAMP) $(HELM)
	$(BIN)/fleet demo --helm-binary $(HELM)

lint: $(STAMP)
	$(BIN)/ruff check fleet tests benchmarks
	$(BIN)/ruff format --check fleet tests benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

browser:
	bash .ci/install-browser

# The real control plane, Jaeger and Helm for the `real` tests (docs/real-cluster.md), built from Go
# modules with the machine's Go. The binaries are the stamp: rebuilt only when a go.mod, a go.sum or
# the build script changed; Go's module and build caches make that rebuild quick.
TOOL_BINS := $(addprefix $(TOOLS)/bin/,etcd jaeger kube-apiserver kube-controller-manager)

$(TOOL_BINS) &: $(TOOLS)/build $(TOOLS)/go.mod $(TOOLS)/go.sum $(TOOLS)/jaeger/go.mod $(TOOLS)/jaeger/go.sum
	$(TOOLS)/build etcd kube-apiserver kube-controller-manager jaeger
	touch $(TOOL_BINS)

$(HELM): $(TOOLS)/build $(TOOLS)/helm/go.mod $(TOOLS)/helm/go.sum
	$(TOOLS)/build helm
	touch $(HELM)

tools: $(TOOL_BINS) $(HELM)

# The fast part (not slow: no process started, nothing that takes seconds) on two workers; then the slow
# part on two workers too, a whole test file at a time each (--dist loadfile: a file's module fixtures
# start once), since its tests mostly wait on processes, leases and deadlines. Each worker starts its own
# real control plane and Jaeger when it first needs them (free ports, a folder of its own:
# tests/support/kube.py); the differential line adds up both workers' cases.
# The slow part lists its 20 slowest tests: what to look at first when `make test` grows.
unit: $(STAMP) browser tools
	$(BIN)/pytest -q -n 2 -m "not slow"
	$(BIN)/pytest -q -n 2 --dist loadfile -m slow --durations=20

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
