# Two commands on a fresh machine: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WEB_SOCKET_JS_SDIST := $(VENV)/downloads/websockify-0.5.1.tar.gz
# What goes into the installed package: `make run` reinstalls only when one of these changed.
PACKAGE_SOURCES := setup.cfg pyproject.toml $(shell find wsserver twisted/plugins web -type f \
	-not -path 'web/vendor/*' -not -name '*.pyc' -not -name dropin.cache 2>/dev/null)
# Stamps: the runtime install (what `make run` needs) and the test and benchmark extras on top of it.
RUNTIME := $(VENV)/.installed-runtime
EXTRAS := $(VENV)/.installed-extras
VENDORED := web/vendor/.copied

.PHONY: run test bench screenshots assets install clean

run: $(RUNTIME)
	# From inside the venv directory, so that the installed package (not the source tree) runs.
	cd $(VENV) && bin/twistd -n --pidfile= wsserver $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The full benchmark against Crossbar.io (installed into bench/.peers/ on first use); see README.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The README's screenshots of the demo pages (docs/screenshots/*.png), taken in headless Chromium.
screenshots: install
	$(BIN)/python tools/screenshots.py

# Third-party files for the site, copied into web/vendor/ and checked by tools/copy_assets.py: JavaScript
# from the npm registry, pinned by package-lock.json; the web-socket-js Flash shim from a PyPI sdist.
assets: $(VENDORED)

$(VENDORED): node_modules/.package-lock.json $(WEB_SOCKET_JS_SDIST) tools/copy_assets.py
	$(PYTHON) tools/copy_assets.py
	touch $@

# web-socket-js's RFC 6455 build ships in websockify's 0.5.1 sdist (include/web-socket-js/).
$(WEB_SOCKET_JS_SDIST): | $(BIN)/python
	$(BIN)/pip download -q --no-deps --no-binary :all: --dest $(@D) websockify==0.5.1

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `pip install .` (not -e): editable installs do not register twisted/plugins with twistd.
# Running needs only the package and its dependencies; the tests and the benchmark add their extras.
$(RUNTIME): $(BIN)/python $(VENDORED) $(PACKAGE_SOURCES)
	$(BIN)/pip install -q .
	rm -rf build
	touch $@

# The extras install the package too (one build, not two), so it brings the runtime stamp up to date.
$(EXTRAS): $(BIN)/python $(VENDORED) $(PACKAGE_SOURCES)
	$(BIN)/pip install -q '.[test,bench]'
	rm -rf build
	touch $@ $(RUNTIME)

install: $(EXTRAS)

clean:
	rm -rf $(VENV) node_modules web/vendor build *.egg-info
