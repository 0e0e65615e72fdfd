"""The foundation suite's statement tests, run again on an S3 warehouse (moto_server on
loopback): every test of these modules that uses only the `conn`/`cur` fixtures is collected
here a second time, with `conn` bound to a fresh bucket."""

from __future__ import annotations

import inspect

import pytest

import omnilake
import test_dbapi
import test_ddl
import test_dml
import test_errors
import test_query
import test_transactions

pytestmark = pytest.mark.s3

_MODULES = (test_query, test_dml, test_ddl, test_transactions, test_dbapi, test_errors)
_FIXTURES = {"conn", "cur"}


def _contract_tests():
    for module in _MODULES:
        for name, fn in vars(module).items():
            if not (name.startswith("test_") and inspect.isfunction(fn)):
                continue
            params = set(inspect.signature(fn).parameters)
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "parametrize":
                    names = mark.args[0]
                    params -= set(names.split(",") if isinstance(names, str) else names)
            params = {p.strip() for p in params}
            if params & _FIXTURES and params <= _FIXTURES:
                yield f"{name}__{module.__name__}", fn


for _name, _fn in _contract_tests():
    globals()[_name] = _fn


@pytest.fixture
def conn(s3_warehouse):
    with omnilake.connect(**s3_warehouse) as connection:
        yield connection
