"""Who may do what on a server: every route and gRPC call asks :meth:`Access.check` with a
scope and, where the call is about one model, that model's name.

Scopes: ``infer`` (inference, and reading the models it may run: a client reads a model's
metadata to form a request), ``read`` (metadata, configuration, statistics, metrics) and
``admin`` (the model repository: load and unload; it includes both). Health is never
guarded. One module for REST and gRPC, so a request is allowed or refused the same way
whichever door it used.

Two kinds of credential. The server's own token (``--token``, or the generated one; its
sha256 comes in the environment) is an ``admin`` token for every model. A named token from
``maas token create`` (:mod:`maas_lab.tokens`: scopes, optionally some models) is looked up
by its sha256 in the registry's ``tokens`` table. What each scope covers, and what a token
for some models may read, is :class:`maas_lab.tokens.Grant`'s rule.

The table is read into memory and read again only when SQLite's ``PRAGMA data_version``
says another connection committed. A known token asks at most every :data:`RECHECK_S`, so
a revoke reaches a running server within a second and a request costs no query; a token
not in memory asks at once (one pragma), so a token made a moment ago works at once.

The look-up is a dict by digest: its timing can only tell a caller about the digest of what
it sent, which it knows already, never about a stored token (sha256 has no known preimages).

Every refusal is counted (``maas_auth_refused_total`` by scope and status, in ``/metrics``)
and logged with the token's name when it is known, never the token. A missing or unknown
token, or a revoked one, gets one 401 message that says nothing of which it was; a known
token without the scope or the model gets a 403 naming the scope needed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import sys
import threading
import time

from ..errors import UsageError
from ..hints import command, option
from ..results import printable

SCOPES = ("infer", "read", "admin")
RECHECK_S = 0.25  # how often data_version is asked, at most
LOG_BURST, LOG_PER_S = 100, 10  # refusals logged: a burst, then so many a second


class Denied(Exception):
    """A refusal: ``status`` is 401 (no or unknown credential) or 403 (known, not allowed)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def bearer(authorization: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` value; None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _stderr_log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stderr.write(f"{stamp} [worker {os.getpid()}] {message}\n")
    sys.stderr.flush()


def token_text(token: str | None) -> str | None:
    """A token as typed or pasted, ready for an ``Authorization`` header: surrounding
    whitespace (the newline a file or a copy brings) removed; a character no header may
    carry is refused in one line that never repeats the token (it is a secret)."""
    if token is None:
        return None
    token = token.strip()
    for at, char in enumerate(token, 1):
        if not "!" <= char <= "~":
            raise UsageError(
                f"The token holds a character a request header cannot carry (a space, line "
                f"break or non-ASCII character, at position {at}); copy it again without it."
            )
    return token


class Access:
    """The rules one worker answers by. ``open_scopes`` need no credential (on loopback with
    a generated token, inference and reading are open and only admin is guarded).

    ``log`` takes one line per refusal (the server's log; stderr when not given)."""

    def __init__(self, root, admin_sha256: str | None, token_for_all: bool, log=None):
        self.root = root
        self.admin_sha256 = admin_sha256
        self.open_scopes = set() if token_for_all else {"infer", "read"}
        self.refused: dict[tuple[str, int], int] = {}  # (scope, status) -> count
        self.log = log or _stderr_log
        self.tokens = TokenTable(root, self._log_once)
        self._log_budget = (float(LOG_BURST), time.monotonic(), 0)  # (lines, when, held)

    def check(self, authorization: str | None, scope: str, model: str | None = None) -> None:
        """Return if the credential allows ``scope`` (on ``model``); raise :class:`Denied`."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if scope in self.open_scopes:
            return
        token = bearer(authorization)
        if token is None:
            self._refuse(scope, model, 401, "no token")
            raise Denied(
                401, self._unauthorized("is missing", scope), {"www-authenticate": "Bearer"}
            )
        given = hashlib.sha256(token.encode()).hexdigest()
        if self.admin_sha256 is not None and hmac.compare_digest(given, self.admin_sha256):
            return
        grant = self.tokens.get(given)
        if grant is None:  # unknown and revoked read the same, to the client and in the log
            self._refuse(scope, model, 401, "a token that is not valid")
            raise Denied(
                401,
                self._unauthorized("was not accepted", scope),
                {"www-authenticate": 'Bearer error="invalid_token"'},
            )
        why = grant.refusal(scope, model)
        if why is None:
            return
        message = self._forbidden(why, scope, model)
        self._refuse(scope, model, 403, f"token {grant.name!r}: {message.split(';')[0]}")
        raise Denied(
            403,
            message,
            {"www-authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )

    @staticmethod
    def _forbidden(why: str, scope: str, model: str | None) -> str:
        if why == "model":
            return (
                f"This token is not for model {model[:80]!r}; ask for one that is: "
                f"`{command('token create', 'NAME', scope=scope, model='MODEL')}`."
            )
        if why == "server":
            return (
                "This token is for some models only; calls about the whole server (/v2, "
                "/metrics, every model's statistics, the repository index) need a "
                f"{scope!r} token for every model: "
                f"`{command('token create', 'NAME', scope=scope)}`."
            )
        return (
            f"This token lacks the {scope!r} scope this call needs; ask for one that has it: "
            f"`{command('token create', 'NAME', scope=scope)}`."
        )

    @staticmethod
    def _unauthorized(what: str, scope: str) -> str:
        return (
            f"The token {what}: send the header 'Authorization: Bearer <token>' with "
            f"the server's token (the {option('token')} it was started with, or the "
            "generated one: server.token in Python, shown once on the terminal that started "
            f"it) or a token made with `{command('token create', 'NAME', scope=scope)}`."
        )

    def _refuse(self, scope: str, model: str | None, status: int, who: str) -> None:
        key = (scope, status)
        self.refused[key] = self.refused.get(key, 0) + 1
        about = "the whole server" if model is None else f"model {model[:80]!r}"
        self._log_limited(f"refused {status} for {scope} on {about}: {who}")

    def _log_limited(self, line: str) -> None:
        """A burst of :data:`LOG_BURST` lines, then :data:`LOG_PER_S` a second: a flood of
        bad requests must not fill the disk. Lines held back are counted in the next line
        written (``/metrics`` counts every refusal)."""
        now = time.monotonic()
        allowance, last, held = self._log_budget
        allowance = min(LOG_BURST, allowance + (now - last) * LOG_PER_S)
        if allowance < 1:
            self._log_budget = (allowance, now, held + 1)
            return
        if held:
            line += f" (and {held} more refusals not logged)"
        self._log_budget = (allowance - 1, now, 0)
        self._log_once(line)

    def _log_once(self, line: str) -> None:
        try:
            self.log(printable(line, multiline=False))
        except Exception:  # a log that cannot be written must not turn a 401 into a 500
            pass

    def prometheus(self) -> str:
        """Refusals as Prometheus text, appended to ``/metrics``."""
        lines = [
            "# HELP maas_auth_refused_total Requests refused for want of a credential or scope.",
            "# TYPE maas_auth_refused_total counter",
        ]
        for (scope, status), count in sorted(self.refused.items()):
            lines.append(f'maas_auth_refused_total{{scope="{scope}",status="{status}"}} {count}')
        return "\n".join(lines) + "\n"


class TokenTable:
    """The live named tokens of the registry at ``root``, kept in memory.

    Its own connection (``PRAGMA data_version`` is per connection), opened on the first
    look-up: a server nobody sends a named token never opens it. If the table cannot be
    read, no named token is accepted until it can (the server's own token still is)."""

    def __init__(self, root, log):
        self.root, self.log = root, log
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._asked = float("-inf")
        self._grants: dict = {}
        self._failed = False

    def get(self, sha256: str):
        """The :class:`maas_lab.tokens.Grant` of the live token with this digest, or None.

        A digest not in memory asks at once (a token made a moment ago works at once; the
        question is one pragma, no read, unless the registry changed); one in memory is
        asked about at most every :data:`RECHECK_S`."""
        grant = self._grants.get(sha256)
        if grant is None or time.monotonic() - self._asked >= RECHECK_S:
            self._refresh()
            grant = self._grants.get(sha256)
        return grant

    def _refresh(self) -> None:
        from ..tokens import grants

        with self._lock:
            try:
                conn = self._connection()
                version = conn.execute("pragma data_version").fetchone()[0]
                if version != self._version:  # asked before the read: a later commit
                    self._grants = grants(conn)  # moves it again, and is read next time
                    self._version = version
                self._failed = False
            except (sqlite3.Error, OSError) as exc:
                self._grants, self._version = {}, None
                if not self._failed:
                    self.log(f"cannot read the tokens table; named tokens are refused: {exc}")
                self._failed = True
            self._asked = time.monotonic()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            from ..registry.db import connect
            from ..registry.registry import Registry

            self._conn = connect(Registry(self.root).root / "registry.db").conn
        return self._conn
