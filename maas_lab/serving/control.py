"""Starting, watching, scaling and stopping servers: what ``maas serve`` and ``%maas serve``
call. Servers run as their own processes (a notebook kernel never blocks, and a crashing
model cannot take the kernel down); everything here talks to them through the registry row,
their snapshot files, signals and HTTP.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import NotFoundError, ServeError, UsageError
from ..hints import command, option, typed
from ..registry import open as open_registry
from ..results import LogTail, Report, Table, tail_text
from ..schemas import SERVE
from . import autoscale as autoscale_mod
from . import state
from .access import token_text
from .metrics import merge, summary

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _url(row: dict) -> str:
    return state.url(row)


def _check_range(label: str, value, low, high):
    if value is None or not (low <= value <= high):
        raise UsageError(f"{option(label)} must be between {low} and {high}; got {value!r}.")
    return value


# ---------------------------------------------------------------------- serve

MOST_DEFAULT_REPLICAS = 4  # each replica holds its own copy of the models in memory


def default_replicas(cores: int | None = None) -> int:
    """One replica per core, up to :data:`MOST_DEFAULT_REPLICAS` (the cores are then shared
    among them as intra-op threads). Measured on 2 cores with MiniLM under load
    (benchmarks/serving.py): 2 replicas of 1 thread served 1.26x what the model runs
    in-process, 1 replica of 2 threads 0.87x: one process's event loop, batching and
    request parsing leave its intra-op threads idle part of the time, and a batch of 8
    short sentences keeps two threads only partly busy, where two processes keep both
    cores at work."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, MOST_DEFAULT_REPLICAS))


_SERVE = SERVE.defaults()  # each option's default, declared once with its help


def serve(
    refs,
    *,
    name: str | None = _SERVE["name"],
    engine: str = _SERVE["engine"],
    host: str = _SERVE["host"],
    port: int = _SERVE["port"],
    replicas: int | None = _SERVE["replicas"],
    max_batch: int = _SERVE["max_batch"],
    max_delay_ms: float = _SERVE["max_delay_ms"],
    max_queue: int = _SERVE["max_queue"],
    timeout_s: float = _SERVE["timeout_s"],
    threads: int = _SERVE["threads"],
    max_body_mb: float = _SERVE["max_body_mb"],
    token: str | None = _SERVE["token"],
    allow_hosts=_SERVE["allow_hosts"],
    drain_s: float = _SERVE["drain_s"],
    max_rows: int = _SERVE["max_rows"],
    header_timeout_s: float = _SERVE["header_timeout_s"],
    body_timeout_s: float = _SERVE["body_timeout_s"],
    grpc_port: int | None = _SERVE["grpc_port"],
    tls_cert: str | None = _SERVE["tls_cert"],
    tls_key: str | None = _SERVE["tls_key"],
    autoscale: str | None = _SERVE["autoscale"],
    target_p99_ms: float = _SERVE["target_p99_ms"],
    explain_max_passes: int = _SERVE["explain_max_passes"],
    explain_queue: int = _SERVE["explain_queue"],
    engine_options: dict | None = None,
    wait_s: float | None = None,
    foreground: bool = False,
    healthy_reset_s: float = 30.0,
    autoscale_timings: dict | None = None,
    root=None,
):
    """Serve one or more registered versions over HTTP (Open Inference Protocol v2).

    A ref that names an alias (``minilm@prod``) or no version (latest) is *followed*: when
    it moves, the server loads the new version beside the old and switches without
    dropping a request. Returns a :class:`ServerHandle` once every replica is ready.

    ``healthy_reset_s``: after running that long with every replica ready, a crashed worker
    is replaced after the shortest delay again.

    ``autoscale="MIN..MAX"``: the supervisor adds a replica while p99 latency (over
    ``target_p99_ms``) or the queue (over ``max_batch`` per replica) stays high, and removes
    one when idle (:mod:`maas_lab.serving.autoscale`). ``replicas`` is where it starts: one
    below MIN starts at MIN (so the default of 1 works with ``2..4``); one above MAX is
    refused. ``autoscale_timings`` overrides the policy's timings
    (:data:`maas_lab.serving.autoscale.DEFAULTS`: ``window_s``, ``up_after_s``,
    ``down_after_s``, ``cooldown_s``, ``min_requests``), kept in the row's options like
    ``healthy_reset_s``; tests shorten them.

    ``tls_cert`` and ``tls_key`` (PEM files) go together: the pair is checked before
    anything starts, and the server answers https (and gRPC over TLS). A server bound
    beyond loopback needs a token for every request, and warns without TLS.

    ``engine`` names what runs the replicas (a ``maas_serving_engines`` plugin: ``local``
    worker processes, ``ray`` for Ray Serve); ``engine_options`` are its own options,
    checked against its schema (and by the engine) before anything starts. ``wait_s``: how
    long to wait for every replica to be ready (default: the engine's ``start_s``, else
    180 s).

    The other defaults are those of :data:`maas_lab.schemas.SERVE`. The handle's hints
    follow the command typed (:func:`maas_lab.hints.typed`: ``maas``, ``%maas``, or its own
    methods from Python), and so do the server's answers that name an option
    (``--max-rows`` or ``max_rows``). A generated token is never shown in the handle's
    output (see :class:`ServerHandle`).
    """
    token = token_text(token)  # before anything: a bad one is refused without being shown
    refs = [refs] if isinstance(refs, str) else list(refs)
    if not refs:
        raise UsageError(
            f"Name at least one model to serve, e.g. `{command('serve', 'minilm@prod')}`."
        )
    # The options before the refs: `--autoscale --target-p99-ms 100` took the flag as the
    # range and 100 as a model, and was answered "No model named '100'".
    scaling = autoscale_mod.check(autoscale, target_p99_ms, 1 if replicas is None else replicas)
    runs_on = _engine(engine)
    if replicas is None:  # with --autoscale, where it starts (MIN); else from the machine
        # for an engine that runs several (a plugin's engine of one process gets 1)
        per_core = runs_on.extra.get("replicas") == "per-core"
        replicas = scaling[0] if scaling is not None else default_replicas() if per_core else 1
    engine_options = runs_on.options(engine_options)
    reg = open_registry(root)
    for ref in refs:
        reg.resolve(ref)  # NotFoundError naming what is missing, before anything starts
    if name is None:  # the first model's name, which may not suit a server (too long...)
        try:
            name = state.check_server_name(refs[0].split("@")[0])
        except UsageError as exc:
            raise UsageError(
                f"{exc} The server takes its name from the first model: give it another "
                f"with {option('name', 'NAME')}."
            ) from None
    else:
        name = state.check_server_name(name)
    _check_range("replicas", replicas, 1, 64)
    _check_range("max_batch", max_batch, 1, 1024)
    _check_range("max_delay_ms", max_delay_ms, 0, 10_000)
    _check_range("max_queue", max_queue, 1, 1_000_000)
    _check_range("port", port, 0, 65535)
    _check_range("timeout_s", timeout_s, 0.001, 3600)
    _check_range("max_body_mb", max_body_mb, 0.001, 4096)
    _check_range("healthy_reset_s", healthy_reset_s, 0.1, 7 * 86400)
    _check_range("max_rows", max_rows, 1, 10_000_000)
    _check_range("header_timeout_s", header_timeout_s, 0.01, 3600)
    _check_range("body_timeout_s", body_timeout_s, 0.01, 3600)
    if grpc_port is not None:
        _check_range("grpc_port", grpc_port, 0, 65535)
    _check_range("explain_max_passes", explain_max_passes, 1, 100_000_000)
    _check_range("explain_queue", explain_queue, 0, 10_000)
    if scaling is not None:
        replicas = scaling[0]
    timings = _autoscale_timings(autoscale_timings)
    _check_tls(tls_cert, tls_key)
    generated = token is None
    if token is not None and len(token) < 16:
        raise UsageError(
            f"A {option('token')} must be at least 16 characters; or leave it out and one is "
            "generated."
        )
    token = token or secrets.token_urlsafe(24)
    most = scaling[1] if scaling is not None else replicas
    if not threads and most > 1:
        # Replicas share the machine's cores: each gets its share at the most replicas the
        # server may run (with --autoscale, MAX), so that a replica added under load brings
        # idle cores to work rather than splitting the busy ones.
        threads = max(1, (os.cpu_count() or 1) // most)
    options = {
        "host": host,
        "max_batch": max_batch,
        "max_delay_ms": max_delay_ms,
        "max_queue": max_queue,
        "timeout_s": timeout_s,
        "threads": threads,
        "max_body_mb": max_body_mb,
        "token_for_all": (not generated) or host not in LOOPBACK,
        "allow_hosts": list(allow_hosts or ()),
        "drain_s": drain_s,
        "max_rows": max_rows,
        "header_timeout_s": header_timeout_s,
        "body_timeout_s": body_timeout_s,
        "grpc_port": grpc_port,
        "tls_cert": str(Path(tls_cert).resolve()) if tls_cert else None,
        "tls_key": str(Path(tls_key).resolve()) if tls_key else None,
        "autoscale": autoscale.strip() if autoscale else None,
        "target_p99_ms": target_p99_ms,
        "explain_max_passes": explain_max_passes,
        "explain_queue": explain_queue,
        "healthy_reset_s": healthy_reset_s,
        **{f"autoscale_{k}": v for k, v in timings.items()},
        "engine": runs_on.name,
        "engine_options": engine_options,
        "prog": typed(),  # the server's answers name options as they were given here
        "starter": state.starter(),  # the row is live while this process starts it
    }
    if runs_on.validate is not None:  # the engine's own checks, before anything starts
        runs_on.validate(engine_options, {**options, "port": port, "replicas": replicas})
    if wait_s is None:
        wait_s = float(runs_on.extra.get("start_s", 180.0))
    folder = state.run_dir(reg.root, name)
    (folder / "workers").mkdir(parents=True, exist_ok=True)
    state.insert(
        reg.db,
        {
            "name": name,
            "host": host,
            "port": port,
            "pid": None,
            "replicas": replicas,
            "models": refs,
            "options": options,
            "status": "starting",
        },
        reg.root,
    )
    env = {
        **os.environ,
        "MAAS_LAB_HOME": str(reg.root),
        "MAAS_SERVE_TOKEN_SHA256": hashlib.sha256(token.encode()).hexdigest(),
    }
    if foreground:
        return _foreground(reg, name, env, token, generated)
    log = state.log_path(reg.root, name)
    try:  # the row names this process as its starter: never leave it behind
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "maas_lab.serving.engine",
                    "--root",
                    str(reg.root),
                    "--name",
                    name,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
    except BaseException:
        state.delete(reg.db, name)
        raise
    try:
        _wait_ready(reg, name, proc, wait_s, log.stat().st_size if log.exists() else 0)
    except BaseException:
        _terminate(proc)
        state.delete(reg.db, name)
        raise
    if generated and _typed_in() == "shell" and sys.stderr.isatty():  # a terminal: never saved
        sys.stderr.write(f"Management token (shown once): {token}\n")
    return ServerHandle(name, reg.root, token=token, generated=generated)


def _engine(name: str):
    """The serving engine plugin ``name``; an unknown one is refused listing those
    installed, and ``ray`` without Ray installed names the extra that brings it."""
    from ..plugins import get_plugins

    plugins = get_plugins()
    try:
        return plugins.engine(name)
    except NotFoundError:
        if name == "ray":
            raise UsageError(
                "The ray engine is not installed: `pip install 'maas-lab[ray]'` installs it "
                "with Ray Serve."
            ) from None
        raise


def _autoscale_timings(given: dict | None) -> dict:
    timings = dict(autoscale_mod.DEFAULTS)
    for key, value in (given or {}).items():
        if key not in timings:
            raise UsageError(
                f"Unknown autoscale timing {key!r}; known: {', '.join(sorted(timings))}."
            )
        _check_range(f"autoscale_{key}", value, 0.0 if key != "min_requests" else 1, 86400)
        timings[key] = type(timings[key])(value)
    return timings


def _check_tls(tls_cert, tls_key) -> None:
    """A certificate needs its key and the other way round; the pair must match and be
    valid now (helper :func:`maas_lab.serving.tls.check_pair`), all before anything starts."""
    if bool(tls_cert) != bool(tls_key):
        missing = "tls_key" if tls_cert else "tls_cert"
        raise UsageError(
            f"{option('tls_cert')} and {option('tls_key')} go together: add "
            f"{option(missing, 'FILE')}, or leave both out to serve without TLS."
        )
    if tls_cert:
        from .tls import check_pair

        check_pair(tls_cert, tls_key)


def _wait_ready(reg, name: str, proc, wait_s: float, log_start: int) -> None:
    deadline = time.monotonic() + wait_s
    log = state.log_path(reg.root, name)
    while time.monotonic() < deadline:
        code = proc.poll()
        row = state.get(reg.db, name)
        if code is not None or (row and row["status"] == "failed"):
            raise _start_error(name, tail_text(log, 30, log_start), row)
        if row and row["status"] == "running":
            snaps = state.read_snapshots(state.run_dir(reg.root, name) / "workers", row["workers"])
            if len(snaps) >= row["replicas"] and all(s["ready"] for s in snaps):
                return
        failed = _load_failure(reg, name, row)
        if failed:
            raise ServeError(f"The server could not load its model: {failed}")
        time.sleep(0.1)
    raise ServeError(
        f"Server {name!r} was not ready after {wait_s:g} s; see `{command('logs', name)}`. "
        "It was stopped."
    )


def _load_failure(reg, name: str, row) -> str | None:
    if not row or not row["workers"]:
        return None
    snaps = state.read_snapshots(state.run_dir(reg.root, name) / "workers", row["workers"])
    for snap in snaps:
        for m in snap["models"]:
            if m["state"] == "failed" and m["number"] is None:
                return m["error"]
    return None


# What the supervisor logs when a port cannot be had, and the option that picks another.
_PORT_FAILURES = (("cannot reserve the gRPC port", "grpc_port"), ("cannot listen on", "port"))


def _start_error(name: str, tail: str, row) -> ServeError:
    for failure, port in _PORT_FAILURES:
        line = next((x for x in tail.splitlines() if failure in x), None)
        if line is not None:
            where = line.split(failure, 1)[1].strip()
            return ServeError(
                f"Server {name!r} could not start: {failure} {where}. Pick another "
                f"{option(port)}, or {option(port, 0)} for any free one."
            )
    return ServeError(f"Server {name!r} failed to start. Its log ends with:\n{tail}")


def _terminate(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _foreground(reg, name: str, env: dict, token: str, generated: bool):
    from .engine import run

    os.environ.update({k: env[k] for k in ("MAAS_LAB_HOME", "MAAS_SERVE_TOKEN_SHA256")})
    row = state.get(reg.db, name)
    sys.stderr.write(f"Serving {', '.join(row['models'])}; Ctrl-C drains and stops.\n")
    if generated:
        sys.stderr.write(f"Management token (shown once): {token}\n")
    sys.stderr.flush()
    code = run(reg.root, name)
    if code:
        raise ServeError(f"Server {name!r} stopped with an error (see above).")
    return Report(f"Server {name} stopped", [])


# ---------------------------------------------------------------------- a running server


class ServerHandle(Table):
    """What ``serve`` returns: a one-row table (server, URL, models, replicas, who needs the
    token) with next steps written for where it was typed, plus shortcuts for the rest.

    The token is the ``token`` attribute and nowhere in what the handle renders (``str``,
    ``repr``, HTML): a notebook saves every output it shows, so a secret printed there
    travels with the file. The hints follow where it was typed (:func:`maas_lab.hints.typed`):
    ``%maas`` syntax in the magic, ``maas`` in a shell, the handle's own methods in Python."""

    def __init__(self, name: str, root, token: str | None = None, generated: bool = False):
        self.name, self.root, self.token = name, Path(root), token
        row = state.get(open_registry(root).db, name)
        self.url = _url(row) if row else None
        self.grpc = state.grpc_address(row) if row else None  # host:port, or None
        self.pid = row["pid"] if row else None
        self.workers = row["workers"] if row else []
        self.models = row["models"] if row else []
        options = row["options"] if row else {}
        if not token:
            who = "none"
        elif options.get("token_for_all"):
            who = ("generated" if generated else "yours") + ": every request"
        else:
            who = "generated: repository load/unload only"
        rows = [
            {
                "server": name,
                "url": self.url,
                "models": ", ".join(self.models),
                "replicas": len(self.workers),
                "token": who,
            }
        ]
        columns = ["server", "url", "models", "replicas", "token"]
        if self.grpc:
            rows[0]["grpc"] = self.grpc
            columns.insert(2, "grpc")
        if options.get("autoscale"):
            rows[0]["autoscale"] = options["autoscale"]
            columns.insert(columns.index("replicas") + 1, "autoscale")
        if options.get("engine", "local") != "local":
            rows[0]["engine"] = options["engine"]
            columns.insert(columns.index("replicas"), "engine")
        note = _next_steps(name, self.models, generated)
        warning = _clear_text_warning(row) if row else ""
        if warning:
            note = f"{warning} {note}"
        super().__init__(rows, columns, title=f"Server {name} is ready", note=note)

    def client(self, ca: str | None = None):
        """A client that sends this server's token; ``ca``: the PEM file to verify its TLS
        certificate against (default: the system's trusted authorities)."""
        from .client import Client

        return Client(self.url, token=self.token, **_ca(ca))

    def status(self):
        return status(self.name, root=self.root)

    def logs(self, lines: int = 40):
        return logs(self.name, lines=lines, root=self.root)

    def scale(self, replicas: int):
        return scale(self.name, replicas, root=self.root)

    def stop(self):
        return stop(self.name, root=self.root)


def _clear_text_warning(row: dict) -> str:
    """Beyond loopback without TLS, tokens and data cross the network readable."""
    if row["host"] in LOOPBACK or row["options"].get("tls_cert"):
        return ""
    return (
        f"Warning: bound to {row['host']} without TLS, so tokens and data cross the network "
        f"in clear text; give {option('tls_cert', 'FILE')} and {option('tls_key', 'FILE')}."
    )


def _ca(ca: str | None) -> dict:
    """``ca=`` for :class:`~maas_lab.serving.client.Client`, only when one is given."""
    return {"ca": str(Path(ca).resolve())} if ca else {}


def _typed_in() -> str:
    """Where the running command was typed: "python" (no command line), "notebook" (the
    magic) or "shell"."""
    prog = typed()
    return "python" if prog is None else "notebook" if prog.startswith("%") else "shell"


def _next_steps(name: str, models: list[str], generated: bool) -> str:
    """Hints in the syntax of the place the server was started from, and where a generated
    token is found; never the token itself."""
    model = models[0] if models else name
    where_typed = _typed_in()
    if where_typed == "python":
        steps = "`server.client()`, `server.status()`, `server.stop()`"
        where = "it is `server.token` (not displayed, so saved outputs never hold it)"
    else:
        steps = (
            f"`{command('predict', model, '...')}`, `{command('status')}`, "
            f"`{command('stop', name)}`"
        )
        where = (
            "it is not displayed (saved notebooks keep outputs): "
            f"`server = {command('serve', '...')}`, then `server.token`; `server.client()` "
            "sends it for you"
            if where_typed == "notebook"
            else "a generated one is shown once on a terminal's stderr; pass "
            f"{option('token')} (or set MAAS_SERVE_TOKEN) to choose one"
        )
    return f"Next: {steps}." + (f" The generated token: {where}." if generated else "")


def _live_rows(reg) -> tuple[list[dict], list[str]]:
    """Rows of servers whose supervisor still runs (the pid with the start time it recorded:
    a reused pid is not it); stale rows are removed, and nothing is signalled for them. A
    row without a pid belongs to a server still binding its port, unless it is old."""
    live, removed = [], []
    for row in state.all_rows(reg.db):
        if state.supervisor_alive(reg.root, row):
            live.append(row)
        elif not state.row_alive(reg.root, row):
            state.delete(reg.db, row["name"], pid=row["pid"])
            removed.append(row["name"])
    return live, removed


def _find(reg, name: str) -> dict:
    live, _ = _live_rows(reg)
    for row in live:
        if row["name"] == name:
            return row
    if state.reads_as_job_id(name):
        raise UsageError(
            f"No server is called {name!r}: a server's name never reads as a job id. For "
            f"training job {name}, `{command('cancel', name)}` stops it."
        )
    raise NotFoundError("running server", name, [r["name"] for r in live])


def status(name: str | None = None, root=None) -> Table:
    """Every running server (or one): models and versions, replicas, queue, load, latency."""
    reg = open_registry(root)
    live, removed = _live_rows(reg)
    if name is not None and name not in [r["name"] for r in live]:
        raise NotFoundError("running server", name, [r["name"] for r in live])
    rows = []
    for row in live:
        if name is not None and row["name"] != name:
            continue
        folder = state.run_dir(reg.root, row["name"]) / "workers"
        snaps = state.fresh_snapshots(folder, row["pid"], row["workers"])
        ready = sum(1 for s in snaps if s["ready"])
        by_follow: dict[str, list] = {}
        for snap in snaps:
            for m in snap["models"]:
                by_follow.setdefault(m["follow"], []).append(m)
        for follow in row["models"]:
            entries = by_follow.get(follow, [])
            numbers = sorted({m["number"] for m in entries if m["number"] is not None})
            stats = merge([m["stats"] for m in entries if m["stats"]])
            figures = summary(stats)
            errors = sorted({m["error"] for m in entries if m["error"]})
            rows.append(
                {
                    "server": row["name"],
                    "url": _url(row),
                    "grpc": state.grpc_address(row) or "",
                    "model": follow,
                    "version": ",".join(map(str, numbers)) or "-",
                    "state": "draining" if any(s["draining"] for s in snaps) else row["status"],
                    "replicas": f"{ready}/{row['replicas']}",
                    "autoscale": row["options"].get("autoscale") or "",
                    "engine": row["options"].get("engine") or "local",
                    "queue": sum(m["queue"] for m in entries),
                    "req/s": round(figures["rps"], 1),
                    "p50 ms": _ms(figures["p50_ms"]),
                    "p99 ms": _ms(figures["p99_ms"]),
                    "batch": round(figures["mean_batch"], 2) if figures["mean_batch"] else "",
                    "requests": figures["requests"],
                    "errors": figures["errors"],
                    "pids": " ".join(map(str, [row["pid"], *row["workers"]])),
                    "problem": errors[0] if errors else "",
                }
            )
    columns = [
        "server",
        "url",
        "model",
        "version",
        "state",
        "replicas",
        "queue",
        "req/s",
        "p50 ms",
        "p99 ms",
        "batch",
        "requests",
        "errors",
        "pids",
    ]
    if any(r["problem"] for r in rows):
        columns.append("problem")
    if any(r["grpc"] for r in rows):
        columns.insert(columns.index("url") + 1, "grpc")
    if any(r["autoscale"] for r in rows):
        columns.insert(columns.index("replicas") + 1, "autoscale")
    if any(r["engine"] != "local" for r in rows):
        columns.insert(columns.index("state"), "engine")
    notes = [f"Removed stale entries: {', '.join(removed)}."] if removed else []
    for row in live:
        if name is not None and row["name"] != name:
            continue
        engine = row["options"].get("engine") or "local"
        if row["options"].get("autoscale") and engine != "local":
            notes.append(
                f"{row['name']} autoscales {row['options']['autoscale']} by the {engine} "
                "engine's own policy."
            )
        elif row["options"].get("autoscale"):
            latest = state.decisions(reg.root, row["name"])[-SHOWN_DECISIONS:]
            notes.append(
                f"{row['name']} autoscales {row['options']['autoscale']}: "
                + ("; ".join(latest) if latest else "no change yet")
                + "."
            )
        warning = _clear_text_warning(row)
        if warning:
            notes.append(f"{row['name']}: {warning}")
    note = " ".join(notes)
    if not rows and not note:
        note = (
            f"No server is running. Start one with `{command('serve', 'NAME[@VERSION|@ALIAS]')}`."
        )
    return Table(rows, columns, title="Servers", note=note)


SHOWN_DECISIONS = 3  # the latest autoscaling decisions in the status note


def _ms(value) -> str:
    return "" if value is None else f"{value:.1f}"


def logs(name: str, lines: int = 40, root=None) -> LogTail:
    """The last lines of a server's log (also kept after it stops, until the next start)."""
    reg = open_registry(root)
    path = state.log_path(reg.root, name)
    if not path.exists():
        names = [p.name for p in (reg.root / "servers").glob("*") if (p / "server.log").exists()]
        raise NotFoundError("server log", name, names)
    return LogTail(f"Last {lines} lines of {name}'s log", tail_text(path, lines))


def scale(name: str, replicas: int, wait_s: float = 120.0, root=None) -> Table:
    """Change the number of worker processes while serving; returns once they are ready.

    On a server started with ``autoscale="MIN..MAX"`` a count within the range is a nudge:
    it is applied, and the policy makes no change of its own for its cool-down, then
    follows the load from there. A count outside the range is refused (restart the server
    with another range, or without autoscaling for a fixed count)."""
    _check_range("replicas", replicas, 1, 64)
    reg = open_registry(root)
    row = _find(reg, name)
    scaling = row["options"].get("autoscale")
    engine = row["options"].get("engine") or "local"
    if scaling and engine != "local":
        raise UsageError(
            f"Server {name!r} runs on the {engine} engine, whose autoscaler sets its replica "
            f"count ({option('autoscale', scaling)}): restart it without "
            f"{option('autoscale')} for a fixed count."
        )
    if scaling:
        low, high = autoscale_mod.parse_range(scaling)
        if not low <= replicas <= high:
            raise UsageError(
                f"Server {name!r} autoscales between {low} and {high} replicas "
                f"({option('autoscale', scaling)}): scale within that range, or restart it "
                f"with another {option('autoscale')} (or without it for a fixed count)."
            )
    _engine_allows(row, replicas)
    state.update(reg.db, name, replicas=replicas)
    folder = state.run_dir(reg.root, name) / "workers"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        row = state.get(reg.db, name)
        if row is None:
            raise ServeError(
                f"Server {name!r} stopped while scaling; see `{command('logs', name)}`."
            )
        snaps = state.read_snapshots(folder, row["workers"])
        ready = sum(s["ready"] for s in snaps) == replicas and row["status"] == "running"
        if len(row["workers"]) == replicas and ready:
            return status(name, root=root)
        time.sleep(0.1)
    raise ServeError(
        f"Server {name!r} did not reach {replicas} ready replicas in {wait_s:g} "
        f"s; see `{command('logs', name)}`."
    )


def _engine_allows(row: dict, replicas: int) -> None:
    """The server's engine checks the new count as it checked the options at start (an
    engine of one process refuses 2), before the row asks for it."""
    options = row["options"]
    engine = _engine(options.get("engine") or "local")
    if engine.validate is not None:
        engine.validate(
            dict(options.get("engine_options") or {}), {**options, "replicas": replicas}
        )


def stop(name: str, wait_s: float = 60.0, root=None) -> Report:
    """Drain and stop a server: readiness goes 503, requests in flight are answered.

    The supervisor is signalled only while it is the process its row recorded (pid and
    start time), checked before each signal, so a stale row never hits another program."""
    reg = open_registry(root)
    row = _find(reg, name)

    def alive() -> bool:
        return state.supervisor_alive(reg.root, row)

    _signal_if(alive, lambda: os.kill(row["pid"], signal.SIGTERM))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and alive():
        time.sleep(0.05)
    if alive():
        _signal_if(alive, lambda: os.killpg(row["pid"], signal.SIGKILL))
        state.delete(reg.db, name, pid=row["pid"])
        return Report(f"Server {name} killed after {wait_s:g} s of draining", [])
    state.delete(reg.db, name, pid=row["pid"])
    return Report(f"Server {name} stopped", [])


def _signal_if(alive, send) -> None:
    """Send a signal only to a process still known to be ours; one that ended meanwhile is
    not an error."""
    if alive():
        try:
            send()
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------- clients


def client(
    url: str | None = None,
    token: str | None = None,
    name: str | None = None,
    root=None,
    ca: str | None = None,
):
    """An Open Inference Protocol client for ``url``, or for the running server ``name``;
    ``ca``: a PEM file of the authority to verify an https server against."""
    from .client import Client

    if url is None:
        if name is None:
            raise UsageError("Give a server URL, or the name of a running server.")
        row = _find(open_registry(root), name)
        url = _url(row)
    return Client(url, token=token, **_ca(ca))


def server_for(ref: str, root=None) -> tuple[dict, str | None]:
    """The running server that serves ``ref``'s model, and the version to put in the URL."""
    from ..registry.refs import parse_ref

    parsed = parse_ref(ref)
    reg = open_registry(root)
    live, _ = _live_rows(reg)
    version = None
    if parsed.version is not None:
        version = str(parsed.version)
    elif parsed.alias is not None:
        version = parsed.alias
    exact = [r for r in live if ref in r["models"]]
    named = [r for r in live if any(m.split("@")[0] == parsed.name for m in r["models"])]
    if exact:
        row = exact[0]
        return row, (None if ref == row["models"][0] else version)
    if named:
        return named[0], version
    raise NotFoundError(
        "running server for model", parsed.name, [m for r in live for m in r["models"]]
    )


def predict(
    ref: str,
    inputs,
    url: str | None = None,
    token: str | None = None,
    outputs=None,
    root=None,
    ca: str | None = None,
) -> Report:
    """Send one request through a running server (never in-process) and show the answer;
    ``ca`` as for :func:`client`."""
    from ..registry.refs import parse_ref
    from .client import Client

    parsed = parse_ref(ref)
    if url is None:
        row, version = server_for(ref, root=root)
        url = _url(row)
    else:
        version = str(parsed.version) if parsed.version else parsed.alias
    from .inputs import fit_to_model

    cli = Client(url, token=token, **_ca(ca))
    if isinstance(inputs, np.ndarray):
        inputs = fit_to_model(cli.model_metadata(parsed.name, version), inputs)
    started = time.perf_counter()
    out = cli.infer(parsed.name, inputs, version=version, outputs=outputs)
    ms = 1000 * (time.perf_counter() - started)
    answered = cli.last_version
    rows = []
    for key, arr in out.items():
        flat = arr.reshape(-1)
        preview = ", ".join(
            f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat[:6].tolist()
        )
        rows.append(
            {
                "output": key,
                "dtype": str(arr.dtype),
                "shape": list(arr.shape),
                "values": preview + (", ..." if flat.size > 6 else ""),
            }
        )
    title = f"{parsed.name}" + (f"@{version}" if version else "") + f" via {url}"
    if answered:
        title += f" (version {answered})"
    return Report(f"{title}: {ms:.1f} ms", [("", Table(rows))], data=out)


# ---------------------------------------------------------------------- aliases


def wait_for_switch(
    name: str, alias: str, number: int, wait_s: float = 60.0, root=None
) -> list[str]:
    """After ``name@alias`` moved to ``number``: wait for the servers following it to switch
    (or to report why they kept the old version). One line per server."""
    reg = open_registry(root)
    follow = f"{name}@{alias}"
    live, _ = _live_rows(reg)
    following = [r for r in live if follow in r["models"]]
    lines = []
    for row in following:
        folder = state.run_dir(reg.root, row["name"]) / "workers"
        started = time.monotonic()
        result = None
        while time.monotonic() - started < wait_s and result is None:
            snaps = state.read_snapshots(folder, row["workers"])
            mine = [m for s in snaps for m in s["models"] if m["follow"] == follow]
            if mine and all(m["number"] == number for m in mine):
                result = (
                    f"server {row['name']} ({_url(row)}) switched to "
                    f"{name}@{number} in {time.monotonic() - started:.1f} s"
                )
            elif any(m["error"] and f"@{number} " in m["error"] for m in mine):
                err = next(m["error"] for m in mine if m["error"])
                kept = sorted({m["number"] for m in mine if m["number"] is not None})
                result = f"server {row['name']} kept version {kept}: {err}"
            else:
                time.sleep(0.1)
        lines.append(
            result
            or f"server {row['name']} has not switched after {wait_s:g} s; see "
            f"`{command('logs', row['name'])}`"
        )
    return lines
