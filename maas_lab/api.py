"""The one Python API that the CLI, the ``%maas`` magics, widgets and the lab extension call.

Each function takes plain Python values, checks them, does the work through the registry
and the plugins, and returns an object that prints as text and renders as HTML.
Every function takes ``root=`` to use a registry other than ``$MAAS_LAB_HOME``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .components import Param
from .errors import JobFailed, NotFoundError, UsageError
from .figures import comparison_report, compression_report
from .hints import command, option
from .parsing import parse_config, parse_pairs, parse_size
from .plugins import get_plugins
from .registry import close_all
from .registry import open as open_registry
from .registry.refs import parse_ref
from .results import Report, Table, human_size, kv_table
from .runners import load as load_checkout
from .runners import start_runner
from .schemas import BUDGET_S, COMPARE, COMPRESS, EXPLAIN, EXPORT, SERVE, TUNE
from .views import history_report, plugins_table, version_report

# Defaults of the core's own options, declared once in maas_lab.schemas (with their help).
_EXPORT, _COMPRESS, _COMPARE, _SERVE, _TUNE, _EXPLAIN = (
    s.defaults() for s in (EXPORT, COMPRESS, COMPARE, SERVE, TUNE, EXPLAIN)
)


def registry(root: str | os.PathLike | None = None):
    """The registry at ``root`` (default ``$MAAS_LAB_HOME`` or ``~/.maas_lab``), kept open."""
    return open_registry(root)


def _positive_budget(checked: dict) -> float:
    if checked["budget_s"] is None or checked["budget_s"] <= 0:
        raise UsageError(
            f"{option('budget_s', checked['budget_s'])}: give the seconds each version is "
            f"timed for, more than 0 (default {BUDGET_S.default})."
        )
    return checked["budget_s"]


# ---------------------------------------------------------------------- registering


def register(
    name: str,
    *,
    from_hf: str | os.PathLike | None = None,
    from_torch: str | None = None,
    weights: str | os.PathLike | None = None,
    config: str | dict | None = None,
    from_file: str | os.PathLike | list | None = None,
    format: str | None = None,
    task: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    card: str | os.PathLike | None = None,
    tags=None,
    metrics=None,
    inputs=None,
    signature: str | dict | None = None,
    lineage: list[dict] | None = None,
    root=None,
) -> Report:
    """Register a new version of ``name`` from exactly one source.

    - ``from_hf``: a Hugging Face style folder (config, safetensors, tokenizer files);
    - ``from_torch``: a factory ``module:callable`` with ``config`` (its keyword arguments)
      and ``weights`` (a safetensors file);
    - ``from_file``: a file in a format some loader opens (``.onnx``, or give ``format``),
      or a list: the model first, then files it needs (e.g. ONNX external data).

    The matching loader plugin checks the files before anything is stored. The tensor
    signature is ``signature`` (a dict or JSON), or is inferred from ``inputs``
    (``["input:float32:batch,64"]``) by running the model once on generated inputs.
    ``lineage`` lists where the version came from: ``{"operation": "train", "parent":
    REF or None, "plugin": ..., "params": {...}}`` per edge (training jobs record theirs).
    """
    from .registering import register as add

    row = add(
        registry(root),
        name,
        from_hf=from_hf,
        from_torch=from_torch,
        weights=weights,
        config=config,
        from_file=from_file,
        format=format,
        task=task,
        description=description,
        owner=owner,
        card=card,
        tags=tags,
        metrics=metrics,
        inputs=inputs,
        signature=signature,
        lineage=lineage,
    )
    return show(row["ref"], root=root)


# ---------------------------------------------------------------------- exporting


def runner(ref: str, root=None, **options):
    """A runner for a version: ``.signature`` and ``.infer({name: array}) -> {name: array}``."""
    return start_runner(registry(root).checkout(ref), options)


def export(
    ref: str,
    to: str,
    *,
    allow_mismatch: bool = _EXPORT["allow_mismatch"],
    atol: float | None = _EXPORT["atol"],
    min_cosine: float | None = _EXPORT["min_cosine"],
    root=None,
    **options,
) -> Report:
    """Export a version to another format as a new version, after a parity check.

    The exporter plugin writes the files; the core runs parent and export on the same
    inputs (realistic ones when the parent's runner offers them, else generated from the
    signature with a fixed seed) and refuses, registering nothing, if they differ beyond
    tolerance, unless ``allow_mismatch``, which tags the new version ``parity=mismatch``.
    """
    from .exporting import export as run

    checked = EXPORT.convert(dict(allow_mismatch=allow_mismatch, atol=atol, min_cosine=min_cosine))
    allow_mismatch, atol, min_cosine = (
        checked[k] for k in ("allow_mismatch", "atol", "min_cosine")
    )
    new = run(
        registry(root),
        ref,
        to,
        allow_mismatch=allow_mismatch,
        atol=atol,
        min_cosine=min_cosine,
        options=options,
    )
    return show(new["ref"], root=root)


def export_repo(
    ref: str,
    out: str | os.PathLike,
    *,
    format: str = "triton",
    force: bool = False,
    storage_uri: str | None = None,
    root=None,
) -> Report:
    """Write a version for another model server into the folder ``out``, registering nothing.

    ``format="triton"``: a Triton model repository (``<name>/config.pbtxt`` with the
    signature's inputs and outputs, ``max_batch_size`` and ``dynamic_batching``, and
    ``<name>/<version>/model.onnx`` or ``model.pt``; a text model becomes an ensemble with a
    Python-backend tokenizer). ``format="kserve"``: an ``InferenceService`` manifest on
    KServe's Triton runtime and that repository beside it, for ``storage_uri``. An ``out``
    holding files is refused unless ``force``, which replaces it once the export is whole.
    """
    from .model_repos import export_repo as write

    done = write(registry(root), ref, out, format, force=force, storage_uri=storage_uri)
    files = Table(done["files"], ["file", "bytes"], formatters={"bytes": human_size})
    return Report(
        f"{done['ref']} as a {format} {'repository' if format == 'triton' else 'service'}",
        [
            (f"Written to {done['out']}", files),
            ("Notes", "\n".join(done["notes"])),
            ("Next", "\n".join(done["next"])),
        ],
        data=done,
    )


# ---------------------------------------------------------------------- compressing


def compress(
    ref: str,
    with_: str,
    *,
    data=_COMPRESS["data"],
    calibration=_COMPRESS["calibration"],
    max_drop=_COMPRESS["max_drop"],
    allow_over_budget: bool = _COMPRESS["allow_over_budget"],
    budget_s: float = _COMPRESS["budget_s"],
    root=None,
    **options,
) -> Report:
    """Compress a version with a compressor plugin and register the result as a new version.

    Parent and result are measured side by side (size, accuracy on ``data``'s held-out rows
    or cosine fidelity, batch-1 latency, batch-32 throughput); the figures are stored as the
    new version's metrics and in its lineage. ``max_drop`` (``cosine=0.005``,
    ``accuracy=0.01``) is a fidelity budget: a result over it is refused unless
    ``allow_over_budget``. ``options`` are the compressor's own (see ``maas plugins``).
    """
    from . import trust
    from .compression import run

    checked = COMPRESS.convert(dict(allow_over_budget=allow_over_budget, budget_s=budget_s))
    allow_over_budget, budget_s = checked["allow_over_budget"], _positive_budget(checked)
    reg = registry(root)
    row = reg.resolve(ref)
    comp = get_plugins().compressor(with_, row["format"], row["ref"])
    opts = trust.typed_options(comp, comp.options(options))
    new, figures = run(
        comp,
        reg,
        row,
        opts,
        data=data,
        calibration=calibration,
        max_drop=max_drop,
        allow_over_budget=allow_over_budget,
        budget_s=budget_s,
    )
    return compression_report(row["ref"], new["ref"], comp.name, figures)


def distill(
    teacher: str,
    student: str,
    *,
    data=None,
    config=None,
    root=None,
    **options,
) -> Report:
    """Train ``student`` (a factory ``module:callable`` with ``config``) to mimic ``teacher``
    on ``data``; registered as a new version of the teacher's model, with lineage to it.

    ``options`` are the distill compressor's (defaults in its schema, ``maas compress
    --with distill --help``): ``epochs``, ``temperature``, ``alpha`` (weight of the
    teacher's soft targets; 0 trains on the labels alone, the baseline distillation must
    beat), ``lr``, ``batch_size``, ``patience``, ``seed``; and ``compress``'s own
    (``max_drop``...)."""
    return compress(
        teacher,
        "distill",
        data=data,
        root=root,
        student=student,
        config=json.dumps(parse_config(config)),
        **options,
    )


def compare(
    *refs: str,
    data=_COMPARE["data"],
    budget_s: float = _COMPARE["budget_s"],
    log: bool = _COMPARE["log"],
    root=None,
) -> Report:
    """Measure versions side by side, now, on this machine: size, accuracy or fidelity
    against the first one, batch-1 latency (median ms) and batch-32 throughput (rows/s),
    interleaved. Each speed-up is against the first version and sits beside the measurement
    it comes from. The figures are stored as each version's metrics (what ``recommend``
    ranks by) unless ``log=False``."""
    from .evaluation import cpu_features, measure_versions

    checked = COMPARE.convert(dict(budget_s=budget_s, log=log))
    budget_s, log = _positive_budget(checked), checked["log"]
    rows, results, notes, dataset = measure_versions(registry(root), refs, data, budget_s, log)
    name = dataset.name if dataset is not None else None
    return comparison_report(rows, results, notes, name, cpu_features(), log)


def evaluate(
    ref: str,
    data=None,
    against: str | None = None,
    budget_s: float = _COMPARE["budget_s"],
    log: bool = False,
    root=None,
) -> Report:
    """Measure one version (against another for fidelity); ``log`` stores the metrics."""
    refs = (against, ref) if against else (ref,)
    return compare(*refs, data=data, budget_s=budget_s, log=log, root=root)


# ---------------------------------------------------------------------- tuning and explaining

# What only function tuning takes: refused, not ignored, when a compressor is tuned.
_FUNCTION_ONLY = ("code", "register", "factory", "config", "inputs", "grid", "processes")


def tune(
    target: str | None = None,
    *,
    code: str | None = None,
    space=None,
    train=None,
    with_: str | None = None,
    over=None,
    keep=(),
    trials: int = _TUNE["trials"],
    metric: str | None = None,
    direction: str | None = None,
    sampler: str = _TUNE["sampler"],
    pruner: str = _TUNE["pruner"],
    seed: int | None = None,
    study: str | None = None,
    register: str | None = None,
    factory: str | None = None,
    config=None,
    inputs=None,
    grid=None,
    processes: int | None = None,
    parallel: int = _TUNE["parallel"],
    launcher: str = _TUNE["launcher"],
    data=None,
    calibration=None,
    budget_s: float = _TUNE["budget_s"],
    dry_run: bool = False,
    root=None,
    **options,
) -> Report:
    """Search hyper-parameters with Optuna; every trial is recorded in a study stored under
    the registry's home (``studies.db``), which a later call with the same ``study`` resumes.

    A training function: ``space(trial)`` returns the parameters it suggests and
    ``train(params, report)`` returns ``(metrics, model)`` (``report(step, value)`` lets the
    pruner stop a trial early), given as functions or as ``code`` defining both (what
    ``%%maas tune`` sends; ``target`` may be a ``.py`` file defining them). ``register``
    stores the best trial's model as a version, rebuilt by ``factory`` with ``config``
    plus the trial parameters the factory takes, with a ``tune`` lineage edge.
    ``processes=N`` runs each trial as a recorded job on N processes (``parallel`` at once),
    so a crash cannot take the kernel down.

    A compressor's options: ``target`` is a version, ``with_`` the compressor, ``over`` the
    options to search (``"smooth=0..0.9,outliers=0..4"``), ``keep`` constraints on what is
    measured (``"cosine_min>=0.99"``); ``metric`` defaults to ``speed`` (throughput over the
    parent's, measured side by side). The best feasible result is registered as the parent
    model's next version unless ``dry_run``. ``options`` fix the compressor's other options.
    See docs/tuning.md.
    """
    from . import trust
    from .tuning import run_compressor, run_function
    from .tuning.views import run_report

    checked = TUNE.convert(
        dict(
            trials=trials,
            seed=seed,
            processes=processes,
            parallel=parallel,
            budget_s=budget_s,
            dry_run=dry_run,
        )
    )
    trials, seed, processes = checked["trials"], checked["seed"], checked["processes"]
    parallel, budget_s, dry_run = checked["parallel"], checked["budget_s"], checked["dry_run"]
    reg = registry(root)
    if with_ is not None or over is not None:
        if not target or not with_ or over is None:
            example = command("tune", "minilm@2", with_="ort-int8", over="smooth=0..0.9")
            raise UsageError(
                f"Compressor tuning needs a version, {option('with_', 'COMPRESSOR')} and "
                f"{option('over', 'SPACE')}, e.g. `{example}`."
            )
        given = dict(
            code=code,
            register=register,
            factory=factory,
            config=config,
            inputs=inputs or None,
            grid=grid,
            processes=processes,
        )
        stray = [name for name in _FUNCTION_ONLY if given[name] is not None]
        if stray or space is not None or train is not None:
            name = stray[0] if stray else "space"
            raise UsageError(
                f"{option(name)} is for tuning a training function; a tuned compression of "
                f"{target} becomes its model's next version (fix the compressor's own options "
                "after ours instead)."
            )
        summary = run_compressor(
            reg,
            target,
            with_,
            over,
            trials=trials,
            metric=metric or "speed",
            direction=direction,
            keep=keep,
            sampler=sampler,
            seed=seed,
            data=data,
            calibration=calibration,
            budget_s=budget_s,
            register=not dry_run,
            study=study,
            options=options,
        )
        return run_report(summary)
    if options:
        raise UsageError(
            f"No option {option(sorted(options)[0])} for function tuning (a compressor's "
            f"options follow {option('with_', 'COMPRESSOR')})."
        )
    if target is not None:
        if code is not None:
            raise UsageError("Give a .py file or the cell's code, not both.")
        path = Path(target).expanduser()
        if not path.is_file() or path.suffix != ".py":
            raise UsageError(
                f"{target!r}: give a .py file defining space(trial) and train(params, "
                f"report), or a version with {option('with_', 'COMPRESSOR')} to tune a "
                "compressor."
            )
        code = path.read_text()
    if factory:
        trust.typed(factory)
    summary = run_function(
        reg,
        space,
        train,
        code=code,
        trials=trials,
        metric=metric,
        direction=direction or "maximize",
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        grid=grid,
        processes=processes,
        parallel=parallel,
        launcher=launcher,
        register=register,
        factory=factory,
        config=config,
        inputs=list(inputs or ()) or None,
        study=study,
    )
    return run_report(summary)


def studies(root=None) -> Table:
    """Every tuning study under the registry's home: what it tunes, trials, metric,
    direction, best value and parameters, when it was created."""
    from .tuning import list_studies

    return list_studies(registry(root))


def study(name: str, root=None) -> Report:
    """One study in full: its trials (number, state, value, parameters, metrics, duration,
    error), the best, a best-so-far-vs-trials plot and a parameter-importance plot. The
    report's ``data`` holds the rows; its figures have ``.png`` and ``.save(path)``."""
    from .tuning import describe

    return describe(registry(root), name)


def explain(
    ref: str,
    inputs=None,
    *,
    data=None,
    rows=None,
    target: str | None = None,
    label: int | None = None,
    explainer: str | None = None,
    max_passes: int = _EXPLAIN["max_passes"],
    root=None,
    **options,
):
    """Attributions for version ``ref``'s answers: how much each feature, pixel or token
    raised or lowered the predicted class's output (or ``label``'s), or for a sentence
    embedder the similarity to ``target``. Explain ``inputs`` (sentences, or an array of
    feature rows) or ``rows`` of ``data`` (``"0:4"``, as ``compare`` takes data).
    ``explainer``: ``integrated-gradients`` (the default where there are gradients, with
    its convergence delta), ``occlusion`` (the default for feature rows without gradients:
    ONNX, int8) or ``kernel-shap`` (text without gradients); ``options`` are its own
    (``steps``, ``baseline``, ``samples``, ``seed``). An explanation that would run the
    model on more than ``max_passes`` rows is refused before it runs. See docs/explain.md."""
    from .explaining import explain as explain_version

    checked = EXPLAIN.convert(dict(label=label, max_passes=max_passes))
    return explain_version(
        registry(root),
        ref,
        inputs,
        data=data,
        rows=rows,
        target=target,
        label=checked["label"],
        explainer=explainer,
        max_passes=checked["max_passes"],
        **options,
    )


# ---------------------------------------------------------------------- reading


def list_models(root=None) -> Table:
    """Every model with its task, number of versions, latest, size, aliases and update time."""
    from .registry.queries import list_models as query

    rows = query(registry(root))
    for r in rows:
        r["latest"] = f"@{r['latest']}" if r["latest"] else ""
    return Table(
        rows,
        ["name", "task", "versions", "latest", "size_bytes", "aliases", "updated_at"],
        title=f"{len(rows)} model(s) in {registry(root).root}",
        formatters={"size_bytes": human_size, "updated_at": lambda v: (v or "")[:19]},
    )


def search(text: str, limit: int = 20, root=None) -> Table:
    """Ranked full-text search (bm25, relative to the best hit) over names, tasks,
    descriptions, tags and model cards; each hit says what matched."""
    from .registry.search import search as query

    rows = query(registry(root), text, limit)
    return Table(
        rows,
        ["ref", "task", "versions", "size_bytes", "score", "matched", "snippet"],
        title=f"{len(rows)} match(es) for {text!r}",
        formatters={"size_bytes": human_size},
    )


def versions(
    name: str | None = None, search: str | None = None, limit: int = 500, root=None
) -> Table:
    """Versions newest first, each with its aliases, tags and key metrics: of model
    ``name``, of the models ``search`` finds (best match first, as :func:`search` ranks
    them), or of every model; at most ``limit`` rows (the note says how many there are)."""
    from .registry import queries

    reg = registry(root)
    limit = Param("limit", "int").convert(limit)
    if limit < 1:
        raise UsageError(f"{option('limit', limit)}: list at least 1 version.")
    if name is not None and search is not None:
        raise UsageError("Give versions() a model name or search words, not both.")
    if name is not None:
        names = [reg.model_row(name)["name"]]
    elif search is not None and search.strip():
        from .registry.search import search as query

        names = [hit["ref"].rsplit("@", 1)[0] for hit in query(reg, search, 50)]
    else:
        names = None
    rows = queries.versions(reg, names, limit)
    counts = queries.count(reg)
    title = (
        f"{len(rows)} version(s) of {name}"
        if name is not None
        else f"{len(rows)} version(s) matching {search!r}"
        if names is not None
        else f"{counts['versions']} version(s) of {counts['models']} model(s)"
    )
    shown = (
        f"showing the newest {len(rows)}"
        if names is None and len(rows) < counts["versions"]
        else ""
    )
    return Table(
        rows,
        ["ref", "aliases", "task", "format", "size_bytes", "metrics", "created_at"],
        title=title,
        note=shown,
        formatters={
            "size_bytes": human_size,
            "created_at": lambda v: (v or "")[:19],
            "metrics": lambda m: ", ".join(f"{k} {v:.4g}" for k, v in (m or {}).items()),
        },
    )


def revision(root=None) -> str:
    """A token that changes whenever anything in the registry changes (a version, alias,
    tag or metric, from any process): poll it to know when a view must refresh."""
    from .registry.queries import revision as query

    return query(registry(root))


def lineage(ref: str, root=None) -> Report:
    """The family of a version: every ancestor and descendant, as ``report["nodes"]``
    (ref, format, size, aliases) and ``report["edges"]`` (parent, child, operation, plugin,
    and a label with what it cost: size ratio and fidelity measured when it was made);
    ``report["truncated"]`` is true when the family is larger than the 60 versions drawn."""
    from .registry.queries import lineage as query

    graph = query(registry(root), ref)
    edges = Table(graph["edges"], ["parent", "child", "label"])
    more = f" (the nearest {len(graph['nodes'])} versions)" if graph["truncated"] else ""
    return Report(f"Lineage of {graph['ref']}{more}", [("", edges)], data=graph)


def show(ref: str, root=None) -> Report:
    """One version in full: summary, signature, files, metrics, lineage and model card."""
    from .registry.queries import describe

    return version_report(describe(registry(root), ref))


def history(name: str, root=None) -> Report:
    """Every version of model ``name`` and every alias move, oldest first."""
    from .registry.queries import history as query

    return history_report(name, query(registry(root), name))


def alias(
    name: str, alias_name: str, version: str | int | None = None, delete: bool = False, root=None
) -> Report:
    """Point ``name@alias_name`` at ``version`` (number, ref or another alias), or delete it.

    Returns the alias: where it points now (``report["ref"]``, None once deleted), where it
    pointed before (``"previous"``), its moves, and how the servers that follow it switched.
    """
    from .registry.queries import history as read_history
    from .views import alias_report

    reg = registry(root)
    servers: list[str] = []
    if delete:
        if version is not None:
            raise UsageError(f"Give either a version or {option('delete', True)}, not both.")
        reg.delete_alias(name, alias_name)
    else:
        if version is None:
            raise UsageError(f"Which version should {name}@{alias_name} point at? e.g. 2.")
        version = str(version)
        target = f"{name}@{version}" if "@" not in version else version
        moved = reg.set_alias(name, alias_name, target)
        from .serving.control import wait_for_switch

        servers = wait_for_switch(name, alias_name, moved["number"], root=root)
    return alias_report(name, alias_name, read_history(reg, name), servers)


def tag(ref: str, tags=None, remove=(), root=None) -> Report:
    """Set tags (``["stage=qa", "reviewed"]`` or a dict) on a version, or ``remove`` them;
    returns the version."""
    reg = registry(root)
    target = reg.set_tags(ref, parse_pairs(tags), remove)
    return show(target["ref"], root=root)


def log_metrics(ref: str, metrics, root=None) -> Report:
    """Record metrics (``["accuracy=0.97"]`` or a dict of numbers) on a version."""
    target = registry(root).log_metrics(ref, parse_pairs(metrics, "metric", numeric=True))
    return show(target["ref"], root=root)


def recommend(
    task: str | None = None,
    max_size: str | int | None = None,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    sort: str = "size",
    limit: int = 10,
    root=None,
) -> Table:
    """Versions that meet every constraint given (task, size, recorded latency and
    accuracy), ranked by ``sort``, each with why it qualified; the note says how many
    were excluded by which constraint."""
    from .registry.search import recommend as query

    size = parse_size(max_size) if max_size is not None else None
    result = query(registry(root), task, size, max_latency_ms, min_accuracy, sort, limit)
    excluded = ", ".join(f"{n} by {k}" for k, n in result["excluded"].items() if n)
    note = f"{result['considered']} version(s) considered" + (
        f"; excluded {excluded}" if excluded else ""
    )
    if not result["rows"] and task is not None:
        from .registry.queries import tasks as known_tasks

        tasks = known_tasks(registry(root))
        if task not in tasks:
            note += f". No model has task {task!r}; tasks: {', '.join(sorted(filter(None, tasks)))}"
    return Table(
        result["rows"],
        ["rank", "ref", "task", "size_bytes", "latency_ms", "accuracy", "why"],
        title=f"Recommended, by {result['sort']}",
        note=note,
        formatters={"size_bytes": human_size},
    )


def load(ref: str, root=None, **options):
    """Load a version as a usable object through the loader plugin for its format."""
    return load_checkout(registry(root).checkout(ref), options)


def components(kind: str, format: str | None = None) -> Table:
    """The installed components of one kind (``compressor``, ``exporter``, ``launcher``,
    ``loader``, ``serving_backend``, ``evaluator``), or those taking ``format``: name,
    description, formats, what it produces, its plugin, and ``params`` (the
    :class:`~maas_lab.components.Param` schema its options are built from, here as in the
    CLI)."""
    from .plugins import KINDS

    if kind not in KINDS:
        raise UsageError(f"Unknown component kind {kind!r}; kinds are {', '.join(KINDS)}.")
    rows = [
        {
            "name": c.name,
            "description": c.description,
            "formats": ", ".join(c.formats),
            "produces": c.produces,
            "plugin": c.plugin,
            "params": tuple(c.params),
        }
        for c in get_plugins().components[kind].values()
        if format is None or format in c.formats
    ]
    return Table(
        rows,
        ["name", "description", "formats", "produces", "plugin"],
        title=f"{len(rows)} {kind.replace('_', ' ')}(s)"
        + (f" that take {format}" if format else ""),
    )


def schema(command: str):
    """The core options of ``command`` (``"serve"``, ``"export"``, ``"compress"``,
    ``"compare"``) as a :class:`~maas_lab.components.Schema` of ``Param``: the one
    declaration the CLI's options, these functions' defaults and the panels' forms share."""
    schemas = {"serve": SERVE, "export": EXPORT, "compress": COMPRESS, "compare": COMPARE}
    if command not in schemas:
        raise UsageError(f"No option schema for {command!r}; commands: {', '.join(schemas)}.")
    return schemas[command]


def reporting_to(callback):
    """A context manager: while it is open, in this thread, long work (export, compress,
    compare, register) sends its named steps to ``callback(event)`` instead of drawing its
    own progress; how a panel draws one bar for work it runs in the background. ``event``
    is a dict: ``title``, ``step``, ``index``, ``total``, ``fraction``, ``elapsed_s``,
    ``state`` (running, done, failed, interrupted) and, at the end, ``summary``."""
    from .progress import listening

    return listening(callback)


def plugins(reload: bool = False) -> Table:
    """The loaded plugins (distribution, version, the contract version each was written
    for), what each provides, and plugins that failed, were refused or clash. ``reload``
    finds the installed plugins again and imports third-party ones anew, for a ``pip
    install`` (or an edit of an editable install) done in a running kernel."""
    if reload:
        from .plugins import Plugins, forget_plugin_modules, rescan_site_packages, set_plugins

        rescan_site_packages()
        forget_plugin_modules()
        set_plugins(Plugins())
    return plugins_table(get_plugins())


def plugin_new(name: str, kind: str, into: str | os.PathLike = ".") -> Report:
    """Write a new plugin package ``into/NAME`` (a distribution name such as ``maas-fp16``)
    of ``kind`` (compressor, exporter, serving-backend, launcher, loader, evaluator): a
    pyproject with its entry point, a module that does something real of that kind, its
    tests on the ``maas_lab.testing`` fixtures, and a README. Nothing is written when the
    folder exists or the name is not a valid distribution name. ``report["path"]`` is the
    folder to ``pip install -e``."""
    from .hints import command, typed
    from .scaffold import new_plugin

    made = new_plugin(name, kind, into)
    files = Table([{"file": f} for f in made["files"]], ["file"])
    path = made["path"]
    if not os.path.isabs(path) and not path.startswith("."):
        path = os.path.join(".", path)  # pip takes ./x as a folder, x as a package name
    pip = "%pip" if (typed() or "").startswith("%") else "pip"
    steps = "\n".join(
        [
            f"{pip} install -e {path}",
            f"{command('plugins', reload=True)}    # lists {made['distribution']}",
            f"cd {path} && pytest",
        ]
    )
    return Report(
        f"New plugin package {made['distribution']}: the {made['kind']} {made['component']!r}",
        [(f"Written to {path}", files), ("Next", steps)],
        data=made,
    )


def fsck(
    repair: bool = False, verify: bool = False, grace_seconds: float = 3600, root=None
) -> Table:
    """Check the registry: orphan, missing or (with ``verify``) corrupt blobs, rows without
    files; ``repair`` removes orphans and interrupted writes older than ``grace_seconds``."""
    from .registry.fsck import fsck as check

    result = check(registry(root), repair, verify, grace_seconds)
    note = f"{result['versions']} version(s), {result['blobs']} blob(s)"
    if repair:
        note += f"; removed {result['removed']}"
    title = (
        "registry is consistent"
        if not result["problems"]
        else (f"{len(result['problems'])} problem(s)")
    )
    return Table(result["problems"], ["kind", "item", "detail"], title=title, note=note)


def bundle_export(ref: str, out: str | os.PathLike, root=None) -> Report:
    """Write a version to one tar file (``out``: a file, or a folder for NAME-N.maas.tar)
    with its files, metadata and digests, for ``bundle_import`` on another machine.
    Returns the bundle: ``report["bundle"]`` (its path), ``"ref"``, ``"size_bytes"``."""
    from .registry.bundle import export_bundle

    reg = registry(root)
    ref = reg.resolve(ref)["ref"]
    path = export_bundle(reg, ref, out)
    size = path.stat().st_size
    data = {"bundle": str(path), "ref": ref, "size_bytes": size}
    fields = kv_table({"bundle": str(path), "ref": ref, "size": human_size(size)})
    return Report(f"Bundle of {ref}", [("", fields)], data=data)


def bundle_import(
    path: str | os.PathLike, name: str | None = None, *, trust: bool = False, root=None
) -> Report:
    """Import a bundle as a new version, verifying every digest before anything is stored.

    A version whose config names code (a torch factory ``module:callable``) is refused
    unless that code is trusted here already, or ``trust`` is given: then the import records
    that you trusted it (see :func:`trust_code`). Nothing the bundle names runs before that.
    """
    from .intake import check, code_refs, require_trusted
    from .registry.bundle import import_bundle

    reg = registry(root)
    where = f"The bundle {Path(path).name}"

    def precheck(fmt: str, config: dict) -> None:
        if not trust:
            require_trusted(reg, fmt, config, where=where)

    def checked(fmt: str, files: dict, config: dict) -> dict:
        typed = code_refs(fmt, config) if trust else []
        return check(
            reg,
            fmt,
            files,
            config,
            how=f"bundle import {option('trust', True)}",
            typed=typed,
            where=where,
        )

    row = import_bundle(reg, Path(path), name, precheck=precheck, check=checked)
    return show(row["ref"], root=root)


def trust_code(reference: str | None = None, *, remove: bool = False, root=None) -> Table:
    """Trust (or with ``remove``, stop trusting) a code reference ``module:callable`` in this
    registry, recorded with who did it; with no reference, list what is trusted.

    Versions whose config names a factory load only when it is trusted: built-ins
    (``maas_lab.zoo``), what a loaded plugin vouches for, what you gave ``register
    --from-torch``, and what is listed here."""
    from .registry import trust as rows
    from .registry.registry import actor

    reg = registry(root)
    if reference is not None:
        if remove:
            rows.revoke(reg, reference, actor())
        else:
            rows.grant(reg, reference, actor(), "maas trust")
    return Table(
        rows.rows(reg),
        ["reference", "granted_by", "granted_at", "how"],
        title="Trusted code",
        note="Built in: maas_lab.zoo and what loaded plugins vouch for.",
    )


# ---------------------------------------------------------------------- access tokens


def token_create(name: str, scopes, models=(), root=None):
    """Make a named token for servers with ``scopes`` (``infer``, ``read``, ``admin``; a
    list, or one string) for ``models`` (registered model names; none: every model).

    Only the token's sha256 is stored. The token is the result's ``.token`` and nowhere in
    what it shows (a notebook saves its outputs): read it now, it cannot be shown again. A
    name is never reused, also after a revoke."""
    from . import tokens as store
    from .registry.registry import actor

    row, token = store.create(registry(root), name, scopes, models, actor())
    return store.NewToken(row, token)


def tokens(root=None) -> Table:
    """Every named token, live and revoked: scopes, models, who made it and when, and when
    it was revoked (never the token, nor its digest)."""
    from . import tokens as store

    return _tokens_table(store.rows(registry(root)), "Tokens")


def token_revoke(name: str, root=None) -> Table:
    """Revoke token ``name``: running servers refuse it within a second. The row stays as
    the record of it; revoking it again changes nothing."""
    from . import tokens as store
    from .registry.registry import actor

    row = store.revoke(registry(root), name, actor())
    return _tokens_table([row], f"Token {name} is revoked")


def _tokens_table(rows: list[dict], title: str) -> Table:
    return Table(
        rows,
        ["name", "scopes", "models", "created_by", "created_at", "revoked_at"],
        title=title,
        formatters={
            "scopes": ", ".join,
            "models": lambda m: ", ".join(m) if m else "(all)",
            "revoked_at": lambda v: v or "",
        },
    )


# ---------------------------------------------------------------------- serving


def serve(
    refs,
    *,
    name: str | None = _SERVE["name"],
    engine: str = _SERVE["engine"],
    host: str = _SERVE["host"],
    port: int = _SERVE["port"],
    replicas: int | None = _SERVE["replicas"],
    max_batch: int = _SERVE["max_batch"],
    max_delay_ms: float = _SERVE["max_delay_ms"],
    max_queue: int = _SERVE["max_queue"],
    timeout_s: float = _SERVE["timeout_s"],
    threads: int = _SERVE["threads"],
    max_body_mb: float = _SERVE["max_body_mb"],
    token: str | None = _SERVE["token"],
    allow_hosts=_SERVE["allow_hosts"],
    drain_s: float = _SERVE["drain_s"],
    max_rows: int = _SERVE["max_rows"],
    header_timeout_s: float = _SERVE["header_timeout_s"],
    body_timeout_s: float = _SERVE["body_timeout_s"],
    grpc_port: int | None = _SERVE["grpc_port"],
    tls_cert: str | None = _SERVE["tls_cert"],
    tls_key: str | None = _SERVE["tls_key"],
    autoscale: str | None = _SERVE["autoscale"],
    target_p99_ms: float = _SERVE["target_p99_ms"],
    explain_max_passes: int = _SERVE["explain_max_passes"],
    explain_queue: int = _SERVE["explain_queue"],
    foreground: bool = False,
    root=None,
    **engine_options,
):
    """Serve registered versions (``"minilm@prod"`` or a list) over HTTP (Open Inference
    Protocol v2) in their own worker processes; returns a handle once every replica is
    ready (``.url``, ``.client()``, ``.stop()``).

    A ref that names an alias or no version (latest) is followed: when it moves, the
    server switches to the new version without dropping a request. Each option is
    described in :data:`maas_lab.schemas.SERVE` (``maas serve --help`` prints the same).
    Anything but loopback for ``host`` needs a ``token``. ``foreground`` serves in this
    process until Ctrl-C (what ``maas serve`` does in a terminal).

    ``engine`` picks what runs the replicas (``local`` worker processes, ``ray`` for Ray
    Serve, or an installed plugin's); ``engine_options`` are that engine's own
    (``maas serve --engine ray --help``), e.g. ``address="head:6379"`` for Ray."""
    from .serving.control import serve as start

    # The options as the CLI gives them: numbers and yes/no checked by their schema, and
    # the token from $MAAS_SERVE_TOKEN when none is given, as `maas serve` reads it.
    options = SERVE.convert({k: v for k, v in locals().items() if k in _SERVE})
    options["token"] = _token(options["token"])
    return start(refs, foreground=foreground, root=root, engine_options=engine_options, **options)


def _token(token: str | None) -> str | None:
    """The token given, else ``$MAAS_SERVE_TOKEN`` (what ``maas serve``/``predict`` read)."""
    return token if token is not None else os.environ.get(SERVE.param("token").envvar) or None


def status(name: str | None = None, root=None) -> Table:
    """Running servers: models, versions, replicas, queue, requests/s, p50/p99, errors."""
    from .serving.control import status as show_status

    return show_status(name, root=root)


def logs(name, lines: int = 40, root=None):
    """The end of a training job's log (``name``: its number, ``job-7``, or a :class:`Job`
    handle) or else of the server called ``name`` (server names never read as job ids)."""
    from .launching import control as jobs_control
    from .launching.jobs import parse_id
    from .serving.control import logs as server_tail

    if not isinstance(name, jobs_control.Job):
        try:
            parse_id(name)
        except UsageError:
            return server_tail(name, lines=lines, root=root)
    return jobs_control.logs(name, lines=lines, root=root)


def scale(name: str, replicas: int, root=None) -> Table:
    """Change a running server's number of worker processes without dropping requests."""
    from .serving.control import scale as rescale

    return rescale(name, replicas, root=root)


def stop(name: str, root=None) -> Report:
    """Drain and stop a running server."""
    from .serving.control import stop as halt

    return halt(name, root=root)


def predict(
    ref: str,
    inputs,
    url: str | None = None,
    token: str | None = None,
    outputs=None,
    root=None,
    ca: str | None = None,
) -> Report:
    """One request through the running server that serves ``ref`` (never in-process);
    ``ca``: a PEM file of the authority that signed an https server's certificate."""
    from .serving.control import predict as ask

    return ask(ref, inputs, url=url, token=_token(token), outputs=outputs, root=root, ca=ca)


def client(
    url: str | None = None,
    token: str | None = None,
    name: str | None = None,
    root=None,
    ca: str | None = None,
):
    """An Open Inference Protocol v2 client (numpy in and out) for a URL or a server name;
    ``ca`` as for :func:`predict`."""
    from .serving.control import client as make

    return make(url, token=_token(token), name=name, root=root, ca=ca)


# ---------------------------------------------------------------------- training jobs


def launch(
    target: str | None = None,
    *,
    code: str | None = None,
    args=(),
    launcher: str = "accelerate",
    register: str | None = None,
    metric: str | None = None,
    wait: bool = True,
    root=None,
    **options,
) -> Report:
    """Run training on several processes or machines through a launcher plugin.

    ``target`` is a script (``train.py``), a function (``package.module:train``), or None
    with ``code``: source that defines ``train(accelerator, registry)`` (what ``%%maas
    launch`` sends). ``args`` go to the script. ``register`` names the model the job
    registers (rank 0 only, see :mod:`maas_lab.training`); ``metric`` is the one it must
    report. ``options`` are the launcher's (``processes``, ``machines``, ``machine_rank``,
    ``main_address``, ``main_port``, ``config``, ``threads``, ``rdzv_timeout``...; see
    ``maas launch --help``). Waits with a progress bar and returns the job's record (raises
    ``JobFailed`` if it fails); ``wait=False`` returns as soon as it started, with a
    :class:`~maas_lab.launching.control.Job` handle (``.wait()``, ``.cancel()``, ``.logs()``).
    """
    import shlex

    from .launching.control import launch as start

    if isinstance(args, str):  # "--lr 0.1", as typed after `--`
        args = shlex.split(args)
    return start(
        target,
        code=code,
        args=args,
        launcher=launcher,
        register=register,
        metric=metric,
        wait=wait,
        root=root,
        **options,
    )


def jobs(limit: int = 20, root=None) -> Table:
    """The newest training jobs as a table (``job(id)`` gives one in full)."""
    from .launching.control import list_jobs

    limit = Param("limit", "int").convert(limit)
    if limit < 1:
        raise UsageError(f"{option('limit', limit)}: list at least 1 job.")
    return list_jobs(limit=limit, root=root)


def job(job, root=None):
    """One training job (its id, ``"job-7"``, or a handle) as a live :class:`Job` handle:
    it shows the job's record as of when it is shown, and ``.wait()``, ``.cancel()``,
    ``.logs()`` reach the job from any cell."""
    from .launching.control import Job
    from .launching.jobs import find

    if isinstance(job, Job):
        return job
    reg = registry(root)
    return Job(find(reg.db, job)["id"], reg.root)


def cancel(job, root=None) -> Report:
    """Stop every process of a running training job."""
    from .launching.control import cancel as stop_job

    return stop_job(job, root=root)


def wait(job, root=None) -> Report:
    """Follow a job started with ``wait=False`` until it ends, with its progress bar."""
    from .launching.control import follow

    return follow(job, root=root)


def resolve(ref: str, root=None) -> str:
    """The ``name@N`` a reference points at right now (aliases move)."""
    parse_ref(ref)
    return registry(root).resolve(ref)["ref"]


__all__ = [
    "JobFailed",
    "NotFoundError",
    "alias",
    "bundle_export",
    "cancel",
    "client",
    "bundle_import",
    "close_all",
    "compare",
    "compress",
    "components",
    "distill",
    "evaluate",
    "export",
    "fsck",
    "history",
    "jobs",
    "launch",
    "list_models",
    "load",
    "logs",
    "log_metrics",
    "lineage",
    "plugins",
    "predict",
    "recommend",
    "register",
    "registry",
    "reporting_to",
    "resolve",
    "revision",
    "schema",
    "runner",
    "scale",
    "search",
    "serve",
    "show",
    "status",
    "stop",
    "tag",
    "token_create",
    "token_revoke",
    "tokens",
    "trust_code",
    "versions",
    "wait",
]
