"""The `omnilake` command, run as a real subprocess."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

CLI = [sys.executable, "-m", "omnilake"]


def run(*args, stdin=None, env=None, cwd=None):
    # Run outside the source tree: `python -m` puts the working folder on sys.path, and the
    # repository's top-level folders are mapped into the installed package, not importable as is.
    return subprocess.run(CLI + list(args), input=stdin, capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd or os.path.expanduser("~"))


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("sql", "demo"):
        assert command in out.stdout
    sql_help = run("sql", "--help").stdout
    assert "--warehouse" in sql_help and "--dialect" in sql_help and "--target-partitions" in sql_help


def test_sql_statement_and_error_exit_code(tmp_path):
    wh = str(tmp_path / "wh")
    assert run("sql", "-w", wh, "CREATE TABLE t (a INT, b TEXT)").returncode == 0
    assert run("sql", "-w", wh, "INSERT INTO t VALUES (1, 'x'), (2, 'y')").stdout.startswith("INSERT 0 2")
    out = run("sql", "-w", wh, "SELECT b, a FROM t ORDER BY a")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split("|")[0].strip() == "b" and "x" in lines[2] and "(2 rows)" in out.stdout
    bad = run("sql", "-w", wh, "SELECT nope FROM t")
    assert bad.returncode == 1
    assert "ERROR 42703" in bad.stderr and "Traceback" not in bad.stderr


def test_sql_reads_statements_from_stdin(tmp_path):
    out = run("sql", "-w", str(tmp_path / "wh"), stdin="CREATE TABLE s (a INT); INSERT INTO s VALUES (7); "
              "SELECT a * 6 AS answer FROM s;")
    assert out.returncode == 0 and "42" in out.stdout


def test_interactive_prompt_with_history(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a terminal
        os.chdir(tmp_path)
        os.execvpe(sys.executable, CLI + ["sql", "-w", str(tmp_path / "wh")], env)
    output = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal output
        deadline = time.time() + timeout
        while marker not in output and time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    break
        assert marker in output, output.decode(errors="replace")

    read_until(b"omnilake=> ")
    os.write(fd, b"SELECT 40 +\r")
    read_until(b"omnilake-> ")
    os.write(fd, b"2 AS answer;\r")
    read_until(b"(1 row)")
    os.write(fd, b"\\q\r")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"42" in output
    assert "SELECT 40" in (tmp_path / ".omnilake_history").read_text()


@pytest.mark.slow
def test_demo_builds_and_queries_a_warehouse(tmp_path):
    out = run("demo", "-w", str(tmp_path / "wh"), "--rows", "5000")
    assert out.returncode == 0, out.stderr
    for title in ("Revenue per country", "IoT", "vector distance", "files=1/5 pruned=4"):
        assert title in out.stdout
    again = run("demo", "-w", str(tmp_path / "wh"), "--rows", "5000")  # idempotent
    assert again.returncode == 0, again.stderr
