# The two commands of the README:
#   make book   -- set everything up if needed, then build the book, executing every notebook (cpu profile)
#   make test   -- set everything up if needed, then run pytest for dmmlib and nbval over book/ (smoke profile,
#                  and the gpu profile's dry run)
# and one to read the book live:
#   make lab    -- set everything up if needed, then open book/ in JupyterLab (its kernels read DMM_PROFILE)
# and one to measure the tests:
#   make mutate -- set everything up if needed, then plant small bugs in the core modules one at a time
#                  (mutmut) and print the kill rate per module and the surviving mutants; an hour or
#                  more on 2 cores, so not part of `make test` (MODULES="matching losses" runs some)
# Both are idempotent: a second run finds the stamps and skips straight to the work.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.dmmlib-installed
ASSETS  := book/_static/vendor/.stamp
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROFILE ?= cpu

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONHASHSEED := 0

.PHONY: book test test-dry-run lab mutate setup assets browser clean-book check-profile

setup: $(STAMP) $(ASSETS)

# A project-local virtual environment with dmmlib (editable) and the book and test tools.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test,mutate]"
	@touch $@

# Local copies of the scripts the rendered book would otherwise fetch from CDNs
# (MathJax, require.js, the Jupyter widgets embed manager), so it reads offline.
$(ASSETS): tools/offline_assets/package.json tools/offline_assets/package-lock.json tools/offline_assets/vendor.py
	$(MAKE) --no-print-directory $(STAMP)
	cd tools/offline_assets && npm ci --silent --no-audit --no-fund --ignore-scripts
	$(PY) tools/offline_assets/vendor.py
	@touch $@

assets: $(ASSETS)

# Debian's Chromium (/usr/bin/chromium) for the headless-browser test of the rendered book
# (tests/test_book_offline.py). Checked on every run, so a removed browser is reinstalled.
browser:
	@test "$$DMM_SKIP_BROWSER" = 1 || test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then \
	    echo "error: /usr/bin/chromium is missing and there is no sudo to install it; run 'apt-get install chromium' as root (or set DMM_SKIP_BROWSER=1 to skip the browser test)" >&2; exit 1; fi; \
	  echo "installing Debian's chromium for the headless-browser test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@test "$$DMM_SKIP_BROWSER" = 1 || test -x /usr/bin/chromium || { echo "error: apt-get did not install /usr/bin/chromium" >&2; exit 1; }

check-profile:
	@case "$(PROFILE)" in smoke|cpu|gpu) ;; *) echo "error: PROFILE=$(PROFILE); expected smoke, cpu or gpu" >&2; exit 2;; esac

# The per-cell time limit follows the profile (tools/book_timeouts.py: a day per cell for PROFILE=gpu, whose
# cells train for hours unless `python -m dmmlib.lessons.run all` filled the caches first).
# The execution cache keys on notebook source, not on DMM_PROFILE: outputs of one profile must
# not be served for another, so a build in a different profile than the last one starts afresh.
# A dry run of the gpu profile (DMM_DRY_RUN=1) is a build of its own: its outputs never pass for a real one's.
BUILD_TAG := $(PROFILE)$(if $(filter 1,$(DMM_DRY_RUN)),-dry-run,)

book: check-profile setup
	@if [ -f _build/.profile ] && [ "$$(cat _build/.profile)" != "$(BUILD_TAG)" ]; then \
	  echo "_build holds a $$(cat _build/.profile)-profile build; starting afresh for $(BUILD_TAG)"; rm -rf _build; fi
	@mkdir -p _build && echo "$(BUILD_TAG)" > _build/.profile
	@# Cached outputs were computed by the library as it was then: drop them when dmmlib (configs included) changes.
	@hash=$$(cat $$(git ls-files -co --exclude-standard dmmlib pyproject.toml 2>/dev/null | sort) 2>/dev/null | sha256sum | cut -c1-16); \
	  if [ -f _build/.library-hash ] && [ "$$(cat _build/.library-hash)" != "$$hash" ]; then \
	    echo "dmmlib changed since the last build: re-executing every notebook"; rm -rf _build/.jupyter_cache _build/.doctrees _build/jupyter_execute; fi; \
	  echo "$$hash" > _build/.library-hash
	DMM_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going
	@# A page shows no stderr, no /tmp/ path and no printed dict (tests/test_book_html.py checks the scanner).
	$(PY) -m dmmlib.lessons.check_html _build/html
	@echo "book: _build/html/index.html ($(PROFILE) profile)"

# JupyterLab on the book: the explorers run live, each move computed by the kernel (PROFILE=smoke|cpu|gpu).
lab: check-profile setup
	DMM_PROFILE=$(PROFILE) $(VENV)/bin/jupyter lab book/

# Two pytest-xdist workers, one torch thread each (2 cores). The notebooks run in the smoke profile
# (tests/test_book_smoke.py: nbval over book/, in reading order) and in the gpu profile's dry run
# (tests/test_dry_run_book.py, two chains), each as pytest of its own, beside the other tests
# (conftest.py groups them by module and starts the longest first).
test: setup browser
	DMM_PROFILE=smoke OMP_NUM_THREADS=1 $(PY) -m pytest tests -p no:cacheprovider -n 2 --dist loadgroup --no-loadscope-reorder

# The dry run alone (both chains side by side).
test-dry-run: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/test_dry_run_book.py -p no:cacheprovider -m dry_run -n 2

# Mutation testing (tools/mutate.py; DEVELOPING.md, "Mutation testing"). Not run by `make test` or CI.
mutate: setup
	$(PY) tools/mutate.py $(MODULES)

clean-book:
	rm -rf _build
