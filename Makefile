.PHONY: install test test-fast bench demo lint

install:
	pip install -e ".[dev]"

test:
	pytest

test-fast:
	pytest -m "not slow"

bench:
	omnilake bench

demo:
	omnilake demo

lint:
	ruff check omnilake engine catalog storage gpu server tests bench
