# Two set-up commands: `make demo` and `make test`. Each creates .venv if it is missing and installs
# the project (editable) with its test extras, pinned through constraints.txt so that the CPU build of
# torch 2.13.0 is never replaced by a CUDA one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck install clean

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

# mypy on perfdata/, models/, pipelines/ as installed (perfdata.models, ...): mypy cannot follow the package-dir
# mapping, so .typecheck/perfdata links perfdata/* and models/, pipelines/, downstream/ into that layout
# (configuration: [tool.mypy] in pyproject.toml); messages name the real files.
TYPETREE := .typecheck/perfdata
typecheck: $(STAMP)
	@rm -rf $(TYPETREE) && mkdir -p $(TYPETREE)
	@for f in perfdata/*; do ln -s "$(CURDIR)/$$f" $(TYPETREE)/; done
	@for d in models pipelines downstream; do ln -s "$(CURDIR)/$$d" $(TYPETREE)/$$d; done
	@$(BIN)/mypy > .typecheck/mypy.txt 2>&1; rc=$$?; \
	  sed -e 's#^\.typecheck/perfdata/\(models\|pipelines\|downstream\)/#\1/#' \
	      -e 's#^\.typecheck/perfdata/#perfdata/#' .typecheck/mypy.txt; exit $$rc

clean:
	rm -rf $(VENV) demo-out .pytest_cache .typecheck
