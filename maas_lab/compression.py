"""Compression as the core runs it: plugin does the work, core measures, judges and records.

A compressor plugin only makes files. The core then measures parent and result side by
side (same process, same inputs, interleaved timings), refuses a result that breaks the
user's fidelity budget, and registers what passes as a new version with its metrics and a
lineage edge. Nothing is written to the registry before all of that succeeded, so an error
or Ctrl-C leaves it as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import datasets
from .components import Artifact, Component
from .errors import BudgetError, Interrupted, MaasError, PluginError, UsageError
from .evaluation import HIGHER_IS_BETTER, Subject, cpu_features, evaluate, sharing
from .hints import option
from .plugins import get_plugins
from .progress import steps
from .registering import register_derived
from .runners import data_runner, staged_checkout

# --max-drop names a person types -> the metric it bounds.
BUDGET_METRICS = {
    "cosine": "cosine_mean",
    "cosine_mean": "cosine_mean",
    "cosine_min": "cosine_min",
    "accuracy": "accuracy",
    "macro_f1": "macro_f1",
}


def parse_budget(max_drop) -> dict[str, float]:
    """``["cosine=0.005"]`` / ``{"accuracy": 0.01}`` -> ``{"cosine_mean": 0.005, ...}``."""
    if not max_drop:
        return {}
    if isinstance(max_drop, dict):
        items = max_drop.items()
    else:
        given = [max_drop] if isinstance(max_drop, str) else max_drop
        items = (str(i).partition("=")[::2] for i in given)
    out = {}
    for name, value in items:
        name = str(name).strip()
        if name not in BUDGET_METRICS:
            raise UsageError(
                f"{option('max_drop')} {name!r}: budgets can bound "
                f"{', '.join(sorted(BUDGET_METRICS))}, e.g. {option('max_drop', 'cosine=0.005')} "
                f"or {option('max_drop', 'accuracy=0.01')}."
            )
        try:
            drop = float(value)
        except (TypeError, ValueError):
            raise UsageError(
                f"{option('max_drop', name + '=')} needs a number, e.g. {name}=0.005."
            ) from None
        if not 0 <= drop < 1:
            raise UsageError(
                f"{option('max_drop', f'{name}={drop}')}: the allowed drop must be in [0, 1)."
            )
        out[BUDGET_METRICS[name]] = drop
    return out


def drops(parent: dict, child: dict, budget: dict[str, float]) -> dict[str, float]:
    """How much each budgeted metric fell. Fidelity is against the parent, whose own cosine
    is 1 by definition."""
    out = {}
    for metric in budget:
        base = 1.0 if metric.startswith("cosine") else parent.get(metric)
        if base is None or metric not in child:
            raise UsageError(
                f"{option('max_drop')} bounds {metric}, which was not measured here"
                + (
                    f" (give labelled {option('data')})."
                    if metric in ("accuracy", "macro_f1")
                    else "."
                )
            )
        out[metric] = base - child[metric]
    return out


def over_budget(parent: dict, child: dict, budget: dict[str, float]) -> list[str]:
    return [
        f"{m} dropped {d:.4g} (allowed {budget[m]:.4g})"
        for m, d in drops(parent, child, budget).items()
        if d > budget[m] + 1e-12
    ]


@dataclass
class Context:
    """What a compressor's ``run`` gets besides the parent checkout and its options."""

    parent: Any
    task: str | None
    max_drop: dict[str, float] = field(default_factory=dict)
    data_spec: Any = None
    calibration_spec: Any = None
    _data: datasets.Dataset | None = None
    _calibration: datasets.Dataset | None = None
    _runner: Any = None
    _parent_metrics: dict | None = None
    _memo_runner: Any = None
    root: Any = None  # the registry's root: where jobs started by ``launch`` are recorded

    @property
    def has_data(self) -> bool:
        return self.data_spec is not None

    def data(self, split: str | None = None, needed_by: str = "") -> datasets.Dataset:
        """The user's ``--data`` (optionally one split); a clear error when none was given."""
        if self.data_spec is None:
            raise UsageError(
                f"{needed_by or 'This compressor'} needs data: give "
                f"{option('data', 'sklearn:digits')}, a .npz file with x and y, or a notebook "
                "variable holding (x, y)."
            )
        if self._data is None:
            self._data = datasets.load(self.data_spec)
        return self._data if split is None else self._data.split(split)

    @property
    def calibration(self) -> datasets.Dataset | None:
        """``--calibration`` data, else ``--data``, else ``None``."""
        if self._calibration is None and self.calibration_spec is not None:
            self._calibration = datasets.load(self.calibration_spec, "calibration")
        return self._calibration or (self.data() if self.has_data else None)

    def eval_data(self) -> datasets.Dataset | None:
        """What fidelity and accuracy are measured on: ``--data``; for a text model without
        it, the 200 built-in sentences, so padding and varied lengths are exercised."""
        if self.has_data:
            return self.data()
        if getattr(self.parent_runner, "tokenizer", None) is not None:
            return datasets.load("builtin:sentences")
        return None

    @property
    def _memo(self):
        """The parent runner, remembering its outputs: a budget search measures dozens of
        candidates on the same inputs, and the parent's answer never changes."""
        if self._memo_runner is None:
            self._memo_runner = _Memo(self.parent_runner)
        return self._memo_runner

    def parent_outputs(self, feeds: dict) -> dict:
        """The parent's outputs for ``feeds``, remembered: a plugin that runs the parent
        (to check calibration data, or as a reference) leaves them for the measurements."""
        return self._memo.infer(feeds)

    @property
    def parent_runner(self):
        if self._runner is None:
            self._runner = data_runner(self.parent, self.data() if self.has_data else None)
        return self._runner

    def progress(self, total: int, desc: str, unit: str = "it"):
        """A progress bar (``update(n)``, ``set_postfix``, ``close``): it reports into the
        ``compress`` step the person sees (or a panel's listener); silent when progress is
        off (``MAAS_LAB_PROGRESS=0``)."""
        from .progress import bar

        return bar(total, desc, unit)

    def launch(self, target: str, args=(), processes: int = 2, **options) -> dict:
        """Run ``target`` (``module:function`` taking ``(accelerator, registry)``) on
        ``processes`` processes as a recorded training job, with its progress bar; returns
        the job's record once it succeeded (``JobFailed`` otherwise). For compressors that
        train, like distillation, data-parallel."""
        from .launching.control import launch

        report = launch(target, args=args, processes=processes, root=self.root, **options)
        return report.data

    def measure(self, workdir, artifact: Artifact, rows: int | None = None) -> dict:
        """Fidelity/accuracy of a candidate (files in ``workdir``) against the parent.

        For budget searches: no timings. ``rows`` caps the sentences or rows used."""
        child = staged_checkout(Path(workdir), artifact, self.parent, self.task)
        data = self.eval_data()
        if rows is not None and data is not None:
            data = _head(data, rows)
        subjects = [
            Subject(self.parent.ref, self._memo, 0, self.task),
            Subject(child.ref, data_runner(child, data), 0, self.task),
        ]
        results, _ = evaluate(subjects, data, only=("classification", "fidelity"))
        self._parent_metrics = results[0]
        return results[1]

    def drops(self, metrics: dict) -> dict[str, float]:
        return drops(self._parent_metrics or {}, metrics, self.max_drop)

    def within_budget(self, metrics: dict) -> bool:
        return not over_budget(self._parent_metrics or {}, metrics, self.max_drop)


class _Memo:
    """A runner that answers repeated inputs from memory (same signature, same outputs)."""

    def __init__(self, runner):
        self.runner, self.cache = runner, {}

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def infer(self, feeds: dict) -> dict:
        import hashlib

        h = hashlib.sha256()
        for k in sorted(feeds):
            h.update(k.encode())
            h.update(str(feeds[k].shape).encode())
            h.update(feeds[k].tobytes())
        key = h.hexdigest()
        if key not in self.cache:
            self.cache[key] = self.runner.infer(feeds)
        return self.cache[key]


def _head(data: datasets.Dataset, rows: int) -> datasets.Dataset:
    if data.texts is not None:
        return datasets.Dataset(data.name, texts=data.texts[:rows])
    if data.labelled:
        test = data.split("test")
        return datasets.Dataset(data.name, test.x[:rows], test.y[:rows])
    return datasets.Dataset(data.name, data.x[:rows])


def _validate(reg, artifact: Artifact, work: Path, who: str) -> dict[str, str]:
    """The one check every new version passes (``maas_lab.intake``), as ``register`` does for
    files a person offers: a plugin's output must open, and name only trusted code, before
    it is stored. Returns the trust grants to record with it."""
    from .intake import check

    try:
        return check(
            reg,
            artifact.format,
            {n: work / n for n in artifact.files},
            artifact.config,
            how=f"made by {who.lower()}",
        )
    except MaasError as exc:
        raise PluginError(
            f"{who} wrote a {artifact.format} version its loader refuses: {exc}"
        ) from exc


def run(
    compressor: Component,
    reg,
    row: dict,
    opts: dict,
    *,
    data=None,
    calibration=None,
    max_drop=None,
    allow_over_budget: bool = False,
    budget_s: float = 2.0,
) -> tuple[dict, dict]:
    """Compress ``row`` and register the result; returns (new version row, figures)."""

    budget = parse_budget(max_drop)
    title = f"compress {row['ref']} with {compressor.name}"
    # runners made here (the parent, a budget search's candidates) share their tokenizer
    with sharing(), steps(title, ["load", "compress", "check", "measure", "register"]) as p:
        p.step("load")
        parent = reg.checkout(row["ref"])
        # The result must be opened and run to be measured: say now if nothing can.
        get_plugins().loader(compressor.produces or row["format"])
        get_plugins().backend(compressor.produces or row["format"])
        ctx = Context(parent, row["task"], budget, data, calibration, root=reg.root)
        if data is not None:
            ctx.data()  # a bad spec fails before any work
        if calibration is not None:
            _ = ctx.calibration
        work = Path(tempfile.mkdtemp(prefix="compress-"))
        try:
            p.step("compress")
            artifact = compressor.produce(row["ref"], parent, opts, work, ctx)
            p.step("check")
            who = f"The {compressor.origin}"
            child = staged_checkout(work, artifact, parent, row["task"], who)
            grants = _validate(reg, artifact, work, who)
            p.step("measure")
            size = sum((work / n).stat().st_size for n in artifact.files)
            subjects = [
                Subject(row["ref"], ctx.parent_runner, row["size_bytes"], row["task"]),
                Subject("new version", data_runner(child, ctx.eval_data()), size, row["task"]),
            ]
            try:
                (before, after), notes = _evaluate(ctx, subjects, budget_s)
            except KeyboardInterrupt:
                raise Interrupted("Interrupted while measuring; nothing was registered.") from None
            measured_on = cpu_features()
            problems = over_budget(before, after, budget) if budget else []
            if problems and not allow_over_budget:
                raise BudgetError(
                    f"{compressor.name} of {row['ref']} is over the fidelity budget: "
                    + "; ".join(problems)
                    + f". Best reached: {_fidelity_text(after)}. Nothing was registered. Loosen "
                    f"{option('max_drop')}, or pass {option('allow_over_budget', True)} to keep it "
                    "anyway."
                )
            p.step("register")
            new = register_derived(
                reg,
                row,
                artifact,
                work,
                compressor,
                operation=compressor.extra.get("operation", "compress"),
                signature=subjects[1].runner.signature,
                tags={"budget": "exceeded"} if problems else {},
                metrics=after,
                grants=grants,
                params={
                    "compressor": compressor.name,
                    "options": opts,
                    "data": datasets.describe(data) if data is not None else None,
                    "calibration": datasets.describe(calibration) if calibration else None,
                    "max_drop": budget,
                    "over_budget": problems,
                    "parent_metrics": before,
                    "measured_on": measured_on,
                    "report": artifact.report,
                },
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        p.done(new["ref"])
    figures = {
        "before": before,
        "after": after,
        "report": artifact.report,
        "notes": notes,
        "measured_on": measured_on,
    }
    return new, {**figures, "max_drop": budget, "over_budget": problems}


def _evaluate(ctx: Context, subjects: list[Subject], budget_s: float):
    """``evaluate`` for the report, with the parent's outputs taken from memory where a
    budget search already computed them on the same inputs (the same session and feeds give
    the same outputs). Only evaluators that read outputs get that memory; the others, which
    may time the runner, get the parent's runner itself."""
    names = [e.name for e in get_plugins().evaluators()]
    reads = tuple(n for n in names if n in ("size", "classification", "fidelity"))
    rest = tuple(n for n in names if n not in reads)
    data = ctx.eval_data()
    parent = Subject(subjects[0].ref, ctx._memo, subjects[0].size_bytes, subjects[0].task)
    results: list[dict] = [{} for _ in subjects]
    notes: list[str] = []
    for only, given in ((reads, [parent, *subjects[1:]]), (rest, subjects)):
        if only:  # evaluate(only=()) would run every evaluator
            got, more = evaluate(given, data, budget_s, only=only)
            notes += more
            for mine, theirs in zip(results, got, strict=True):
                mine.update(theirs)
    return results, notes


def _fidelity_text(metrics: dict) -> str:
    keys = [k for k in ("cosine_mean", "cosine_min", "accuracy") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.6g}" for k in keys) or "nothing measured"


def change(metric: str, before: float | None, after: float | None) -> str:
    """How a metric moved, the way a person reads it: ratios for size and speed, points
    for accuracy-like figures."""
    if before is None or after is None:
        return ""
    if metric in ("size_bytes", "latency_ms"):
        return f"{after / before:.2f}x" if before else ""
    if metric == "throughput":
        return f"{after / before:.2f}x" if before else ""
    if metric in HIGHER_IS_BETTER:
        return f"{after - before:+.4f}"
    return f"{after - before:+.4g}"
