"""Who may do what on a server: every route and gRPC call asks :meth:`Access.check` with a
scope and, where the call is about one model, that model's name.

Scopes: ``infer`` (inference), ``read`` (metadata, configuration, statistics, metrics) and
``admin`` (the model repository: load and unload). Health is never guarded. One module for
REST and gRPC, so a request is allowed or refused the same way whichever door it used.

The server's own token (``--token``, or the generated one) is an ``admin`` token; admin
includes every scope.
"""

from __future__ import annotations

import hashlib
import hmac

from ..hints import option

SCOPES = ("infer", "read", "admin")


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


class Access:
    """The rules one worker answers by. ``open_scopes`` need no credential (on loopback with
    a generated token, inference and reading are open and only admin is guarded)."""

    def __init__(self, root, admin_sha256: str | None, token_for_all: bool):
        self.root = root
        self.admin_sha256 = admin_sha256
        self.open_scopes = set() if token_for_all else {"infer", "read"}
        self.refused: dict[tuple[str, int], int] = {}  # (scope, status) -> count

    def check(self, authorization: str | None, scope: str, model: str | None = None) -> None:
        """Return if the credential allows ``scope`` (on ``model``); raise :class:`Denied`."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if scope in self.open_scopes:
            return
        token = bearer(authorization)
        if token is not None and self._is_admin(token):
            return
        status = 401
        why = "was wrong" if authorization else "is missing"
        self._refuse(scope, status)
        raise Denied(
            status,
            f"The token {why}: send the header 'Authorization: Bearer <token>' with "
            f"the server's token: the {option('token')} it was started with, or the "
            "generated one "
            "(server.token in Python; shown once on the terminal that started it).",
            {"www-authenticate": "Bearer"},
        )

    def _is_admin(self, token: str) -> bool:
        if self.admin_sha256 is None:
            return False
        given = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(given, self.admin_sha256)

    def _refuse(self, scope: str, status: int) -> None:
        key = (scope, status)
        self.refused[key] = self.refused.get(key, 0) + 1

    def prometheus(self) -> str:
        """Refusals as Prometheus text, appended to ``/metrics``."""
        lines = [
            "# HELP maas_auth_refused_total Requests refused for want of a credential or scope.",
            "# TYPE maas_auth_refused_total counter",
        ]
        for (scope, status), count in sorted(self.refused.items()):
            lines.append(f'maas_auth_refused_total{{scope="{scope}",status="{status}"}} {count}')
        return "\n".join(lines) + "\n"
