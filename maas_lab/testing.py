"""Pytest fixtures for maas_lab and for third-party plugin authors (``-p maas_lab.testing``
is automatic: it is registered through the ``pytest11`` entry point).

- ``maas_home``: a fresh registry folder, set as ``MAAS_LAB_HOME`` for the test;
- ``maas_plugins``: a fresh plugin set for the test (register test plugins on it);
- ``tiny_torch_model``: a small MLP with its weights saved as safetensors;
- ``maas_shell``: an IPython shell with ``%load_ext maas_lab`` done;
- ``registry_snapshot(root)``: everything on disk, to prove a refused call changed nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest


def registry_snapshot(root: Path) -> tuple[list[str], dict[str, str]]:
    """The database's logical content and every other file under ``root`` with its digest.

    SQLite's own files are compared through their dump, not their bytes, since a checkpoint
    may rewrite them without changing any row. ``checkouts/`` is left out: it is a cache of
    links that any read (``load``, ``export``) may lay out, verified and rebuilt on each use.
    """
    root = Path(root)
    dump: list[str] = []
    db = root / "registry.db"
    if db.exists():
        conn = sqlite3.connect(db)
        try:
            dump = list(conn.iterdump())
        finally:
            conn.close()
    files = {}
    if root.exists():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.name.startswith("registry.db") or rel.split("/")[0] == "checkouts":
                continue
            if path.is_symlink():
                files[rel] = "-> " + str(path.readlink())
            elif path.is_file():
                files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                files[rel] = "dir"
    return dump, files


@pytest.fixture
def maas_home(tmp_path, monkeypatch):
    from .registry import close_all

    home = tmp_path / "registry"
    monkeypatch.setenv("MAAS_LAB_HOME", str(home))
    monkeypatch.setenv("MAAS_LAB_PROGRESS", "0")
    yield home
    close_all()


@pytest.fixture
def maas_plugins():
    from .plugins import Plugins, set_plugins

    fresh = Plugins()
    old = set_plugins(fresh)
    yield fresh
    set_plugins(old)


@pytest.fixture
def tiny_torch_model(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from .zoo import mlp

    torch.manual_seed(0)
    config = {"in_features": 8, "hidden": 16, "out_features": 3}
    model = mlp(**config).eval()
    weights = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), str(weights))
    return {"model": model, "factory": "maas_lab.zoo:mlp", "config": config, "weights": weights}


@pytest.fixture
def maas_shell(maas_home):
    IPython = pytest.importorskip("IPython")
    shell = IPython.core.interactiveshell.InteractiveShell.instance()
    shell.run_line_magic("load_ext", "maas_lab")
    return shell
