# The two commands of the README: `make demo` and `make test`. Both install what they need.
PY := .venv/bin/python

.PHONY: install demo test lint compat compat-path

install:
	bash devtools/bootstrap.sh

demo: install
	$(PY) -m devtools.demo

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install lint
	$(PY) -m pytest

# The whole suite against another ComfyUI checkout: make compat COMFYUI_PATH=/path/to/ComfyUI
compat: compat-path install lint
	COMFYUI_PATH="$(abspath $(COMFYUI_PATH))" $(PY) -m pytest

compat-path:
	@test -f "$(COMFYUI_PATH)/main.py" || { echo "usage: make compat COMFYUI_PATH=/path/to/ComfyUI (a checkout with main.py)" >&2; exit 2; }
