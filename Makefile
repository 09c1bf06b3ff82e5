# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
.PHONY: setup demo test test-fast bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/cvo demo

test: setup
	bash scripts/install_chromium.sh
	.venv/bin/pytest

test-fast: setup
	.venv/bin/pytest -m "not slow"

bench:
	CVO_EXTRAS=test,bench bash scripts/setup.sh
	.venv/bin/python benchmarks/run_all.py

clean:
	rm -rf lake spark-warehouse metastore_db derby.log
