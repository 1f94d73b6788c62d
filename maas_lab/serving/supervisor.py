"""The supervisor: binds the port, keeps the wanted number of workers alive, stops cleanly.

Why a supervisor of our own rather than uvicorn's ``--workers``: replicas must change while
serving (``maas scale``) from any notebook, a worker that crashes must come back, and the
whole server must drain in order (readiness 503 everywhere first, then each worker finishes
what it holds). The supervisor reads the wanted replica count from the server's registry
row, the same place ``maas status`` reads, so there is no control socket to secure.

With ``--autoscale MIN..MAX`` the supervisor also *writes* that count: each tick it feeds
the workers' snapshots to :mod:`.autoscale` and writes a decision into the row (the field
``maas scale`` writes), logs it with the figures that caused it, and records it for
``maas status``. A count set by hand within the range is a nudge: the policy starts its
cool-down from it.

With ``--grpc-port`` the supervisor reserves the gRPC port for the server's lifetime: a
socket bound (never listening) with SO_REUSEPORT, so each worker's gRPC server can listen on
the same port beside its siblings, and the port (``0``: a free one) stays the server's while
workers come and go. The actual port is written into the row before any worker starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import state
from .autoscale import Policy, Window, parse_range, timings
from .worker import log_to_stderr

TICK_S = 0.2
GIVE_UP_AFTER = 5  # consecutive worker crashes with none ever ready
HEALTHY_RESET_S = 30.0  # running this long with every replica ready forgives past crashes


class Backoff:
    """How long to wait before replacing a crashed worker: doubling from ``first_s`` up to
    ``max_s`` while crashes follow each other, back to ``first_s`` once the server has run
    healthy (every replica ready) for ``reset_after_s``. Without the reset, a server that
    crashed a few times at start would wait the maximum for every crash, days later.
    Times are passed in (``time.monotonic()`` values), so the policy is checked without
    waiting."""

    def __init__(self, first_s: float = 0.2, max_s: float = 5.0, reset_after_s: float = 30.0):
        self.first_s, self.max_s, self.reset_after_s = first_s, max_s, reset_after_s
        self.crashes = 0
        self.healthy_since: float | None = None

    def crashed(self) -> float:
        """Count a crash; the delay before the replacement starts, in seconds."""
        self.crashes += 1
        self.healthy_since = None
        return min(self.max_s, self.first_s * 2 ** min(self.crashes, 10))

    def healthy(self, now: float) -> bool:
        """Note that every replica is ready at ``now``; True when this resets the back-off."""
        if self.healthy_since is None:
            self.healthy_since = now
        if self.crashes and now - self.healthy_since >= self.reset_after_s:
            self.crashes = 0
            return True
        return False

    def unhealthy(self) -> None:
        self.healthy_since = None


class BindError(Exception):
    pass


def bind(host: str, port: int) -> socket.socket:
    """The HTTP port: listening, inherited by every worker (all accept on it)."""
    sock = _bound(host, port, reuseport=False, failure="cannot listen on")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """Bind (never listen) with SO_REUSEPORT: the port is held for the workers' gRPC
    servers, which listen on it with ``so_reuseport`` too; a connection never waits on this
    socket, since the kernel hands connections only to listening ones."""
    return _bound(host, port, reuseport=True, failure="cannot reserve the gRPC port")


def _bound(host: str, port: int, reuseport: bool, failure: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise BindError(f"{failure} {host}:{port}: {exc.strerror}") from None
    return sock


LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Supervisor:
    def __init__(self, root: Path, name: str):
        from ..registry import open as open_registry

        self.root, self.name = Path(root), name
        self.db = open_registry(root).db
        self.log = log_to_stderr(f"[server {name}]")
        self.workers: dict[int, subprocess.Popen] = {}
        self.retiring: dict[int, subprocess.Popen] = {}
        self.stopping = False
        self.backoff = Backoff(reset_after_s=HEALTHY_RESET_S)
        self.restart_at = 0.0  # monotonic time before which no crashed worker is replaced
        self.ever_ready = False
        self.grpc_sock: socket.socket | None = None
        self.autoscaler: tuple[Window, Policy] | None = None
        self.wrote_replicas: int | None = None  # the count the autoscaler last wrote

    def run(self) -> int:
        row = state.get(self.db, self.name)
        if row is None:
            self.log("no registry row for this server; nothing to do")
            return 2
        options = dict(row["options"])
        try:
            self.sock = bind(row["host"], int(row["port"] or 0))
            if options.get("grpc_port") is not None:
                self.grpc_sock = self._reserve_grpc(row["host"], int(options["grpc_port"]))
        except BindError as exc:
            self.log(f"error: {exc}")
            state.update(self.db, self.name, status="failed")
            self._close_sockets()
            return 3
        self.port = self.sock.getsockname()[1]
        if self.grpc_sock is not None:
            options["grpc_port"] = self.grpc_sock.getsockname()[1]
        state.record_supervisor(self.root, self.name)  # before the row names this pid
        state.clear_decisions(self.root, self.name)
        state.update(
            self.db,
            self.name,
            port=self.port,
            pid=os.getpid(),
            status="starting",
            options=options,
        )
        self.log(f"listening on {row['host']}:{self.port}")
        if self.grpc_sock is not None:
            self.log(f"gRPC port {row['host']}:{options['grpc_port']} reserved for the workers")
        if row["host"] not in LOOPBACK and not options.get("tls_cert"):
            self.log(
                f"warning: bound to {row['host']} without TLS: tokens and data cross the "
                "network in clear text (give a TLS certificate and key)"
            )
        if options.get("autoscale"):
            self._start_autoscaler(options, int(row["replicas"]))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        folder = state.run_dir(self.root, self.name) / "workers"
        last = None
        try:
            while not self.stopping:
                row = state.get(self.db, self.name)
                if row is None or row["pid"] != os.getpid():
                    self.log("the registry row was removed or taken over; stopping")
                    break
                self._reap()
                crashes = self.backoff.crashes
                if crashes >= GIVE_UP_AFTER and not self.ever_ready:
                    self.log(f"error: workers crashed {crashes} times; giving up")
                    state.update(self.db, self.name, status="failed")
                    break
                self._scale(int(row["replicas"]))
                snaps = state.read_snapshots(folder, list(self.workers))
                ready = sum(1 for s in snaps if s["ready"])
                self.ever_ready |= ready > 0
                wanted = max(1, int(row["replicas"]))
                healthy = ready >= wanted and len(self.workers) == wanted
                status = "running" if ready >= len(self.workers) and self.workers else "starting"
                self._note_health(healthy, row)
                if self.autoscaler is not None:
                    self._autoscale(int(row["replicas"]), snaps, healthy and not self.retiring)
                now = (sorted(self.workers), status)
                if now != last:
                    state.update(self.db, self.name, workers=now[0], status=status)
                    last = now
                time.sleep(TICK_S)
        finally:
            self._shutdown(float(row["options"].get("drain_s", 30)) if row else 30.0)
        return 0

    def _note_health(self, healthy: bool, row: dict) -> None:
        if not healthy:
            self.backoff.unhealthy()
            return
        self.backoff.reset_after_s = float(row["options"].get("healthy_reset_s", HEALTHY_RESET_S))
        if self.backoff.healthy(time.monotonic()):
            self.log(f"healthy for {self.backoff.reset_after_s:g} s: the restart back-off is reset")

    def _reserve_grpc(self, host: str, port: int) -> socket.socket:
        """Another live server of ours on that port would share it (SO_REUSEPORT lets any
        process of this user join): refused here, by the registry, before binding."""
        for other in state.all_rows(self.db):
            if (
                port
                and other["name"] != self.name
                and other["options"].get("grpc_port") == port
                and state.supervisor_alive(self.root, other)
            ):
                raise BindError(
                    f"cannot reserve the gRPC port {host}:{port}: server {other['name']!r} uses it"
                )
        return reserve(host, port)

    def _start_autoscaler(self, options: dict, replicas: int) -> None:
        low, high = parse_range(options["autoscale"])
        t = timings(options)
        target = float(options.get("target_p99_ms", 200.0))
        policy = Policy(
            low,
            high,
            target,
            queue_target=float(options.get("max_batch", 8)),
            up_after_s=t["up_after_s"],
            down_after_s=t["down_after_s"],
            cooldown_s=t["cooldown_s"],
        )
        self.autoscaler = (Window(t["window_s"], t["min_requests"]), policy)
        self.wrote_replicas = replicas
        self.log(
            f"autoscaling between {low} and {high} replicas (target p99 {target:g} ms, "
            f"queue {policy.queue_target:g}/replica; add after {policy.up_after_s:g} s over, "
            f"remove after {policy.down_after_s:g} s idle, cool-down {policy.cooldown_s:g} s)"
        )

    def _autoscale(self, replicas: int, snaps: list[dict], settled: bool) -> None:
        window, policy = self.autoscaler
        now = time.monotonic()
        if replicas != self.wrote_replicas:  # `maas scale` within the range: a nudge
            self.log(f"replicas set to {replicas} by hand; autoscaling resumes after cool-down")
            self.wrote_replicas = replicas
            policy.changed(now)
        figures = window.add(now, [s for s in snaps if s["ready"]])
        decision = policy.decide(now, replicas, figures, settled=settled)
        if decision is None:
            return
        line = decision.line(time.strftime("%H:%M:%S"))
        state.update(self.db, self.name, replicas=decision.replicas)
        self.wrote_replicas = decision.replicas
        state.record_decision(self.root, self.name, line)
        self.log(f"autoscale: {line}")

    def _close_sockets(self) -> None:
        for sock in (getattr(self, "sock", None), self.grpc_sock):
            if sock is not None:
                sock.close()

    def _on_stop(self, sig, frame) -> None:
        self.stopping = True

    def _spawn(self) -> None:
        fd = self.sock.fileno()
        cmd = [
            sys.executable,
            "-m",
            "maas_lab.serving.worker",
            "--root",
            str(self.root),
            "--name",
            self.name,
            "--fd",
            str(fd),
            "--port",
            str(self.port),
        ]
        proc = subprocess.Popen(cmd, pass_fds=(fd,), stdin=subprocess.DEVNULL)
        self.workers[proc.pid] = proc
        self.log(f"started worker {proc.pid}")

    def _reap(self) -> None:
        for pid, proc in list(self.workers.items()):
            code = proc.poll()
            if code is not None:
                del self.workers[pid]
                delay = self.backoff.crashed()
                self.restart_at = max(self.restart_at, time.monotonic() + delay)
                self.log(f"worker {pid} exited with code {code}; starting another in {delay:g} s")
        for pid, proc in list(self.retiring.items()):
            if proc.poll() is not None:
                del self.retiring[pid]
                self.log(f"worker {pid} stopped")

    def _scale(self, wanted: int) -> None:
        wanted = max(1, wanted)
        while len(self.workers) < wanted and time.monotonic() >= self.restart_at:
            self._spawn()
        while len(self.workers) > wanted:
            pid = max(self.workers)  # the newest: the others have warm caches
            proc = self.workers.pop(pid)
            self.log(f"scaling down: draining worker {pid}")
            proc.send_signal(signal.SIGTERM)
            self.retiring[pid] = proc

    def _shutdown(self, drain_s: float) -> None:
        procs = {**self.workers, **self.retiring}
        self.log(f"stopping: draining {len(procs)} worker(s)")
        for proc in procs.values():
            _signal(proc, signal.SIGUSR1)
        time.sleep(0.2)
        for proc in procs.values():
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + drain_s + 5
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"worker {proc.pid} did not stop in time; killing it")
                proc.kill()
                proc.wait()
        self._close_sockets()
        state.delete(self.db, self.name, pid=os.getpid())
        folder = state.run_dir(self.root, self.name) / "workers"
        for path in folder.glob("*.json"):
            path.unlink(missing_ok=True)
        self.log("stopped")


def _signal(proc: subprocess.Popen, sig) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
