# The two commands of the README: `make demo` and `make test`. Both install what is
# missing (Debian packages, the venv, the project) and are safe to run again.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit system venv services bytecode

demo: $(STAMP) bytecode
	$(VENV)/bin/shelf demo

test: $(STAMP) bytecode services lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

system:
	@if [ "$$(id -u)" = 0 ]; then scripts/install-system.sh; \
	else echo "not root: skipping Debian packages"; fi

services: system
	@if [ "$$(id -u)" = 0 ]; then scripts/start-services.sh; fi

$(STAMP): pyproject.toml | system
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) bytecode

# The editable install leaves the project's own modules uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set every `shelf` command would compile them again (about
# 50 ms of each start-up). A stale .pyc is never used: Python checks the source's mtime.
bytecode: $(STAMP)
	$(PY) -m compileall -q domain adapters projections application api cli bench > /dev/null
