"""What a person reads about studies: the list (``maas studies``), one study in full
(``maas study NAME``: its trials as a table, the best, the history and parameter-importance
pictures), and the summary a tuning run ends with. Each is a ``Table`` or ``Report`` whose
``data`` holds the plain rows, as the other capabilities return."""

from __future__ import annotations

import json
import warnings

from ..hints import command
from ..results import Report, Table, kv_table
from . import plots, studies

TRIAL_COLUMNS = ["trial", "state", "value", "params", "metrics", "duration_s", "error"]


def _text(d: dict | None, most: int = 6) -> str:
    if not d:
        return ""
    items = list(d.items())
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items[:most]
    )
    return shown + (f", +{len(items) - most}" if len(items) > most else "")


def list_studies(reg) -> Table:
    """Every study under the registry's home: name, trials, best value and parameters,
    direction, when it was created."""
    rows = []
    if studies.storage_path(reg.root).exists():
        opt = studies.optuna()
        store = studies.storage(reg.root)
        for summary in opt.get_all_study_summaries(store, include_best_trial=False):
            st = opt.load_study(study_name=summary.study_name, storage=store)
            best = studies.best_trial(st)
            kind = summary.user_attrs.get("kind", {})
            rows.append(
                {
                    "study": summary.study_name,
                    "tunes": _what(kind),
                    "trials": summary.n_trials,
                    "metric": kind.get("metric"),
                    "direction": summary.direction.name.lower(),
                    "best": best.value if best else None,
                    "best_params": (best.user_attrs.get("params") or best.params) if best else {},
                    "created": summary.datetime_start.isoformat(" ", "seconds")
                    if summary.datetime_start
                    else "",
                }
            )
    columns = ["study", "tunes", "trials", "metric", "direction", "best", "best_params", "created"]
    return Table(
        rows,
        columns,
        title="Studies",
        note="" if rows else f"No studies yet: `{command('tune')}` starts one.",
        formatters={"best_params": _text, "best": _num},
    )


def _num(v) -> str:
    return "" if v is None else f"{v:.6g}"


def _what(kind: dict) -> str:
    if kind.get("what") == "compressor":
        return f"{kind.get('compressor')} on {kind.get('parent')}"
    return "a function" if kind.get("what") == "function" else ""


def trial_rows(st) -> list[dict]:
    """One row per trial, oldest first: number, state, value, params, metrics, duration."""
    rows = []
    for t in st.get_trials(deepcopy=False):
        attrs = t.user_attrs
        state = t.state.name.lower().replace("fail", "failed")
        if state == "complete" and attrs.get("feasible") is False:
            state = "infeasible"
        took = attrs.get("duration_s")
        if took is None and t.datetime_start and t.datetime_complete:
            took = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": t.value,
                "params": attrs.get("params") or dict(t.params),
                "metrics": attrs.get("metrics", {}),
                "duration_s": took,
                "error": attrs.get("error") or attrs.get("infeasible") or "",
                "job": attrs.get("job"),
                "intermediate": dict(t.intermediate_values),
            }
        )
    return rows


def _importance(st) -> tuple[dict, str]:
    opt = studies.optuna()
    # Every complete trial, those outside --keep too: they still tell how each parameter
    # moves the metric.
    done = st.get_trials(deepcopy=False, states=(opt.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return {}, "(parameter importance needs at least 2 complete trials)"
    try:
        evaluator = opt.importance.PedAnovaImportanceEvaluator()  # fANOVA imports sklearn: 4 s
        with warnings.catch_warnings():  # its UserWarnings would land in the report's text
            warnings.simplefilter("ignore")
            scores = opt.importance.get_param_importances(st, evaluator=evaluator)
    except Exception as exc:  # too few distinct values, a space that changed between trials
        return {}, f"(parameter importance not available: {exc})"
    return {k: float(v) for k, v in scores.items()}, ""


def describe(reg, name: str) -> Report:
    """Study ``name`` in full. ``data``: ``study``, ``kind``, ``direction``, ``trials`` (rows),
    ``best`` (a row or None), ``importance`` ({param: score}); the report's parts hold the
    figures (``plots.Figure``: ``.png`` bytes, ``.save(path)``)."""
    opt = studies.optuna()
    st = studies.load(reg.root, name)
    rows = trial_rows(st)
    kind = st.user_attrs.get("kind", {})
    maximize = st.direction == opt.study.StudyDirection.MAXIMIZE
    best = studies.best_trial(st)
    best_row = next((r for r in rows if best and r["trial"] == best.number), None)
    scored = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    metric = kind.get("metric") or "value"
    outside = [r for r in rows if r["state"] == "infeasible" and r["value"] is not None]
    history = plots.history(
        [r["trial"] for r in scored],
        [r["value"] for r in scored],
        maximize,
        metric,
        ([r["trial"] for r in outside], [r["value"] for r in outside]),
    )
    scores, note = _importance(st)
    counts = {
        s: sum(r["state"] == s for r in rows)
        for s in ("complete", "pruned", "failed", "infeasible")
    }
    summary = {
        "tunes": _what(kind),
        "metric": metric,
        "direction": st.direction.name.lower(),
        "trials": ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "none",
        "best": f"trial {best.number}: {metric}={best.value:.6g}" if best else "none yet",
        "best params": json.dumps(best_row["params"]) if best_row else "",
        "search space": kind.get("over"),
    }
    table = Table(
        rows,
        TRIAL_COLUMNS,
        title="Trials",
        formatters={"params": _text, "metrics": _text, "value": _num, "duration_s": _secs},
    )
    parts = [
        ("", kv_table({k: v for k, v in summary.items() if v})),
        ("", table),
        ("Best so far", history),
        ("Parameter importance", plots.importance(scores, note)),
    ]
    data = {
        "study": name,
        "kind": kind,
        "direction": st.direction.name.lower(),
        "trials": rows,
        "best": best_row,
        "importance": scores,
    }
    return Report(f"study {name}: {len(rows)} trials", parts, data=data)


def _secs(v) -> str:
    return "" if v is None else f"{v:.1f} s"


def run_report(summary: dict) -> Report:
    """What ``tune`` shows when it ends: the trials run now and the best of the study."""
    best = summary.get("best")
    metric = summary["metric"]
    done = {
        s: sum(r["state"] == s for r in summary["trials"])
        for s in ("complete", "pruned", "failed", "infeasible")
    }
    head = {
        "study": summary["study"] + (" (resumed)" if summary.get("resumed") else ""),
        "trials now": ", ".join(f"{v} {k}" for k, v in done.items() if v),
        "best": f"trial {best['number']}: {metric}={best['value']:.6g}" if best else "none",
        "best params": json.dumps(best["params"]) if best else "",
        "registered": summary.get("registered_note") or "",
    }
    rows = [{**r, "trial": r["number"]} for r in summary["trials"]]
    table = Table(
        rows,
        TRIAL_COLUMNS,
        title="Trials run now",
        formatters={"params": _text, "metrics": _text, "value": _num, "duration_s": _secs},
    )
    title = f"tune {summary['study']}: best {metric}"
    title += f" {best['value']:.6g}" if best else ": none"
    return Report(
        title, [("", kv_table({k: v for k, v in head.items() if v})), ("", table)], data=summary
    )
