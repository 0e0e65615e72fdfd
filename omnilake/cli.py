"""The `omnilake` command: `sql` and `demo` (more commands arrive with their features)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from omnilake import errors as E
from omnilake.config import Settings

DEFAULT_CLI_WAREHOUSE = "./warehouse"
HISTORY_FILE = Path.home() / ".omnilake_history"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnilake",
        description="OmniLake: rows, IoT time series, vectors and files as SQL on Iceberg tables.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sql = sub.add_parser("sql", help="run one statement, or an interactive SQL prompt with history",
                         description="Run SQL against a warehouse. With no statement, opens an "
                         "interactive prompt (statements end with ';', \\q quits).")
    sql.add_argument("statement", nargs="?", help="SQL to run; omit for the interactive prompt")
    _add_settings(sql)
    sql.set_defaults(func=cmd_sql)

    demo = sub.add_parser("demo", help="build a sample warehouse and run showcase queries",
                          description="Creates customers, orders, IoT readings and document "
                          "vectors in the warehouse, then runs showcase queries with timings.")
    demo.add_argument("--rows", type=int, default=200_000, help="IoT readings to generate (default 200000)")
    _add_settings(demo)
    demo.set_defaults(func=cmd_demo)
    maintain = sub.add_parser("maintenance", help="compact small files, expire old snapshots, "
                              "remove orphan files", description="Runs OPTIMIZE and VACUUM on "
                              "every table of the warehouse (or the ones named), with progress.")
    maintain.add_argument("tables", nargs="*", help="schema.table names (default: all tables)")
    _add_settings(maintain)
    maintain.set_defaults(func=cmd_maintenance)

    ingest = sub.add_parser("ingest", help="load a folder of files into a table, one row per file",
                            description="One row per file: path, size, mtime, mime, sha256, the "
                            "content as a BLOB, image width/height, text of .txt/.md/.pdf. "
                            "Files unchanged since the last run are skipped.")
    ingest.add_argument("folder", nargs="+", help="folders or files to ingest")
    ingest.add_argument("--table", required=True, help="target table (created if missing)")
    ingest.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    ingest.add_argument("--embed", nargs="?", const="minilm", default=None, metavar="MODEL",
                        help="fill an embedding column from the text (model: minilm)")
    _add_settings(ingest)
    ingest.set_defaults(func=cmd_ingest)

    serve = sub.add_parser("serve", help="PostgreSQL wire server (psql, psycopg, JDBC, BI tools)",
                           description="Serve the warehouse over the PostgreSQL protocol as the "
                           "database 'omnilake'. Without users (CREATE USER), only loopback "
                           "addresses are allowed and every client is trusted.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5433, help="port (default 5433; 0 picks a free one)")
    serve.add_argument("--tls-cert", default=None, help="certificate file (PEM) to offer TLS")
    serve.add_argument("--tls-key", default=None, help="private key file (PEM) for --tls-cert")
    serve.add_argument("--http-port", type=int, default=None,
                       help="also accept InfluxDB line protocol (/write, /api/v2/write) over HTTP "
                            "on this port (loopback only; 8086 is InfluxDB's)")
    serve.add_argument("--log-statements", action="store_true",
                       help="log the text of every statement clients send (for debugging clients)")
    _add_settings(serve)
    serve.set_defaults(func=cmd_serve)

    bench = sub.add_parser("bench", help="run the benchmark suites (from a source checkout)",
                           description="Runs bench/<suite>_bench.py for each suite named (all by "
                           "default), writes their sections of bench/RESULTS.md and draws PNG charts "
                           "of every ratio column into bench/charts/.")
    bench.add_argument("suites", nargs="*", help="suites to run (default: all)")
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    bench.add_argument("--results", default=None, help="RESULTS.md to update (default bench/RESULTS.md)")
    bench.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    bench.set_defaults(func=cmd_bench)

    stats = sub.add_parser("stats", help="read cache counters (hits, misses, bytes)",
                           description="Prints the counters of the local read cache of "
                           "object-storage warehouses, summed over every process sharing its "
                           "folder (also in SQL: SELECT * FROM omnilake_system.read_cache).")
    _add_settings(stats)
    stats.set_defaults(func=cmd_stats)

    models = sub.add_parser("models", help="download the built-in embedding model",
                            description="Manage model files kept in the model cache.")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = models_sub.add_parser("fetch", help="download a model into the cache (minilm)")
    fetch.add_argument("name", nargs="?", default="minilm", help="model to fetch (default: minilm)")
    fetch.add_argument("--model-dir", default=None, help="cache folder (default: $OMNILAKE_MODEL_DIR "
                       "or ~/.cache/omnilake/models)")
    fetch.set_defaults(func=cmd_models_fetch)
    return parser


def cmd_ingest(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        done = conn.ingest_files(args.folder, args.table, recursive=args.recursive,
                                 embed=args.embed)
    print(f"{args.table}: {done.added} file(s) added, {done.replaced} changed, "
          f"{done.skipped} unchanged ({done.bytes / 1e6:.1f} MB read)")
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    from omnilake.engine.catalog_views import namespaces, table_names
    from omnilake.engine.maintenance import optimize_statement, vacuum_statement
    with _connect(args) as conn:
        session = conn.session
        targets = [tuple(t.split(".", 1)) if "." in t else (session.schema, t) for t in args.tables] \
            or [(ns, t) for ns in namespaces(session) for t in table_names(session, ns)]
        progress = _progress(len(targets))
        for namespace, name in targets:
            progress.set_description(f"{namespace}.{name}")
            compacted = optimize_statement(session, namespace, name)
            vacuumed = vacuum_statement(session, namespace, name)
            progress.write(f"{namespace}.{name}: {compacted.files_rewritten} small file(s) -> "
                           f"{compacted.files_written}; {vacuumed.snapshots_expired} snapshot(s) "
                           f"expired; {vacuumed.files_removed} file(s) removed "
                           f"({vacuumed.bytes_removed / 1e6:.1f} MB)")
            progress.update(1)
        progress.close()
        if not args.tables:  # blobs are shared by all tables: only a whole run collects them
            from omnilake.engine.maintenance import vacuum_blobs_statement
            blobs = vacuum_blobs_statement(session)
            print(f"blobs: {blobs['files_removed']} unreferenced object(s) removed "
                  f"({blobs['bytes_removed'] / 1e6:.1f} MB)")
    return 0


def _progress(total: int):
    """A tqdm progress bar on a terminal; plain lines otherwise."""
    try:
        from tqdm import tqdm
        return tqdm(total=total, unit="table", disable=None)
    except ImportError:  # tqdm arrives with pyiceberg; keep working without it
        class Plain:
            def set_description(self, text): pass
            def write(self, text): print(text, flush=True)
            def update(self, n): pass
            def close(self): pass
        return Plain()


def cmd_stats(args: argparse.Namespace) -> int:
    from omnilake.engine.system_views import read_cache_stats
    settings = Settings.load(**{name: getattr(args, name) for name, *_ in Settings.declarations()
                                if getattr(args, name, None) is not None})
    stats = read_cache_stats(settings)
    lookups = stats["hits"] + stats["misses"]
    for key, value in stats.items():
        print(f"read_cache.{key}: {value}")
    print(f"read_cache.hit_ratio: {stats['hits'] / lookups:.3f}" if lookups else
          "read_cache.hit_ratio: -")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from omnilake.gpu.models import fetch
    model_dir = args.model_dir or os.environ.get("OMNILAKE_MODEL_DIR")
    path = fetch(args.name, model_dir, progress=lambda message: print(message, flush=True))
    print(f"{args.name}: {path}")
    return 0


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """Every declared setting as an option, with its help text (see omnilake.config)."""
    for name, kind, default, help_text in Settings.declarations():
        flag = "--" + name.replace("_", "-")
        if name == "warehouse":
            parser.add_argument("-w", flag, default=None,
                                help=f"{help_text} CLI default: {DEFAULT_CLI_WAREHOUSE} "
                                     "(or $OMNILAKE_WAREHOUSE).")
        else:
            parser.add_argument(flag, type=kind, default=None, help=f"{help_text} (default: {default})")


def _connect(args: argparse.Namespace):
    import omnilake
    settings = {name: getattr(args, name) for name, *_ in Settings.declarations()
                if getattr(args, name, None) is not None}
    settings.setdefault("warehouse", os.environ.get("OMNILAKE_WAREHOUSE") or DEFAULT_CLI_WAREHOUSE)
    return omnilake.connect(**settings)


def format_table(table, max_rows: int = 200, max_width: int = 40) -> str:
    """Render an Arrow table as an aligned text grid, psql style."""
    names = table.column_names
    rows = [tuple(_cell(v, max_width) for v in row)
            for row in zip(*(c.to_pylist() for c in table.slice(0, max_rows).columns))]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    more = table.num_rows - len(rows)
    footer = f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})"
    if more > 0:
        footer = f"... {more} more\n{footer}"
    return "\n".join(lines + [footer])


def _cell(value, width: int) -> str:
    if value is None:
        text = ""
    elif isinstance(value, list) and len(value) > 6:
        text = "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value[:4]) + ", ...]"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def run_and_print(conn, sql: str, out=sys.stdout) -> bool:
    """Run `sql`, print its result and time; return False on an error (printed, not raised)."""
    started = time.perf_counter()
    try:
        results = conn.session.execute(sql)
    except E.Error as exc:
        print(f"ERROR {exc.sqlstate}: {exc}", file=sys.stderr)
        return False
    elapsed = (time.perf_counter() - started) * 1000
    for result in results:
        if result.table is not None:
            print(format_table(result.table), file=out)
        else:
            print(result.status, file=out)
    print(f"Time: {elapsed:.1f} ms", file=out)
    return True


def cmd_sql(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        if args.statement is not None:
            return 0 if run_and_print(conn, args.statement) else 1
        if not sys.stdin.isatty():
            return 0 if run_and_print(conn, sys.stdin.read()) else 1
        return _repl(conn)


def _repl(conn) -> int:
    try:
        import readline
        if HISTORY_FILE.exists():
            readline.read_history_file(HISTORY_FILE)
    except (ImportError, OSError):
        readline = None  # type: ignore[assignment]
    print(f"OmniLake SQL on {conn.warehouse}. End statements with ';'. \\q quits.")
    buffer: list[str] = []
    try:
        while True:
            try:
                line = input("omnilake=> " if not buffer else "omnilake-> ")
            except EOFError:
                print()
                break
            if not buffer and line.strip() in ("\\q", "quit", "exit"):
                break
            buffer.append(line)
            if line.rstrip().endswith(";"):
                run_and_print(conn, "\n".join(buffer))
                buffer.clear()
    except KeyboardInterrupt:
        print()
    finally:
        if readline is not None:
            try:
                readline.write_history_file(HISTORY_FILE)
            except OSError:
                pass
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path
    from omnilake.bench_runner import run

    def progress(total: int):
        bar = _progress(total)
        if hasattr(bar, "unit"):
            bar.unit = "suite"
        return bar
    return run(args.suites, args.quick, Path(args.results) if args.results else None,
               False if args.no_charts else None, progress)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    from omnilake.server.server import serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.log_statements:
        logging.getLogger("omnilake.server.statements").setLevel(logging.DEBUG)

    def ready(server) -> None:
        http = f", line protocol on http://{server.host}:{server.http_port}" if server.http else ""
        print(f"omnilake: serving {server.engine.settings.warehouse} on "
              f"{server.host}:{server.port} (database omnilake){http}", flush=True)

    with _connect(args) as conn:
        serve(conn.session.engine, args.host, args.port, args.tls_cert, args.tls_key, ready,
              http_port=args.http_port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from omnilake.demo import run_demo
    with _connect(args) as conn:
        return run_demo(conn, rows=args.rows)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except E.Error as exc:
        print(f"ERROR {exc.sqlstate}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
