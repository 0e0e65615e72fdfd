"""Engine: SQL front (sqlglot), statement execution, DataFusion sessions, Iceberg scans."""

from omnilake.engine.engine import Engine, Result, Session

__all__ = ["Engine", "Result", "Session"]
