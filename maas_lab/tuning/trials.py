"""How one trial ends up in the study: its parameters, every metric it returned, its state
(complete, pruned or failed with the error's one line) and how long it took, all in the
trial's Optuna record (``user_attrs``: ``params``, ``metrics``, ``error``, ``duration_s``,
``job``), so ``maas study NAME`` and ``optuna-dashboard`` read the same thing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .space import check_params

MAX_ERROR = 300


@dataclass
class Outcome:
    """What a trial came to. ``model`` is the trained object (in this process) or the path of
    its weights (a job's); ``config`` what train returned to rebuild it, if it did."""

    state: str  # "complete", "pruned" or "failed"
    metrics: dict = field(default_factory=dict)
    value: float | None = None
    error: str | None = None
    model: Any = None
    config: dict | None = None
    job: int | None = None
    extra: dict = field(default_factory=dict)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 3] + "..."


def split_result(got) -> tuple[dict, Any, dict | None]:
    """``train``'s return: ``(metrics, model)``, ``(metrics, model, config)`` or ``metrics``."""
    config = None
    if isinstance(got, dict):
        metrics, model = got, None
    elif isinstance(got, tuple) and len(got) in (2, 3):
        metrics, model = got[0], got[1]
        config = got[2] if len(got) == 3 else None
    else:
        raise UsageError(
            f"train returned {type(got).__name__}; return (metrics, model), (metrics, model, "
            "config) or a dict of metrics."
        )
    if not isinstance(metrics, dict):
        raise UsageError(f"train's metrics are a {type(metrics).__name__}; return a dict.")
    if config is not None and not isinstance(config, dict):
        raise UsageError(f"train's config is a {type(config).__name__}; return a dict.")
    return numbers(metrics), model, config


def numbers(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise UsageError(f"Metric {k!r} is {v!r}, not a number.") from None
    return out


def metric_value(metrics: dict, metric: str) -> float:
    """The tuned metric; a trial that did not return it fails with the keys it did return."""
    if metric not in metrics:
        got = ", ".join(sorted(metrics)) or "none"
        raise UsageError(f"The trial returned no metric {metric!r}; it returned: {got}.")
    value = metrics[metric]
    if not math.isfinite(value):
        raise UsageError(f"The trial's {metric} is {value}: not a finite number.")
    return value


def record(study, trial, outcome: Outcome, started: float, params: dict | None) -> None:
    """Write the outcome into the trial and end it (``study.tell``)."""
    opt = _optuna()
    attrs = {
        "params": params or {},
        "metrics": outcome.metrics,
        "duration_s": round(time.time() - started, 3),
        **outcome.extra,
    }
    if outcome.error:
        attrs["error"] = outcome.error
    if outcome.job is not None:
        attrs["job"] = outcome.job
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    states = opt.trial.TrialState
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    elif outcome.state == "pruned":
        study.tell(trial, state=states.PRUNED)
    else:
        study.tell(trial, state=states.FAIL)


def suggest_params(st, trial, space, started) -> dict:
    """``space(trial)``: a broken space is the same in every trial, so it stops the study."""
    try:
        return check_params(space(trial), trial.number)
    except Exception as exc:
        error = one_line(exc) if not isinstance(exc, UsageError) else str(exc)
        record(st, trial, Outcome("failed", error=error), started, None)
        if isinstance(exc, UsageError):
            raise
        raise UsageError(
            f"space(trial) failed in trial {trial.number}: {error}. Fix the search space "
            "(e.g. low <= high in each suggest_*)."
        ) from None


def trial_row(number: int, outcome: Outcome, params: dict, took: float) -> dict:
    """A trial as a run's result lists it; a complete trial outside ``--keep`` is
    ``infeasible``, its error saying why."""
    infeasible = outcome.extra.get("feasible") is False
    return {
        "number": number,
        "state": "infeasible" if infeasible else outcome.state,
        "value": outcome.value,
        "params": params,
        "metrics": outcome.metrics,
        "duration_s": round(took, 3),
        "error": outcome.error or outcome.extra.get("infeasible"),
        "job": outcome.job,
    }


def best_row(t) -> dict | None:
    """A study's best trial (Optuna's FrozenTrial) as a plain dict, or None."""
    if t is None:
        return None
    return {
        "number": t.number,
        "value": t.value,
        "params": t.user_attrs.get("params") or dict(t.params),
        "metrics": t.user_attrs.get("metrics", {}),
    }


def run_summary(name, resumed, direction, metric, rows, overall, ref, note) -> dict:
    """What a tuning run returns (and ``views.run_report`` shows): the trials run now, the
    study's best trial, and what was registered, the same for functions and compressors."""
    return {
        "study": name,
        "resumed": resumed,
        "direction": direction,
        "metric": metric,
        "trials": rows,
        "best": best_row(overall),
        "registered": ref,
        "registered_note": note,
    }


def _optuna():
    from .studies import optuna

    return optuna()
