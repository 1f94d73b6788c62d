"""Named access tokens for servers: who may infer, read or manage which models.

A token is shown once, when it is made, and never stored: the ``tokens`` table keeps its
sha256 with its name, scopes, models (none: every model), who made it and when, and when
it was revoked. A copy of the registry, a backup or a ``datasette`` view of it holds
nothing a client could send. sha256 without a salt or a slow hash is enough here: the
secret is 32 random bytes, not a password, so there is nothing to guess from its digest.

Names are never reused, not even after a revoke: a server's log names the token it
refused, and that name must keep meaning one token. Rows are kept after a revoke, as the
record of who made the token and who revoked it.

Scopes (what :class:`Grant` answers): ``infer`` runs its models and reads what a client
reads to form a request for them (their metadata, readiness, configuration and
statistics); ``read`` reads without running, and is what the routes about the whole
server need (``/v2``, ``/metrics``, statistics of every model); ``admin`` is the model
repository (load, unload, index) and includes both. A token for some models answers for
those models only: the routes about the whole server also tell of the others, so they
need a token for every model.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from .errors import ConflictError, NotFoundError, UsageError
from .hints import command, typed
from .registry.db import now, write
from .registry.refs import check_key, check_model_name
from .results import Table

SCOPES = ("infer", "read", "admin")
PREFIX = "maas_"  # recognisable in a leaked file or a secret scanner's rules


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: object) -> str:
    return check_key("token name", name)


def check_scopes(scopes) -> list[str]:
    """``scopes`` as a sorted list: a list, or one string (``"infer"``, ``"infer,read"``)."""
    words = [scopes] if isinstance(scopes, str) else list(scopes or ())
    found = set()
    for word in words:
        if not isinstance(word, str):
            raise UsageError(f"A scope is one of {', '.join(SCOPES)}; got {word!r}.")
        for scope in filter(None, (w.strip() for w in word.split(","))):
            if scope not in SCOPES:
                raise UsageError(f"Unknown scope {scope!r}: use {', '.join(SCOPES)}.")
            found.add(scope)
    if not found:
        raise UsageError(f"Give a token at least one scope: {', '.join(SCOPES)}.")
    return sorted(found, key=SCOPES.index)


def check_models(reg, models) -> list[str]:
    """Registered model names (a token is for a model, whichever version it serves)."""
    names = [models] if isinstance(models, str) else list(models or ())
    found: list[str] = []
    for name in names:
        if isinstance(name, str) and "@" in name:
            raise UsageError(
                f"A token is for a model, not a version: give {name.split('@')[0]!r}, not {name!r}."
            )
        reg.model_row(check_model_name(name))  # NotFoundError naming the known ones
        if name not in found:
            found.append(name)
    return sorted(found)


@dataclass(frozen=True)
class Grant:
    """What one live token allows; ``models`` empty means every model."""

    name: str
    scopes: frozenset
    models: frozenset

    def refusal(self, scope: str, model: str | None) -> str | None:
        """Why this token may not do ``scope`` on ``model`` (None: the whole server): "scope"
        (it lacks the scope), "server" (it is for some models, the call is about all of
        them) or "model" (not for this one); None when it may."""
        allowed = (
            "admin" in self.scopes
            or scope in self.scopes
            or (scope == "read" and model is not None and "infer" in self.scopes)
        )
        if not allowed:
            return "scope"
        if self.models and model is None:
            return "server"
        if self.models and model not in self.models:
            return "model"
        return None


def create(reg, name: str, scopes, models, by: str) -> tuple[dict, str]:
    """Make a token: its row and the token itself, which nothing keeps."""
    name = check_name(name)
    scopes = check_scopes(scopes)
    models = check_models(reg, models)
    token = PREFIX + secrets.token_urlsafe(32)
    row = {
        "name": name,
        "sha256": digest(token),
        "scopes": json.dumps(scopes),
        "models": json.dumps(models),
        "created_by": by,
        "created_at": now(),
        "revoked_at": None,
        "revoked_by": None,
    }
    with write(reg.db):
        old = _row(reg.db, name)
        if old is not None:
            state = f"revoked {old['revoked_at']}" if old["revoked_at"] else "live"
            raise ConflictError(
                f"A token named {name!r} exists already ({state}, made by "
                f"{old['created_by']}); names are never reused, so that logs naming a token "
                "keep meaning one token. Pick another name."
            )
        reg.db["tokens"].insert(row)
        _event(reg, by, "token-create", {"name": name, "scopes": scopes, "models": models})
    return _shown(row), token


def revoke(reg, name: str, by: str) -> dict:
    """Revoke ``name``; revoking a revoked token changes nothing (the first revoke stays)."""
    check_name(name)
    with write(reg.db):
        row = _row(reg.db, name)
        if row is None:
            names = [r[0] for r in reg.db.execute("select name from tokens").fetchall()]
            raise NotFoundError("token", name, names)
        if row["revoked_at"] is None:
            row.update(revoked_at=now(), revoked_by=by)
            reg.db.execute(
                "update tokens set revoked_at = ?, revoked_by = ? where name = ?",
                [row["revoked_at"], by, name],
            )
            _event(reg, by, "token-revoke", {"name": name})
    return _shown(row)


def rows(reg) -> list[dict]:
    """Every token, live and revoked, oldest first; never a digest."""
    return [_shown(r) for r in reg.db.query("select * from tokens order by created_at, name")]


def grants(conn) -> dict[str, Grant]:
    """Live tokens by the sha256 of the token, from a ``sqlite3`` connection (a server's)."""
    found = {}
    for name, sha, scopes, models in conn.execute(
        "select name, sha256, scopes, models from tokens where revoked_at is null"
    ).fetchall():
        found[sha] = Grant(name, frozenset(json.loads(scopes)), frozenset(json.loads(models)))
    return found


def _row(db, name: str) -> dict | None:
    found = list(db.query("select * from tokens where name = ?", [name]))
    return found[0] if found else None


def _shown(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "sha256"}
    for key in ("scopes", "models"):
        if isinstance(out[key], str):
            out[key] = json.loads(out[key])
    return out


def _event(reg, by: str, action: str, detail: dict) -> None:
    reg.db["events"].insert(
        {"at": now(), "actor": by, "action": action, "detail": json.dumps(detail, sort_keys=True)}
    )


class NewToken(Table):
    """What ``token create`` returns: the new token's row, with where to find the token.

    As with a server's generated token (``serving.control.ServerHandle``), the token is the
    ``token`` attribute and nowhere in what this renders (``str``, ``repr``, HTML): a
    notebook saves every output it shows, so a secret shown there travels with the file.
    ``maas token create`` in a shell prints it alone on stdout instead (see the CLI)."""

    def __init__(self, row: dict, token: str):
        self.name, self.token = row["name"], token
        shown = {
            "name": row["name"],
            "scopes": ", ".join(row["scopes"]),
            "models": ", ".join(row["models"]) or "(all)",
            "created_by": row["created_by"],
            "created_at": row["created_at"],
        }
        super().__init__([shown], title=f"Token {self.name}", note=self._where())

    def _where(self) -> str:
        prog = typed()
        revoke = f"`{command('token revoke', self.name)}`"
        if prog is None:
            where = "it is `.token` of this result (not displayed, so saved outputs never hold it)"
        elif prog.startswith("%"):
            where = (
                "it is not displayed (saved notebooks keep outputs): "
                f"`tok = {command('token create', 'NAME', scope='infer')}`, then `tok.token` "
                "(or `_.token` in the next cell)"
            )
        else:
            where = "it is the line printed on stdout"
        return (
            f"The token: {where}. It is shown only now (its sha256 is what is kept): store "
            f"it, and send it as 'Authorization: Bearer <token>'. Revoke it with {revoke}."
        )
