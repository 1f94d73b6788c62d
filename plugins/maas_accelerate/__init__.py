"""Built-in launcher: Hugging Face accelerate's ``accelerate launch``, as a subprocess.

The core hands us the module each process must run; we return the ``accelerate launch``
command line for it. A subprocess, not ``accelerate.notebook_launcher``: a crashed or killed
rank cannot take the kernel down, a job outlives a kernel restart, and forking a running
kernel (threads, sockets, CUDA) is unsafe.

What was measured on a 2-core machine without GPUs decides the command line:

- ``--cpu --num_processes 2`` silently runs ONE process; ``--multi_gpu --num_processes 2``
  with ``ACCELERATE_USE_CPU`` runs two gloo ranks. So several processes always go through
  ``--multi_gpu``, and the rank runtime sets ``ACCELERATE_USE_CPU`` where there is no GPU.
- ``--num_processes`` is the total over all machines; our ``--processes`` is per machine
  (like torchrun's ``--nproc-per-node``), so one command reads the same on every machine.
- A machine whose main process never answers waits 900 s by default; we bound the
  rendezvous (``--rdzv-timeout``, 60 s) and explain the failure.
- Two processes with two threads each on two cores ran 2-3x slower than one thread each:
  threads default to the cores divided among this machine's processes.
- The command is ``python -m maas_accelerate.launch``: ``accelerate launch`` itself, ended
  without the interpreter's 1-2 s teardown of torch once it succeeded (see that module).
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import socket
import sys
from pathlib import Path

from maas_lab import Component, Param, hookimpl
from maas_lab.components import Launch
from maas_lab.errors import BackendUnavailable, UsageError
from maas_lab.hints import option

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"

__version__ = "0.1.0"

PARAMS = (
    Param("processes", "int", None, "Processes on each machine (default 1, or the --config's)."),
    Param("machines", "int", None, "Machines in the job (default 1, or the --config's)."),
    Param(
        "machine_rank",
        "int",
        None,
        "This machine's rank: 0 runs the main process (default 0, or the --config's).",
    ),
    Param(
        "main_address",
        "str",
        None,
        "Address of machine rank 0 (needed with several machines; default 127.0.0.1).",
    ),
    Param(
        "main_port",
        "int",
        None,
        "Port of the main process (default: a free one on one machine, 29500 on several).",
    ),
    Param(
        "config",
        "str",
        None,
        "An accelerate config file (YAML or JSON): multi-GPU, FSDP, DeepSpeed, machines.",
    ),
    Param(
        "rdzv_timeout",
        "float",
        60.0,
        "Seconds the machines wait for each other before the job fails.",
    ),
    Param("threads", "int", None, "CPU threads per process (default: cores / processes)."),
    Param(
        "mixed_precision",
        "str",
        None,
        "Mixed precision (default no, or the --config's).",
        choices=("no", "fp16", "bf16", "fp8"),
    ),
    Param(
        "accelerate_args",
        "str",
        "",
        "Any other `accelerate launch` options, as one string (checked against accelerate's "
        "own parser).",
    ),
)


def _require() -> None:
    """accelerate is there, checked without importing it: importing it imports torch (2 s),
    which the notebook's kernel does not need to start a job."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise BackendUnavailable(
            "Launching needs accelerate. Install it with `pip install 'maas-lab[launch]'`."
        )


def _parser():
    from accelerate.commands.launch import launch_command_parser

    return launch_command_parser()


def load_config(path: str) -> dict:
    """The accelerate config file, parsed by accelerate itself: a clear error now rather
    than a traceback from every process later."""
    from accelerate.commands.config.config_args import load_config_from_file

    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(
            f"No accelerate config at {path}. Make one with `accelerate config --config_file "
            f"{path}`, or give the path of an existing one."
        )
    try:
        config = load_config_from_file(str(file))
    except Exception as exc:
        detail = " ".join(str(exc).split())
        raise UsageError(
            f"The accelerate config {path} does not parse: {type(exc).__name__}: {detail}. "
            "Fix it, or write a fresh one with `accelerate config --config_file FILE`."
        ) from None
    return config.to_dict()


def _check_extra(text: str) -> list[str]:
    try:
        extra = shlex.split(text or "")
    except ValueError as exc:
        raise UsageError(f"{option('accelerate_args')} does not parse: {exc}.") from None
    if not extra:
        return []
    known = sorted({o for a in _parser()._actions for o in a.option_strings})
    for arg in extra:
        if arg.startswith("-") and arg.split("=", 1)[0] not in known:
            name = arg.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise UsageError(
                f"`accelerate launch` has no option {name} (in {option('accelerate_args')})."
                f"{hint} "
                "See `accelerate launch --help`."
            )
    return extra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{option(name)} must be at least 1, got {value}.")


def plan(entry: list[str], options: dict) -> Launch:
    _require()
    config = load_config(options["config"]) if options.get("config") else {}
    for name in ("processes", "machines", "threads"):
        _positive(name, options.get(name))
    machines = options.get("machines") or config.get("num_machines") or 1
    if options.get("processes"):
        per_machine = options["processes"]
    elif config.get("num_processes"):
        per_machine = max(1, int(config["num_processes"]) // machines)
    else:
        per_machine = 1
    rank = options.get("machine_rank")
    rank = config.get("machine_rank", 0) if rank is None else rank
    if not 0 <= rank < machines:
        raise UsageError(
            f"{option('machine_rank', rank)} is not a rank of {machines} machine(s): use 0 to "
            f"{machines - 1}, 0 on the machine that runs the main process."
        )
    address = options.get("main_address") or config.get("main_process_ip")
    if machines > 1 and not address:
        raise UsageError(
            f"A job on {machines} machines needs {option('main_address')}: the address of "
            "machine rank 0, reachable from every machine (127.0.0.1 when they all run on this "
            "host)."
        )
    port = options.get("main_port") or config.get("main_process_port")
    if not port:
        port = _free_port() if machines == 1 else 29500
    total = per_machine * machines
    threads = options.get("threads") or max(1, (os.cpu_count() or 1) // per_machine)

    argv = [sys.executable, "-m", "maas_accelerate.launch"]  # accelerate launch
    if options.get("config"):
        argv += ["--config_file", str(Path(options["config"]).expanduser())]
    if total > 1 and config.get("distributed_type", "MULTI_GPU") in ("MULTI_GPU", "NO"):
        argv.append("--multi_gpu")  # several CPU ranks need it too (see the module's notes)
    argv += ["--num_processes", str(total), "--num_machines", str(machines)]
    argv += ["--num_cpu_threads_per_process", str(threads)]
    if options.get("mixed_precision") or not config:
        argv += ["--mixed_precision", options.get("mixed_precision") or "no"]
    if not config:
        argv += ["--dynamo_backend", "no"]  # stated, so accelerate warns of no defaults
    argv += ["--main_process_port", str(port)]
    if total > 1:  # each line of the job's log says which process wrote it: [rank1]:...
        role = "rank" if machines == 1 else f"machine{rank}-local"
        argv += ["--tee", "3", "--role", role]
    if machines > 1:
        argv += ["--machine_rank", str(rank), "--main_process_ip", address]
        argv += ["--rdzv_conf", f"timeout={int(options['rdzv_timeout'])}"]
    argv += _check_extra(options.get("accelerate_args", ""))
    argv += entry
    where = f"{address}:{port}" if machines > 1 else f"127.0.0.1:{port}"
    return Launch(
        argv=argv,
        env={"OMP_NUM_THREADS": str(threads)},
        world_size=total,
        explain=lambda log: explain(log, where, machines, rank, options["rdzv_timeout"]),
        notes=[f"{total} process(es) on {machines} machine(s), {threads} thread(s) each"],
    )


def explain(log: str, where: str, machines: int, rank: int, timeout: float) -> str | None:
    """Torch elastic's rendezvous failures, as a sentence that names the fix."""
    joined = re.search(r"(\d+)/(\d+) clients joined", log)
    if joined:
        return (
            f"Only {joined.group(1)} of {joined.group(2)} machines joined the rendezvous at "
            f"{where} within {timeout:g} s. Start the job on every machine with the same "
            f"{option('machines')}, {option('main_address')} and {option('main_port')}, each "
            f"with its own {option('machine_rank')}."
        )
    if re.search(r"DistNetworkError|failed to connect|Connection refused|TimeoutError", log):
        return (
            f"Machine rank {rank} could not reach the main process at {where} within "
            f"{timeout:g} s. Check {option('main_address')} and {option('main_port')} (machine "
            "rank 0 must be started and that port open to this machine)."
        )
    if re.search(r"EADDRINUSE|address already in use", log, re.I):
        return f"The main port at {where} is taken: give a free {option('main_port')}."
    return None


@hookimpl
def maas_launchers(register):
    register(
        Component(
            name="accelerate",
            description="Hugging Face accelerate: N processes (CPU gloo, GPUs), several "
            "machines, FSDP, DeepSpeed through its config",
            run=plan,
            params=PARAMS,
        )
    )
