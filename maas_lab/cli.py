"""The ``maas`` command. ``%maas`` runs this same click group, so the two cannot drift.

Every command returns the object ``maas_lab.api`` gave it; ``main`` prints it as text,
while the magic hands it to the notebook to render as HTML.
"""

from __future__ import annotations

import difflib
import sys

import click

from . import api
from .arguments import parse_words
from .components import KINDS, Schema
from .errors import MaasError, UsageError
from .hints import command, prog_scope
from .plugins import get_plugins
from .schemas import COMPARE, COMPRESS, EXPLAIN, EXPORT, LAUNCH_OWN, SERVE, TUNE
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


_CLICK_TYPES = {"str": str, "code": str, "int": int, "float": float}


def _options(schema):
    """click options made from a schema (see maas_lab.schemas), in its order."""

    def apply(command):
        for p in reversed(schema):
            decls = [p.cli_flag, p.name]
            kwargs = {"help": p.help, "multiple": p.multiple, "required": p.required}
            if p.type == "bool":
                if p.default:
                    decls[0] = f"{p.cli_flag}/--no-{p.cli_flag[2:]}"
                else:
                    kwargs["is_flag"] = True
                kwargs["default"] = bool(p.default)
            else:
                kwargs["type"] = click.Choice(p.choices) if p.choices else _CLICK_TYPES[p.type]
                kwargs["default"] = p.default
            kwargs["show_default"] = not (
                p.default is None or p.default is False or p.default in ("", ())
            )
            for key in ("metavar", "envvar"):
                if getattr(p, key):
                    kwargs[key] = getattr(p, key)
            command = click.option(*decls, **kwargs)(command)
        return command

    return apply


@cli.command()
@click.argument("name")
@click.option("--from-hf", type=click.Path(), help="A Hugging Face style folder to register.")
@click.option(
    "--from-torch", metavar="MODULE:FACTORY", help="Importable factory that builds the model."
)
@click.option("--weights", type=click.Path(), help="Safetensors weights (with --from-torch).")
@click.option("--config", metavar="JSON", help="Factory keyword arguments as a JSON object.")
@click.option(
    "--from-file",
    type=click.Path(),
    multiple=True,
    help="A model file (e.g. .onnx); repeat for files it needs.",
)
@click.option("--format", "format", help="Format of --from-file when its suffix does not tell.")
@click.option("--task", help="What the model does, e.g. sentence-embedding, classification.")
@click.option("--description", help="One line about this model or version.")
@click.option("--owner", help="Who owns the model (default: you).")
@click.option("--card", type=click.Path(), help="Model card (markdown file).")
@click.option("--tag", "tags", multiple=True, metavar="KEY[=VALUE]", help="Tag; repeatable.")
@click.option(
    "--metric", "metrics", multiple=True, metavar="NAME=VALUE", help="Metric; repeatable."
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME:DTYPE:DIMS",
    help="A model input, e.g. input:float32:batch,64; outputs are inferred.",
)
@click.option("--signature", metavar="JSON", help="The whole tensor signature, inputs and outputs.")
def register(name, **options):
    """Register a new version of model NAME from a folder, a factory + weights, or a file."""
    return api.register(name, root=_root(), **options)


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
@click.option(
    "--sort",
    default="size",
    show_default=True,
    help="size, latency, accuracy or any recorded metric name.",
)
@click.option("--limit", default=10, show_default=True, help="Most results to show.")
def recommend(task, max_size, max_latency_ms, min_accuracy, sort, limit):
    """Find the versions that meet your constraints, ranked, with why."""
    return api.recommend(task, max_size, max_latency_ms, min_accuracy, sort, limit, root=_root())


class _PluginCommand(click.Command):
    """A command whose components of one kind (exporters, compressors, launchers) bring
    their own options, which it accepts after its own (the plugin's schema is the one source
    of them). `--help` lists the components, one line each; with the option that picks one
    (`--with NAME --help`), it shows that one's options instead."""

    kind, heading = "exporter", "Exporters"
    picks, default = "--to", None  # the option that names the component, and its default
    takes_dashes = False  # click drops a `--`; a word after it must not become an option

    def parse_args(self, ctx, args):
        if "--" in args and not self.takes_dashes:
            raise UsageError(
                f"Unexpected `--`: `{ctx.info_name}` takes no words after it (a plugin's "
                "options are typed as --name value)."
            )
        ctx.meta["picked"] = self._picked(args)  # --help is eager: read it before click does
        return super().parse_args(ctx, args)

    def _picked(self, args: list[str]) -> str | None:
        ours = args[: args.index("--")] if "--" in args else args
        picked = self.default
        for i, arg in enumerate(ours):
            if arg == self.picks and i + 1 < len(ours):
                picked = ours[i + 1]
            elif arg.startswith(self.picks + "="):
                picked = arg.split("=", 1)[1]
        return picked

    def _matching(self, name: str) -> list:
        comps = get_plugins().components[self.kind].values()
        return [
            c for c in comps if c.name == name or (self.kind == "exporter" and c.produces == name)
        ]

    def format_epilog(self, ctx, formatter):
        comps = list(get_plugins().components[self.kind].values())
        picked = ctx.meta.get("picked")
        chosen = self._matching(picked) if picked else []
        for comp in chosen:
            takes = f" ({_takes(comp)})" if _takes(comp) else ""
            with formatter.section(f"Options of the {comp.name} {self.kind}{takes}"):
                formatter.write_text(comp.description)
                formatter.write_dl([_param_row(p) for p in comp.params] or [("(none)", "")])
        others = [c.name for c in comps if c not in chosen]
        if chosen:
            if others and picked != self.default:
                formatter.write_paragraph()
                formatter.write_text(f"Other {self.heading.lower()}: {', '.join(others)}.")
            elif others:
                formatter.write_paragraph()
                formatter.write_text(
                    f"Other {self.heading.lower()}: {', '.join(others)} (`{ctx.command_path} "
                    f"{self.picks} NAME --help` shows one's options)."
                )
            return
        with formatter.section(f"{self.heading} (their options go after {self.picks} NAME)"):
            if picked:
                formatter.write_text(f"(no {self.kind} named {picked!r} is installed)")
            formatter.write_dl([(c.name, f"{c.description} ({_takes(c)})") for c in comps])
        formatter.write_paragraph()
        formatter.write_text(
            f"To see one's options: `{ctx.command_path} {self.picks} NAME --help`."
        )


class _CompressCommand(_PluginCommand):
    kind, heading, picks = "compressor", "Compressors", "--with"


def _takes(comp) -> str:
    """What a component takes and makes: ``torch, hf -> onnx``."""
    made = f" -> {comp.produces}" if comp.produces else ""
    return f"{', '.join(comp.formats)}{made}" if comp.formats else (comp.produces or "")


def _param_row(p) -> tuple[str, str]:
    extra = f" [{'|'.join(map(str, p.choices))}]" if p.choices else ""
    default = "" if p.default in (None, "") else f" (default: {p.default})"
    typed = "" if p.type == "bool" else f" {p.type.upper()}"
    if p.type == "bool" and p.default is True:  # on by default: say how to turn it off
        typed = f"/--no-{p.cli_flag[2:]}"
    return f"{p.cli_flag}{typed}", f"{p.help}{extra}{default}"


def _plugin_options(kind: str, names: set[str], words: list[str], what: str) -> dict[str, str]:
    """The options typed after a command's own, by the schema of the component(s) of
    ``kind`` called one of ``names`` (an exporter is named by what it makes, too)."""
    comps = [
        c
        for c in get_plugins().components[kind].values()
        if c.name in names or (c.produces in names and kind == "exporter")
    ]
    types = {p.name: p.type for c in comps for p in c.params} if comps else None
    own = sorted(
        opt
        for p in click.get_current_context().command.params
        if isinstance(p, click.Option)
        for opt in p.opts
        if opt.startswith("--") and opt != "--help"
    )

    def unknown(name: str, _next, _found) -> str:
        known = ["--" + k.replace("_", "-") for k in sorted(types or ())]
        close = difflib.get_close_matches(f"--{name.replace('_', '-')}", known + own, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        return (
            f"{what} has no option --{name}.{hint} Its options: {', '.join(known) or 'none'}; "
            f"the command's own: {', '.join(own)}."
        )

    def unexpected(word: str, _found) -> str:
        return (
            f"Unexpected argument {word!r}: {what}'s options go after the command's own "
            "arguments, each as --name value."
        )

    options, _, _ = parse_words(words, types, unknown=unknown, unexpected=unexpected)
    return options


@cli.command(
    cls=_PluginCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("ref")
@click.option("--to", "to", required=True, help="Target format or exporter, e.g. onnx.")
@_options(EXPORT)
@click.pass_context
def export(ctx, ref, to, **options):
    """Export version REF to another format as a new version, after a parity check."""
    extra = _plugin_options("exporter", {to}, ctx.args, f"Exporting to {to}")
    return api.export(ref, to, root=_root(), **options, **extra)


@cli.command("export-repo")
@click.argument("ref")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "format",
    default="triton",
    show_default=True,
    metavar="triton|kserve",
    help="triton: a Triton model repository; kserve: an InferenceService and its storage.",
)
@click.option("--force", is_flag=True, help="Replace OUT if it already holds files.")
@click.option(
    "--storage-uri",
    metavar="URI",
    help="(kserve) Where the cluster reads the repository (default pvc://maas-models/NAME).",
)
def export_repo(ref, out, format, force, storage_uri):
    """Write version REF into folder OUT for Triton or KServe (registers nothing)."""
    return api.export_repo(
        ref, out, format=format, force=force, storage_uri=storage_uri, root=_root()
    )


@cli.command(
    cls=_CompressCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("ref")
@click.option(
    "--with",
    "with_",
    required=True,
    metavar="COMPRESSOR",
    help="Compressor, e.g. ort-int8, torch-int8, prune (listed below).",
)
@_options(COMPRESS)
@click.pass_context
def compress(ctx, ref, with_, **options):
    """Compress version REF as a new version; report size, accuracy/fidelity and speed."""
    extra = _plugin_options("compressor", {with_}, ctx.args, f"Compressor {with_!r}")
    return api.compress(ref, with_, root=_root(), **options, **extra)


class _DistillCommand(_PluginCommand):
    kind, heading, picks = "compressor", "The distill compressor's options", None

    def _picked(self, args: list[str]) -> str | None:
        return "distill"

    def format_epilog(self, ctx, formatter):
        comp = get_plugins().components["compressor"].get("distill")
        with formatter.section(self.heading):
            if comp is None:
                formatter.write_text("(no compressor named distill is installed)")
            else:
                formatter.write_dl([_param_row(p) for p in comp.params])


@cli.command(
    cls=_DistillCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--teacher", required=True, metavar="REF", help="The version to learn from.")
@_options(Schema(*(p for p in COMPRESS if p.name != "calibration")))  # distill calibrates nothing
@click.pass_context
def distill(ctx, teacher, **options):
    """Train a smaller --student to mimic the --teacher version; registered as a new version
    of the teacher's model.

    The same as `maas compress TEACHER --with distill`: the compressor's options (--student,
    --config, --epochs, --alpha, ..., and --processes N to train data-parallel as a `maas
    launch` job) are listed below, from its schema."""
    extra = _plugin_options("compressor", {"distill"}, ctx.args, "Compressor 'distill'")
    return api.compress(teacher, "distill", root=_root(), **options, **extra)


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@_options(COMPARE)
def compare(refs, **options):
    """Measure versions REFS side by side: size, accuracy or fidelity to the first, speed."""
    return api.compare(*refs, root=_root(), **options)


class _TuneCommand(_PluginCommand):
    kind, heading, picks = "compressor", "Compressors (for --with)", "--with"


@cli.command(
    cls=_TuneCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("target", required=False)
@click.option("--code", hidden=True, help="The cell's code (what %%maas tune sends).")
@click.option(
    "--with",
    "with_",
    metavar="COMPRESSOR",
    help="Compressor tuning: the compressor whose options are tuned on version TARGET.",
)
@_options(TUNE)
@click.pass_context
def tune(ctx, target, code, with_, **options):
    """Search hyper-parameters with Optuna, as a study that is stored and resumable.

    Function tuning: TARGET is a .py file (or, in `%%maas tune`, the cell) defining
    space(trial) and train(params, report); --register NAME --factory module:callable
    stores the best model. `--processes N` runs each trial as a recorded job. Compressor
    tuning: TARGET is a version, e.g. `maas tune minilm@2 --with ort-int8 --over
    "smooth=0..0.9,outliers=0..4" --metric speed --keep cosine_min>=0.99`; the
    compressor's other options go after ours. See `maas studies`, `maas study NAME`."""
    if ctx.args and not with_:
        raise UsageError(f"No option {ctx.args[0]} for `tune`; see `maas tune --help`.")
    extra = (
        _plugin_options("compressor", {with_}, ctx.args, f"Compressor {with_!r}") if with_ else {}
    )
    return api.tune(target, code=code, with_=with_, root=_root(), **options, **extra)


@cli.command()
def studies():
    """Tuning studies: what each tunes, trials, metric, direction, best value and params."""
    return api.studies(root=_root())


@cli.command()
@click.argument("name")
@click.option("--plot", metavar="FILE", help="Also write the best-vs-trials plot (PNG).")
def study(name, plot):
    """Study NAME: its trials as a table, the best, the history and importance plots."""
    report = api.study(name, root=_root())
    if plot:
        dict(report.parts)["Best so far"].save(plot)
    return report


class _ExplainCommand(_PluginCommand):
    kind, heading, picks = "explainer", "Explainers", "--with"


@cli.command(
    cls=_ExplainCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("ref")
@click.argument("text", nargs=-1)
@click.option(
    "--with",
    "with_",
    metavar="EXPLAINER",
    help="integrated-gradients (default with gradients), occlusion or kernel-shap.",
)
@_options(EXPLAIN)
@click.pass_context
def explain(ctx, ref, text, with_, **options):
    """Explain version REF's answers on sentences TEXT or on --rows of --data: which
    features, pixels or tokens raised or lowered them."""
    # click hands the explainer's own options (--steps 20) to TEXT too: they start at the
    # first word that is an option.
    words = [*text, *ctx.args]
    cut = next((i for i, w in enumerate(words) if w.startswith("--")), len(words))
    sentences, rest = words[:cut], words[cut:]
    names = {with_} if with_ else set(get_plugins().components["explainer"])
    what = f"Explainer {with_!r}" if with_ else "The explainers"
    extra = _plugin_options("explainer", names, rest, what)
    return api.explain(
        ref, list(sentences) or None, explainer=with_, root=_root(), **options, **extra
    )


class _ServeCommand(_PluginCommand):
    kind, heading, picks, default = "engine", "Engines", "--engine", "local"


@cli.command(
    cls=_ServeCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("refs", nargs=-1, required=True)
@_options(SERVE)
@click.option(
    "--background/--foreground",
    default=None,
    help="Run detached (default in a notebook) or in this terminal (default in a shell; "
    "Ctrl-C drains and stops).",
)
@click.pass_context
def serve(ctx, refs, background, **options):
    """Serve versions REFS over HTTP (Open Inference Protocol v2) with dynamic batching.

    An alias (minilm@prod) or a bare name (latest) is followed: when it moves, the server
    switches to the new version without dropping requests. `--engine ray` runs the replicas
    on Ray Serve (its options, e.g. --address, go after the command's own)."""
    if background is None:
        background = ctx.find_root().info_name != "maas"
    # REFS takes every word click does not know, so an engine's options arrive among them:
    # the first word that reads as an option starts them.
    words = list(refs)
    first = next((i for i, w in enumerate(words) if w.startswith("--")), len(words))
    refs, extra = words[:first], words[first:] + list(ctx.args)
    if not refs:
        raise UsageError(
            f"Name at least one model to serve before {extra[0]}, e.g. `maas serve minilm@prod`."
        )
    engine = options["engine"]
    extra_options = _plugin_options("engine", {engine}, extra, f"Engine {engine!r}")
    return api.serve(refs, foreground=not background, root=_root(), **options, **extra_options)


@cli.command()
@click.argument("ref")
@click.argument("texts", nargs=-1)
@click.option(
    "--json",
    "json_values",
    metavar="JSON",
    help="Numeric input as a JSON array, e.g. a row of features.",
)
@click.option(
    "--array", metavar="NAME", help="A notebook variable holding an array, or a .npy file."
)
@click.option("--output", "outputs", multiple=True, help="Only this output; repeatable.")
@click.option("--url", help="Server URL (default: the running server of REF's model).")
@click.option("--token", envvar="MAAS_SERVE_TOKEN", help="Bearer token, if the server needs one.")
@click.option("--ca", metavar="FILE", help="PEM file of the authority behind an https server.")
def predict(ref, texts, json_values, array, outputs, url, token, ca):
    """Ask the server that serves REF: sentences TEXTS, or --json / --array numbers."""
    from .serving.inputs import predict_inputs

    inputs = predict_inputs(texts, json_values, array)
    return api.predict(
        ref, inputs, url=url, token=token, outputs=list(outputs) or None, root=_root(), ca=ca
    )


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
    """Change server NAME's number of worker processes while it serves. On a server started
    with --autoscale, --replicas must lie within its range (the policy then waits its
    cool-down)."""
    return api.scale(name, replicas, root=_root())


@cli.command()
@click.argument("name")
def stop(name):
    """Drain and stop server NAME: requests in flight are answered first."""
    return api.stop(name, root=_root())


class _LaunchCommand(_PluginCommand):
    """Keeps the words as typed: click drops a ``--``, which separates the script's own
    arguments from ours (``_launch_args``)."""

    kind, heading, picks, default = "launcher", "Launchers", "--launcher", "accelerate"
    takes_dashes = True

    def parse_args(self, ctx, args):
        ctx.meta["launch_args"] = list(args)
        return super().parse_args(ctx, args)


_OWN = LAUNCH_OWN


def _launcher_types(args: list[str]) -> tuple[str, dict[str, str]]:
    """The launcher named by ``--launcher`` (before ``--``) and its options' types."""
    ours = args[: args.index("--")] if "--" in args else args
    launcher = "accelerate"
    for i, arg in enumerate(ours):
        if arg == "--launcher" and i + 1 < len(ours):
            launcher = ours[i + 1]
        elif arg.startswith("--launcher="):
            launcher = arg.split("=", 1)[1]
    comp = get_plugins().components["launcher"].get(launcher)
    return launcher, {p.name: p.type for p in comp.params} if comp else {}


def _moved_after_dashes(args: list[str], name: str, nxt: str | None) -> list[str]:
    """``args`` with option ``--name`` (and its value) moved after ``--``: the command the
    person meant, if the option was the script's."""
    at = next(i for i, w in enumerate(args) if w == f"--{name}" or w.startswith(f"--{name}="))
    taken = 2 if "=" not in args[at] and nxt is not None and not nxt.startswith("--") else 1
    moved, rest = args[at : at + taken], args[:at] + args[at + taken :]
    if "--" not in rest:
        return [*rest, "--", *moved]
    cut = rest.index("--") + 1
    return [*rest[:cut], *moved, *rest[cut:]]


def _launch_args(args: list[str]) -> tuple[dict, dict, str | None, list[str]]:
    """Split ``[OPTIONS] TARGET [OPTIONS] [-- SCRIPT_ARGS]``.

    Options are ours or the launcher's (its schema says which take a value) wherever they
    stand, before or after TARGET, so the README's ``maas launch train.py --processes 2``
    runs two processes; the script's own arguments go after ``--``. An unknown option or a
    second word before ``--`` is an error naming it: an option is never silently handed to
    the script, nor a script argument silently taken as ours."""
    launcher, types = _launcher_types(args)

    if launcher not in get_plugins().components["launcher"]:
        get_plugins().launcher(launcher)  # names the launchers there are

    def unknown(name: str, nxt: str | None, found: list[str]) -> str:
        known = ", ".join(f"--{k.replace('_', '-')}" for k in sorted({*_OWN, *types}))
        return (
            f"No option --{name} for `launch` or the {launcher} launcher. Options: {known}. "
            "If it is the script's, put the script's own arguments after `--`: "
            f"{command('launch', *_moved_after_dashes(args, name, nxt))}"
        )

    def unexpected(word: str, found: list[str]) -> str:
        return (
            f"Unexpected argument {word!r} after TARGET {found[0]!r}: the script's own "
            f"arguments go after `--`, e.g. {command('launch', found[0], '--', word)}"
        )

    given, target, rest = parse_words(
        args,
        {**types, **_OWN},
        positionals=1,
        after_dashes=True,
        unknown=unknown,
        unexpected=unexpected,
    )
    if not target and rest:  # `maas launch -- train.py --lr 1`: the first word is TARGET
        target, rest = [rest[0]], rest[1:]
    own = {k: v for k, v in given.items() if k in _OWN}
    own["detach"] = own.get("detach", "false").lower() in {"1", "true", "yes", "on"}
    options = {k: v for k, v in given.items() if k not in _OWN}
    return own, options, (target[0] if target else None), rest


@cli.command(cls=_LaunchCommand, context_settings={"ignore_unknown_options": True})
@click.argument(
    "args",
    nargs=-1,
    type=click.UNPROCESSED,
    metavar="TARGET [OPTIONS] [-- SCRIPT_ARGS...]",
)
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
    if job is not None:
        return api.job(job, root=_root())
    return api.jobs(limit=limit, root=_root())


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
@click.option(
    "--reload", is_flag=True, help="Find installed plugins again (after pip install in a kernel)."
)
def plugins(reload):
    """List plugins: distribution, version, contract, hooks, what each provides, failures."""
    return api.plugins(reload=reload)


KIND_CHOICES = tuple(k.replace("_", "-") for k in KINDS)


@cli.group()
def plugin():
    """Write plugins of your own: maas plugin new NAME --kind KIND."""


@plugin.command("new")
@click.argument("name")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(KIND_CHOICES),
    help="What the plugin provides; the package does a small real one you can build on.",
)
@click.option(
    "--into",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The folder to write the package NAME in.",
)
def plugin_new(name, kind, into):
    """Write a plugin package NAME (a distribution name, e.g. maas-fp16): pyproject with its
    entry point, module, tests, README."""
    return api.plugin_new(name, kind, into)


@cli.command()
@click.option("--repair", is_flag=True, help="Remove orphan blobs and interrupted writes.")
@click.option("--verify", is_flag=True, help="Also re-hash every stored blob (slow).")
@click.option(
    "--grace",
    default=3600.0,
    show_default=True,
    help="Only remove orphans older than this many seconds.",
)
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


@cli.group()
def token():
    """Named tokens for servers, with scopes and models: create, list, revoke."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["infer", "read", "admin"]),
    help="infer, read (metadata, statistics, /metrics) or admin (load/unload); repeatable.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="MODEL",
    help="Only for this registered model; repeatable (default: every model).",
)
def token_create(name, scopes, models):
    """Make token NAME; it is shown once (stored as its sha256). In a shell it is printed
    alone on stdout (TOKEN=$(maas token create ci --scope infer)), the table on stderr."""
    made = api.token_create(name, list(scopes), list(models), root=_root())
    if click.get_current_context().find_root().info_name != "maas":
        return made  # %maas: a table that never shows the token; `.token` holds it
    click.echo(made.token)
    click.echo(str(made), err=True)
    return None


@token.command("list")
def token_list():
    """Every token: scopes, models, who made it and when, and when it was revoked."""
    return api.tokens(root=_root())


@token.command("revoke")
@click.argument("name")
def token_revoke(name):
    """Revoke token NAME: running servers refuse it within a second. Names are not reused."""
    return api.token_revoke(name, root=_root())


# click 8.2+ raises this for a group typed without its subcommand (older versions exit 0).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def run(args: list[str], prog_name: str = "maas"):
    """Run one command and return its result object; user mistakes raise MaasError."""
    try:
        with prog_scope(prog_name):  # hints name the command as typed: maas or %maas
            result = cli.main(args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        raise UsageError("Aborted.") from None
    except _NO_ARGS_IS_HELP as exc:  # `maas bundle`, `maas plugin`: a group's help, no error
        click.echo(exc.ctx.get_help())
        return None
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
