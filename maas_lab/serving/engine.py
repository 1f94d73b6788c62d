"""What a serving engine gets from the core: the server it runs, and the application each of
its replicas hosts.

``maas serve`` records a server (a registry row: models, options, wanted replicas) and starts
a process of its own for it; that process looks up the engine the row names and calls its
``run(server)`` with an :class:`EngineServer`. The engine decides *where* replicas run
(worker processes on this machine, Ray actors on a cluster, pods); the core decides *what*
they answer: every replica hosts :func:`replica_app`, the same Open Inference Protocol
application, so validation, limits, batching, scoped tokens, metrics and alias following
are the same on every engine, and ``maas status``, ``scale`` and ``stop`` work on all of
them through the row and the replicas' snapshot files.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from . import state

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class EngineServer:
    """One server as its engine sees it, in the server's own process.

    ``options`` are the core's (:data:`maas_lab.schemas.SERVE`, as recorded), and
    ``engine_options`` the engine's own, already checked against its schema. Signals
    SIGTERM and SIGINT (``maas stop``, Ctrl-C) set :attr:`stopping`; an engine that installs
    handlers of its own (the local supervisor) replaces these."""

    def __init__(self, root, name: str, log):
        from ..registry import open as open_registry

        self.root, self.name, self.log = Path(root), name, log
        self.db = open_registry(root).db
        row = state.get(self.db, name) or {}
        self.models: list[str] = list(row.get("models") or [])
        self.host: str = row.get("host") or "127.0.0.1"
        self.port: int = int(row.get("port") or 0)
        self.options: dict = dict(row.get("options") or {})
        self.engine_options: dict = dict(self.options.get("engine_options") or {})
        self._stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())

    # ------------------------------------------------------------------ what the engine reads

    def row(self) -> dict | None:
        """The server's row as it is now (``replicas``: what ``maas scale`` asked for), or
        None once it was removed: then the engine stops."""
        return state.get(self.db, self.name)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the server was asked to stop."""
        return self._stop.wait(seconds)

    def token_sha256(self) -> str | None:
        """The management token's digest, for replicas that run elsewhere (the token itself
        never leaves the process that made it)."""
        return os.environ.get("MAAS_SERVE_TOKEN_SHA256") or None

    # ------------------------------------------------------------------ what the engine says

    def started(self, port: int, **options) -> None:
        """Where the server answers: recorded with this process as its owner (``maas stop``
        signals it; ``maas status`` shows the URL). ``options`` update the recorded ones
        (e.g. an engine's own address for status)."""
        state.record_supervisor(self.root, self.name)  # before the row names this pid
        self.port = port
        self.options.update(options)
        state.update(
            self.db,
            self.name,
            port=port,
            pid=os.getpid(),
            status="starting",
            options=self.options,
        )

    def snapshots(self) -> list[dict]:
        """The replicas' own reports (each replica writes one every second): which are
        ready, their queues and counters. Replicas that stopped reporting are left out."""
        return state.read_snapshots(self.folder)

    def report(self, status: str | None = None) -> list[dict]:
        """Record the replicas that report (their pids, for ``maas status``) and the
        server's state: ``running`` once every replica wanted is ready, unless ``status``
        says otherwise (``failed``). Returns the snapshots read."""
        snaps = self.snapshots()
        row = self.row()
        wanted = int(row["replicas"]) if row else 0
        if status is None:
            ready = snaps and all(s["ready"] for s in snaps) and len(snaps) >= wanted
            status = "running" if ready else "starting"
        state.update(self.db, self.name, workers=sorted(s["pid"] for s in snaps), status=status)
        return snaps

    @property
    def folder(self) -> Path:
        """Where replicas write their snapshots (``servers/NAME/workers``)."""
        return state.run_dir(self.root, self.name) / "workers"


def replica_app(root, name: str, options: dict, port: int, log, token_sha256: str | None):
    """The ASGI application one replica hosts, whatever runs it: the core's Open Inference
    Protocol server for ``name`` (models resolved and followed from the registry at
    ``root``, which the replica must see at the same path). Its lifespan starts and stops
    the models; ``port`` is the one clients reach it on (the Host check)."""
    from .app import Server

    if token_sha256:
        os.environ["MAAS_SERVE_TOKEN_SHA256"] = token_sha256
    app = Server(root, name, options, port, log)
    app.models.prepare()
    return app


def run(root, name: str) -> int:
    """Run server ``name`` on the engine its row names, in this process, until it stops
    (what ``maas serve`` starts as ``python -m maas_lab.serving.engine``, or calls itself
    with ``--foreground``). A failure before the engine reports is recorded in the row, so
    the caller waiting for readiness reads it at once."""
    from ..errors import MaasError
    from ..plugins import get_plugins
    from .worker import log_to_stderr

    log = log_to_stderr(f"[server {name}]")
    server = EngineServer(root, name, log)
    engine = server.options.get("engine") or "local"
    try:
        comp = get_plugins().engine(engine)
        code = comp.call(f"serving {name}", server)
    except MaasError as exc:
        log(f"error: {exc}")
        state.update(server.db, name, status="failed")
        return 3
    return int(code or 0)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m maas_lab.serving.engine")
    parser.add_argument("--root", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    return run(Path(args.root), args.name)


if __name__ == "__main__":
    import sys

    sys.exit(main())
