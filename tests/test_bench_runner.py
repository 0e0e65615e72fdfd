"""`omnilake bench`: suite discovery and the ratio tables its charts are drawn from."""

import pytest

from omnilake import errors as E
from omnilake.bench_runner import bench_folder, ratio_tables, run, suites

RESULTS = """# Benchmark results

<!-- section: demo -->
## Demo: OmniLake vs Peer

| query | OmniLake ms | vs Peer | note |
|---|---:|---:|---|
| q1 | 10 | 1.50x | yes |
| q2 | 20 | error | yes |
| **geomean** | | **1.20x** | |
<!-- end: demo -->

<!-- section: plain -->
| a | b |
|---|---|
| 1 | 2 |
<!-- end: plain -->
"""


def test_ratio_columns_are_found_per_section():
    tables = ratio_tables(RESULTS)
    assert list(tables) == ["demo"]
    title, labels, columns = tables["demo"]
    assert title == "Demo: OmniLake vs Peer"
    assert labels == ["q1", "q2", "geomean"]
    assert list(columns) == ["vs Peer"]
    values = columns["vs Peer"]
    assert values[0] == 1.5 and values[2] == 1.2 and values[1] != values[1]  # NaN for "error"


def test_suites_are_the_bench_scripts():
    found = suites(bench_folder())
    assert {"scan", "ingest", "encoder", "wire", "tpch"} <= set(found)


def test_unknown_suite_is_a_clear_error(tmp_path):
    with pytest.raises(E.InvalidParameterValue, match="unknown suite"):
        run(["no-such-suite"], quick=True, results=tmp_path / "R.md", charts=False, progress=None)
