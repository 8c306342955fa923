# Two entry points: `make demo` (the main job on the built-in data) and `make test`; `make docs` builds the site.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.repcam-installed
DOCS_STAMP := $(VENV)/.repcam-docs-installed

.PHONY: demo test docs install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"  # ranges in pyproject.toml, tested pins in constraints.txt
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/repcam demo --run-dir runs/demo

# Everything but the claims on every core (one worker per core, each pinned to its core: tests/conftest.py), then the
# method's claims on their own at the 2 threads they were measured with (tests/test_demo_claims.py).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadscope -m "not claims"
	$(PY) -m pytest -q -m claims

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[test,docs]"
	@touch $(DOCS_STAMP)

# The documentation site (mkdocs.yml, pages in docs/) into site/; --strict: a broken link or a missing page fails.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean:
	rm -rf runs .pytest_cache site
