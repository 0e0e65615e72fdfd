"""Whole objects (index segments) read and written through a pyiceberg FileIO, so the
same code works on a local folder and on S3. Objects are written once and never changed."""

from __future__ import annotations

from omnilake.errors import OperationalError


def write_object(io, location: str, data: bytes) -> None:
    try:
        with io.new_output(location).create(overwrite=True) as out:
            out.write(data)
    except OSError as exc:
        raise OperationalError(f"cannot write {location}: {exc}") from exc


def read_object(io, location: str) -> bytes:
    try:
        with io.new_input(location).open(seekable=False) as stream:
            return stream.read()
    except FileNotFoundError as exc:
        raise OperationalError(f"object {location} is missing") from exc
    except OSError as exc:
        raise OperationalError(f"cannot read {location}: {exc}") from exc


def delete_object(io, location: str) -> None:
    try:
        io.delete(location)
    except (FileNotFoundError, OSError):
        pass  # already gone: deleting is idempotent
