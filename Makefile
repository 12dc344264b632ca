# The two commands of the README:
#   make book   -- set everything up if needed, then build the book, executing every notebook (cpu profile)
#   make test   -- set everything up if needed, then run pytest for dmmlib and nbval over book/ (smoke profile)
# Both are idempotent: a second run finds the stamps and skips straight to the work.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.dmmlib-installed
ASSETS  := book/_static/vendor/.stamp
BROWSER := $(VENV)/.chromium-installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROFILE ?= cpu

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONHASHSEED := 0

.PHONY: book test setup assets browser clean-book

setup: $(STAMP) $(ASSETS)

# A project-local virtual environment with dmmlib (editable) and the book and test tools.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	@touch $@

# Local copies of the scripts the rendered book would otherwise fetch from CDNs
# (MathJax, require.js, the Jupyter widgets embed manager), so it reads offline.
$(ASSETS): tools/offline_assets/package.json tools/offline_assets/package-lock.json tools/offline_assets/vendor.py
	$(MAKE) --no-print-directory $(STAMP)
	cd tools/offline_assets && npm ci --silent --no-audit --no-fund
	$(PY) tools/offline_assets/vendor.py
	@touch $@

# Debian's Chromium for the headless-browser test of the rendered book.
$(BROWSER):
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null)
	@touch $@

book: setup
	DMM_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going

test: setup $(BROWSER)
	DMM_PROFILE=smoke $(PY) -m pytest tests book --nbval-lax -p no:cacheprovider

clean-book:
	rm -rf _build
