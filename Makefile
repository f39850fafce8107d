# Two commands on a fresh machine: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench assets install clean

run: install
	# From inside the venv directory, so that the installed package (not the source tree) runs.
	cd $(VENV) && bin/twistd -n --pidfile= wsserver $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The full benchmark against Crossbar.io (installed into bench/.peers/ on first use); see README.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Third-party JavaScript from the npm registry, pinned by package-lock.json, copied into web/vendor/.
assets: node_modules/.package-lock.json
	$(PYTHON) tools/copy_assets.py

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `pip install .` (not -e): editable installs do not register twisted/plugins with twistd.
install: $(BIN)/python assets
	$(BIN)/pip install -q '.[test,bench]'
	rm -rf build

clean:
	rm -rf $(VENV) node_modules web/vendor build *.egg-info
