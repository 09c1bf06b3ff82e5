# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
# `make lint` (format, lint rules, types) runs in CI before the tests.
.PHONY: setup demo test test-fast lint bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/cvo demo

test: setup
	bash scripts/install_chromium.sh
	.venv/bin/pytest

test-fast: setup
	.venv/bin/pytest -m "not slow"

lint: setup
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy

bench:
	CVO_EXTRAS=test,bench bash scripts/setup.sh
	.venv/bin/python benchmarks/run_all.py

clean:
	rm -rf lake spark-warehouse metastore_db derby.log
