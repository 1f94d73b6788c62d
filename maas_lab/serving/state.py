"""Where servers are recorded: one registry row per server, plus a run folder for its files.

The row says what should be served and by how many replicas; the processes poll it, so a
change made from any notebook or shell reaches every replica without a control socket.
Each worker writes a small JSON snapshot (readiness, loaded versions, counters) into the
run folder every second, and at once when ``status`` asks (a signal), so status pages read
files, never slow the server down, and still show the request answered a moment ago.

Processes are named by pid *and* start time: a pid alone may belong to another program by
the time a stale row is read, and signalling it would hit a stranger.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

from ..errors import ConflictError, UsageError
from ..hints import command, option
from ..registry.db import now, write

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SNAPSHOT_EVERY_S = 1.0


_JOB_ID = re.compile(r"(?i:job-)?[0-9]+")


def reads_as_job_id(name: str) -> bool:
    """``7`` or ``job-7``: what ``maas logs``, ``cancel`` and ``wait`` take as a job."""
    return isinstance(name, str) and _JOB_ID.fullmatch(name) is not None


def check_server_name(name: str) -> str:
    """A server's name is a folder under the home, and never reads as a job id: ``maas
    logs 7`` then always means job 7."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"Invalid server name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)."
        )
    if reads_as_job_id(name):
        raise UsageError(
            f"Invalid server name {name!r}: it reads as a training job's id "
            f"(`{command('logs', name)}` shows that job). Give the server a name with a "
            f"letter: {option('name', f'srv-{name}')}."
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


def url(row: dict) -> str:
    """Where a server row answers: https when it was started with TLS; a wildcard bind is
    shown as loopback (what a client on this machine connects to)."""
    host = row["host"]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    scheme = "https" if (row.get("options") or {}).get("tls_cert") else "http"
    return f"{scheme}://{shown}:{row['port']}"


def grpc_address(row: dict) -> str | None:
    """``host:port`` of a server's gRPC side (what ``tritonclient.grpc`` takes), or None."""
    port = (row.get("options") or {}).get("grpc_port")
    if port is None or not row.get("pid"):  # 0 until the supervisor has reserved one
        return None
    return url(row).split("://", 1)[1].rsplit(":", 1)[0] + f":{port}"


def starter() -> dict:
    """The process starting a server (pid and start time), kept in the row's options until
    the supervisor writes its own pid: a row without a pid is live while its starter runs."""
    return {"pid": os.getpid(), "started": process_started(os.getpid())}


STARTING_GRACE_S = 300.0  # a row without a pid or starter is taken as starting this long


def row_alive(root: Path, row: dict | None) -> bool:
    """True if a row belongs to a server that runs or is being started: its supervisor
    runs (:func:`supervisor_alive`), or it has no pid yet and the process that inserted it
    still runs."""
    if not row:
        return False
    if row.get("pid"):
        return supervisor_alive(root, row)
    who = (row.get("options") or {}).get("starter")
    if isinstance(who, dict):
        return same_process(who.get("pid"), who.get("started"))
    return time.time() - _stamp(row.get("updated_at")) < STARTING_GRACE_S


def _stamp(text) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


def insert(db, row: dict, root: Path) -> None:
    """Record a new server; the check that its name is free and the insert are one write
    transaction, so of two starts with one name exactly one gets it. A live server of that
    name (running, or still being started) is a ConflictError naming it; a dead one's row
    is replaced."""
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
        existing = get(db, row["name"])
        if row_alive(root, existing):
            name = row["name"]
            where = f"runs at {url(existing)}" if existing["pid"] else "is being started"
            raise ConflictError(
                f"A server named {name!r} already {where}. Stop it "
                f"(`{command('stop', name)}`), or pass {option('name')} for a second one."
            )
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
    """True if ``pid`` runs and its command line holds ``marker``. A weak test (a reused pid
    of any program whose arguments say "maas" passes): servers use :func:`same_process` with
    the start time recorded beside the pid instead."""
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


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces and
    parentheses): index 0 is the state, 1 the parent pid, 19 the start time."""
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_bytes()
    except (OSError, ValueError):
        return None
    return raw[raw.rindex(b")") + 2 :].split()


def process_started(pid: int | None) -> int | None:
    """When ``pid`` started, in clock ticks since boot, or None if it does not run (a zombie
    counts as gone). A pid is reused by the kernel; a pid with its start time is not, so the
    pair names one process for the machine's uptime."""
    if not pid:
        return None
    fields = _stat(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


_HAVE_PROC = Path("/proc/self/stat").exists()


def same_process(pid: int | None, started: int | None) -> bool:
    """True if the process recorded as (``pid``, ``started``) still runs. Without /proc (not
    Linux) only the pid can be checked, so a recorded identity is trusted while it runs."""
    if not pid:
        return False
    if not _HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return started is not None and process_started(pid) == started


def _supervisor_file(root: Path, name: str) -> Path:
    return run_dir(root, name) / "supervisor.json"


def record_supervisor(root: Path, name: str) -> None:
    """Called by the supervisor itself before it writes its pid into the row: its pid and
    start time, so no later process that happens to get the same pid passes for it."""
    folder = run_dir(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    tmp = folder / f".supervisor.{pid}.tmp"
    tmp.write_text(json.dumps({"pid": pid, "started": process_started(pid)}))
    os.replace(tmp, _supervisor_file(root, name))


def supervisor_alive(root: Path, row: dict | None) -> bool:
    """True if the supervisor a server row names still runs: the row's pid must be the one
    the supervisor recorded, with the same start time. A stale row whose pid now belongs to
    another process (``sleep``, anything with "maas" in its arguments) is dead."""
    if not row or not row.get("pid"):
        return False
    try:
        recorded = json.loads(_supervisor_file(root, row["name"]).read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("pid") != row["pid"]:
        return False
    return same_process(row["pid"], recorded.get("started"))


HOST = socket.gethostname()


def write_snapshot(folder: Path, pid: int, data: dict) -> None:
    """Write a worker's snapshot, stamped with the writer's start time and parent so that
    readers can tell it from a process that reuses the pid later."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {**data, "proc_started": process_started(pid), "ppid": os.getppid(), "host": HOST}
    tmp = folder / f".{pid}.json.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, folder / f"{pid}.json")


def read_snapshots(folder: Path, pids: list[int] | None = None, max_age_s: float = 10.0):
    """The fresh snapshots of live workers (``pids`` if given), newest information only. A
    snapshot from this machine counts only while the process that wrote it (pid and start
    time) still runs; one from a replica on another machine (an engine's, on a cluster that
    mounts the registry) counts while it is fresh, since its process cannot be seen here."""
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
        fresh = time.time() - data.get("time", 0) <= max_age_s
        elsewhere = data.get("host", HOST) != HOST
        if fresh and (elsewhere or same_process(pid, data.get("proc_started"))):
            out.append(data)
    return sorted(out, key=lambda d: d["pid"])


def _decisions_file(root: Path, name: str) -> Path:
    return run_dir(root, name) / "autoscale.json"


KEEP_DECISIONS = 20


def record_decision(root: Path, name: str, line: str) -> None:
    """Keep an autoscaling decision (one line with its figures) for ``maas status``."""
    path = _decisions_file(root, name)
    lines = [*decisions(root, name), line][-KEEP_DECISIONS:]
    tmp = path.with_name(f".autoscale.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(lines))
    os.replace(tmp, path)


def decisions(root: Path, name: str) -> list[str]:
    """The latest autoscaling decisions of a server, oldest first."""
    try:
        lines = json.loads(_decisions_file(root, name).read_text())
    except (OSError, ValueError):
        return []
    return [x for x in lines if isinstance(x, str)] if isinstance(lines, list) else []


def clear_decisions(root: Path, name: str) -> None:
    _decisions_file(root, name).unlink(missing_ok=True)


REFRESH_SIGNAL = signal.SIGUSR2


def fresh_snapshots(folder: Path, supervisor: int, pids: list[int], wait_s: float = 2.0):
    """Ask each live worker of ``supervisor`` to write its snapshot now, and read them once
    written: what ``status`` shows then includes every request answered before the call.
    A worker that does not answer within ``wait_s`` (busy loading) is shown as last written;
    one that cannot be signalled is shown as of its next periodic snapshot.
    Only workers that wrote a snapshot (so their handler is installed; the signal's default
    action ends a process) and whose parent is the supervisor are signalled, never a reused
    pid."""
    asked = time.time()
    signalled = []
    known = read_snapshots(folder, pids)
    for snap in known:
        pid = snap["pid"]
        if parent_of(pid) == supervisor:
            try:
                os.kill(pid, REFRESH_SIGNAL)
                signalled.append(pid)
            except OSError:
                pass
    deadline = time.monotonic() + wait_s
    while True:
        snaps = read_snapshots(folder, pids)
        current = {s["pid"] for s in snaps if s.get("time", 0) >= asked}
        # Replicas that are not our children (an engine's, e.g. Ray actors) are never
        # signalled: they write every SNAPSHOT_EVERY_S, so their next one is awaited.
        if {s["pid"] for s in known} <= current or time.monotonic() >= deadline:
            return snaps
        time.sleep(0.01)
