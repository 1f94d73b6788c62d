"""The local registry: SQLite (via sqlite-utils) plus a content-addressed blob store.

Exports load on first use: sqlite-utils imports pandas at import time when it is installed
(a quarter of a second), which commands that never open the registry should not pay.
"""

from __future__ import annotations

_EXPORTS = {
    "Checkout": "registry",
    "FileSpec": "registry",
    "Registry": "registry",
    "default_root": "registry",
    "Ref": "refs",
    "parse_ref": "refs",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
