"""A job's own process (``python -m maas_lab.launching.monitor ROOT ID``): it runs the
launcher's command, keeps the job's row up to date, and records how the job ended.

Why a process of its own rather than a thread of the kernel that launched the job: the job
outlives the kernel (a restart, a closed notebook), ``maas cancel`` from any shell reaches
it, and its end is still recorded. It starts the launcher in a new process group, so a
cancel reaches every rank, and after the launcher exits it stops anything of the job left
behind (found by the ``MAAS_LAB_JOB_DIR`` each of its processes inherits), so no rank
outlives its job.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..hints import option, prog_scope
from . import jobs

GRACE_S = 10.0  # a cancelled job's processes get this long after SIGTERM, then SIGKILL
POLL_S = 0.2


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_leftovers(folder: Path, grace_s: float = 2.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process still running for the job; returns their pids."""
    found = jobs.processes(folder)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and jobs.processes(folder):
            time.sleep(0.05)
        if not jobs.processes(folder):
            break
    return found


def _rank_errors(folder: Path) -> list[dict]:
    errors = [jobs.read_json(p, {}) for p in folder.glob("error-rank*.json")]
    return sorted((e for e in errors if e), key=lambda e: e.get("time", 0))


def first_rank_error(folder: Path) -> dict | None:
    """The record of the rank that failed first (rank, type, message, traceback)."""
    errors = _rank_errors(folder)
    return errors[0] if errors else None


def rank_error(folder: Path) -> str | None:
    """The first rank's exception, as "rank 1: ValueError: ...", naming other failed ranks."""
    errors = _rank_errors(folder)
    if not errors:
        return None
    first = errors[0]
    message = " ".join(str(first.get("message", "")).split())
    text = f"rank {first['rank']}: {first['type']}" + (f": {message}" if message else "")
    others = sorted({e["rank"] for e in errors[1:]} - {first["rank"]})
    if others:
        which = "rank" if len(others) == 1 else "ranks"
        text += f" (then {which} {', '.join(map(str, others))} failed too)"
    return text


def _last_exception_line(log: str) -> str | None:
    lines = re.findall(r"^(?:\[[\w.-]+\]:\s*)*([\w.]*(?:Error|Exception)\b:?.*)$", log, re.M)
    return lines[-1].strip() if lines else None


def _explain(row: dict, log: str) -> str | None:
    """The launcher's own reading of its failure (a rendezvous that timed out...)."""
    try:
        from ..plugins import get_plugins

        comp = get_plugins().launcher(row["launcher"])
        plan = comp.run(["-m", "maas_lab.launching.rank", "-"], row["options"])
        return plan.explain(log) if plan.explain else None
    except Exception:
        return None


def run(root: Path, job_id: int) -> int:
    from ..registry import open as open_registry

    reg = open_registry(root)
    row = jobs.get(reg.db, job_id)
    folder = jobs.job_dir(reg.root, job_id)
    spec = jobs.read_json(folder / "job.json")
    launch = jobs.read_json(folder / "launch.json")
    env = {
        **os.environ,
        **launch["env"],
        jobs.ENV_DIR: str(folder),
        "MAAS_LAB_HOME": str(reg.root),
        "MAAS_LAB_PROGRESS": "0",  # rank 0 reports to our file; no bars in the log
        "PYTHONUNBUFFERED": "1",
        # the engine's and the ranks' temporary files (torch elastic's logs...) go with the
        # job and are removed when it ends
        "TMPDIR": str(folder / "tmp"),
    }
    (folder / "tmp").mkdir(exist_ok=True)
    cancelled, running = [], []

    def on_signal(signum, frame):
        cancelled.append(time.monotonic())
        for child in running:
            _signal_group(child.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    log = (folder / "job.log").open("ab")
    started = time.time()
    proc = subprocess.Popen(
        row["command"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=spec["cwd"],
        env=env,
        start_new_session=True,
    )
    running.append(proc)
    if cancelled:  # cancelled while starting
        _signal_group(proc.pid, signal.SIGTERM)
    timeline = {**row["timeline"], "launcher_started": started}
    jobs.update(
        reg.db,
        job_id,
        status="running",
        launcher_pid=proc.pid,
        started_at=jobs.now(),
        timeline=timeline,
    )
    seen, first = None, None
    while proc.poll() is None:
        time.sleep(POLL_S)
        if cancelled and time.monotonic() - cancelled[0] > GRACE_S:
            _signal_group(proc.pid, signal.SIGKILL)
        progress = jobs.last_progress(folder)
        if first is None and progress:
            first = jobs.first_progress(folder)
            timeline["first_step"] = first.get("t")
        if progress and progress != seen:
            seen = progress
            world = jobs.read_json(folder / "world.json", {})
            jobs.update(
                reg.db,
                job_id,
                progress=jobs.with_rate(progress, first),
                world_size=world.get("world_size") or row["world_size"],
                timeline=timeline,
            )
    code = proc.returncode
    leftovers = stop_leftovers(folder)
    log.close()
    shutil.rmtree(folder / "tmp", ignore_errors=True)
    if first is None:  # it ended before the first poll saw a report
        first = jobs.first_progress(folder) or None
        if first:
            timeline["first_step"] = first.get("t")
    timeline["ended"] = time.time()
    world = jobs.read_json(folder / "world.json", {})
    if "started" in world:
        timeline["rank0_started"] = world["started"]
    if "ready" in world:
        timeline["rank0_ready"] = world["ready"]
    result = jobs.read_json(folder / "result.json", {})
    progress = jobs.last_progress(folder)
    fields = {
        "exit_code": code,
        "ended_at": jobs.now(),
        "timeline": timeline,
        "progress": jobs.with_rate(progress, first) if progress else {},
        "world_size": world.get("world_size") or row["world_size"],
        "registered": result.get("ref"),
    }
    # Read by whoever launched the job: options spelled as they gave them (maas, %maas or
    # Python).
    with prog_scope(spec.get("prog")):
        if cancelled:
            status, error = "cancelled", f"cancelled after {time.time() - started:.1f} s"
        elif code == 0 and row["register_as"] and not result and world:  # world: rank 0 ran here
            status = "failed"
            error = (
                f"{option('register', row['register_as'])} was given but the job registered "
                "nothing: call "
                "registry.register(model, factory=...) in train() (every rank may; rank 0 writes)."
            )
        elif code == 0:
            status, error = "succeeded", None
        else:
            text = (folder / "job.log").read_text(errors="replace")
            status = "failed"
            error = rank_error(folder) or _explain(row, text) or _last_exception_line(text)
            error = error or f"the launcher exited with code {code}"
    if leftovers:
        with (folder / "job.log").open("a") as f:
            f.write(f"[maas_lab] stopped {len(leftovers)} process(es) left behind: {leftovers}\n")
    jobs.update(reg.db, job_id, status=status, error=error, **fields)
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), int(sys.argv[2])))
