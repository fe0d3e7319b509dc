# falv: `make demo` and `make test` work from a fresh clone with nothing installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.falv-installed
# Pytest options; e.g. `make test PYTEST_ARGS="-k model -x"`.
PYTEST_ARGS ?=

.PHONY: install tools test test-browser test-tools demo bench clean

install: $(STAMP)

# torch is pinned through constraints.txt to the CPU build that lies on this
# machine's disk; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

# Label Studio and FiftyOne for tests/tools, each in its own pinned environment under
# .venv-tools/ (tests/tools/requirements-*.txt); the tests also build them on first use.
tools: install
	$(BIN)/python -m tests.tools.install labelstudio fiftyone

# The round trip against the real tools alone (also part of `make test`).
test-tools: tools
	$(BIN)/python -m pytest -q -s -m tools $(PYTEST_ARGS)

# The review page in headless chromium (needs: apt-get install chromium chromium-driver).
test-browser: install
	$(BIN)/python -m pytest -q -s tests/serve/test_review_page.py $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m falv.demo demo-output

bench: install
	$(BIN)/falv bench --preset base

clean:
	rm -rf $(VENV) .venv-tools test-artifacts demo-output .pytest_cache .hypothesis
