# One environment for all five papers. `make demo` and `make test` each set it up on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	VLR_NO_PROGRESS=$${VLR_NO_PROGRESS:-0} $(PY) demo.py --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	for script in bench/*_bench.py; do $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
