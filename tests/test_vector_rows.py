"""Vector search returns whole rows, text columns included, from files and the memtable."""

import numpy as np


def test_search_returns_text_columns_from_files_and_memtable(conn):
    conn.execute("CREATE TABLE docs (id BIGINT, title TEXT, body BYTEA, emb VECTOR(3))")
    conn.execute("INSERT INTO docs VALUES (1, 'one', '\\x01', '[1,0,0]'), (2, 'two', NULL, '[0,1,0]')")
    conn.flush()
    conn.execute("INSERT INTO docs VALUES (3, 'three', '\\x03', '[0.9,0.1,0]')")  # memtable
    rows = conn.execute("SELECT id, title, body FROM docs ORDER BY emb <-> %s LIMIT 2",
                        (np.array([1.0, 0.0, 0.0]),)).fetchall()
    assert rows == [(1, "one", b"\x01"), (3, "three", b"\x03")]
