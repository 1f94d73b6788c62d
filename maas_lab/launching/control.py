"""Starting, following, listing and cancelling training jobs: what ``maas_lab.api.launch``,
``jobs``, ``logs`` and ``cancel`` do.

``launch`` checks everything it can before a process starts (the target, the launcher's
options, its config file), records the job, asks the launcher plugin for its command, and
hands that to the job's monitor process (:mod:`.monitor`). By default it then follows the
job with a progress bar until it ends; ``wait=False`` (``--detach``) returns at once, with
a :class:`Job` handle (``job.wait()``, ``job.cancel()``, ``job.logs()``, ``job.status``),
and the job is found again with ``maas jobs`` from any notebook or shell.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import JobFailed, UsageError
from ..hints import command, typed
from ..registry import open as open_registry
from ..results import LogTail, Report, Table, kv_table, tail_text
from . import jobs

MONITOR = "maas_lab.launching.monitor"
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _defines_train(source: str, where: str) -> bool:
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as exc:
        raise UsageError(f"{where} does not parse: line {exc.lineno}: {exc.msg}.") from None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "train":
            if len(node.args.args) < 2:
                raise UsageError(
                    f"{where} defines train() with {len(node.args.args)} argument(s); it must "
                    "take two: train(accelerator, registry)."
                )
            return True
    return False


def _target(target: str | None, code: str | None) -> dict:
    """What the processes run, checked now: a cell, ``module:function`` or a ``.py`` file."""
    if code is not None:
        if target:
            raise UsageError(
                f"Give a script ({target}) or a cell's code, not both: in `%%maas launch` "
                "the cell is the training function."
            )
        if not _defines_train(code, "The cell"):
            raise UsageError(
                "A `%%maas launch` cell must define train(accelerator, registry): the "
                "function every process runs."
            )
        return {"kind": "cell", "target": "cell"}
    if not target:
        raise UsageError(
            "What should run? Give a script (train.py), a function (package.module:train), "
            "or use `%%maas launch` with a cell that defines train(accelerator, registry)."
        )
    path = Path(target).expanduser()
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UsageError(f"No script at {target} (looked in {Path.cwd()}).")
        calls = _defines_train(path.read_text(errors="replace"), str(target))
        return {"kind": "script", "target": str(path.resolve()), "calls_train": calls}
    if _FUNCTION.fullmatch(target):
        module = target.split(":", 1)[0]
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise UsageError(f"Cannot find module {module!r} (for {target}): is it on sys.path?")
        return {"kind": "function", "target": target}
    raise UsageError(
        f"{target!r} is neither a .py file nor a module:function. Give train.py, "
        "package.module:train, or a `%%maas launch` cell."
    )


def _launcher(name: str):
    from ..plugins import get_plugins

    return get_plugins().launcher(name)


def launch(
    target: str | None = None,
    *,
    code: str | None = None,
    args=(),
    launcher: str = "accelerate",
    register: str | None = None,
    metric: str | None = None,
    wait: bool = True,
    root=None,
    **options,
):
    """Run a training target on the processes and machines the launcher's ``options`` ask
    for (``processes=2``, ``config="multinode.yaml"``...); see the module docstring."""
    launched = time.time()
    what = _target(target, code)
    if register:
        from ..registry.refs import check_model_name

        check_model_name(register)
    comp = _launcher(launcher)
    opts = comp.options(options)
    reg = open_registry(root)
    job_id = jobs.insert(
        reg.db,
        {
            "launcher": comp.name,
            "kind": what["kind"],
            "target": what["target"],
            "options": opts,
            "register_as": register,
            "metric": metric,
            "status": "starting",
            "timeline": {"launched": launched},
        },
    )
    folder = jobs.job_dir(reg.root, job_id)
    try:
        folder.mkdir(parents=True)
        spec = {
            **what,
            "id": job_id,
            "args": [str(a) for a in args],
            "cwd": os.getcwd(),
            "launcher": comp.name,
            "options": opts,
            "register_as": register,
            "metric": metric,
            "prog": typed(),
        }
        jobs.write_json(folder / "job.json", spec)
        if code is not None:
            (folder / "cell.py").write_text(code)
        plan = comp.call(
            f"launching job {job_id}", ["-m", "maas_lab.launching.rank", str(folder)], opts
        )
        jobs.write_json(folder / "launch.json", {"env": plan.env, "notes": plan.notes})
        jobs.update(reg.db, job_id, command=plan.argv, world_size=plan.world_size)
        env = {k: v for k, v in os.environ.items() if k != jobs.ENV_DIR}
        with (folder / "monitor.log").open("ab") as out:
            monitor = subprocess.Popen(
                [sys.executable, "-m", MONITOR, str(reg.root), str(job_id)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C in the kernel or shell does not reach it
            )
    except BaseException:
        jobs.delete(reg.db, job_id)  # a launch refused before it started leaves nothing
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # The monitor's pid with its start time: a pid the kernel hands to another process later
    # never passes for the monitor, so cancel cannot signal a stranger (see _monitor_alive).
    jobs.write_json(folder / "monitor.json", {"pid": monitor.pid, "started": started_at(monitor)})
    jobs.update(reg.db, job_id, pid=monitor.pid)
    if not wait:
        return Job(job_id, reg.root)
    return follow(job_id, root=root)


class Job(Report):
    """What ``launch(..., wait=False)`` (``--detach``) returns: a handle on the running job.

    It shows as the job's record (``maas jobs ID``) read afresh from the registry each time
    it is shown, and reads as that record: ``job["status"]``, ``job.data``, ``job.title``,
    each as of when it is read. Its methods follow, stop and read the job from any later
    cell; the functions of this module (``api.wait``, ``api.cancel``, ``api.jobs``) take the
    handle as they take its number. ``status`` is the job's status as of now."""

    def __init__(self, job_id: int, root):
        self.id, self.root = int(job_id), Path(root)

    # The record, read when asked (a Report's title, parts and data were fixed when made).
    @property
    def report(self) -> Report:
        """The job's record now, as ``maas jobs ID`` shows it."""
        return show(self.id, root=self.root)

    @property
    def title(self) -> str:
        return self.report.title

    @property
    def parts(self) -> list:
        return self.report.parts

    @property
    def data(self) -> dict:
        return self.report.data

    @property
    def status(self) -> str:
        """``starting``, ``running``, ``succeeded``, ``failed``, ``cancelled`` or ``lost``."""
        return self.data["status"]

    def wait(self) -> Report:
        """Follow the job until it ends, with its progress bar (Ctrl-C cancels it); the
        final record, or ``JobFailed`` (its ``report`` that record) if it failed."""
        return follow(self.id, root=self.root)

    def cancel(self, wait_s: float = 30.0) -> Report:
        """Stop every process of the job; the record it ended with."""
        return cancel(self.id, wait_s=wait_s, root=self.root)

    def history(self, limit: int = 2000) -> list[dict]:
        """The job's progress reports so far, oldest first: ``step``, ``loss``,
        ``samples``, ``t`` (what a live loss chart draws)."""
        return jobs.progress_history(jobs.job_dir(self.root, self.id), limit)

    def logs(self, lines: int = 40) -> LogTail:
        """The last ``lines`` lines of the job's log (every rank's output)."""
        return logs(self.id, lines=lines, root=self.root)

    # One reading of the record per rendering, so text and HTML never disagree.
    def __str__(self) -> str:
        return str(self.report)

    def _repr_html_(self) -> str:
        return self.report._repr_html_()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        report = self.report
        return {"text/plain": str(report), "text/html": report._repr_html_()}

    def __repr__(self) -> str:
        try:
            return f"Job({self.id}, status={self.status!r})"
        except Exception:  # the registry is gone or closed: the handle still names its job
            return f"Job({self.id})"


def _job(job):
    """A job as ``jobs.find`` takes it: a :class:`Job` handle as its number."""
    return job.id if isinstance(job, Job) else job


def follow(job, root=None) -> Report:
    """Wait for a job to end, showing rank 0's progress; Ctrl-C cancels the job."""
    from .. import progress as bars

    reg = open_registry(root)
    row = jobs.find(reg.db, _job(job))
    folder = jobs.job_dir(reg.root, row["id"])
    bar, done = None, 0
    try:
        while True:
            row = _refresh(reg, jobs.get(reg.db, row["id"]))
            last = jobs.last_progress(folder)
            if last.get("total") and bar is None:
                bar = bars.bar(int(last["total"]), f"job {row['id']}", unit="step")
            if bar is not None and last.get("step") is not None:
                bar.update(max(0, int(last["step"]) - done))
                done = max(done, int(last["step"]))
                bar.set_postfix(_postfix(last, row["metric"]), refresh=False)
            if row["status"] in jobs.ENDED:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        cancel(row["id"], root=root)
    finally:
        if bar is not None:
            bar.close()
    report = show(row["id"], root=root)
    row = jobs.get(reg.db, row["id"])
    if row["status"] in ("failed", "lost"):
        raise JobFailed(
            f"Job {row['id']} {row['status']}: {row['error'].rstrip('.')}. Nothing was "
            f"registered. The whole log: `{command('logs', row['id'])}`.",
            report,
        )
    return report


def _postfix(last: dict, metric: str | None) -> dict:
    out = {}
    if "loss" in last:
        out["loss"] = f"{last['loss']:.4f}"
    if metric and metric in last:
        out[metric] = f"{last[metric]:.4g}"
    return out


def _refresh(reg, row: dict) -> dict:
    """A job whose monitor died (killed, machine rebooted) is marked lost, its processes
    stopped; a job still starting has a minute to get its monitor going."""
    if row["status"] not in jobs.RUNNING:
        return row
    if _monitor_alive(reg, row):
        return row
    if not row["pid"] and time.time() - _seconds(row["created_at"]) < 60:
        return row
    from .monitor import stop_leftovers

    stop_leftovers(jobs.job_dir(reg.root, row["id"]))
    jobs.update(
        reg.db,
        row["id"],
        status="lost",
        ended_at=jobs.now(),
        error="its monitor process died; its processes were stopped",
    )
    return jobs.get(reg.db, row["id"])


def started_at(process: subprocess.Popen) -> int | None:
    from ..serving.state import process_started

    return process_started(process.pid)


def _monitor_alive(reg, row: dict) -> bool:
    """The job's monitor still runs: its recorded pid with the start time recorded beside it
    (jobs started before start times were recorded: the pid and the monitor's name)."""
    from ..serving.state import pid_alive, same_process

    if not row["pid"]:
        return False
    known = jobs.read_json(jobs.job_dir(reg.root, row["id"]) / "monitor.json", None)
    if not known or known.get("pid") != row["pid"]:
        return pid_alive(row["pid"], MONITOR)
    return same_process(row["pid"], known.get("started"))


def _seconds(stamp: str | None) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _duration(row: dict) -> float | None:
    if not row["started_at"]:
        return None
    end = _seconds(row["ended_at"]) if row["ended_at"] else time.time()
    return end - _seconds(row["started_at"])


def _metric(row: dict, folder: Path) -> float | None:
    """The job's ``--metric``: as registered if it registered, else as last reported."""
    name = row["metric"]
    if not name:
        return None
    registered = jobs.read_json(folder / "result.json", {}).get("metrics", {})
    return registered.get(name, row["progress"].get(name))


def _metric_text(row: dict, folder: Path) -> str:
    value = _metric(row, folder)
    return "" if value is None else f"{row['metric']}={value:.4g}"


def _target_text(row: dict) -> str:
    return Path(row["target"]).name if row["kind"] == "script" else row["target"]


def show(job, root=None) -> Report:
    """One job in full: what ran, on how many processes, its progress, how it ended."""
    reg = open_registry(root)
    row = _refresh(reg, jobs.find(reg.db, _job(job)))
    folder = jobs.job_dir(reg.root, row["id"])
    prog, line = row["progress"], row["timeline"]
    took = _duration(row)
    summary = {
        "status": row["status"],
        "target": _target_text(row),
        "launcher": row["launcher"],
        "processes": row["world_size"],
        "registered": row["registered"],
        row["metric"] or "": _metric(row, folder),
        "steps": f"{prog['step']}/{prog.get('total') or '?'}" if prog.get("step") else None,
        "loss": f"{prog['loss']:.4f}" if "loss" in prog else None,
        "samples/s": f"{prog['samples_per_s']:,.0f}" if prog.get("samples_per_s") else None,
        "launch to first step": f"{line['first_step'] - line['launched']:.1f} s"
        if "first_step" in line and "launched" in line
        else None,
        "error": row["error"],
        "command": shlex.join(row["command"]) if row["command"] else None,
        "log": command("logs", row["id"]),
    }
    title = f"job {row['id']}: {row['status']}"
    if took is not None and row["status"] in jobs.ENDED:
        title += f" after {took:.1f} s"
    parts = [("", kv_table({k: v for k, v in summary.items() if k and v is not None}))]
    if row["status"] in ("failed", "lost"):
        from .monitor import first_rank_error

        error = first_rank_error(folder)
        if error:  # the failing rank's own traceback, not the launcher's noise after it
            tail = "\n".join(error["traceback"].rstrip().splitlines()[-12:])
            parts.append((f"Rank {error['rank']}'s traceback", tail))
        else:
            parts.append(("End of the log", tail_text(folder / "job.log", 12)))
    return Report(title, parts, data=row)


def list_jobs(limit: int = 20, root=None) -> Table:
    """The newest jobs: status, target, processes, progress, result."""
    reg = open_registry(root)
    rows = []
    for row in jobs.all_rows(reg.db, limit):
        row = _refresh(reg, row)
        prog = row["progress"]
        took = _duration(row)
        rows.append(
            {
                "job": row["id"],
                "status": row["status"],
                "target": _target_text(row),
                "processes": row["world_size"],
                "step": f"{prog['step']}/{prog.get('total') or '?'}" if prog.get("step") else "",
                "loss": prog.get("loss"),
                "metric": _metric_text(row, jobs.job_dir(reg.root, row["id"])),
                "took": f"{took:.1f} s" if took is not None else "",
                "registered": row["registered"] or "",
                "error": (row["error"] or "")[:80],
            }
        )
    columns = "job status target processes step loss metric took registered error".split()
    return Table(rows, columns, title="Jobs", note="" if rows else "No jobs yet.")


def logs(job, lines: int = 40, root=None) -> LogTail:
    """The last lines of a job's log: every rank's output, in the order written."""
    reg = open_registry(root)
    row = jobs.find(reg.db, _job(job))
    path = jobs.job_dir(reg.root, row["id"]) / "job.log"
    return LogTail(f"Last {lines} lines of job {row['id']}'s log", tail_text(path, lines))


def cancel(job, wait_s: float = 30.0, root=None) -> Report:
    """Stop every process of a running job (SIGTERM, then SIGKILL after a grace period)."""
    from .monitor import stop_leftovers

    reg = open_registry(root)
    row = _refresh(reg, jobs.find(reg.db, _job(job)))
    if row["status"] not in jobs.RUNNING:
        raise UsageError(f"Job {row['id']} already {row['status']}: nothing to cancel.")
    folder = jobs.job_dir(reg.root, row["id"])
    started = time.monotonic()
    if _monitor_alive(reg, row):  # checked again: never signal a pid that is not ours now
        try:
            os.kill(row["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = started + wait_s
    while time.monotonic() < deadline:
        row = _refresh(reg, jobs.get(reg.db, row["id"]))
        if row["status"] in jobs.ENDED:
            break
        time.sleep(0.1)
    left = stop_leftovers(folder)
    if row["status"] == "lost":  # its monitor died of our signal before it could record it
        jobs.update(reg.db, row["id"], status="cancelled", error="cancelled while starting")
    elif row["status"] not in jobs.ENDED:
        jobs.update(
            reg.db,
            row["id"],
            status="cancelled",
            ended_at=jobs.now(),
            error=f"cancelled; its monitor did not answer in {wait_s:g} s",
        )
    report = show(row["id"], root=root)
    report.title += f" (every process stopped {time.monotonic() - started:.1f} s after cancel)"
    if left:
        report.title += f"; {len(left)} left behind were killed"
    return report
