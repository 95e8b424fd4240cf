# Two set-up commands: `make demo` and `make test`. Each creates .venv if it is missing and installs
# the project (editable) with its test extras, pinned through constraints.txt so that the CPU build of
# torch 2.13.0 is never replaced by a CUDA one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/perfdata demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check perfdata pipelines models downstream tests benchmarks

clean:
	rm -rf $(VENV) demo-out .pytest_cache
