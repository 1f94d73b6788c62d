"""The ray engine's side of the server process: connect or start Ray, deploy, follow the
row, tear down. Imported only when a server runs on Ray (``import ray`` takes seconds)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

from maas_lab.serving.autoscale import parse_range

# A local Ray on a busy 2-core machine: its agents' imports alone took 20-70 s, past the
# raylet's wait for them (it then aborts: "Timed out waiting for file ...agent_port") and
# ray.init's fixed 30 s for the node to register; 4 of 7 starts failed under a load of 6-10.
# Both waits are lengthened where Ray lets us (its RAY_* settings, _patient_start), and a
# failed start, cleaned up, is tried again from a warm disk cache. An idle machine starts in
# 20-30 s at the first try.
START_WAIT_S = 150
LOCAL_TRIES = 3
TICK_S = 0.25
STATUS_EVERY_S = 5.0  # how often Ray Serve's own application status is read


class RayEngine:
    def __init__(self, server, autoscaling: dict):
        self.server, self.autoscaling = server, autoscaling
        self.options, self.core = server.engine_options, server.options
        self.app_name = f"maas-{server.name}"
        self.local = not self.options.get("address")
        self.replicas: int | None = None  # the count last deployed (without autoscaling)
        # One code version for the server's life: a new count is then a light update (Ray
        # adds or drains replicas); without it, every serve.run replaced all of them.
        self.version = f"{server.name}-{os.getpid()}-{time.time():.0f}"

    def run(self) -> int:
        server, log = self.server, self.server.log
        port = server.port or _free_port(server.host)
        server.started(port, ray_address=self.options.get("address") or "local")
        import ray  # noqa: F401 - imported after the row names this process, so stop works

        try:
            self._connect()
            if server.stopping:
                return 0
            self._start_serve(port)
            row = server.row()
            self._deploy(int(row["replicas"]) if row else 1)
            log(f"serving {', '.join(server.models)} on Ray Serve at {server.host}:{port}")
            self._follow()
        except Exception as exc:  # Ray's own errors: into the log, the row says failed
            log(f"error: Ray Serve could not serve {server.name}: {type(exc).__name__}: {exc}")
            server.report("failed")
            return 3
        finally:
            self._tear_down()
        return 0

    # ------------------------------------------------------------------ start

    def _connect(self) -> None:
        import ray

        quiet = {"namespace": "maas_lab", "log_to_driver": True, "configure_logging": False}
        if self.local:
            os.environ.setdefault("RAY_raylet_start_wait_time_s", str(START_WAIT_S))
            os.environ.setdefault("RAY_agent_register_timeout_ms", str(START_WAIT_S * 1000))
            for attempt in range(1, LOCAL_TRIES + 1):
                try:
                    with _patient_start(START_WAIT_S):
                        ray.init(
                            address="local",
                            include_dashboard=False,
                            _node_ip_address="127.0.0.1",
                            num_cpus=os.cpu_count() or 1,
                            **quiet,
                        )
                    break
                except Exception as exc:
                    ray.shutdown()
                    _end_children()  # a failed start leaves Ray's head processes running
                    if "timed out during startup" not in str(exc) or attempt == LOCAL_TRIES:
                        raise
                    self.server.log(
                        f"a local Ray did not start within {START_WAIT_S} s (try {attempt} "
                        f"of {LOCAL_TRIES}; the machine is busy); starting it again"
                    )
                if self.server.stopping:
                    return
        else:
            # An address that takes TCP but is not Ray makes ray.init retry for minutes.
            timeout_s = float(self.options.get("connect_timeout_s") or 10.0)
            _give_up_after(3 * timeout_s + 30, self.server, self.options["address"])
            ray.init(address=self.options["address"], **quiet)
            _give_up_after(None, self.server, "")
        # ray.init makes SIGTERM exit this process at once; a server drains first.
        stop = self.server._stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

    def _start_serve(self, port: int) -> None:
        from ray import serve

        http = {"host": self.server.host, "port": port}
        if self.core.get("tls_cert"):
            http.update(ssl_certfile=self.core["tls_cert"], ssl_keyfile=self.core["tls_key"])
        serve.start(http_options=http)

    def _deployment(self, replicas: int):
        from ray import serve

        from .replica import Replica

        core, server = self.core, self.server
        cpus = self.options.get("cpus_per_replica")
        most = parse_range(core["autoscale"])[1] if core.get("autoscale") else replicas
        if cpus is None:  # a local Ray shares this machine; a cluster's nodes have their own
            cpus = min(1.0, (os.cpu_count() or 1) / most) if self.local else 1.0
        settings = {
            "name": self.app_name,
            # A replica whose models fail to load fails the same way again: give up soon and
            # say why, rather than after Ray's 20 tries.
            "max_constructor_retry_count": 2,
            "max_ongoing_requests": self.options.get("max_ongoing_requests")
            or int(core.get("max_queue", 256)),
            "ray_actor_options": {
                "num_cpus": cpus,
                "num_gpus": self.options.get("gpus_per_replica") or 0,
            },
            "graceful_shutdown_timeout_s": float(core.get("drain_s", 30.0)),
            # Ray logs every request by default: a line per request in the server's log.
            "logging_config": {"enable_access_log": False},
        }
        if core.get("autoscale"):
            low, high = parse_range(core["autoscale"])
            settings["autoscaling_config"] = {
                **self.autoscaling,
                "min_replicas": low,
                "max_replicas": high,
                "initial_replicas": max(low, min(high, replicas)),
            }
        else:
            settings["num_replicas"] = replicas
        deployment = serve.deployment(Replica, **settings)
        # The decorator no longer takes `version`, but Ray still honours the one a deployment
        # carries; without it each serve.run drew a random one and replaced every replica.
        if hasattr(deployment, "_version"):
            deployment._version = self.version
        return deployment.bind(
            str(server.root),
            server.name,
            core,
            server.port,
            server.token_sha256(),
        )

    def _deploy(self, replicas: int) -> None:
        from ray import serve

        serve.run(
            self._deployment(replicas),
            name=self.app_name,
            route_prefix="/",
            blocking=False,
        )
        self.replicas = replicas

    # ------------------------------------------------------------------ serve

    def _follow(self) -> None:
        """Until stopped: report the replicas, redeploy when ``maas scale`` changed the
        count (Ray adds or drains replicas; the rest keep serving), note Ray's own status."""
        server = self.server
        last_status = 0.0
        while not server.wait(TICK_S):
            row = server.row()
            if row is None or row["pid"] != os.getpid():
                server.log("the registry row was removed or taken over; stopping")
                return
            wanted = int(row["replicas"])
            if not self.core.get("autoscale") and wanted != self.replicas:
                server.log(f"scaling to {wanted} replicas")
                self._deploy(wanted)
            server.report()
            if time.monotonic() - last_status > STATUS_EVERY_S:
                last_status = time.monotonic()
                self._note_status()

    def _note_status(self) -> None:
        from ray import serve

        try:
            app = serve.status().applications.get(self.app_name)
        except Exception as exc:  # the controller restarting: next time
            self.server.log(f"could not read Ray Serve's status: {exc}")
            return
        if app is not None and str(app.status).endswith(("DEPLOY_FAILED", "UNHEALTHY")):
            self.server.log(f"Ray Serve reports {self.app_name} {app.status}: {app.message}")

    # ------------------------------------------------------------------ stop

    def _tear_down(self) -> None:
        """Delete our application (Ray drains its replicas: requests in flight finish within
        ``drain_s``); a local Ray started for this server goes with it, a cluster stays."""
        import ray

        if not ray.is_initialized():
            if self.local:  # stopped while a local Ray was starting: its processes too
                _end_children()
            return
        from ray import serve

        try:
            self.server.log("draining: Ray Serve finishes the requests in flight")
            serve.delete(self.app_name)
            if self.local:
                serve.shutdown()
        except Exception as exc:
            self.server.log(f"error while stopping on Ray Serve: {exc}")
        finally:
            ray.shutdown()
            if self.local:
                _end_children()


_WATCHDOG: list = []


def _give_up_after(seconds: float | None, server, address: str) -> None:
    """End this process if Ray has not connected to ``address`` within ``seconds`` (None:
    connected, stand down). ray.init cannot be interrupted; the failure is written where
    ``maas serve`` reads it, so the caller hears it at once."""
    for timer in _WATCHDOG:
        timer.cancel()
    _WATCHDOG.clear()
    if seconds is None:
        return
    import threading

    def give_up():
        server.log(
            f"error: Ray at {address} did not accept this server within {seconds:g} s: it "
            "answers on that port but is not a Ray cluster's head (or is not ready); check "
            "the address (`ray status` on the head prints it)"
        )
        server.report("failed")
        os._exit(3)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    _WATCHDOG.append(timer)


@contextlib.contextmanager
def _patient_start(wait_s: float):
    """Let ray.init wait ``wait_s`` for a local node to register, not node.py's fixed 30 s:
    its loop asks ``services.get_node`` until that answers, so for the start, an unanswered
    ask is retried here until ``wait_s``. Ray's private function: if it moves, the start
    keeps Ray's own 30 s (and the retry above)."""
    import ray._private.services as services

    original = getattr(services, "get_node", None)
    if original is None:
        yield
        return

    def get_node(*args, **kwargs):
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = original


def _end_children(grace_s: float = 5.0) -> None:
    """Stop every process this one started (a local Ray's GCS, raylet, agents, workers):
    ray.shutdown leaves them running after a failed start, and a server must leave nothing
    behind. This process starts nothing else."""
    pids = _descendants(os.getpid())
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if _running(p)]
        if not pids:
            return


def _descendants(pid: int) -> list[int]:
    from maas_lab.serving.state import parent_of

    if not os.path.isdir("/proc"):  # no process table to read: Ray's own shutdown only
        return []
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            children.setdefault(parent_of(int(entry.name)) or 0, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    from maas_lab.serving.state import pid_alive

    return pid_alive(pid, "")


def _free_port(host: str) -> int:
    """A port free now on ``host`` (Ray Serve's proxy takes a number, not 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
