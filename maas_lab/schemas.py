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
    Param(
        "replicas",
        "int",
        None,
        "Worker processes on one port (default: one per core, at most 4, for the local and "
        "ray engines; with --autoscale, its MIN).",
    ),
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
        "(raised to MIN; by default MIN); scaling by hand stays within the range.",
        metavar="MIN..MAX",
    ),
    Param(
        "target_p99_ms",
        "float",
        200.0,
        "With --autoscale: add a replica while p99 latency stays over this (or the queue over "
        "--max-batch per replica); remove one when idle.",
    ),
    Param(
        "explain_max_passes",
        "int",
        10_000,
        "Most forward rows one explanation may cost (POST .../explain; 413 beyond).",
    ),
    Param(
        "explain_queue",
        "int",
        2,
        "Explanations waiting behind the one running (503 beyond; inference is unaffected).",
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

TUNE = Schema(
    Param("trials", "int", 20, "Trials to run now (a resumed study adds them after its own)."),
    Param(
        "metric",
        help="The metric to optimise: one train returns, or for a compressor speed, "
        "size_ratio or a measured one (cosine_min, accuracy, latency_ms...).",
    ),
    Param(
        "direction",
        choices=("maximize", "minimize"),
        help="maximize or minimize (default: maximize; minimize for latency_ms, size_bytes, "
        "size_ratio).",
    ),
    Param(
        "sampler",
        default="tpe",
        choices=("tpe", "random", "grid"),
        help="tpe (Bayesian, default), random, or grid (needs --grid or stepped --over).",
    ),
    Param(
        "pruner",
        default="median",
        choices=("median", "none"),
        help="Stop trials whose reported values trail the median (function tuning).",
    ),
    Param("seed", "int", None, "Seed of the sampler: the same seed repeats the search."),
    Param(
        "study",
        help="Study name (default: --register's, or MODEL-COMPRESSOR-tune); an existing "
        "study is resumed.",
    ),
    Param(
        "register",
        help="Function tuning: the model name the best trial's model is registered as "
        "(needs --factory).",
    ),
    Param("factory", "code", None, "module:callable that rebuilds the model (registering)."),
    Param(
        "config",
        help="The factory's keyword arguments, a JSON object; trial parameters the factory "
        "takes are added.",
    ),
    Param(
        "inputs",
        multiple=True,
        metavar="NAME:DTYPE:DIMS",
        help="Input signature of the registered model, e.g. input:float32:batch,64.",
    ),
    Param(
        "grid",
        help="--sampler grid for a function: a JSON object of value lists, e.g. "
        '\'{"hidden": [32, 64], "lr": [0.01, 0.1]}\'.',
    ),
    Param(
        "processes",
        "int",
        None,
        "Run each trial as a recorded job on N processes (through --launcher); a crash ends "
        "the job, not the kernel.",
    ),
    Param("parallel", "int", 1, "With --processes: trial jobs running at once."),
    Param("launcher", default="accelerate", help="Launcher plugin for --processes."),
    Param(
        "over",
        metavar="SPACE",
        help="Compressor tuning: options to tune, e.g. 'smooth=0..0.9,outliers=0..4' (a..b "
        "range, a..b:step, a|b|c choices).",
    ),
    Param(
        "keep",
        multiple=True,
        metavar="METRIC>=VALUE",
        help="Compressor tuning: only results within this, e.g. cosine_min>=0.99.",
    ),
    Param("data", help=DATA_HELP),
    Param("calibration", help="Calibration data for static quantization (as --data)."),
    Param(
        "budget_s",
        "float",
        1.0,
        "Compressor tuning: seconds per candidate for the latency/throughput measurement.",
    ),
    Param("dry_run", "bool", False, "Compressor tuning: search only; register nothing."),
)

EXPLAIN = Schema(
    Param("data", help=DATA_HELP + " Its rows are explained, chosen with --rows."),
    Param(
        "rows",
        help="Rows of --data to explain: 0:4 (rows 0 to 3), 7, or 1,5 (default: row 0).",
        metavar="ROWS",
    ),
    Param(
        "target",
        help="Sentence embedders: the sentence whose similarity to the input is explained.",
        metavar="SENTENCE",
    ),
    Param(
        "label",
        "int",
        None,
        "Classifiers: the class to explain (default: the predicted one).",
        metavar="N",
    ),
    Param(
        "max_passes",
        "int",
        200_000,
        "Most rows the model may be run on; a costlier explanation is refused before it runs.",
    ),
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
    # (`maas tune REF --with COMPRESSOR` passes a compressor's options too; there its own
    # options come first: docs/tuning.md.)
    "compressor": {p.name for p in COMPRESS} | {"with_", "ref", "root", "help"},
    "exporter": {p.name for p in EXPORT} | {"to", "ref", "root", "help"},
    "launcher": set(LAUNCH_OWN) | {"target", "args", "wait", "root", "help"},
    "loader": {"ref", "root", "help"},
    "serving_backend": {"help"},
    "evaluator": {"help"},
    "explainer": {p.name for p in EXPLAIN}
    | {"with_", "explainer", "inputs", "ref", "root", "help"},
    "engine": {p.name for p in SERVE} | {"refs", "root", "help", "foreground", "background"},
}
