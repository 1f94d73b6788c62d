"""The ``maas`` command. ``%maas`` runs this same click group, so the two cannot drift.

Every command returns the object ``maas_lab.api`` gave it; ``main`` prints it as text,
while the magic hands it to the notebook to render as HTML.
"""

from __future__ import annotations

import sys

import click

from . import api
from .errors import MaasError
from .version import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="maas_lab")
@click.option(
    "--root",
    envvar="MAAS_LAB_HOME",
    type=click.Path(file_okay=False),
    help="Registry folder (default: $MAAS_LAB_HOME or ~/.maas_lab).",
)
@click.pass_context
def cli(ctx: click.Context, root: str | None) -> None:
    """maas_lab: register, find, version, compress, export and serve models."""
    ctx.obj = {"root": root}


def _root() -> str | None:
    return click.get_current_context().find_root().obj["root"]


@cli.command()
@click.argument("name")
@click.option("--from-hf", type=click.Path(), help="A Hugging Face style folder to register.")
@click.option(
    "--from-torch", metavar="MODULE:FACTORY", help="Importable factory that builds the model."
)
@click.option("--weights", type=click.Path(), help="Safetensors weights (with --from-torch).")
@click.option("--config", metavar="JSON", help="Factory keyword arguments as a JSON object.")
@click.option("--from-file", type=click.Path(), multiple=True,
              help="A model file (e.g. .onnx); repeat for files it needs.")  # fmt: skip
@click.option("--format", "fmt", help="Format of --from-file when its suffix does not tell.")
@click.option("--task", help="What the model does, e.g. sentence-embedding, classification.")
@click.option("--description", help="One line about this model or version.")
@click.option("--owner", help="Who owns the model (default: you).")
@click.option("--card", type=click.Path(), help="Model card (markdown file).")
@click.option("--tag", "tags", multiple=True, metavar="KEY[=VALUE]", help="Tag; repeatable.")
@click.option(
    "--metric", "metrics", multiple=True, metavar="NAME=VALUE", help="Metric; repeatable."
)
@click.option("--input", "inputs", multiple=True, metavar="NAME:DTYPE:DIMS",
              help="A model input, e.g. input:float32:batch,64; outputs are inferred.")  # fmt: skip
@click.option("--signature", metavar="JSON", help="The whole tensor signature, inputs and outputs.")
def register(name, from_hf, from_torch, weights, config, from_file, fmt, task, description,
             owner, card, tags, metrics, inputs, signature):  # fmt: skip
    """Register a new version of model NAME from a folder, a factory + weights, or a file."""
    return api.register(
        name,
        from_hf=from_hf,
        from_torch=from_torch,
        weights=weights,
        config=config,
        from_file=from_file,
        format=fmt,
        task=task,
        description=description,
        owner=owner,
        card=card,
        tags=tags,
        metrics=metrics,
        inputs=inputs,
        signature=signature,
        root=_root(),
    )


@cli.command("list")
def list_() -> object:
    """List models with their latest version, size and aliases."""
    return api.list_models(root=_root())


@cli.command()
@click.argument("words", nargs=-1, required=True)
@click.option("--limit", default=20, show_default=True, help="Most results to show.")
def search(words, limit):
    """Full-text search over names, tasks, descriptions, tags and model cards."""
    return api.search(" ".join(words), limit=limit, root=_root())


@cli.command()
@click.argument("ref")
def show(ref):
    """Show one version (REF is name, name@N or name@alias) in full."""
    return api.show(ref, root=_root())


@cli.command()
@click.argument("name")
def history(name):
    """Show every version of NAME and every alias move."""
    return api.history(name, root=_root())


@cli.command()
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", required=False)
@click.option("--delete", is_flag=True, help="Remove the alias instead of setting it.")
def alias(name, alias_name, version, delete):
    """Point NAME@ALIAS at VERSION (a number or another alias); moves are kept in history."""
    return api.alias(name, alias_name, version, delete=delete, root=_root())


@cli.command()
@click.argument("ref")
@click.argument("tags", nargs=-1, metavar="KEY[=VALUE]...")
@click.option("--remove", multiple=True, metavar="KEY", help="Remove a tag; repeatable.")
def tag(ref, tags, remove):
    """Set (or --remove) tags on a version."""
    if not tags and not remove:
        raise click.UsageError("Give at least one KEY=VALUE or --remove KEY.")
    return api.tag(ref, tags, remove, root=_root())


@cli.command()
@click.argument("ref")
@click.argument("metrics", nargs=-1, required=True, metavar="NAME=VALUE...")
def metric(ref, metrics):
    """Record metrics (e.g. accuracy=0.97 latency_ms=4.2) on a version."""
    return api.log_metrics(ref, metrics, root=_root())


@cli.command()
@click.option("--task", help="Only versions of models with this task.")
@click.option("--max-size", metavar="SIZE", help="Largest size on disk, e.g. 30MB or 1GiB.")
@click.option("--max-latency-ms", type=float, help="Largest recorded latency_ms.")
@click.option("--min-accuracy", type=float, help="Smallest recorded accuracy.")
@click.option("--sort", default="size", show_default=True,
              help="size, latency, accuracy or any recorded metric name.")  # fmt: skip
@click.option("--limit", default=10, show_default=True, help="Most results to show.")
def recommend(task, max_size, max_latency_ms, min_accuracy, sort, limit):
    """Find the versions that meet your constraints, ranked, with why."""
    return api.recommend(task, max_size, max_latency_ms, min_accuracy, sort, limit, root=_root())


class _PluginCommand(click.Command):
    """`--help` lists each installed component of one kind with its own options, which the
    command accepts after its own (the plugin's schema is the one source of them)."""

    kind, heading = "exporter", "Exporters (their options go after --to)"

    def format_epilog(self, ctx, formatter):
        from .plugins import get_plugins

        with formatter.section(self.heading):
            for comp in get_plugins().components[self.kind].values():
                made = f" -> {comp.produces}" if comp.produces else ""
                takes = f" ({', '.join(comp.formats)}{made})" if comp.formats else ""
                formatter.write_text(f"{comp.name}: {comp.description}{takes}")
                with formatter.indentation():
                    formatter.write_dl(
                        [
                            (f"--{p.name.replace('_', '-')} {p.type.upper()}", _param_help(p))
                            for p in comp.params
                        ]  # fmt: skip
                    )


class _CompressCommand(_PluginCommand):
    kind, heading = "compressor", "Compressors (their options go after --with)"


def _param_help(p) -> str:
    extra = f" [{'|'.join(p.choices)}]" if p.choices else ""
    default = "" if p.default in (None, "") else f" (default: {p.default})"
    return f"{p.help}{extra}{default}"


def _extra_options(args: list[str]) -> dict[str, str]:
    """`--name value`, `--name=value` and bare `--flag` (true) into a dict of strings."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise click.UsageError(f"Unexpected argument {arg!r}: options look like --name value.")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        out[name.replace("-", "_")] = value
        i += 1
    return out


@cli.command(
    cls=_PluginCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("ref")
@click.option("--to", "to", required=True, help="Target format or exporter, e.g. onnx.")
@click.option("--allow-mismatch", is_flag=True, help="Keep an export that fails the parity check.")
@click.option("--atol", type=float, help="Largest absolute difference allowed (default per dtype).")
@click.option("--min-cosine", type=float, help="Smallest row cosine allowed (default per dtype).")
@click.pass_context
def export(ctx, ref, to, allow_mismatch, atol, min_cosine):
    """Export version REF to another format as a new version, after a parity check."""
    return api.export(
        ref,
        to,
        allow_mismatch=allow_mismatch,
        atol=atol,
        min_cosine=min_cosine,
        root=_root(),
        **_extra_options(ctx.args),
    )


_DATA_HELP = (
    "Data: sklearn:digits, builtin:sentences, a .npz (x, y) / .npy / .txt file, or a "
    "notebook variable's name."
)


@cli.command(
    cls=_CompressCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("ref")
@click.option("--with", "with_", required=True, metavar="COMPRESSOR",
              help="Compressor, e.g. ort-int8, torch-int8, prune (listed below).")  # fmt: skip
@click.option("--data", help=_DATA_HELP + " Accuracy is measured on its held-out quarter.")
@click.option("--calibration", help="Calibration data for static quantization (as --data).")
@click.option("--max-drop", multiple=True, metavar="METRIC=DROP",
              help="Fidelity budget, e.g. cosine=0.005 or accuracy=0.01; repeatable.")  # fmt: skip
@click.option("--allow-over-budget", is_flag=True,
              help="Keep a result over --max-drop (tagged budget=exceeded).")  # fmt: skip
@click.option("--budget-s", type=float, default=2.0, show_default=True,
              help="Seconds per version for the latency/throughput measurement.")  # fmt: skip
@click.pass_context
def compress(ctx, ref, with_, data, calibration, max_drop, allow_over_budget, budget_s):
    """Compress version REF as a new version; report size, accuracy/fidelity and speed."""
    return api.compress(
        ref,
        with_,
        data=data,
        calibration=calibration,
        max_drop=list(max_drop),
        allow_over_budget=allow_over_budget,
        budget_s=budget_s,
        root=_root(),
        **_extra_options(ctx.args),
    )


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--teacher", required=True, metavar="REF", help="The version to learn from.")
@click.option("--student", required=True, metavar="MODULE:FACTORY",
              help="Importable factory that builds the student.")  # fmt: skip
@click.option("--config", metavar="JSON", help="The student factory's keyword arguments.")
@click.option("--data", required=True, help=_DATA_HELP + " Needs labels (x, y).")
@click.option("--epochs", type=int, help="Most epochs to train (default 50).")
@click.option("--temperature", type=float,
              help="Softens the teacher's outputs; higher shares more (default 4).")  # fmt: skip
@click.option("--alpha", type=float,
              help="Weight of the teacher's soft targets; 1-alpha goes to the labels; 0 "
              "trains the student alone (default 0.5).")  # fmt: skip
@click.option("--max-drop", multiple=True, metavar="METRIC=DROP",
              help="Accuracy the student may lose, e.g. accuracy=0.01.")  # fmt: skip
@click.option("--allow-over-budget", is_flag=True, help="Keep a student over --max-drop.")
@click.option("--budget-s", type=float, default=2.0, show_default=True,
              help="Seconds per version for the latency/throughput measurement.")  # fmt: skip
@click.pass_context
def distill(ctx, teacher, student, config, data, epochs, temperature, alpha, max_drop,
            allow_over_budget, budget_s):  # fmt: skip
    """Train a smaller STUDENT to mimic TEACHER; registered as a new version of it.

    More options (--lr, --batch-size, --patience, --seed, and --processes N to train
    data-parallel as a `maas launch` job) are listed by `maas compress --help` under distill."""
    given = {"epochs": epochs, "temperature": temperature, "alpha": alpha}
    return api.distill(
        teacher,
        student,
        data=data,
        config=config,
        max_drop=list(max_drop),
        allow_over_budget=allow_over_budget,
        budget_s=budget_s,
        root=_root(),
        **{k: v for k, v in given.items() if v is not None},
        **_extra_options(ctx.args),
    )


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--data", help=_DATA_HELP)
@click.option("--budget-s", type=float, default=2.0, show_default=True,
              help="Seconds per version for the latency/throughput measurement.")  # fmt: skip
@click.option("--log/--no-log", default=True, show_default=True,
              help="Store the figures as metrics (what recommend ranks by).")  # fmt: skip
def compare(refs, data, budget_s, log):
    """Measure versions REFS side by side: size, accuracy or fidelity to the first, speed."""
    return api.compare(*refs, data=data, budget_s=budget_s, log=log, root=_root())


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--name", help="Server name (default: the first model's name).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; other than loopback, every call needs a token.")  # fmt: skip
@click.option("--port", default=8000, show_default=True, help="Port; 0 picks a free one.")
@click.option("--replicas", default=1, show_default=True, help="Worker processes on one port.")
@click.option("--max-batch", default=8, show_default=True, help="Most rows per backend call.")
@click.option("--max-delay-ms", default=5.0, show_default=True,
              help="Longest a request waits for others to batch with.")  # fmt: skip
@click.option("--max-queue", default=256, show_default=True,
              help="Requests queued per model and replica before answering 503.")  # fmt: skip
@click.option("--timeout-s", default=30.0, show_default=True, help="Per-request time limit.")
@click.option("--threads", default=0, show_default=True,
              help="Backend threads per replica (0: default, or cores/replicas).")  # fmt: skip
@click.option("--max-body-mb", default=32.0, show_default=True, help="Largest request body.")
@click.option("--token", envvar="MAAS_SERVE_TOKEN",
              help="Bearer token (or $MAAS_SERVE_TOKEN); given, every call needs it. Default: "
              "one is generated for the management endpoints and shown once.")  # fmt: skip
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Another Host header to accept (e.g. a DNS name); repeatable.")  # fmt: skip
@click.option("--drain-s", default=30.0, show_default=True,
              help="How long stopping waits for requests in flight.")  # fmt: skip
@click.option("--max-rows", default=1024, show_default=True,
              help="Most rows in one request (413 beyond); run in --max-batch parts.")  # fmt: skip
@click.option("--header-timeout-s", default=10.0, show_default=True,
              help="Time a client has to send a request's headers.")  # fmt: skip
@click.option("--body-timeout-s", default=60.0, show_default=True,
              help="Time a client has to send a request's body (408 beyond).")  # fmt: skip
@click.option("--background/--foreground", default=None,
              help="Run detached (default in a notebook) or in this terminal (default in a "
              "shell; Ctrl-C drains and stops).")  # fmt: skip
def serve(refs, name, host, port, replicas, max_batch, max_delay_ms, max_queue, timeout_s,
          threads, max_body_mb, token, allow_hosts, drain_s, max_rows, header_timeout_s,
          body_timeout_s, background):  # fmt: skip
    """Serve versions REFS over HTTP (Open Inference Protocol v2) with dynamic batching.

    An alias (minilm@prod) or a bare name (latest) is followed: when it moves, the server
    switches to the new version without dropping requests."""
    if background is None:
        background = click.get_current_context().find_root().info_name != "maas"
    return api.serve(
        list(refs),
        name=name,
        host=host,
        port=port,
        replicas=replicas,
        max_batch=max_batch,
        max_delay_ms=max_delay_ms,
        max_queue=max_queue,
        timeout_s=timeout_s,
        threads=threads,
        max_body_mb=max_body_mb,
        token=token,
        allow_hosts=allow_hosts,
        drain_s=drain_s,
        max_rows=max_rows,
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        foreground=not background,
        prog=click.get_current_context().find_root().info_name,  # hints in the typed syntax
        root=_root(),
    )


@cli.command()
@click.argument("ref")
@click.argument("texts", nargs=-1)
@click.option("--json", "json_values", metavar="JSON",
              help="Numeric input as a JSON array, e.g. a row of features.")  # fmt: skip
@click.option("--array", metavar="NAME",
              help="A notebook variable holding an array, or a .npy file.")  # fmt: skip
@click.option("--output", "outputs", multiple=True, help="Only this output; repeatable.")
@click.option("--url", help="Server URL (default: the running server of REF's model).")
@click.option("--token", envvar="MAAS_SERVE_TOKEN", help="Bearer token, if the server needs one.")
def predict(ref, texts, json_values, array, outputs, url, token):
    """Ask the server that serves REF: sentences TEXTS, or --json / --array numbers."""
    from .serving.inputs import predict_inputs

    inputs = predict_inputs(texts, json_values, array)
    return api.predict(ref, inputs, url=url, token=token, outputs=list(outputs) or None,
                       root=_root())  # fmt: skip


@cli.command()
@click.argument("name", required=False)
def status(name):
    """Running servers: versions, replicas, queue, requests/s, p50/p99 latency, errors."""
    return api.status(name, root=_root())


@cli.command()
@click.argument("name")
@click.option("-n", "--lines", default=40, show_default=True, help="How many lines.")
def logs(name, lines):
    """The end of server NAME's log, or of training job NAME's (a job's number)."""
    return api.logs(name, lines=lines, root=_root())


@cli.command()
@click.argument("name")
@click.option("--replicas", type=int, required=True, help="Worker processes wanted.")
def scale(name, replicas):
    """Change server NAME's number of worker processes while it serves."""
    return api.scale(name, replicas, root=_root())


@cli.command()
@click.argument("name")
def stop(name):
    """Drain and stop server NAME: requests in flight are answered first."""
    return api.stop(name, root=_root())


class _LaunchCommand(_PluginCommand):
    """Keeps the words as typed: click drops a ``--``, which separates the script's own
    arguments from ours (``_launch_args``)."""

    kind, heading = "launcher", "Launchers (their options go before or after TARGET)"

    def parse_args(self, ctx, args):
        ctx.meta["launch_args"] = list(args)
        return super().parse_args(ctx, args)


_BOOLS = {"1", "0", "true", "false", "yes", "no", "on", "off"}
_OWN_VALUES = {"register", "metric", "launcher", "code"}


def _launcher_types(args: list[str]) -> tuple[str, dict[str, str]]:
    """The launcher named by ``--launcher`` (before ``--``) and its options' types."""
    from .plugins import get_plugins

    ours = args[: args.index("--")] if "--" in args else args
    launcher = "accelerate"
    for i, arg in enumerate(ours):
        if arg == "--launcher" and i + 1 < len(ours):
            launcher = ours[i + 1]
        elif arg.startswith("--launcher="):
            launcher = arg.split("=", 1)[1]
    comp = get_plugins().components["launcher"].get(launcher)
    return launcher, {p.name: p.type for p in comp.params} if comp else {}


def _launch_args(args: list[str]) -> tuple[dict, dict, str | None, list[str]]:
    """Split ``[OPTIONS] TARGET [OPTIONS] [-- SCRIPT_ARGS]``.

    Options are ours or the launcher's (its schema says which take a value) wherever they
    stand, before or after TARGET, so the README's ``maas launch train.py --processes 2``
    runs two processes; the script's own arguments go after ``--``. An unknown option or a
    second word before ``--`` is an error naming it: an option is never silently handed to
    the script, nor a script argument silently taken as ours."""
    launcher, types = _launcher_types(args)
    own, options, target, i = {"detach": False}, {}, None, 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # the rest is the script's (its first word is TARGET if none yet)
            rest = args[i + 1 :]
            return (own, options, target, rest) if target else (own, options, *_split(rest))
        if not arg.startswith("--"):
            if target is not None:
                raise click.UsageError(
                    f"Unexpected argument {arg!r} after TARGET {target!r}: the script's own "
                    f"arguments go after `--`, e.g. maas launch {target} -- {arg}"
                )
            target, i = arg, i + 1
            continue
        name, eq, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key == "detach":
            own["detach"] = True
        elif key in _OWN_VALUES or key in types:
            if not eq:
                flag = types.get(key) == "bool"
                nxt = args[i + 1] if i + 1 < len(args) else None
                if flag and (nxt is None or nxt.lower() not in _BOOLS):
                    value = "true"
                elif nxt is None or nxt == "--":
                    raise click.UsageError(f"--{name} needs a value.")
                else:
                    value, i = nxt, i + 1
            (own if key in _OWN_VALUES else options)[key] = value
        else:
            known = sorted([*_OWN_VALUES, "detach", *types])
            script = target or "train.py"
            raise click.UsageError(
                f"No option --{name} for `launch` or the {launcher} launcher. Options: "
                + ", ".join(f"--{k.replace('_', '-')}" for k in known)
                + ". If it is the script's, put the script's own arguments after `--`: "
                f"maas launch {script} --processes 2 -- {arg}"
                + (
                    ""
                    if eq or i + 1 >= len(args) or args[i + 1].startswith("-")
                    else f" {args[i + 1]}"
                )  # fmt: skip
            )
        i += 1
    return own, options, target, []


def _split(rest: list[str]) -> tuple[str | None, list[str]]:
    return (rest[0], rest[1:]) if rest else (None, [])


@cli.command(cls=_LaunchCommand, context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED,
                metavar="[OPTIONS] TARGET [OPTIONS] [-- SCRIPT_ARGS...]")  # fmt: skip
@click.pass_context
def launch(ctx, args):
    """Train on several processes or machines, as a recorded job.

    TARGET is a script (train.py), a function (package.module:train), or, in `%%maas launch`,
    the cell, which defines train(accelerator, registry). Options go before or after TARGET;
    the script's own arguments go after `--` (maas launch train.py --processes 2 -- --lr
    0.1). Our options: --register NAME (the model the job registers, from rank 0), --metric
    NAME (the metric it must report), --launcher NAME (default accelerate), --detach (return
    at once; see `maas jobs`). The launcher's options are below. Waits with a progress bar;
    Ctrl-C cancels the job."""
    own, options, target, script_args = _launch_args(ctx.meta.get("launch_args", list(args)))
    return api.launch(
        target,
        code=own.get("code"),
        args=script_args,
        launcher=own.get("launcher", "accelerate"),
        register=own.get("register"),
        metric=own.get("metric"),
        wait=not own["detach"],
        root=_root(),
        **options,
    )


@cli.command()
@click.argument("job", required=False)
@click.option("--limit", default=20, show_default=True, help="Most jobs to list.")
def jobs(job, limit):
    """Training jobs, newest first; with JOB (its number), that job in full."""
    return api.jobs(job, limit=limit, root=_root())


@cli.command()
@click.argument("job")
def cancel(job):
    """Stop every process of running training job JOB."""
    return api.cancel(job, root=_root())


@cli.command()
@click.argument("job")
def wait(job):
    """Follow training job JOB (started with --detach) until it ends."""
    return api.wait(job, root=_root())


@cli.command()
def plugins():
    """List plugins: distribution, version, hooks, what each provides, and failures."""
    return api.plugins()


@cli.command()
@click.option("--repair", is_flag=True, help="Remove orphan blobs and interrupted writes.")
@click.option("--verify", is_flag=True, help="Also re-hash every stored blob (slow).")
@click.option("--grace", default=3600.0, show_default=True,
              help="Only remove orphans older than this many seconds.")  # fmt: skip
def fsck(repair, verify, grace):
    """Check the registry for orphans, missing or corrupt blobs."""
    return api.fsck(repair, verify, grace, root=_root())


@cli.group()
def bundle():
    """Move versions between machines as single tar files."""


@bundle.command("export")
@click.argument("ref")
@click.argument("out", type=click.Path())
def bundle_export(ref, out):
    """Write version REF to OUT (a file, or a folder to put NAME-N.maas.tar in)."""
    return api.bundle_export(ref, out, root=_root())


@bundle.command("import")
@click.argument("path", type=click.Path())
@click.option("--as", "name", help="Register under this name instead of the bundle's.")
@click.option(
    "--trust",
    is_flag=True,
    help="Trust the code (factory module:callable) the bundle's version names; recorded.",
)
def bundle_import(path, name, trust):
    """Import a bundle as a new version, verifying every digest; code it names runs only if
    trusted."""
    return api.bundle_import(path, name, trust=trust, root=_root())


@cli.command("trust")
@click.argument("reference", required=False)
@click.option("--remove", is_flag=True, help="Stop trusting REFERENCE.")
def trust_code(reference, remove):
    """Trust code REFERENCE (module:callable) that versions name as their factory; with no
    REFERENCE, list what is trusted, by whom and how."""
    if remove and reference is None:
        raise click.UsageError("--remove needs a REFERENCE.")
    return api.trust_code(reference, remove=remove, root=_root())


def run(args: list[str], prog_name: str = "maas"):
    """Run one command and return its result object; user mistakes raise MaasError."""
    from .errors import UsageError

    try:
        result = cli.main(args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        raise UsageError("Aborted.") from None
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        raise UsageError(exc.format_message().rstrip(".") + hint + ".") from None
    return None if isinstance(result, int) else result


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        result = run(args or ["--help"])
    except MaasError as exc:
        click.secho(f"{exc.label}: {exc}", fg="red", err=True)
        sys.exit(1)
    if result is not None:
        click.echo(str(result))


if __name__ == "__main__":
    main()
