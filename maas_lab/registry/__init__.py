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


_open: dict = {}


def open(root=None):  # noqa: A001 - registry.open(root), as sqlite3.connect or tarfile.open
    """The registry at ``root`` (default ``$MAAS_LAB_HOME`` or ``~/.maas_lab``), opened once
    per process and kept open: every layer that needs it asks here, so one connection (and
    its WAL) serves the API, the server and the job monitor alike."""
    from .registry import Registry

    reg = Registry(root)  # connects on first use, so a spare one costs nothing
    return _open.setdefault(reg.root.resolve(), reg)


def close_all() -> None:
    """Close every registry this process opened (before deleting or moving its folder)."""
    for reg in _open.values():
        reg.close()
    _open.clear()


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted([*_EXPORTS, "open", "close_all"])
