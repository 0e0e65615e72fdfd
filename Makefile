.PHONY: install test test-fast bench demo lint

install:
	pip install -e ".[dev]"

test:
	pytest

test-fast:
	pytest -m "not slow"

bench:
	python bench/scan_bench.py --results bench/RESULTS.md

demo:
	omnilake demo

lint:
	ruff check omnilake engine catalog storage gpu server tests bench
