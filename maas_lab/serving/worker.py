"""One worker process: a uvicorn server on the listening socket its supervisor shares.

All replicas accept on the same socket (the kernel spreads connections), so adding or
removing one never changes the port. On SIGTERM a worker drains: readiness answers 503, it
stops accepting, answers what it already received (with ``Connection: close``), then exits;
other replicas keep serving. The gRPC side (when ``grpc_port`` is set: every replica listens
on that port with ``SO_REUSEPORT``) runs on the same event loop, started and stopped with the
app's lifespan; on SIGTERM it stops listening at once, keeps answering on open connections
until their clients have moved to other replicas (``grpc_service.drain``), and finishes the
calls in flight (within ``drain_s``) before the worker exits. SIGUSR1 only turns readiness
to 503 (the supervisor sends it first when the whole server stops, so a load balancer can
stop sending new work).
SIGUSR2 writes the status snapshot at once, so ``maas status`` shows the latest requests.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

ACCEPT_GRACE_S = 1.0


def log_to_stderr(prefix: str):
    def log(message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        sys.stderr.write(f"{stamp} {prefix} {message}\n")
        sys.stderr.flush()

    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maas_lab.serving.worker")
    parser.add_argument("--root", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import uvicorn

    from ..registry import open as open_registry
    from . import state
    from .app import Server
    from .deadlines import protocol_class

    log = log_to_stderr(f"[worker {os.getpid()}]")
    row = state.get(open_registry(args.root).db, args.name)
    if row is None:
        log(f"server {args.name!r} is not recorded in the registry; exiting")
        return 2
    options = row["options"]
    app = Server(args.root, args.name, options, args.port, log)
    app.models.prepare()
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=float(options.get("drain_s", 30)),
        loop="auto",
        # uvicorn waits for request headers forever; this protocol cuts slow clients off.
        http=protocol_class(float(options.get("header_timeout_s", 10.0))),
        # HTTPS from PEM files (checked by tls.check_pair before the server started).
        ssl_certfile=options.get("tls_cert") or None,
        ssl_keyfile=options.get("tls_key") or None,
    )

    class DrainingServer(uvicorn.Server):
        """Stop accepting first, keep answering for ``ACCEPT_GRACE_S``, then shut down.

        uvicorn's own shutdown closes idle connections right after the listener; a client
        whose connection this worker accepted a moment before (the kernel hands connections
        to whichever replica asks) would see it closed before its request was read. Given a
        moment, those requests are answered (with ``Connection: close``) and the client's
        next connection goes to a replica that stays.
        """

        draining_since = None

        def handle_exit(self, sig, frame):
            loop = app.models.loop
            if self.draining_since is not None or loop is None:
                return super().handle_exit(sig, frame)  # a second signal: stop now
            self.draining_since = time.monotonic()
            app.draining = True
            app.write_snapshot_now()
            log("draining: readiness is 503, finishing requests in flight")
            loop.call_soon_threadsafe(self._stop_accepting, sig, frame)
            loop.call_soon_threadsafe(app.stop_grpc)  # gRPC: stop listening, move clients, finish

        def _stop_accepting(self, sig, frame):
            for listener in getattr(self, "servers", []):
                listener.close()
            app.models.loop.call_later(ACCEPT_GRACE_S, super().handle_exit, sig, frame)

    server = DrainingServer(config)

    def not_ready(sig, frame):
        app.draining = True
        app.write_snapshot_now()

    def snapshot_now(sig, frame):  # `maas status` asks: counters as of this moment
        loop = app.models.loop
        if loop is not None:  # written on the loop, never mid-update of a counter
            loop.call_soon_threadsafe(app.write_snapshot_now)

    # Installed before any snapshot exists: status signals only workers that wrote one
    # (the signal's default action would end the process).
    signal.signal(state.REFRESH_SIGNAL, snapshot_now)
    signal.signal(signal.SIGUSR1, not_ready)
    parent = os.getppid()

    def watch_parent():  # the supervisor was killed: do not linger as an orphan
        while not server.should_exit:
            if os.getppid() != parent:
                log("supervisor is gone; stopping")
                app.draining = True
                server.should_exit = True
                return
            time.sleep(0.5)

    threading.Thread(target=watch_parent, daemon=True).start()
    grpc = f", gRPC on {options['grpc_port']}" if options.get("grpc_port") is not None else ""
    log(f"serving {', '.join(row['models'])} on port {args.port}{grpc}")
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
