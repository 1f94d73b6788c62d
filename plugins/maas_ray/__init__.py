"""Built-in serving engine ``ray``: a server's replicas as a Ray Serve application.

``maas serve minilm@prod --engine ray --replicas 4`` records the server like any other, and
its process (:func:`run`) connects to a Ray cluster (``--address``) or starts a local one
for this server, deploys one Ray Serve deployment whose replicas each host the core's Open
Inference Protocol application (:func:`maas_lab.serving.engine.replica_app`), and keeps the
deployment in step with ``maas scale`` until ``maas stop``. Ray does the placing,
restarting, routing and (with ``--autoscale``) scaling; the requests are answered exactly as
our own workers answer them, so tritonclient and our client work unchanged.

Choices, measured or read on Ray 2.60:

- A local Ray is started with node address 127.0.0.1 and no dashboard web UI
  (``include_dashboard=False``), and our HTTP proxy binds ``--host`` (127.0.0.1 by default).
  Ray's own processes still listen on every interface as Ray does (GCS, raylet, workers,
  its agents and metrics ports; seen with ``ss -ltnp``): Ray's token authentication, on by
  default, guards the control ports, while its Prometheus metrics ports answer anyone who
  can reach the machine. Ray offers no setting to bind them to loopback; on a shared
  network, keep the machine's firewall closed to them or use the local engine.
- On a loaded 2-core machine a local Ray often failed to start (its agents' imports outlast
  Ray's own waits); a failed start is cleaned up and tried again (engine.py).
- Ray Serve's router sends a replica at most ``max_ongoing_requests`` requests (Ray's
  default: 5); our batcher needs many in flight to batch, so it defaults to ``--max-queue``,
  and our bounded queue answers 503 past it, as on the local engine.
- The deployment class hosts a plain ASGI application through ``serve.ingress`` (deferred to
  the replica, ``__serve_build_asgi_app__``), so Ray runs its lifespan: models load and
  unload with the replica.
- Replicas read the registry at the same path as here (they load through our own loaders
  and follow aliases), so on a cluster the registry home must be on storage every node
  mounts at that path, and maas-lab installed on every node.
"""

from __future__ import annotations

import importlib.util
import json
import socket

from maas_lab import Component, Param, hookimpl
from maas_lab.errors import UsageError
from maas_lab.hints import option

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.1"

__version__ = "0.1.0"

PARAMS = (
    Param(
        "address",
        help="An existing Ray cluster: host:port of its head (as `ray start --head` prints), "
        "ray://host:10001, or auto. Default: a local Ray on 127.0.0.1 for this server.",
        metavar="ADDRESS",
    ),
    Param(
        "cpus_per_replica",
        "float",
        None,
        "CPUs Ray reserves for each replica (default: 1 on a cluster; a local Ray shares "
        "this machine's cores among the replicas).",
    ),
    Param("gpus_per_replica", "float", 0.0, "GPUs Ray reserves for each replica."),
    Param(
        "autoscaling",
        help="Ray Serve autoscaling options as a JSON object, e.g. "
        '\'{"target_ongoing_requests": 4, "downscale_delay_s": 30}\'; with --autoscale '
        "MIN..MAX (which sets min/max replicas).",
        metavar="JSON",
    ),
    Param(
        "max_ongoing_requests",
        "int",
        None,
        "Requests Ray hands one replica at once (default: --max-queue, so our batcher "
        "batches and our queue bounds).",
    ),
    Param(
        "connect_timeout_s",
        "float",
        10.0,
        "How long --address has to answer before serving is refused.",
    ),
)

# Ray Serve's autoscaling options that --autoscale MIN..MAX and --replicas set.
_FROM_CORE = {"min_replicas", "max_replicas", "initial_replicas"}


def validate(options: dict, core: dict) -> None:
    """Refuse, before anything starts: Ray missing, an address that does not answer, options
    Ray Serve cannot honour. Ray itself is not imported here (seconds), only found."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        raise UsageError(
            "The ray engine needs Ray Serve, which is not installed: `pip install "
            "'maas-lab[ray]'` (or `pip install 'ray[serve]'`)."
        )
    if core.get("grpc_port") is not None:
        raise UsageError(
            f"{option('grpc_port')} is served by the local engine only: Ray Serve's own gRPC "
            "proxy takes generated servicers, not our OIP service. Serve gRPC with "
            f"{option('engine', 'local')}, or call this server over REST."
        )
    _autoscaling(options.get("autoscaling"))
    for key in ("cpus_per_replica", "gpus_per_replica"):
        value = options.get(key)
        if value is not None and value < 0:
            raise UsageError(f"{option(key)} must be 0 or more; got {value!r}.")
    timeout_s = options.get("connect_timeout_s")
    if timeout_s is not None and timeout_s <= 0:
        raise UsageError(f"{option('connect_timeout_s')} must be more than 0; got {timeout_s!r}.")
    address = options.get("address")
    if address and address != "auto":
        _check_answers(address, float(timeout_s or 10.0))
    elif core.get("port"):  # a local Ray's proxy takes the port minutes later: check it now
        _check_port_free(core.get("host") or "127.0.0.1", int(core["port"]))


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Pick another "
                f"{option('port')}, or {option('port', 0)} for any free one."
            ) from None


def _autoscaling(text: str | None) -> dict:
    """The ``--autoscaling`` JSON object; Ray's own model checks its keys and values when the
    deployment is made (in the server's log if it refuses one)."""
    if not text:
        return {}
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option('autoscaling')} is not valid JSON ({exc}).") from None
    if not isinstance(given, dict):
        raise UsageError(
            f"{option('autoscaling')} must be a JSON object, e.g. "
            "'{\"target_ongoing_requests\": 4}'."
        )
    taken = sorted(_FROM_CORE & set(given))
    if taken:
        raise UsageError(
            f"{option('autoscaling')} must not set {', '.join(taken)}: {option('autoscale')} "
            f"MIN..MAX and {option('replicas')} set them."
        )
    return given


def _check_answers(address: str, timeout_s: float) -> None:
    """A TCP connection to the head within ``timeout_s``: Ray's own connect retries for
    minutes before it gives up on an address that does not answer."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(
            f"{option('address')} must be HOST:PORT (or ray://HOST:PORT, or auto); got {address!r}."
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UsageError(
            f"The Ray cluster at {address} does not answer ({reason}, waited up to "
            f"{timeout_s:g} s): start it (`ray start --head` on its head node), check "
            f"{option('address')}, or leave it out to start a local Ray."
        ) from None


def run(server) -> int:
    """Serve until stopped; imported and run in the server's own process."""
    from .engine import RayEngine

    return RayEngine(server, _autoscaling(server.engine_options.get("autoscaling"))).run()


@hookimpl
def maas_serving_engines(register):
    register(
        Component(
            name="ray",
            description="Replicas as a Ray Serve deployment, on a local Ray or an existing "
            "cluster (--address); Ray places, restarts and autoscales them.",
            run=run,
            params=PARAMS,
            validate=validate,
            extra={"start_s": 600.0, "replicas": "per-core"},
        )
    )
