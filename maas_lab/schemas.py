"""The options of the core's own commands, declared once, as plugins declare theirs.

``maas serve --help``, the ``%maas serve`` magic, ``maas_lab.api.serve``'s defaults and a
widget's form all come from these tuples of :class:`~maas_lab.components.Param`, so a
default or a help line cannot differ between them (a test compares the API's signatures
with them). Options that only one front end has (``--background``) stay with it.
"""

from __future__ import annotations

from .components import Param, Schema

DATA_HELP = (
    "Data: sklearn:digits, builtin:sentences, a .npz (x, y) / .npy / .txt file, or a "
    "notebook variable's name."
)

BUDGET_S = Param(
    "budget_s", "float", 2.0, "Seconds per version for the latency/throughput measurement."
)

SERVE = Schema(
    Param("name", help="Server name (default: the first model's name).", metavar="NAME"),
    Param(
        "engine",
        default="local",
        help="What runs the replicas: local (worker processes here) or ray (Ray Serve); "
        "an engine's own options go after it (`--engine ray --help`).",
        metavar="ENGINE",
    ),
    Param(
        "host",
        default="127.0.0.1",
        help="Address to bind; other than loopback, every call needs a token.",
    ),
    Param("port", "int", 8000, "Port; 0 picks a free one."),
    Param("replicas", "int", 1, "Worker processes on one port."),
    Param("max_batch", "int", 8, "Most rows per backend call."),
    Param("max_delay_ms", "float", 5.0, "Longest a request waits for others to batch with."),
    Param("max_queue", "int", 256, "Requests queued per model and replica before answering 503."),
    Param("timeout_s", "float", 30.0, "Per-request time limit."),
    Param(
        "threads",
        "int",
        0,
        "Backend threads per replica (0: all cores for one replica, else cores / replicas; "
        "with --autoscale, cores / MAX).",
    ),
    Param("max_body_mb", "float", 32.0, "Largest request body."),
    Param(
        "token",
        help="Bearer token (or $MAAS_SERVE_TOKEN); given, every call needs it. Default: one is "
        "generated for the management endpoints and shown once.",
        envvar="MAAS_SERVE_TOKEN",
    ),
    Param(
        "allow_hosts",
        help="Another Host header to accept (e.g. a DNS name); repeatable.",
        multiple=True,
        metavar="NAME",
        flag="--allow-host",
    ),
    Param("drain_s", "float", 30.0, "How long stopping waits for requests in flight."),
    Param(
        "max_rows", "int", 1024, "Most rows in one request (413 beyond); run in --max-batch parts."
    ),
    Param("header_timeout_s", "float", 10.0, "Time a client has to send a request's headers."),
    Param(
        "body_timeout_s", "float", 60.0, "Time a client has to send a request's body (408 beyond)."
    ),
    Param(
        "grpc_port",
        "int",
        None,
        "Also answer OIP v2 over gRPC on this port (0 picks a free one).",
    ),
    Param("tls_cert", help="PEM certificate (chain): HTTPS and gRPC over TLS.", metavar="FILE"),
    Param("tls_key", help="PEM private key of --tls-cert.", metavar="FILE"),
    Param(
        "autoscale",
        help="Replicas follow the load between MIN and MAX, e.g. 1..4; starts at --replicas "
        "(raised to MIN); scaling by hand stays within the range.",
        metavar="MIN..MAX",
    ),
    Param(
        "target_p99_ms",
        "float",
        200.0,
        "With --autoscale: add a replica while p99 latency stays over this (or the queue over "
        "--max-batch per replica); remove one when idle.",
    ),
)

EXPORT = Schema(
    Param("allow_mismatch", "bool", False, "Keep an export that fails the parity check."),
    Param("atol", "float", None, "Largest absolute difference allowed (default per dtype)."),
    Param("min_cosine", "float", None, "Smallest row cosine allowed (default per dtype)."),
)

COMPRESS = Schema(
    Param("data", help=DATA_HELP + " Accuracy is measured on its held-out quarter."),
    Param("calibration", help="Calibration data for static quantization (as --data)."),
    Param(
        "max_drop",
        help="Fidelity budget, e.g. cosine=0.005 or accuracy=0.01; repeatable.",
        multiple=True,
        metavar="METRIC=DROP",
    ),
    Param(
        "allow_over_budget",
        "bool",
        False,
        "Keep a result over --max-drop (tagged budget=exceeded).",
    ),
    BUDGET_S,
)

COMPARE = Schema(
    Param("data", help=DATA_HELP),
    BUDGET_S,
    Param("log", "bool", True, "Store the figures as metrics (what recommend ranks by)."),
)

# The options `maas launch` takes for itself, before the launcher's and the script's own.
LAUNCH_OWN = {
    "register": "str",
    "metric": "str",
    "launcher": "str",
    "code": "str",
    "detach": "bool",
}

# What a component's own parameters may not be called, by kind: the options its command
# already takes (and the Python API's own arguments). A plugin option named ``data`` for a
# compressor would show in --help and never reach the plugin, since the core takes it first.
RESERVED_OPTIONS = {
    "compressor": {p.name for p in COMPRESS} | {"with_", "ref", "root", "help"},
    "exporter": {p.name for p in EXPORT} | {"to", "ref", "root", "help"},
    "launcher": set(LAUNCH_OWN) | {"target", "args", "wait", "root", "help"},
    "loader": {"ref", "root", "help"},
    "serving_backend": {"help"},
    "evaluator": {"help"},
    "engine": {p.name for p in SERVE} | {"refs", "root", "help", "foreground", "background"},
}
