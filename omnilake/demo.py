"""`omnilake demo`: a small warehouse of related tables, IoT readings and vectors, queried."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pyarrow as pa

from omnilake.cli import format_table

SCHEMA = "demo"

SHOWCASE = [
    ("Revenue per country (join + GROUP BY)",
     """SELECT c.country, count(*) AS orders, sum(o.amount) AS revenue
        FROM demo.orders o JOIN demo.customers c ON o.customer_id = c.id
        GROUP BY c.country ORDER BY revenue DESC"""),
    ("Top customers with a window rank",
     """SELECT name, country, spent, rank() OVER (PARTITION BY country ORDER BY spent DESC) AS rank_in_country
        FROM (SELECT c.name, c.country, sum(o.amount) AS spent
              FROM demo.orders o JOIN demo.customers c ON o.customer_id = c.id GROUP BY c.name, c.country) s
        ORDER BY spent DESC LIMIT 5"""),
    ("Hourly temperature per device, last 6 hours of data (IoT)",
     """SELECT device, date_bin(INTERVAL '1 hour', ts) AS hour, round(avg(temperature), 2) AS avg_temp,
               max(temperature) AS max_temp
        FROM demo.readings
        WHERE ts >= TIMESTAMPTZ '2026-01-07 18:00:00+00' AND device IN ('sensor-1', 'sensor-2')
        GROUP BY device, hour ORDER BY device, hour"""),
    ("Devices that ran hot (CTE + HAVING)",
     """WITH daily AS (SELECT device, date_trunc('day', ts) AS day, max(temperature) AS peak
                      FROM demo.readings GROUP BY device, day)
        SELECT device, count(*) AS hot_days FROM daily WHERE peak > 30 GROUP BY device
        ORDER BY hot_days DESC, device LIMIT 5"""),
    ("Documents nearest to document 1 (vector distance)",
     """SELECT d.id, d.title, round(array_distance(d.embedding, q.embedding), 4) AS l2
        FROM demo.documents d, (SELECT embedding FROM demo.documents WHERE id = 1) q
        ORDER BY l2 LIMIT 5"""),
    ("The file pruning behind a selective query (EXPLAIN)",
     """EXPLAIN SELECT count(*) FROM demo.orders WHERE id = 42"""),
]


def run_demo(conn, rows: int = 200_000, out=print) -> int:
    started = time.perf_counter()
    _step(out, "Creating schema demo", lambda: conn.sql(
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"))
    _step(out, "Loading customers and orders", lambda: _load_sales(conn))
    _step(out, f"Loading {rows:,} IoT readings", lambda: _load_readings(conn, rows))
    _step(out, "Loading documents with 16-dimensional vectors", lambda: _load_documents(conn))
    for title, sql in SHOWCASE:
        out(f"\n== {title}\n{_indent(sql)}")
        t0 = time.perf_counter()
        table = conn.sql(sql).to_arrow()
        elapsed = (time.perf_counter() - t0) * 1000
        if title.startswith("The file pruning"):
            table = table.slice(0, 1)
        out(format_table(table, max_width=120))
        out(f"Time: {elapsed:.1f} ms")
    snapshot = conn.sql("SELECT count(*) AS n FROM demo.orders").to_arrow().column("n")[0].as_py()
    out(f"\nDone in {time.perf_counter() - started:.1f} s: {snapshot:,} orders, {rows:,} readings "
        f"in {conn.warehouse}. Try: omnilake sql \"SELECT * FROM demo.customers LIMIT 5\", or "
        "omnilake serve and then psql -h 127.0.0.1 -p 5433 -d omnilake")
    return 0


def _step(out, label: str, fn) -> None:
    t0 = time.perf_counter()
    fn()
    out(f"{label} ... {time.perf_counter() - t0:.2f} s")


def _indent(sql: str) -> str:
    return "\n".join("   " + line.strip() for line in sql.strip().splitlines())


def _load_sales(conn) -> None:
    rng = np.random.default_rng(7)
    conn.sql("""CREATE TABLE demo.customers (id INT PRIMARY KEY, name TEXT NOT NULL,
                country VARCHAR(2) NOT NULL, signed_up DATE)""")
    conn.sql("""CREATE TABLE demo.orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL,
                amount NUMERIC(12, 2) NOT NULL, ordered_at TIMESTAMPTZ NOT NULL)""")
    countries = np.array(["DE", "FR", "US", "JP", "BR", "IN"])
    n_customers, n_orders = 1_000, 50_000
    start = dt.date(2024, 1, 1)
    conn.insert("demo.customers", pa.table({
        "id": pa.array(np.arange(1, n_customers + 1), pa.int32()),
        "name": [f"customer-{i}" for i in range(1, n_customers + 1)],
        "country": countries[rng.integers(0, len(countries), n_customers)],
        "signed_up": [start + dt.timedelta(days=int(d)) for d in rng.integers(0, 700, n_customers)],
    }))
    base = np.datetime64("2025-01-01T00:00:00", "us")
    orders = pa.table({
        "id": np.arange(1, n_orders + 1),
        "customer_id": pa.array(rng.integers(1, n_customers + 1, n_orders), pa.int32()),
        "amount": pa.array(np.round(rng.gamma(2.0, 40.0, n_orders), 2)).cast(pa.decimal128(12, 2)),
        "ordered_at": pa.array(base + rng.integers(0, 365 * 86400, n_orders) * 1_000_000,
                               pa.timestamp("us", tz="UTC")),
    })
    for offset in range(0, n_orders, 10_000):  # five files, so EXPLAIN can show file pruning
        conn.insert("demo.orders", orders.slice(offset, 10_000))
        conn.flush("demo.orders")


def _load_readings(conn, rows: int) -> None:
    rng = np.random.default_rng(11)
    conn.sql("""CREATE TABLE demo.readings (ts TIMESTAMPTZ NOT NULL, device TEXT NOT NULL,
                temperature DOUBLE PRECISION, humidity REAL)""")
    devices = 50
    per_device = max(rows // devices, 1)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    step = np.int64(7 * 86400 * 1_000_000 // per_device)  # one week of readings
    ts = start + (np.arange(per_device, dtype=np.int64) * step)
    device_ids = np.repeat(np.arange(devices), per_device)
    hours = (np.tile(ts, devices) - start).astype("timedelta64[h]").astype(np.int64)
    temperature = 20 + 5 * np.sin(hours / 24 * 2 * np.pi) + rng.normal(0, 1.5, devices * per_device) \
        + device_ids % 5
    conn.insert("demo.readings", pa.table({
        "ts": pa.array(np.tile(ts, devices), pa.timestamp("us", tz="UTC")),
        "device": [f"sensor-{d}" for d in device_ids],
        "temperature": temperature,
        "humidity": pa.array(rng.uniform(30, 70, devices * per_device), pa.float32()),
    }))


def _load_documents(conn) -> None:
    rng = np.random.default_rng(3)
    conn.sql("CREATE TABLE demo.documents (id INT PRIMARY KEY, title TEXT, embedding VECTOR(16))")
    topics = ["pump maintenance", "sensor calibration", "invoice dispute", "shipping delay"]
    centers = rng.normal(0, 1, (len(topics), 16))
    n = 400
    topic = rng.integers(0, len(topics), n)
    vectors = (centers[topic] + rng.normal(0, 0.3, (n, 16))).astype(np.float32)
    conn.insert("demo.documents", pa.table({
        "id": pa.array(np.arange(1, n + 1), pa.int32()),
        "title": [f"{topics[t]} #{i + 1}" for i, t in enumerate(topic)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 16),
    }))
