"""Tuning a compressor's options on one version: each trial makes a candidate with the
compressor into a temporary folder and measures it beside the parent with the core's own
side-by-side measurement (``evaluation.evaluate``: same process, same inputs, interleaved
timings), as ``maas compress`` does. Nothing is registered until the study ends; then the
best candidate that met every ``--keep`` constraint is registered through the path
``compress`` uses (``registering.register_derived``, after ``intake.check``), with a
``tune`` lineage edge.

Metrics a trial can be tuned on: whatever the evaluators measured (``cosine_mean``,
``cosine_min``, ``accuracy``, ``macro_f1``, ``latency_ms``, ``throughput``, ``size_bytes``)
and two ratios against the parent measured in the same trial: ``speed`` (the candidate's
batch-32 throughput over the parent's: 1.5 is 1.5x faster) and ``size_ratio`` (its bytes
over the parent's). ``speed`` and ``size_ratio`` are what this module adds; the rest is the
evaluators' own.

Only the best candidate so far is kept on disk while the study runs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ..errors import Interrupted, UsageError
from ..hints import command, option
from . import studies
from .space import grid_of, parse_keep, parse_over
from .trials import Outcome, metric_value, one_line, record, run_summary, trial_row

LOWER_IS_BETTER = {"latency_ms", "size_bytes", "size_ratio"}


def derived(before: dict, after: dict) -> dict:
    """``after`` plus ``speed`` and ``size_ratio`` against ``before`` (when both measured)."""
    out = dict(after)
    if before.get("throughput") and "throughput" in after:
        out["speed"] = after["throughput"] / before["throughput"]
    if before.get("size_bytes") and "size_bytes" in after:
        out["size_ratio"] = after["size_bytes"] / before["size_bytes"]
    return out


def check_metric(metric) -> str:
    """A compressor tuning metric, checked before any study or trial exists: the ratios
    this module adds, the core's metrics, or one an installed evaluator is named for."""
    from ..evaluation import METRIC_ORDER
    from ..plugins import get_plugins

    known = {"speed", "size_ratio", *METRIC_ORDER}
    if metric in known:
        return metric
    if isinstance(metric, str) and metric in {e.name for e in get_plugins().evaluators()}:
        return metric
    raise UsageError(
        f"{option('metric', metric)}: not a metric compressor tuning measures; choose one of "
        f"{', '.join(sorted(known))}."
    )


def run_compressor(
    reg,
    ref: str,
    compressor: str,
    over,
    *,
    trials: int = 20,
    metric: str = "speed",
    direction: str | None = None,
    keep=(),
    sampler: str = "tpe",
    seed: int | None = None,
    data=None,
    calibration=None,
    budget_s: float = 1.0,
    register: bool = True,
    study: str | None = None,
    options: dict | None = None,
) -> dict:
    """Tune ``compressor``'s options named in ``over`` on version ``ref``; ``options`` fix
    the others. Returns a summary dict (study, trial rows, best, registered ``ref``)."""
    from .. import trust
    from ..compression import Context
    from ..plugins import get_plugins

    n = studies.check_trials(trials)
    check_metric(metric)
    direction = direction or ("minimize" if metric in LOWER_IS_BETTER else "maximize")
    studies.check_direction(direction)
    row = reg.resolve(ref)
    comp = get_plugins().compressor(compressor, row["format"], row["ref"])
    dims = parse_over(over, comp.params)
    fixed = dict(options or {})
    both = sorted(set(fixed) & {d.name for d in dims})
    if both:
        raise UsageError(
            f"{option(both[0])} is both fixed and tuned ({option('over')}): give it once."
        )
    fixed = trust.typed_options(comp, comp.options(fixed))
    constraints = parse_keep(keep)
    name = study or f"{row['name']}-{comp.name}-tune"
    studies.check_study_name(name)
    grid = grid_of(dims) if (sampler or "").lower() == "grid" else None
    smp = studies.sampler(sampler, seed, grid)
    kind = {
        "what": "compressor",
        "parent": row["ref"],
        "compressor": comp.name,
        "metric": metric,
        "direction": direction,
        "over": ",".join(f"{d.name}={d.text()}" for d in dims),
        "keep": ",".join(c.text() for c in constraints),  # feasibility was judged by it
    }
    st, resumed = studies.open_study(
        reg.root, name, direction=direction, kind=kind, sampler_=smp, pruner_=studies.pruner("none")
    )
    parent = reg.checkout(row["ref"])
    ctx = Context(parent, row["task"], {}, data, calibration, root=reg.root)
    if data is not None:
        ctx.data()  # a bad spec fails before any trial
    sign = 1 if direction == "maximize" else -1
    rows, best = [], None
    try:
        for _ in range(n):
            if studies.exhausted(st):
                break
            started = time.time()
            trial = st.ask()
            trial.set_user_attr("runner", studies.runner_mark())
            params = {d.name: d.suggest(trial) for d in dims}
            outcome, kept = _trial(comp, row, parent, ctx, fixed, params, budget_s, metric)
            if outcome.state == "complete" and constraints:
                failing = [
                    c.why(outcome.metrics) for c in constraints if not c.holds(outcome.metrics)
                ]
                for c in constraints:  # TPE reads these: <= 0 is within the constraint
                    trial.set_constraint(c.text(), c.violation(outcome.metrics))
                outcome.extra["feasible"] = not failing
                if failing:
                    outcome.extra["infeasible"] = "; ".join(failing)
            record(st, trial, outcome, started, params)
            rows.append(trial_row(trial.number, outcome, params, time.time() - started))
            good = outcome.state == "complete" and outcome.extra.get("feasible", True)
            if good and (best is None or sign * outcome.value > sign * best["value"]):
                if best is not None:
                    shutil.rmtree(best["work"], ignore_errors=True)
                best = {**rows[-1], **kept}
            elif kept:
                shutil.rmtree(kept["work"], ignore_errors=True)
        if not any(r["state"] != "failed" for r in rows):
            if resumed:
                kept_note = f"all recorded: `{command('study', name)}`"
            else:  # a study of failures only would block the same command, fixed, forever
                studies.optuna().delete_study(study_name=name, storage=studies.storage(reg.root))
                kept_note = "the study was not kept"
            raise UsageError(
                f"Every trial of study {name!r} failed; the last: {rows[-1]['error']} "
                f"({kept_note})."
            )
        overall = studies.best_trial(st)
        ref_new, note = None, ""
        if best is None:
            note = "nothing registered: no trial met " + ", ".join(c.text() for c in constraints)
        elif overall is not None and overall.number != best["number"]:
            note = (
                f"nothing registered: the study's best is trial {overall.number} from an "
                "earlier session; no trial of this run beat it"
            )
        elif register:
            ref_new = _register(reg, row, comp, st, best, metric, fixed, constraints, data)
            note = f"registered trial {best['number']}'s result as {ref_new}"
    except KeyboardInterrupt:
        raise Interrupted("Interrupted; the trials before it are recorded.") from None
    finally:
        if best is not None:
            shutil.rmtree(best["work"], ignore_errors=True)
    return run_summary(name, resumed, direction, metric, rows, overall, ref_new, note)


def _trial(comp, row, parent, ctx, fixed, params, budget_s, metric):
    """Make and measure one candidate; (outcome, what to keep if it is the best)."""
    from ..evaluation import Subject, evaluate
    from ..runners import data_runner, staged_checkout

    work = Path(tempfile.mkdtemp(prefix="tune-"))
    try:
        opts = comp.options({**fixed, **params})
        artifact = comp.produce(row["ref"], parent, opts, work, ctx)
        who = f"The {comp.origin}"
        child = staged_checkout(work, artifact, parent, row["task"], who)
        size = sum((work / n).stat().st_size for n in artifact.files)
        data = ctx.eval_data()
        subjects = [
            Subject(row["ref"], ctx.parent_runner, row["size_bytes"], row["task"]),
            Subject("candidate", data_runner(child, data), size, row["task"]),
        ]
        (before, after), _ = evaluate(subjects, data, budget_s)
        metrics = derived(before, after)
        value = metric_value(metrics, metric)
    except (KeyboardInterrupt, Interrupted):
        shutil.rmtree(work, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(work, ignore_errors=True)
        return Outcome(
            "failed", error=str(exc) if isinstance(exc, UsageError) else one_line(exc)
        ), {}
    kept = {
        "work": work,
        "artifact": artifact,
        "signature": subjects[1].runner.signature,
        "before": before,
        "after": after,
        "options": opts,
    }
    return Outcome("complete", metrics=metrics, value=value), kept


def _register(reg, row, comp, st, best, metric, fixed, constraints, data) -> str:
    from .. import datasets
    from ..evaluation import cpu_features
    from ..intake import check
    from ..registering import register_derived

    artifact, work = best["artifact"], best["work"]
    grants = check(
        reg,
        artifact.format,
        {n: work / n for n in artifact.files},
        artifact.config,
        how=f"made by the {comp.origin} (tuned)",
    )
    new = register_derived(
        reg,
        row,
        artifact,
        work,
        comp,
        operation="tune",
        signature=best["signature"],
        tags={},
        metrics=best["after"],
        grants=grants,
        params={
            "study": st.study_name,
            "trial": best["number"],
            "params": best["params"],
            "metric": metric,
            "value": best["value"],
            "direction": st.direction.name.lower(),
            "keep": [c.text() for c in constraints],
            "compressor": comp.name,
            "options": best["options"],
            "fixed": fixed,
            "data": datasets.describe(data) if data is not None else None,
            "parent_metrics": best["before"],
            "measured_on": cpu_features(),
            "report": artifact.report,
        },
    )
    return new["ref"]
