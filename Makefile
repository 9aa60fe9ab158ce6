# wsml: two commands set everything up on a fresh machine.
#   make demo   train Naive AN vs LL-R on the embedded Fashion-MNIST mosaics (offline)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.wsml-installed
FASHION := /usr/share/datasets/fashion-mnist
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q -c requirements/constraints.txt

.PHONY: env demo test lint bench bench-fast fashion-mnist browser clean

env: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

# The embedded default data set: Debian's dataset-fashion-mnist (idx files). Installed when missing and possible.
fashion-mnist:
	@if [ ! -d $(FASHION) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); \
	  else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2; exit 1; fi; \
	fi

# A headless browser for the review page's test (tests/test_review_browser.py): Debian's chromium + chromium-driver,
# installed when missing and possible; without them (not root, no apt) that test is skipped and says why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    (apt-get install -y -q chromium chromium-driver || (apt-get update -q && apt-get install -y -q chromium chromium-driver)) \
	      || echo "could not install chromium + chromium-driver: the browser test will be skipped" >&2; \
	  else echo "chromium + chromium-driver missing (sudo apt-get install chromium chromium-driver): the browser test will be skipped" >&2; fi; \
	fi

demo: $(STAMP) fashion-mnist
	$(PY) -m wsml.tools.demo

test: $(STAMP) browser
	@$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check wsml tests benchmarks

bench: $(STAMP) fashion-mnist
	$(MAKE) -C benchmarks all PY=$(abspath $(PY))

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
