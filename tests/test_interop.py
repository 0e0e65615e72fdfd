"""Tables are plain Iceberg: pyiceberg reads what OmniLake wrote, OmniLake queries what
pyiceberg wrote (partitioned, evolved, with row-level delete files)."""

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

import omnilake

from conftest import rows


def plain_catalog(warehouse):
    import pathlib
    root = pathlib.Path(warehouse).resolve()
    return SqlCatalog("omnilake", uri=f"sqlite:///{root / 'catalog.db'}", warehouse=root.as_uri())


def test_pyiceberg_reads_what_omnilake_wrote(warehouse):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE w (id INT, name TEXT, v VECTOR(2))")
        conn.sql("INSERT INTO w VALUES (1, 'a', '[1, 2]'), (2, 'b', NULL)")
        conn.sql("UPDATE w SET name = 'B' WHERE id = 2")
    table = plain_catalog(warehouse).load_table("public.w").scan().to_arrow().sort_by("id")
    assert table.column("id").to_pylist() == [1, 2]
    assert table.column("name").to_pylist() == ["a", "B"]
    assert table.column("v").to_pylist() == [[1.0, 2.0], None]


def test_omnilake_queries_what_pyiceberg_wrote(warehouse):
    with omnilake.connect(warehouse):
        pass  # creates the warehouse and its catalog
    catalog = plain_catalog(warehouse)
    schema = Schema(NestedField(1, "city", StringType(), required=False),
                    NestedField(2, "temp", DoubleType(), required=False),
                    NestedField(3, "n", LongType(), required=False))
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(),
                                        name="city"))
    table = catalog.create_table("public.weather", schema, partition_spec=spec)
    table.append(pa.table({"city": ["oslo", "rome", "oslo"], "temp": [-3.0, 14.5, -1.0], "n": [1, 2, 3]}))
    with table.update_schema() as update:
        update.rename_column("temp", "celsius")
        update.add_column("note", StringType())
    table = catalog.load_table("public.weather")
    table.append(pa.table({"city": ["rome"], "celsius": [16.0], "n": [4], "note": ["sunny"]}))
    with omnilake.connect(warehouse) as conn:
        cur = conn.cursor()
        assert rows(cur, "SELECT city, celsius, note FROM weather ORDER BY n") == [
            ("oslo", -3.0, None), ("rome", 14.5, None), ("oslo", -1.0, None), ("rome", 16.0, "sunny")]
        plan = dict(rows(cur, "EXPLAIN SELECT * FROM weather WHERE city = 'oslo'"))
        assert "pruned=2" in plan["omnilake_scan"] and "files=1/3" in plan["omnilake_scan"]
        assert rows(cur, "SELECT sum(n) FROM weather WHERE city = 'oslo'") == [(4,)]
        assert rows(cur, "SELECT data_type FROM information_schema.columns WHERE "
                         "table_name = 'weather' AND column_name = 'n'") == [("bigint",)]


def test_position_delete_files_written_by_other_engines_are_applied(warehouse):
    from iceberg_deletes import delete_positions
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE d (id INT, name TEXT)")
        conn.sql("INSERT INTO d VALUES (0, 'a'), (1, 'b'), (2, 'c'), (3, 'd')")
        conn.flush()
        conn.sql("INSERT INTO d VALUES (10, 'x')")
        conn.flush()
        table = plain_catalog(warehouse).load_table("public.d")
        first_file = sorted(table.scan().plan_files(), key=lambda t: t.file.record_count)[-1].file
        delete_positions(table, first_file.file_path, [1, 3])
        # pyiceberg itself agrees the rows are gone ...
        reference = plain_catalog(warehouse).load_table("public.d").scan().to_arrow()
        assert sorted(reference.column("id").to_pylist()) == [0, 2, 10]
        # ... and so does OmniLake, which reads that file through pyiceberg's reader.
        cur = conn.cursor()
        assert rows(cur, "SELECT id, name FROM d ORDER BY id") == [(0, "a"), (2, "c"), (10, "x")]
        plan = dict(rows(cur, "EXPLAIN SELECT * FROM d"))
        # Without file_path bounds the delete file may apply to every data file in the partition.
        assert "with_deletes=0" not in plan["omnilake_scan"]
        assert rows(cur, "SELECT count(*) FROM d WHERE id < 5") == [(2,)]
