# Every target works on a fresh machine: it makes .venv if missing and installs the
# package (building the Rust extension in release mode) before doing its job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SOURCES := pyproject.toml Cargo.toml Cargo.lock $(wildcard rust/src/*.rs rust/src/*/*.rs)

.PHONY: install serve test test-rust test-py bench lint fmt clean

$(STAMP): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/llm-proxy serve $(ARGS)

test: $(STAMP)
	$(PY) scripts/gen_grpc.py --check
	cargo test --quiet
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check python tests benchmarks scripts
	$(VENV)/bin/ruff check python tests benchmarks scripts
	$(VENV)/bin/mypy
	cargo fmt --check
	cargo clippy --all-targets --features python -- -D warnings
	cargo clippy --all-targets -- -D warnings

fmt: $(STAMP)
	$(VENV)/bin/ruff format python tests benchmarks scripts
	$(VENV)/bin/ruff check --fix python tests benchmarks scripts
	cargo fmt

clean:
	rm -rf $(VENV) target
