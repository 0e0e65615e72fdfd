"""Users of the wire server, kept in the catalog database beside the Iceberg tables.

Only SCRAM-SHA-256 verifiers are stored (PostgreSQL's `SCRAM-SHA-256$iter:salt$stored:server`
form), never passwords. No users at all means trust authentication on loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from scramp import ScramMechanism
from sqlalchemy import Boolean, Column, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from omnilake import errors as E

ITERATIONS = 4096
_METADATA = MetaData()
USERS = Table("omnilake_users", _METADATA,
              Column("name", String(128), primary_key=True),
              Column("verifier", String(512), nullable=True),
              Column("superuser", Boolean, nullable=False, default=False),
              Column("created", String(40), nullable=False))

_MECHANISM = ScramMechanism("SCRAM-SHA-256")


@dataclass(frozen=True)
class User:
    name: str
    verifier: str | None
    superuser: bool

    def auth_info(self) -> tuple[bytes, bytes, bytes, int] | None:
        """(salt, stored key, server key, iterations) for scramp, or None without a password."""
        if not self.verifier:
            return None
        _, params, keys = self.verifier.split("$")
        iterations, salt = params.split(":")
        stored, server = keys.split(":")
        return (base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server),
                int(iterations))


def make_verifier(password: str) -> str:
    salt, stored, server, iterations = _MECHANISM.make_auth_info(password, iteration_count=ITERATIONS)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


class Users:
    def __init__(self, warehouse):
        engine = getattr(warehouse.catalog, "engine", None)
        if engine is None:
            raise E.NotSupportedError("users need a SQL catalog (SQLite or PostgreSQL)")
        self.engine = engine
        _METADATA.create_all(engine, checkfirst=True)

    def get(self, name: str) -> User | None:
        with self.engine.connect() as c:
            row = c.execute(select(USERS).where(USERS.c.name == name)).first()
        return None if row is None else User(row.name, row.verifier, bool(row.superuser))

    def list(self) -> list[User]:
        with self.engine.connect() as c:
            rows = c.execute(select(USERS).order_by(USERS.c.name)).all()
        return [User(r.name, r.verifier, bool(r.superuser)) for r in rows]

    def any(self) -> bool:
        with self.engine.connect() as c:
            return c.execute(select(USERS.c.name).limit(1)).first() is not None

    def create(self, name: str, password: str | None, superuser: bool = False) -> None:
        _check_name(name)
        try:
            with self.engine.begin() as c:
                c.execute(insert(USERS).values(
                    name=name, verifier=make_verifier(password) if password else None,
                    superuser=superuser, created=dt.datetime.now(dt.timezone.utc).isoformat()))
        except SAIntegrityError:
            raise E.DuplicateObject(f'role "{name}" already exists') from None

    def alter(self, name: str, password=..., superuser: bool | None = None) -> None:
        values = {}
        if password is not ...:
            values["verifier"] = make_verifier(password) if password else None
        if superuser is not None:
            values["superuser"] = superuser
        with self.engine.begin() as c:
            done = c.execute(update(USERS).where(USERS.c.name == name).values(**values)) \
                if values else c.execute(select(USERS.c.name).where(USERS.c.name == name))
            found = done.rowcount if values else done.first() is not None
        if not found:
            raise E.UndefinedObject(f'role "{name}" does not exist')

    def drop(self, name: str, if_exists: bool = False) -> None:
        with self.engine.begin() as c:
            done = c.execute(delete(USERS).where(USERS.c.name == name))
        if not done.rowcount and not if_exists:
            raise E.UndefinedObject(f'role "{name}" does not exist')


def _check_name(name: str) -> None:
    if not name or len(name) > 63 or "\0" in name:
        raise E.InvalidParameterValue("a role name must be 1 to 63 characters")
