# mailtls developer commands. The README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check fmt bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,fast]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mailtls serve

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra -n auto --dist loadfile $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

fmt: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/full_service.py --imap-pop3
	$(BIN)/python benchmarks/smtp_sessions.py
	$(BIN)/python benchmarks/idle_memory.py
	$(BIN)/python benchmarks/endpoint_sessions.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
