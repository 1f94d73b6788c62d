"""Where servers are recorded: one registry row per server, plus a run folder for its files.

The row says what should be served and by how many replicas; the processes poll it, so a
change made from any notebook or shell reaches every replica without a control socket.
Each worker writes a small JSON snapshot (readiness, loaded versions, counters) into the
run folder every second: status pages read those files and never slow the server down.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from ..errors import UsageError
from ..registry.db import now, write

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SNAPSHOT_EVERY_S = 1.0


def check_server_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise UsageError(
            f"Invalid server name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)."
        )
    return name


def run_dir(root: Path, name: str) -> Path:
    return Path(root) / "servers" / check_server_name(name)


def log_path(root: Path, name: str) -> Path:
    return run_dir(root, name) / "server.log"


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    for key in ("models", "options", "workers"):
        row[key] = json.loads(row[key] or ("{}" if key == "options" else "[]"))
    return row


def get(db, name: str) -> dict | None:
    rows = list(db.query("select * from servers where name = ?", [name]))
    return _decode(rows[0]) if rows else None


def all_rows(db) -> list[dict]:
    return [_decode(r) for r in db.query("select * from servers order by name")]


def insert(db, row: dict) -> None:
    stamp = now()
    record = {
        **row,
        "models": json.dumps(row["models"]),
        "options": json.dumps(row.get("options") or {}),
        "workers": json.dumps(row.get("workers") or []),
        "started_at": stamp,
        "updated_at": stamp,
    }
    with write(db):
        db["servers"].insert(record, replace=True)


def update(db, name: str, **fields) -> None:
    values = {
        k: json.dumps(v) if k in ("models", "options", "workers") else v for k, v in fields.items()
    }
    values["updated_at"] = now()
    sets = ", ".join(f"{k} = ?" for k in values)
    with write(db):
        db.execute(f"update servers set {sets} where name = ?", [*values.values(), name])


def delete(db, name: str, pid: int | None = None) -> None:
    """Remove a server's row; with ``pid``, only if that process still owns it (a newer
    server of the same name may have replaced it)."""
    with write(db):
        if pid is None:
            db.execute("delete from servers where name = ?", [name])
        else:
            db.execute("delete from servers where name = ? and pid = ?", [name, pid])


def pid_alive(pid: int | None, marker: str = "maas") -> bool:
    """True if ``pid`` runs and is one of ours (its command line names our module), so a
    reused pid of an unrelated program is not mistaken for a live server."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the signal check
    if not cmdline:  # a zombie: exited, waiting to be reaped
        return False
    return marker.encode() in cmdline


def write_snapshot(folder: Path, pid: int, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{pid}.json.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, folder / f"{pid}.json")


def read_snapshots(folder: Path, pids: list[int] | None = None, max_age_s: float = 10.0):
    """The fresh snapshots of live workers (``pids`` if given), newest information only."""
    out = []
    if not folder.is_dir():
        return out
    for path in folder.glob("*.json"):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if pids is not None and pid not in pids:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if time.time() - data.get("time", 0) <= max_age_s and pid_alive(pid):
            out.append(data)
    return sorted(out, key=lambda d: d["pid"])
