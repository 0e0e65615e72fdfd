"""Session-level statements that sqlglot does not parse into a useful tree: savepoints,
RESET, SET TIME ZONE, DEALLOCATE/DISCARD, BEGIN with options, and CREATE/ALTER/DROP USER.

They are recognised by pattern before parsing (`recognise`) and become a `SessionCommand`
node, so they travel through `Session.run` and its transaction rules like any statement.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlglot import exp

from omnilake import errors as E

if TYPE_CHECKING:
    from omnilake.engine.engine import Result, Session


class SessionCommand(exp.Expression):
    arg_types = {"this": True, "groups": False}

    @property
    def kind(self) -> str:
        return self.this

    def sql(self, dialect=None, **opts) -> str:  # noqa: ARG002 - for error messages
        return f"{self.kind.upper()} {' '.join(g or '' for g in self.args.get('groups') or [])}"


_NAME = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_PATTERNS = [
    ("savepoint", rf"SAVEPOINT\s+{_NAME}"),
    ("release", rf"RELEASE\s+(?:SAVEPOINT\s+)?{_NAME}"),
    ("rollback_to", rf"ROLLBACK\s+(?:WORK\s+|TRANSACTION\s+)?TO\s+(?:SAVEPOINT\s+)?{_NAME}"),
    ("begin", r"(?:BEGIN|START\s+TRANSACTION)(?:\s+(?:WORK|TRANSACTION))?\s+((?:ISOLATION|READ|NOT|DEFERRABLE).*)"),
    ("set_time_zone", r"SET\s+(?:SESSION\s+|LOCAL\s+)?TIME\s+ZONE\s+(.+)"),
    ("set_ignored", r"SET\s+(?:SESSION\s+CHARACTERISTICS\s+AS\s+)?TRANSACTION\s+(.+)"),
    ("reset", r"RESET\s+(ALL|[A-Za-z_.]+)"),
    ("deallocate", rf"DEALLOCATE\s+(?:PREPARE\s+)?(ALL|{_NAME})"),
    ("discard", r"DISCARD\s+(ALL|PLANS|SEQUENCES|TEMP|TEMPORARY)"),
    ("unlisten", r"UNLISTEN\s+(\*|[A-Za-z_][A-Za-z0-9_]*)"),
    ("create_user", rf"CREATE\s+(?:USER|ROLE)\s+{_NAME}(.*)"),
    ("alter_user", rf"ALTER\s+(?:USER|ROLE)\s+{_NAME}(.*)"),
    ("drop_user", rf"DROP\s+(?:USER|ROLE)\s+(IF\s+EXISTS\s+)?{_NAME}"),
]
_COMPILED = [(kind, re.compile(rf"^\s*{pattern}\s*;?\s*$", re.I | re.S)) for kind, pattern in _PATTERNS]
_FIRST_WORDS = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "START", "SET", "RESET",
                "DEALLOCATE", "DISCARD", "UNLISTEN", "CREATE", "ALTER", "DROP")


def recognise(sql: str) -> SessionCommand | None:
    words = sql.lstrip().split(None, 2)
    if not words or words[0].upper() not in _FIRST_WORDS:
        return None
    if words[0].upper() in ("CREATE", "ALTER", "DROP") and \
            (len(words) < 2 or words[1].upper() not in ("USER", "ROLE")):
        return None
    for kind, pattern in _COMPILED:
        match = pattern.match(sql)
        if match:
            return SessionCommand(this=kind, groups=list(match.groups()))
    return None


def _name(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


def run(session: "Session", command: SessionCommand) -> "Result":
    from omnilake.engine.engine import Result
    from omnilake.engine.transaction import Transaction
    groups = command.args.get("groups") or []
    kind = command.kind
    tx = session.transaction
    if kind in ("savepoint", "release", "rollback_to"):
        if tx is None:
            raise E.Error(f"{kind.upper().replace('_', ' ')} can only be used in transaction blocks",
                          sqlstate="25P01")
        name = _name(groups[0])
        if kind == "savepoint":
            tx.savepoint(name)
            return Result(status="SAVEPOINT")
        if kind == "release":
            tx.release(name)
            return Result(status="RELEASE")
        tx.rollback_to(name)
        return Result(status="ROLLBACK")
    if kind == "begin":
        if tx is None:
            session.transaction = Transaction()
        return Result(status="BEGIN")
    if kind == "set_time_zone":
        value = groups[0].strip().strip("'\"")
        if value.upper() not in ("UTC", "GMT", "ETC/UTC", "Z", "LOCAL", "DEFAULT", "00:00", "0"):
            raise E.NotSupportedError(f"time zone {value} is not supported yet; sessions run in UTC")
        session.variables["timezone"] = "UTC"
        return Result(status="SET")
    if kind == "set_ignored":
        return Result(status="SET")
    if kind == "reset":
        session.reset(None if groups[0].upper() == "ALL" else groups[0].lower())
        return Result(status="RESET")
    if kind == "deallocate":
        return Result(status="DEALLOCATE ALL" if groups[0].upper() == "ALL" else "DEALLOCATE")
    if kind == "discard":
        if groups[0].upper() == "ALL":
            if tx is not None:
                raise E.Error("DISCARD ALL cannot run inside a transaction block",
                              sqlstate="25001")
            session.reset(None)
        return Result(status=f"DISCARD {groups[0].upper()}")
    if kind == "unlisten":
        return Result(status="UNLISTEN")
    if kind in ("create_user", "alter_user", "drop_user"):
        return _users(session, kind, groups)
    raise E.NotSupportedError(f"{kind} is not supported")


_PASSWORD = re.compile(r"\bPASSWORD\s+('(?:[^']|'')*'|NULL)", re.I | re.S)
_OPTIONS = re.compile(r"\b(SUPERUSER|NOSUPERUSER|LOGIN|NOLOGIN|CREATEDB|NOCREATEDB|CREATEROLE|"
                      r"NOCREATEROLE|INHERIT|NOINHERIT)\b", re.I)


def _users(session: "Session", kind: str, groups: list[str]) -> "Result":
    from omnilake.catalog.users import Users
    from omnilake.engine.engine import Result
    users = Users(session.engine.warehouse)
    if kind == "drop_user":
        name = _name(groups[1])
        users.drop(name, if_exists=bool(groups[0]))
        return Result(status="DROP ROLE")
    name, rest = _name(groups[0]), groups[1] or ""
    found = _PASSWORD.search(rest)
    password = None
    if found and found.group(1).upper() != "NULL":
        password = found.group(1)[1:-1].replace("''", "'")
    leftover = _OPTIONS.sub("", _PASSWORD.sub("", rest)).replace("WITH", "").replace("with", "")
    if leftover.strip():
        raise E.SyntaxError(f"unsupported role option: {leftover.strip()[:60]}",
                            hint="supported: PASSWORD '...', SUPERUSER, LOGIN")
    superuser = "SUPERUSER" in rest.upper() and "NOSUPERUSER" not in rest.upper()
    if kind == "create_user":
        users.create(name, password, superuser=superuser)
        return Result(status="CREATE ROLE")
    users.alter(name, password if found else ..., superuser=superuser if _OPTIONS.search(rest) else None)
    return Result(status="ALTER ROLE")
