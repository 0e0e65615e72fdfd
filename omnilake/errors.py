"""The one error hierarchy (PEP 249 names), each class carrying a SQLSTATE.

This module imports nothing from OmniLake, so every layer (storage, catalog, engine, server)
may raise these; the DB-API re-exports them and the wire server turns them into
ErrorResponse messages from `sqlstate`, `message`, `detail` and `hint`.
"""

from __future__ import annotations


class Warning(Exception):  # noqa: A001 - the PEP 249 name
    """Important warnings, e.g. data truncation (PEP 249)."""


class Error(Exception):
    """Root of every OmniLake error. `sqlstate` is the PostgreSQL error code."""

    sqlstate = "XX000"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None,
                 position: int | None = None, sqlstate: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint
        self.position = position
        if sqlstate is not None:
            self.sqlstate = sqlstate

    def __str__(self) -> str:
        text = self.message
        if self.detail:
            text += f"\nDETAIL: {self.detail}"
        if self.hint:
            text += f"\nHINT: {self.hint}"
        return text

    @property
    def pgcode(self) -> str:
        """The SQLSTATE under the name psycopg uses."""
        return self.sqlstate


class InterfaceError(Error):
    """Misuse of the interface itself, e.g. a closed cursor."""

    sqlstate = "08003"


class DatabaseError(Error):
    sqlstate = "XX000"


class DataError(DatabaseError):
    """A value is wrong for its type: bad text representation, overflow, wrong dimension."""

    sqlstate = "22000"


class OperationalError(DatabaseError):
    """The environment failed: storage unreachable, disk full, catalog locked."""

    sqlstate = "58000"


class IntegrityError(DatabaseError):
    """A constraint would be broken: NOT NULL, unique key."""

    sqlstate = "23000"


class InternalError(DatabaseError):
    sqlstate = "XX000"


class ProgrammingError(DatabaseError):
    """The statement is wrong: syntax, unknown table or column, duplicate object."""

    sqlstate = "42000"


class NotSupportedError(DatabaseError):
    """Valid SQL that OmniLake does not do (yet)."""

    sqlstate = "0A000"


# Specific conditions, named after PostgreSQL's condition names.
class SyntaxError(ProgrammingError):  # noqa: A001 - PostgreSQL's name
    sqlstate = "42601"


class UndefinedTable(ProgrammingError):
    sqlstate = "42P01"


class UndefinedColumn(ProgrammingError):
    sqlstate = "42703"


class UndefinedFunction(ProgrammingError):
    sqlstate = "42883"


class UndefinedObject(ProgrammingError):
    sqlstate = "42704"


class InvalidSchemaName(ProgrammingError):
    sqlstate = "3F000"


class DuplicateTable(ProgrammingError):
    sqlstate = "42P07"


class DuplicateSchema(ProgrammingError):
    sqlstate = "42P06"


class DuplicateColumn(ProgrammingError):
    sqlstate = "42701"


class DatatypeMismatch(ProgrammingError):
    sqlstate = "42804"


class DependentObjectsStillExist(ProgrammingError):
    sqlstate = "2BP01"


class InvalidTextRepresentation(DataError):
    sqlstate = "22P02"


class NumericValueOutOfRange(DataError):
    sqlstate = "22003"


class StringDataRightTruncation(DataError):
    sqlstate = "22001"


class DivisionByZero(DataError):
    sqlstate = "22012"


class InvalidParameterValue(DataError):
    sqlstate = "22023"


class NotNullViolation(IntegrityError):
    sqlstate = "23502"


class UniqueViolation(IntegrityError):
    sqlstate = "23505"


class UndefinedFile(OperationalError):
    """A file or stored object that should exist does not (load_file, a removed blob)."""

    sqlstate = "58P01"


class SubstringError(DataError):
    sqlstate = "22011"


class SerializationFailure(OperationalError):
    sqlstate = "40001"


class InvalidAuthorization(OperationalError):
    """Login refused: unknown user, wrong password (same message for both)."""

    sqlstate = "28000"


class InvalidPassword(InvalidAuthorization):
    sqlstate = "28P01"


class QueryCanceled(OperationalError):
    sqlstate = "57014"


class AdminShutdown(OperationalError):
    sqlstate = "57P01"


class DuplicateObject(ProgrammingError):
    sqlstate = "42710"


class InsufficientPrivilege(ProgrammingError):
    sqlstate = "42501"


__all__ = [name for name, value in dict(globals()).items()
           if isinstance(value, type) and issubclass(value, Exception)]
