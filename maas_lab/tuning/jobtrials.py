"""Trials as recorded jobs (``processes=N``): each trial is one ``maas launch`` job on N
processes through the launcher plugin, at most ``parallel`` at once, so a trial that
crashes, leaks memory or calls ``os._exit`` ends its job and never the kernel.

The cell reaches the job as ``%%maas launch`` cells do (``code=``, written to the job's
folder): the cell, then a ``train(accelerator, registry)`` that calls the cell's own
``train(params, report)`` through :mod:`.trialjob`. The trial's number and parameters go
as the job's one argument (JSON). Rank 0 reports intermediate values into the study's
storage and asks the pruner; the decision is broadcast so every rank stops together. It
writes ``trial.json`` (metrics) and ``trial-model.safetensors`` (the model's weights) into
the job's folder; the kernel reads them when the job ends, and registers the best trial's
weights from there.
"""

from __future__ import annotations

import json
import time

from ..errors import Interrupted
from ..hints import command
from . import studies
from .trials import Outcome, metric_value, record

WRAPPER = """

# --- added by maas tune: the job's entry, calling the cell's train(params, report) ---
def train(accelerator, registry, _tuned=train):
    from maas_lab.tuning.trialjob import run_trial

    run_trial(_tuned)
"""
POLL_S = 0.3


def run_jobs(reg, st, space, code, n, metric, pruner, launcher, processes, parallel, options):
    from ..launching.control import cancel, launch
    from ..launching.jobs import job_dir
    from .trials import suggest_params, trial_row

    opt = studies.optuna()
    sign = 1 if st.direction == opt.study.StudyDirection.MAXIMIZE else -1
    wrapped = code + WRAPPER
    rows, best, running, left = [], None, {}, n
    try:
        while left or running:
            while left and len(running) < parallel and not studies.exhausted(st):
                left -= 1
                started = time.time()
                trial = st.ask()
                trial.set_user_attr("runner", studies.runner_mark())
                params = suggest_params(st, trial, space, started)
                arg = {
                    "study": st.study_name,
                    "trial": trial.number,
                    "params": params,
                    "metric": metric,
                    "pruner": pruner,
                }
                try:
                    job = launch(
                        code=wrapped,
                        args=[json.dumps(arg)],
                        launcher=launcher,
                        metric=metric,
                        wait=False,
                        root=reg.root,
                        **{**(options or {}), "processes": processes},
                    )
                except BaseException as exc:
                    record(
                        st, trial, Outcome("failed", error=f"not launched: {exc}"), started, params
                    )
                    raise
                trial.set_user_attr("job", job.id)
                running[job.id] = (trial, params, started, job)
            time.sleep(POLL_S)
            for job_id in list(running):
                trial, params, started, job = running[job_id]
                if job.status not in ("succeeded", "failed", "cancelled", "lost"):
                    continue
                del running[job_id]
                outcome = _outcome(reg, job, job_dir(reg.root, job_id), metric)
                record(st, trial, outcome, started, params)
                rows.append(trial_row(trial.number, outcome, params, time.time() - started))
                if outcome.state == "complete" and (
                    best is None or sign * outcome.value > sign * best["value"]
                ):
                    best = {**rows[-1], "model": outcome.model, "config": outcome.config}
    except KeyboardInterrupt:
        for trial, params, started, job in running.values():
            try:
                cancel(job.id, root=reg.root)
            finally:
                record(
                    st, trial, Outcome("failed", error="interrupted", job=job.id), started, params
                )
        raise Interrupted("Interrupted; running trial jobs were cancelled and recorded.") from None
    return sorted(rows, key=lambda r: r["number"]), best


def _outcome(reg, job, folder, metric: str) -> Outcome:
    from ..launching.jobs import read_json
    from ..launching.monitor import first_rank_error

    row = job.data
    if row["status"] != "succeeded":
        error = first_rank_error(folder) or {}
        if error.get("type") == "TrialPruned":
            return Outcome("pruned", job=job.id)
        text = row.get("error") or row["status"]
        if error.get("type"):
            message = " ".join(str(error.get("message", "")).split())[:240]
            text = f"{error['type']}: {message}" if message else error["type"]
        text = f"job {job.id} {row['status']}: {text.rstrip(':. ')}"
        return Outcome("failed", error=f"{text} (its log: `{command('logs', job.id)}`)", job=job.id)
    result = read_json(folder / "trial.json", None)
    if not isinstance(result, dict):
        return Outcome("failed", error=f"job {job.id} wrote no trial.json", job=job.id)
    metrics = result.get("metrics") or {}
    try:
        value = metric_value(metrics, metric)
    except Exception as exc:
        return Outcome("failed", metrics=metrics, error=str(exc), job=job.id)
    weights = folder / "trial-model.safetensors"
    return Outcome(
        "complete",
        metrics=metrics,
        value=value,
        model=weights if weights.is_file() else None,
        config=result.get("config"),
        job=job.id,
    )
