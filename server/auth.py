"""Authentication: trust when the warehouse has no users (the server then listens on loopback
only), SCRAM-SHA-256 otherwise, with the math from `scramp`.

An unknown user goes through the same exchange against a throwaway verifier, so the answer
("password authentication failed") does not tell which user names exist.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from scramp import ScramException, ScramMechanism

from omnilake import errors as E
from omnilake.catalog.users import Users, make_verifier, User
from omnilake.server import messages as M

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from omnilake.server.connection import Connection

SASL, SASL_CONTINUE, SASL_FINAL = 10, 11, 12
MECHANISM = "SCRAM-SHA-256"


class Authenticator:
    def __init__(self, users: Users):
        self.users = users
        self._mechanism = ScramMechanism(MECHANISM)
        self._decoy = User("", make_verifier(secrets.token_hex(16)), False)

    def required(self) -> bool:
        return self.users.any()

    async def authenticate(self, conn: "Connection") -> None:
        if not self.required():
            return
        user = self.users.get(conn.user)
        known = user is not None and user.verifier is not None
        info = (user if known else self._decoy).auth_info()
        failed = E.InvalidPassword(f'password authentication failed for user "{conn.user}"')
        server = self._mechanism.make_server(lambda _name: info)
        await conn._send(M.authentication(SASL, M.cstr(MECHANISM) + b"\0"))
        kind, body = await M.read_message(conn.reader)
        if kind != b"p":
            raise M.ProtocolViolation(f"expected SASL response, got message type {kind!r}")
        r = M.Reader(body)
        mechanism = r.cstring()
        if mechanism != MECHANISM:
            raise E.InvalidAuthorization(f"client selected an invalid SASL mechanism {mechanism!r}")
        length = r.int32()
        first = r.bytes(length).decode(errors="replace") if length >= 0 else ""
        try:
            # libpq leaves the SCRAM user name empty ("n=,": the startup packet names the
            # user); scramp rejects an empty attribute, so it parses a named copy and the
            # proof is checked against the bare message the client really signed.
            header, sep, bare = first.partition("n=,")
            named = header + "n=" + (conn.user.replace("=", "=3D").replace(",", "=2C") or "-") + "," + bare \
                if sep and header.count(",") == 2 else first
            server.set_client_first(named)
            if named is not first:
                server.client_first_bare = "n=," + bare
            await conn._send(M.authentication(SASL_CONTINUE, server.get_server_first().encode()))
            kind, body = await M.read_message(conn.reader)
            if kind != b"p":
                raise M.ProtocolViolation(f"expected SASL response, got message type {kind!r}")
            server.set_client_final(body.decode(errors="replace"))
        except ScramException as exc:
            log.info("SCRAM exchange for %r failed: %s", conn.user, exc)
            raise failed from None
        if not known:
            raise failed
        await conn._send(M.authentication(SASL_FINAL, server.get_server_final().encode()))


