"""Which code references (``module:callable``) a person trusted in this registry, and how.

A factory reference is code: importing its module and calling it runs whatever it names.
The table ``trusted_code`` records each reference someone chose to run, who did and how
(typed it in ``register --from-torch``, imported a bundle with ``--trust``, ran ``maas
trust``). The decision itself (built-ins, what a plugin vouches for, what was typed in this
process) is :mod:`maas_lab.trust`'s; this module only keeps the rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from ..errors import NotFoundError, UsageError
from .db import now, write

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CODE_REF = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*")
MAX_REF = 200


def check_code_ref(ref: object) -> str:
    """A ``package.module:callable`` reference, by full match: no spaces, paths or newlines."""
    if not isinstance(ref, str) or len(ref) > MAX_REF or not _CODE_REF.fullmatch(ref):
        shown = repr(ref)[:80]
        raise UsageError(
            f"Code reference {shown} must look like 'package.module:callable' (Python "
            "identifiers separated by dots, one colon)."
        )
    return ref


def is_recorded(reg, ref: str) -> bool:
    return (
        reg.db.execute("select 1 from trusted_code where reference = ?", [ref]).fetchone()
        is not None
    )


def record(reg, refs: Iterable[str], by: str, how: str) -> None:
    """Record ``refs`` as trusted; call inside the caller's write transaction so that the
    grant lands with the version that needs it, or not at all. The first grant is kept."""
    for ref in refs:
        reg.db.execute(
            "insert or ignore into trusted_code (reference, granted_by, granted_at, how) "
            "values (?, ?, ?, ?)",
            [check_code_ref(ref), by, now(), how],
        )


def grant(reg, ref: str, by: str, how: str) -> None:
    with write(reg.db):
        record(reg, [ref], by, how)
        _event(reg, by, "trust", {"reference": ref, "how": how})


def revoke(reg, ref: str, by: str) -> None:
    check_code_ref(ref)
    if not is_recorded(reg, ref):
        raise NotFoundError("trusted code reference", ref, [r["reference"] for r in rows(reg)])
    with write(reg.db):
        reg.db.execute("delete from trusted_code where reference = ?", [ref])
        _event(reg, by, "untrust", {"reference": ref})


def _event(reg, by: str, action: str, detail: dict) -> None:
    reg.db["events"].insert(
        {"at": now(), "actor": by, "action": action, "detail": json.dumps(detail, sort_keys=True)}
    )


def rows(reg) -> list[dict]:
    return list(
        reg.db.query(
            "select reference, granted_by, granted_at, how from trusted_code order by reference"
        )
    )
