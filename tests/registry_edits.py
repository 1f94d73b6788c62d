"""Changes made to a registry behind maas_lab's back, for tests of what a view does when the
registry changes under it (another tool, a restored backup). No maas_lab command deletes a
version; these edit the SQLite file directly, as such a tool would."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def delete_version(root: str | Path, name: str, number: int) -> None:
    """Remove version ``name@number`` and its rows (files, metrics, tags, aliases)."""
    with sqlite3.connect(Path(root) / "registry.db") as db:
        (vid,) = db.execute(
            "select v.id from versions v join models m on m.id = v.model_id "
            "where m.name = ? and v.number = ?",
            [name, number],
        ).fetchone()
        for table in ("files", "metrics", "tags", "aliases", "alias_history"):
            db.execute(f"delete from {table} where version_id = ?", [vid])
        db.execute("delete from versions where id = ?", [vid])
