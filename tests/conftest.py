import pytest

import omnilake


@pytest.fixture
def warehouse(tmp_path):
    return str(tmp_path / "wh")


@pytest.fixture
def conn(warehouse):
    with omnilake.connect(warehouse) as connection:
        yield connection


@pytest.fixture
def cur(conn):
    return conn.cursor()


def rows(cur, sql, params=None):
    cur.execute(sql, params)
    return cur.fetchall()
