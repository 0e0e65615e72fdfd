"""One client connection: startup, authentication, then the simple and extended query
protocols over a private engine session.

Statements run on the server's thread pool (DataFusion releases the GIL), and their rows are
encoded there too; the loop only moves bytes. The exceptions are answers that need no waiting:
constant replies kept from before, and a prepared key lookup whose table, files and rows are
all in memory (storage/memory_only.py), which would spend more time on the trip to a pool
thread than on the lookup. In the extended protocol an error discards messages up to the next
Sync, as PostgreSQL does.

Replies are held until the client has no further message buffered (or they pass
FLUSH_BYTES), so a pipelined Bind/Describe/Execute/Sync costs one socket write, and one trip
to the pool: the trip that starts a query also encodes its first rows.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import exp

from omnilake import errors as E
from omnilake.engine.engine import Result, Session
from omnilake.engine import dml, key_lookup
from omnilake.engine.blobs import for_client
from omnilake.engine.params import bind as bind_params
from omnilake.server import messages as M
from omnilake.server.codecs import (TEXT, TYPE_SIZES, binary_encoder, column_oid,
                                    decode_parameter, text_encoder)
from omnilake.server.client_queries import KnownQuery, recognise
from omnilake.server.constant_results import ConstantReply, is_constant
from omnilake.server.copy import CopyIn, copy_out, parse_copy
from omnilake.server.replay import Exchanges
from omnilake.server.small_results import bounded
from omnilake.storage import memory_only

if TYPE_CHECKING:
    from omnilake.server.server import Server

log = logging.getLogger(__name__)
statements = logging.getLogger("omnilake.server.statements")  # `serve --log-statements`

DATABASES = ("omnilake", "postgres")  # `postgres` too: many tools connect to it by default


@dataclass
class Prepared:
    tree: exp.Expression | None  # None: an empty statement (or a known client query)
    param_oids: list[int]
    text: str
    known: KnownQuery | None = None
    small: bool = False  # its result fits one chunk whatever the data: run, not streamed
    constant: bool = False  # its result depends on its text alone (constant_results)
    lookup: object = None  # Session.planned_lookup(): run with each Bind's values, unbound


@dataclass
class Portal:
    statement: Prepared
    tree: exp.Expression | None  # the statement's own tree, parameters unbound: read only
    result_formats: list[int]
    values: list = field(default_factory=list)
    result: Result | None = None
    rows: list[bytes] | None = None  # encoded DataRows not yet sent (materialised results)
    sent: int = 0
    prefix: bytes = b""
    stream: RowStream | None = None  # a query's rows, pulled as Execute asks for them
    description: bytes | None = None  # a kept constant reply's RowDescription

    def bound(self) -> exp.Expression:
        """A copy of the statement with the parameters in it, to run (and rewrite in place).
        Made where the statement runs, on the pool: copying and binding a large tree is work
        the event loop should not do."""
        tree = self.tree.copy()
        return bind_params(tree, self.values) if self.values else tree

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


CHUNK_ROWS = 8192  # rows encoded per trip to the pool while a result streams out
MAX_PARSED_LOOKUPS = 64  # key lookup texts a connection parses again on the event loop
FLUSH_BYTES = 1 << 16  # held replies are written once they pass this size


@dataclass
class RowStream:
    """A query result being sent: DataFusion batches pulled on demand and encoded to
    DataRows, so a large result is never held whole (rows, or their encoded form)."""

    schema: pa.Schema
    batches: object  # iterator of Arrow record batches
    formats: list[int]
    pending: list[bytes] = field(default_factory=list)
    sent: int = 0
    done: bool = False
    error: E.Error | None = None  # met while encoding ahead; raised where it would have been

    def __post_init__(self):
        self.encoders = [binary_encoder(f) if _format(self.formats, i) == 1 else text_encoder(f)
                         for i, f in enumerate(self.schema)]

    def prefetch(self, limit: int) -> None:
        """Encode up to `limit` rows ahead, in the trip to the pool that started the query,
        so that Execute can often answer without another trip. An error is kept for the
        pull that would have met it."""
        try:
            self._fill(limit)
        except E.Error as err:
            self.error = err

    def ready(self, limit: int) -> bool:
        """True when pull(limit) needs no engine work (so it may run on the event loop)."""
        return len(self.pending) >= limit or self.done

    def pull(self, limit: int) -> list[bytes]:
        """Up to `limit` encoded rows (fewer only at the end of the result)."""
        self._fill(limit)
        rows, self.pending = self.pending[:limit], self.pending[limit:]
        self.sent += len(rows)
        return rows

    def _fill(self, limit: int) -> None:
        if self.error is not None and len(self.pending) < limit:
            error, self.error, self.pending, self.done = self.error, None, [], True
            raise error
        while len(self.pending) < limit and not self.done:
            batch = next(self.batches, None)
            if batch is None:
                self.done = True
                break
            self.pending.extend(_encode_columns(
                [encode(pa.chunked_array([column], type=column.type))
                 for encode, column in zip(self.encoders, batch.columns)], batch.num_rows))

    @property
    def exhausted(self) -> bool:
        return self.done and not self.pending

    def close(self) -> None:
        closer = getattr(self.batches, "close", None)
        if closer is not None:
            try:
                closer()  # releases the statement's registered tables
            except ValueError:
                pass  # still running on a pool thread (a canceled read): it ends by itself
        self.done, self.pending = True, []


@dataclass
class Connection:
    server: "Server"
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int = 0
    secret: int = 0
    user: str = ""
    session: Session | None = None
    statements: dict[str, Prepared] = field(default_factory=dict)
    portals: dict[str, Portal] = field(default_factory=dict)
    parsed_lookups: dict[str, Prepared] = field(default_factory=dict)  # by text (_reparse)
    running: asyncio.Future | None = None
    canceled: bool = False
    messages: M.MessageReader | None = None  # after startup
    _reported: dict[str, str] = field(default_factory=dict)
    _out: list[bytes] = field(default_factory=list)  # replies held until the client waits
    _out_size: int = 0
    exchanges: Exchanges = field(default_factory=Exchanges)  # server/replay.py
    _replayable: bool = True  # the last message took a path a replay repeats exactly

    # -- lifecycle ------------------------------------------------------------------------
    async def serve(self) -> None:
        try:
            if await self._startup():
                await self._loop()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except M.ProtocolViolation as err:
            await self._fatal(err)
        except E.Error as err:
            await self._fatal(err)
        finally:
            self.server.forget(self)
            self._close_portals()
            if self.session is not None and self.session.transaction is not None:
                self.session.transaction = None  # an open transaction ends with its client
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - already closed
                pass

    async def _fatal(self, err: E.Error) -> None:
        try:
            await self._send(M.error_response(err, "FATAL"))
        except ConnectionError:
            pass

    def _queue(self, data: bytes) -> None:
        """Hold a reply; _flush() writes what is held, in order."""
        self._out.append(data)
        self._out_size += len(data)

    async def _flush(self) -> None:
        if self._out:
            self.exchanges.request = None  # written before its end: not replayable whole
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            self.writer.write(data)
        await self.writer.drain()

    async def _send(self, data: bytes) -> None:
        """Write `data` now, after anything held."""
        self._queue(data)
        await self._flush()

    # -- startup --------------------------------------------------------------------------
    async def _startup(self) -> bool:
        while True:
            startup = await M.read_startup(self.reader)
            if startup.code == M.SSL_REQUEST:
                if self.server.tls is None:
                    await self._send(b"N")
                    continue
                await self._send(b"S")
                await self.writer.start_tls(self.server.tls)
                continue
            if startup.code == M.GSSENC_REQUEST:
                await self._send(b"N")
                continue
            if startup.code == M.CANCEL_REQUEST:
                if len(startup.body) >= 8:
                    pid, secret = struct.unpack("!ii", startup.body[:8])
                    self.server.cancel(pid, secret)
                return False
            if startup.code >> 16 != 3:
                raise E.Error(f"unsupported frontend protocol {startup.code >> 16}."
                              f"{startup.code & 0xFFFF}: server supports 3.0", sqlstate="0A000")
            break
        params = M.startup_parameters(startup.body)
        self.user = params.get("user", "")
        if not self.user:
            raise E.InvalidAuthorization("no PostgreSQL user name specified in startup packet")
        database = params.get("database") or self.user
        if database not in DATABASES:
            raise E.Error(f'database "{database}" does not exist', sqlstate="3D000",
                          hint='connect to the database "omnilake"')
        await self.server.auth.authenticate(self)
        self.session = self.server.engine.session()
        self.session.variables.update(self.server.session_defaults(self.user, params))
        self.pid, self.secret = self.server.register(self)
        out = [M.AUTH_OK]
        for name in self.server.REPORTED:
            self._reported[name] = self.session.variables[name.lower()]
            out.append(M.parameter_status(name, self._reported[name]))
        out.append(M.backend_key_data(self.pid, self.secret))
        out.append(M.ready_for_query(self._status()))
        await self._send(b"".join(out))
        self.messages = M.MessageReader(self.reader)
        return True

    def _status(self) -> str:
        tx = self.session.transaction if self.session else None
        if tx is None:
            return "I"
        return "E" if tx.failed else "T"

    # -- message loop ---------------------------------------------------------------------
    async def _loop(self) -> None:
        skipping = False  # after an extended-protocol error, until Sync
        while True:
            if not self._replayable:
                self.exchanges.spoil()
            if self._out_size >= FLUSH_BYTES or not self.messages.has_message():
                if not self.messages.buffer:
                    self.exchanges.finish(self._out)  # remembered when replayable
                await self._flush()  # the client may be waiting for these
            self.idle = True
            kind, body = await self.messages.read()
            self.idle = False
            self._replayable = False  # until the message's handler says otherwise
            if kind == b"X":
                return
            if kind == b"Q":
                skipping = False
                await self._simple_query(body)
                continue
            if kind == b"S":
                skipping = False
                if self.session.transaction is None:  # portals end with their transaction
                    self._close_portals()
                self._queue(M.ready_for_query(self._status()))
                self._replayable = True
                continue
            if kind == b"H":
                await self._flush()
                continue
            if kind in (b"d", b"c", b"f"):
                continue  # COPY messages outside COPY are ignored, as PostgreSQL does
            if skipping:
                continue
            handler = self._EXTENDED.get(kind)
            try:
                if handler is None:
                    raise M.ProtocolViolation(f"invalid frontend message type {kind[0]}")
                await handler(self, body)
            except M.ProtocolViolation:
                raise
            except E.Error as err:
                skipping = True
                self._replayable = False
                self._fail_transaction()
                self._queue(M.error_response(err))
            except Exception as exc:  # noqa: BLE001 - never drop a client for an internal bug
                log.exception("internal error")
                skipping = True
                self._replayable = False
                self._fail_transaction()
                self._queue(M.error_response(E.InternalError(f"internal error: {exc}")))

    def _close_portals(self) -> None:
        for portal in self.portals.values():
            portal.close()
        self.portals.clear()

    def _fail_transaction(self) -> None:
        if self.session.transaction is not None:
            self.session.transaction.failed = True

    # -- running statements off the loop --------------------------------------------------
    async def _run(self, fn, *args, abandon_on_cancel: bool = False):
        """Run `fn` on the pool. A cancel request stops the wait for a read at once (its
        result is dropped); a write is waited for, so a canceled write never lands later."""
        future = self.server.pool.run(asyncio.get_running_loop(), fn, *args)
        self.running, self.abandonable = future, abandon_on_cancel
        try:
            return await (asyncio.shield(future) if abandon_on_cancel else future)
        finally:
            self.running, self.abandonable = None, False

    def cancel(self) -> None:
        """A CancelRequest for this connection (from another socket)."""
        if self.running is not None and self.abandonable and self._task is not None:
            self.canceled = True
            self._task.cancel()

    _task: asyncio.Task | None = None
    abandonable: bool = False
    idle: bool = False

    async def shutdown(self) -> None:
        """Server shutdown: an idle connection is told and closed at once."""
        if self.idle:
            await self._fatal(E.AdminShutdown("terminating connection due to administrator command"))
            self.writer.close()

    # -- simple query ---------------------------------------------------------------------
    async def _simple_query(self, body: bytes) -> None:
        self._task = asyncio.current_task()
        stream = None
        try:
            text = M.Reader(body).cstring()
            reply = self._constant(text, [0])
            if reply is not None:  # answered here, without a trip to the pool
                statements.debug("simple: %s", text)
                out, stream, rest = (reply.row_description + b"".join(reply.rows)
                                     + M.command_complete(reply.status)), None, []
                self._replayable = True
            else:
                out, stream, rest = await self._run(self._simple_batch, text,
                                                    abandon_on_cancel=_reads_only(text))
            self._queue(out)
            while stream is not None or rest:
                if stream is not None:  # a result larger than one chunk: send it as it comes
                    while not stream.exhausted:
                        await self._flush()  # what is ready goes out while the next chunk is made
                        rows = await self._run(stream.pull, CHUNK_ROWS, abandon_on_cancel=True)
                        self._queue(b"".join(rows))
                    self._queue(M.command_complete(f"SELECT {stream.sent}"))
                    stream = None
                    continue
                if isinstance(rest[0], exp.Copy):
                    await self._copy(rest.pop(0))
                    continue
                await self._flush()
                out, stream, rest = await self._run(self._simple_trees, rest,
                                                    abandon_on_cancel=_is_read(rest[0]))
                self._queue(out)
        except asyncio.CancelledError:
            if not self.canceled:
                raise
            self.canceled = False
            self._fail_transaction()
            self._queue(M.error_response(
                E.QueryCanceled("canceling statement due to user request")))
        except E.Error as err:
            self._fail_transaction()
            self._queue(getattr(err, "partial_output", b"") + M.error_response(err))
        except Exception as exc:  # noqa: BLE001
            log.exception("internal error")
            self._fail_transaction()
            self._queue(M.error_response(E.InternalError(f"internal error: {exc}")))
        finally:
            self._task = None
            if stream is not None:
                stream.close()
        self._queue(M.ready_for_query(self._status()))  # written by the message loop

    def _simple_batch(self, text: str):
        statements.debug("simple: %s", text)
        kept = self.session.run_kept(text, stream=True)  # a dashboard's GROUP BY, prepared
        if kept is not None:
            out: list[bytes] = []
            try:
                stream = self._reply(for_client(kept, self.session.engine.blobs), out)
            except E.Error as err:
                err.partial_output = b"".join(out)
                raise
            return b"".join(out), stream, []
        trees = self.session.parse(text)
        if not trees:
            return M.EMPTY_QUERY, None, []
        if len(trees) == 1 and is_constant(trees[0]):
            tree = trees[0].copy()  # as parsed: running rewrites it
            result = self._start(trees[0], small=True)
            reply = self._keep_constant(text, tree, [0], result, encode_rows(result.table, [0]))
            return (reply.row_description + b"".join(reply.rows)
                    + M.command_complete(reply.status)), None, []
        return self._simple_trees(trees)

    def _simple_trees(self, trees: list[exp.Expression]):
        """Run statements in one trip to the pool, up to a COPY or a result too large for one
        chunk: (messages so far, the unfinished result or None, statements left). An error
        stops the batch; the caller reports it after the messages of what ran."""
        out = []
        for i, tree in enumerate(trees):
            if isinstance(tree, exp.Copy):
                return b"".join(out), None, trees[i:]
            try:
                stream = self._reply(self._start(tree, bounded(tree, CHUNK_ROWS)), out)
                if stream is not None:
                    return b"".join(out), stream, trees[i + 1:]
            except E.Error as err:
                err.partial_output = b"".join(out)
                raise
        return b"".join(out), None, []

    def _reply(self, result: Result, out: list[bytes]) -> RowStream | None:
        """A statement's messages in text format onto `out`, up to one chunk of rows; the
        stream of the rest when there is more (its CommandComplete not yet sent)."""
        out.append(self._after(result))
        if result.batches is None:
            if result.table is not None:
                out.append(self._row_description(result.table.schema, [0]))
                out.extend(encode_rows(result.table, [0]))
            out.append(M.command_complete(result.status))
            return None
        stream = RowStream(result.schema, result.batches, [0])
        out.append(self._row_description(stream.schema, [0]))
        out.extend(stream.pull(CHUNK_ROWS))
        if not stream.exhausted:
            return stream
        out.append(M.command_complete(f"SELECT {stream.sent}"))
        return None

    def _start(self, tree: exp.Expression, small: bool) -> Result:
        """Run one statement: a query whose result is bounded by its text (small_results)
        to completion, any other query as a stream of batches read as the client asks."""
        result = self.session.run(tree) if small else self.session.stream(tree)
        return for_client(result, self.session.engine.blobs)

    def _constant(self, text: str, formats: list[int]) -> ConstantReply | None:
        """The kept reply of a constant statement, where the session may run it now."""
        tx = self.session.transaction
        if (tx is not None and tx.failed) or not self.session.autocommit:
            return None  # the engine answers: the failed transaction's error, or a BEGIN
        return self.server.constant_results.get(text, tuple(formats))

    def _keep_constant(self, text: str, tree: exp.Expression, formats: list[int],
                       result: Result, rows: list[bytes]) -> ConstantReply:
        reply = ConstantReply(result.table, self._row_description(result.table.schema, formats),
                              tuple(rows), result.status)
        self.server.constant_results.keep(text, tuple(formats), reply, tree)
        return reply

    def _after(self, result: Result) -> bytes:
        """Server-side effects of session commands: forgotten statements, and a
        ParameterStatus for each reported setting a SET or RESET changed."""
        if result.status in ("DEALLOCATE ALL", "DISCARD ALL"):
            self.statements.clear()
            self.portals.clear()
            self.parsed_lookups.clear()
        if result.status not in ("SET", "RESET", "DISCARD ALL"):
            return b""
        out = []
        for name in self.server.REPORTED:
            value = self.session.variables.get(name.lower(), "")
            if self._reported.get(name) != value:
                self._reported[name] = value
                out.append(M.parameter_status(name, value))
        return b"".join(out)

    def _row_description(self, schema: pa.Schema, formats: list[int]) -> bytes:
        fields = []
        for i, f in enumerate(schema):
            oid = column_oid(f)
            fields.append((f.name, oid, TYPE_SIZES.get(oid, -1), _format(formats, i)))
        return M.row_description(fields)

    # -- extended query -------------------------------------------------------------------
    async def _parse(self, body: bytes) -> None:
        r = M.Reader(body)
        name, text = r.cstring(), r.cstring()
        oids = [r.uint32() for _ in range(r.int16())]
        statements.debug("parse: %s", text)
        if name and name in self.statements:
            raise E.Error(f'prepared statement "{name}" already exists', sqlstate="42P05")
        known = recognise(text)
        constant = self.server.constant_results.parsed(text) if not oids else None
        if known is not None:
            self.statements[name] = Prepared(None, known.param_oids, text, known)
        elif constant is not None:  # no trip to the pool: parsed and without parameters
            self.statements[name] = Prepared(constant, [], text, small=True, constant=True)
        else:
            prepared = self._reparse(text, oids)
            if prepared is None:
                prepared = await self._run(self._prepare, text, oids)
                self._remember_lookup(prepared)
            self.statements[name] = prepared
        self._queue(M.PARSE_COMPLETE)

    def _prepare(self, text: str, oids: list[int]) -> Prepared:
        """Parse and infer parameter types in one trip to the pool."""
        trees = self.session.parse(text)
        if len(trees) > 1:
            raise E.SyntaxError("cannot insert multiple commands into a prepared statement")
        tree = trees[0] if trees else None
        if tree is not None:
            oids = self._parameter_oids(tree, oids)
        return Prepared(tree, oids, text, small=bounded(tree, CHUNK_ROWS),
                        constant=is_constant(tree),
                        lookup=self.session.planned_lookup(text) if tree is not None else None)

    def _parameter_oids(self, tree: exp.Expression, declared: list[int]) -> list[int]:
        """The type of each parameter: as the client declared it, else as inferred."""
        from omnilake.engine.describe import parameter_types
        inferred = parameter_types(self.session, tree)
        oids = declared + [0] * (len(inferred) - len(declared))
        return [oid or (t.oid if t is not None else TEXT) for oid, t in zip(oids, inferred)]

    def _remember_lookup(self, prepared: Prepared) -> None:
        if isinstance(prepared.lookup, key_lookup.Lookup):
            self.parsed_lookups.pop(prepared.text, None)
            self.parsed_lookups[prepared.text] = prepared
            if len(self.parsed_lookups) > MAX_PARSED_LOOKUPS:
                self.parsed_lookups.pop(next(iter(self.parsed_lookups)))

    def _reparse(self, text: str, oids: list[int]) -> Prepared | None:
        """A key lookup this connection parsed before, parsed again on the event loop (an
        unnamed statement is parsed at every execution: psycopg's first executions of a
        text, node-postgres always): its tree and plan reused, its parameter types inferred
        again where the table is in memory (storage/memory_only.py); else None."""
        before = self.parsed_lookups.get(text)
        if before is None:
            return None
        try:
            with memory_only.only():
                param_oids = self._parameter_oids(before.tree, oids)
        except memory_only.WouldWait:
            return None
        return Prepared(before.tree, param_oids, text, small=before.small, lookup=before.lookup)

    async def _bind(self, body: bytes) -> None:
        r = M.Reader(body)
        portal_name, statement_name = r.cstring(), r.cstring()
        statement = self._statement(statement_name)
        formats = [r.int16() for _ in range(r.int16())]
        count = r.int16()
        if count != len(statement.param_oids):
            raise E.Error(f"bind message supplies {count} parameters, but prepared statement "
                          f'"{statement_name}" requires {len(statement.param_oids)}',
                          sqlstate="08P01")
        raw = []
        for _ in range(count):
            length = r.int32()
            raw.append(None if length == -1 else r.bytes(length))
        result_formats = [r.int16() for _ in range(r.int16())]
        values = [decode_parameter(v, oid, _format(formats, i) == 1, i + 1)
                  for i, (v, oid) in enumerate(zip(raw, statement.param_oids))]
        if portal_name and portal_name in self.portals:
            raise E.Error(f'cursor "{portal_name}" already exists', sqlstate="42P03")
        if portal_name in self.portals:
            self.portals[portal_name].close()
        self.portals[portal_name] = Portal(statement, statement.tree, result_formats, values)
        self._queue(M.BIND_COMPLETE)
        self._replayable = statement.constant and not count

    def _statement(self, name: str) -> Prepared:
        if name not in self.statements:
            raise E.Error(f'prepared statement "{name}" does not exist', sqlstate="26000")
        return self.statements[name]

    def _portal(self, name: str) -> Portal:
        if name not in self.portals:
            raise E.Error(f'portal "{name}" does not exist', sqlstate="34000")
        return self.portals[name]

    async def _describe(self, body: bytes) -> None:
        r = M.Reader(body)
        kind, name = r.byte(), r.cstring()
        if kind == b"S":
            statement = self._statement(name)
            out = [M.parameter_description(statement.param_oids)]
            schema = statement.known.schema if statement.known else None
            if statement.tree is not None and _returns_rows(statement.tree):
                from omnilake.engine.describe import result_schema
                schema = await self._run(result_schema, self.session, statement.tree,
                                         statement.param_oids)
            out.append(M.NO_DATA if schema is None else self._row_description(schema, [0]))
            self._queue(b"".join(out))
        elif kind == b"P":
            portal = self._portal(name)
            if portal.statement.known is None and (portal.tree is None
                                                   or not _returns_rows(portal.tree)):
                self._queue(M.NO_DATA)
                return
            await self._execute_portal(portal)
            if portal.description is not None:  # a kept constant reply's
                self._queue(portal.description)
                self._replayable = True
                return
            schema = portal.stream.schema if portal.stream is not None else (
                portal.result.table.schema if portal.result.table is not None else None)
            self._queue(M.NO_DATA if schema is None else
                        self._row_description(schema, portal.result_formats))
        else:
            raise M.ProtocolViolation(f"invalid DESCRIBE message subtype {kind!r}")

    async def _execute_portal(self, portal: Portal) -> None:
        if portal.result is not None:
            return
        if portal.statement.constant:
            reply = self._constant(portal.statement.text, portal.result_formats)
            if reply is not None:  # answered here, without a trip to the pool
                portal.result = Result(reply.status, reply.table, reply.table.num_rows)
                portal.rows = list(reply.rows)
                portal.description = reply.row_description
                return
        if isinstance(portal.statement.lookup, key_lookup.Lookup) \
                and portal.statement.known is None and self.session.transaction is None:
            # A key lookup (not a vector search: its work grows with the table) is answered
            # here when all it reads is in memory (storage/memory_only.py).
            try:
                with memory_only.only():
                    found = self._run_portal(portal, here=True)
            except memory_only.WouldWait:
                found = None
            if found is not None:
                portal.result, portal.rows = found
                return
        self._task = asyncio.current_task()
        try:
            portal.result, portal.rows = await self._run(
                self._run_portal, portal, abandon_on_cancel=_is_read(portal.tree))
        except asyncio.CancelledError:
            if not self.canceled:
                raise
            self.canceled = False
            raise E.QueryCanceled("canceling statement due to user request") from None
        finally:
            self._task = None

    def _run_portal(self, portal: Portal, here: bool = False):
        """(result, encoded rows or None); with `here`, on the event loop: only a lookup,
        and None where it is not one."""
        known = portal.statement.known
        if known is not None:
            table = known.answer(portal.values)
            result = Result(status=f"SELECT {table.num_rows}", table=table, rowcount=table.num_rows)
        else:
            lookup = portal.statement.lookup
            result = self.session.lookup(lookup, portal.values) if lookup is not None else None
            if result is None and here:
                return None
            if result is None and not portal.values and portal.tree is not None:
                # a GROUP BY kept prepared by its text (engine/small_aggregate.TextPlans)
                result = self.session.run_kept(portal.statement.text,
                                               stream=not portal.statement.small)
            if result is None and portal.values and dml.batchable(portal.tree):
                result = self.session.insert_row(portal.tree.copy(), portal.values)
            result = self._start(portal.bound(), portal.statement.small) if result is None \
                else for_client(result, self.session.engine.blobs)
        portal.prefix = self._after(result)  # ParameterStatus messages, sent before the rows
        if result.batches is not None:
            portal.stream = RowStream(result.schema, result.batches, portal.result_formats)
            portal.stream.prefetch(CHUNK_ROWS)  # so Execute seldom needs a second trip
            return result, None
        rows = encode_rows(result.table, portal.result_formats) if result.table is not None else None
        if portal.statement.constant and rows is not None:
            self._keep_constant(portal.statement.text, portal.statement.tree,
                                portal.result_formats, result, rows)
        return result, rows

    async def _execute(self, body: bytes) -> None:
        r = M.Reader(body)
        name, limit = r.cstring(), r.int32()
        portal = self._portal(name)
        if portal.tree is None and portal.statement.known is None:
            self._queue(M.EMPTY_QUERY)
            return
        if isinstance(portal.tree, exp.Copy):
            await self._copy(portal.bound())
            return
        await self._execute_portal(portal)
        prefix, portal.prefix = portal.prefix, b""
        if portal.stream is not None:
            await self._execute_stream(portal, limit, prefix)
            return
        if portal.rows is None:
            self._queue(prefix + M.command_complete(portal.result.status))
            return
        end = len(portal.rows) if limit <= 0 else min(portal.sent + limit, len(portal.rows))
        chunk = portal.rows[portal.sent:end]
        portal.sent = end
        self._replayable = portal.description is not None  # rows of a kept constant reply
        if end < len(portal.rows):
            self._queue(prefix + b"".join(chunk) + M.PORTAL_SUSPENDED)
        else:
            self._queue(prefix + b"".join(chunk) + M.command_complete(portal.result.status))

    async def _execute_stream(self, portal: Portal, limit: int, prefix: bytes) -> None:
        stream = portal.stream
        wanted = limit if limit > 0 else None
        self._queue(prefix)
        while wanted is None or wanted > 0:
            step = CHUNK_ROWS if wanted is None else min(wanted, CHUNK_ROWS)
            if stream.ready(step):
                rows = stream.pull(step)  # encoded ahead: no engine work left
            else:
                await self._flush()  # what is ready goes out while the next chunk is made
                rows = await self._run(stream.pull, step, abandon_on_cancel=True)
            if wanted is not None:
                wanted -= len(rows)
            if rows:
                self._queue(b"".join(rows))
            if stream.exhausted:
                self._queue(M.command_complete(f"SELECT {stream.sent}"))
                return
        self._queue(M.PORTAL_SUSPENDED)

    async def _close(self, body: bytes) -> None:
        r = M.Reader(body)
        kind, name = r.byte(), r.cstring()
        if kind == b"S":
            self.statements.pop(name, None)
        elif kind == b"P":
            portal = self.portals.pop(name, None)
            if portal is not None:
                portal.close()
        else:
            raise M.ProtocolViolation(f"invalid CLOSE message subtype {kind!r}")
        self._queue(M.CLOSE_COMPLETE)

    # -- replayed exchanges (server/replay.py) ---------------------------------------------
    def replay(self, data: bytes) -> bool:
        """Look at data as it arrives, before the message loop: True when it repeats a
        remembered exchange and was answered here."""
        messages = self.messages
        if not (self.idle and messages is not None and messages.waiting and not messages.buffer):
            self.exchanges.request = None  # more data within an exchange
            return False
        if (self.session.transaction is not None or not self.session.autocommit or self.portals
                or statements.isEnabledFor(logging.DEBUG)):
            self.exchanges.request = None
        else:
            reply = self.exchanges.get(data)
            if reply is not None and not self.writer.transport.get_write_buffer_size():
                self.exchanges.replayed += 1  # first: the client may look once it has the reply
                self.writer.write(reply)
                return True  # still waiting, with nothing buffered
            self.exchanges.start(data)
        messages.waiting = False  # the data is on its way to the message loop
        return False

    _EXTENDED = {b"P": _parse, b"B": _bind, b"D": _describe, b"E": _execute, b"C": _close}

    # -- COPY -----------------------------------------------------------------------------
    async def _copy(self, tree: exp.Copy) -> None:
        spec = parse_copy(self.session, tree)
        if spec.direction == "out":
            chunks, tag = await self._run(copy_out, self.session, spec)
            self._queue(M.copy_response(b"H", spec.binary, spec.columns)
                        + b"".join(M.copy_data(c) for c in chunks) + M.COPY_DONE
                        + M.command_complete(tag))
            return
        await self._send(M.copy_response(b"G", spec.binary, spec.columns))  # the client waits for it
        loader = CopyIn(self.session, spec)
        failure: E.Error | None = None
        while True:
            kind, body = await self.messages.read()
            if kind == b"d":
                if failure is None:
                    try:
                        await self._run(loader.feed, body)
                    except E.Error as err:
                        failure = err
            elif kind == b"c":
                break
            elif kind == b"f":
                failure = failure or E.QueryCanceled(
                    f"COPY from stdin failed: {M.Reader(body).cstring()}")
                break
            elif kind in (b"H", b"S"):
                continue
            else:
                raise M.ProtocolViolation(f"unexpected message type {kind!r} during COPY from stdin")
        if failure is None:
            try:
                count = await self._run(loader.finish)
            except E.Error as err:
                failure = err
        if failure is not None:
            raise failure
        self._queue(M.command_complete(f"COPY {count}"))


def _format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def _returns_rows(tree: exp.Expression) -> bool:
    if isinstance(tree, (exp.Query, exp.Values)):
        return True
    if isinstance(tree, exp.Command) and tree.name.upper() in ("SHOW", "EXPLAIN"):
        return True
    return isinstance(tree, (exp.Insert, exp.Update, exp.Delete)) and tree.args.get("returning")


def _reads_only(text: str) -> bool:
    """A single SELECT-like statement (decided from the text, before parsing)."""
    words = text.lstrip().split(None, 1)
    return bool(words) and words[0].upper() in ("SELECT", "WITH", "VALUES", "SHOW", "TABLE") \
        and ";" not in text.rstrip().rstrip(";")


def _is_read(tree: exp.Expression | None) -> bool:
    return isinstance(tree, (exp.Query, exp.Values))


def encode_rows(table: pa.Table, formats: list[int]) -> list[bytes]:
    """DataRow messages for every row of `table`, columns encoded a whole column at a time."""
    columns = []
    for i, (f, column) in enumerate(zip(table.schema, table.columns)):
        encoder = binary_encoder(f) if _format(formats, i) == 1 else text_encoder(f)
        columns.append(encoder(column))
    return _encode_columns(columns, table.num_rows)


def _encode_columns(columns: list[list], rows: int) -> list[bytes]:
    if not columns:
        return [M.data_row([]) for _ in range(rows)]
    return [M.data_row(list(values)) for values in zip(*columns)]


def new_secret() -> int:
    return secrets.randbits(31)
