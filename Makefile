# The two commands of the README: `make demo` and `make test`. Both install what they need.
PY := .venv/bin/python

.PHONY: install demo test lint

install:
	bash devtools/bootstrap.sh

demo: install
	$(PY) -m devtools.demo

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install lint
	$(PY) -m pytest
