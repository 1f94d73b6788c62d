"""Where jobs are recorded: one registry row per job, plus a folder for its files.

The row says what ran and how it ended; the folder (``<root>/jobs/<id>/``) holds what the
job's processes write as they go: ``job.json`` (what each rank must run), ``job.log`` (every
rank's output), ``progress.jsonl`` (rank 0's reports), ``world.json`` (the world size rank 0
saw), ``error-rank<N>.json`` (a rank's exception) and ``result.json`` (what rank 0
registered). Ranks never write the row: the job's monitor process reads those files and
keeps the row up to date, so a training loop never waits on the database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import NotFoundError, UsageError
from ..hints import command
from ..registry.db import now, write
from ..registry.refs import MAX_NUMBER, is_digits

RUNNING = ("starting", "running")
ENDED = ("succeeded", "failed", "cancelled", "lost")
_JSON = ("options", "command", "progress", "timeline")
ENV_DIR = "MAAS_LAB_JOB_DIR"  # set in every process of a job: how its processes are found


def job_dir(root: Path, job_id: int) -> Path:
    return Path(root) / "jobs" / str(int(job_id))


def parse_id(text) -> int:
    """``7``, ``"7"`` or ``"job-7"`` to 7."""
    raw = str(text).strip()
    digits = raw[4:] if raw.lower().startswith("job-") else raw
    if not is_digits(digits):
        raise UsageError(f"{raw!r} is not a job id: jobs are numbered (see `{command('jobs')}`).")
    if int(digits) > MAX_NUMBER:
        raise UsageError(f"{raw!r}: no job has so large a number (see `{command('jobs')}`).")
    return int(digits)


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    for key in _JSON:
        row[key] = json.loads(row[key] or ("[]" if key == "command" else "{}"))
    return row


def get(db, job_id: int) -> dict | None:
    rows = list(db.query("select * from jobs where id = ?", [int(job_id)]))
    return _decode(rows[0]) if rows else None


def find(db, text) -> dict:
    job_id = parse_id(text)
    row = get(db, job_id)
    if row is None:
        ids = [str(r["id"]) for r in db.query("select id from jobs order by id desc limit 10")]
        raise NotFoundError("job", str(job_id), ids)
    return row


def all_rows(db, limit: int = 50) -> list[dict]:
    return [_decode(r) for r in db.query("select * from jobs order by id desc limit ?", [limit])]


def insert(db, row: dict) -> int:
    stamp = now()
    record = {k: json.dumps(v) if k in _JSON else v for k, v in row.items()}
    with write(db):
        return db["jobs"].insert({**record, "created_at": stamp, "updated_at": stamp}).last_pk


def update(db, job_id: int, **fields) -> None:
    values = {k: json.dumps(v) if k in _JSON else v for k, v in fields.items()}
    values["updated_at"] = now()
    sets = ", ".join(f"{k} = ?" for k in values)
    with write(db):
        db.execute(f"update jobs set {sets} where id = ?", [*values.values(), int(job_id)])


def delete(db, job_id: int) -> None:
    with write(db):
        db.execute("delete from jobs where id = ?", [int(job_id)])


def processes(folder: Path) -> list[int]:
    """The pids of every process still running for the job in ``folder`` (launcher, ranks,
    anything they started), found by the environment variable each of them inherits.
    Reading another process's environment needs the same user, which a job's are."""
    wanted = f"{ENV_DIR}={folder}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not is_digits(entry.name) or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and wanted in env.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def write_json(path: Path, data) -> None:
    """Atomically, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def last_progress(folder: Path) -> dict:
    """The newest line of ``progress.jsonl`` (rank 0 appends one per report)."""
    path = folder / "progress.jsonl"
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue  # a line being written
    return {}


def progress_history(folder: Path, limit: int = 2000) -> list[dict]:
    """Every report rank 0 wrote (step, loss, samples, t), oldest first; when there are
    more than ``limit``, an even sample of them that keeps the first and the newest."""
    try:
        lines = (folder / "progress.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    if len(out) > limit:
        stride = len(out) / (limit - 1)
        out = [out[int(i * stride)] for i in range(limit - 1)] + [out[-1]]
    return out


def first_progress(folder: Path) -> dict:
    """The first line of ``progress.jsonl``: the first step's report."""
    try:
        with (folder / "progress.jsonl").open() as f:
            return json.loads(f.readline())
    except (OSError, ValueError):
        return {}


def with_rate(progress: dict, first: dict | None) -> dict:
    """``progress`` plus ``samples_per_s``: samples counted since the first report, over
    the time since it (the first step's warm-up and compilation are left out)."""
    out = dict(progress)
    if first and progress.get("t", 0) > first.get("t", 0):
        done = progress.get("samples", 0) - first.get("samples", 0)
        out["samples_per_s"] = round(done / (progress["t"] - first["t"]), 1)
    return out
