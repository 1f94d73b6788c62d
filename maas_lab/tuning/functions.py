"""Tuning a training function: ``space(trial)`` suggests parameters, ``train(params,
report)`` returns ``(metrics, model)``; the best trial's model is registered.

Trials run one after another in this process, or (``processes=N``) each as a recorded
training job on N processes through the launcher plugin (:mod:`.jobtrials`), so a crash
in training ends that job and not the kernel. ``space`` always runs here: it only draws
numbers, and Optuna's sampler needs the live trial.

How the best model becomes a version: train returns a torch module; it is stored as
safetensors with ``factory`` (a ``module:callable`` the person typed, so it is theirs to
run) and a config: the one train returned as a third element, else ``config`` updated with
those trial parameters that are keyword arguments of the factory (``hidden`` for
``maas_lab.zoo:mlp``). Only the best model is kept while the study runs (in memory here;
in a job, as the weights its rank 0 wrote into the job's folder).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..errors import Interrupted, UsageError
from ..hints import command, option
from . import studies
from .trials import (
    Outcome,
    metric_value,
    one_line,
    record,
    run_summary,
    split_result,
    suggest_params,
    trial_row,
)


def _namespace(code: str) -> dict:
    """The cell's definitions: it is the person's own code, run as a cell would be."""
    space: dict = {}
    try:
        exec(compile(code, "<tune cell>", "exec"), space)  # noqa: S102 - the user's own cell
    except SyntaxError as exc:
        raise UsageError(f"The cell does not parse: line {exc.lineno}: {exc.msg}.") from None
    return space


def _functions(code, space, train):
    if code is not None:
        found = _namespace(code)
        space = space or found.get("space")
        train = train or found.get("train")
    if not callable(space) or not callable(train):
        missing = " and ".join(
            n for n, f in (("space", space), ("train", train)) if not callable(f)
        )
        raise UsageError(
            f"Tuning needs {missing}: define space(trial) returning the suggested parameters "
            "and train(params, report) returning (metrics, model)."
        )
    return space, train


def _check_factory(register, factory):
    if not register:
        return None
    from ..registry.refs import check_model_name

    check_model_name(register)
    if not factory:
        raise UsageError(
            f"{option('register', register)} needs {option('factory')} (module:callable that "
            "builds the model, e.g. maas_lab.zoo:mlp) to store the best model as a version."
        )
    from .. import trust

    return trust.typed(factory)


def _config(config) -> dict:
    if config is None or config == "":
        return {}
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise UsageError(f"{option('config')} is not JSON: {exc}.") from None
    if not isinstance(config, dict):
        raise UsageError(f"{option('config')} must be a JSON object, e.g. '{{\"hidden\": 64}}'.")
    return config


def run_function(
    reg,
    space=None,
    train=None,
    *,
    code: str | None = None,
    trials: int = 20,
    metric: str,
    direction: str = "maximize",
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = None,
    grid: dict | str | None = None,
    processes: int | None = None,
    parallel: int = 1,
    launcher: str = "accelerate",
    launch_options: dict | None = None,
    register: str | None = None,
    factory: str | None = None,
    config=None,
    inputs=None,
    study: str | None = None,
) -> dict:
    """Run ``trials`` more trials of study ``study`` (default: ``register``'s name) and
    register the best model as ``register`` if given. ``processes``: each trial as a job on
    that many processes through ``launcher`` (with ``launch_options``, e.g. ``threads``), at
    most ``parallel`` at once; it needs ``code``. Returns a summary dict: study, the
    trials run now (rows), the best trial, and the registered ``ref``.

    Every trial is recorded, failed and pruned ones too; a trial that raises fails alone.
    If every trial run now failed, raises ``UsageError`` with the last trial's error."""
    n = studies.check_trials(trials)
    studies.check_direction(direction)
    if not metric or not isinstance(metric, str):
        raise UsageError(f"Say what to optimise: {option('metric', 'accuracy')}.")
    name = study or register or time.strftime("tune-%Y%m%d-%H%M%S")
    studies.check_study_name(name)
    factory = _check_factory(register, factory)
    base_config = _config(config)
    jobs_mode = processes is not None
    if jobs_mode:
        processes, parallel = _positive(processes, "processes"), _positive(parallel, "parallel")
        if code is None:
            raise UsageError(
                f"{option('processes')} runs each trial as a job, which needs the code as text: "
                "use `%%maas tune` with a cell, or pass code=... defining space and train."
            )
    space, train = _functions(code, space, train)
    smp = studies.sampler(sampler, seed, grid)
    prn = studies.pruner(pruner)
    kind = {"what": "function", "metric": metric, "direction": direction}
    st, resumed = studies.open_study(
        reg.root, name, direction=direction, kind=kind, sampler_=smp, pruner_=prn
    )
    if jobs_mode:
        from .jobtrials import run_jobs

        rows, best = run_jobs(
            reg, st, space, code, n, metric, pruner, launcher, processes, parallel, launch_options
        )
    else:
        check = _registrable(factory, base_config) if register else None
        rows, best = optimise(st, space, train, n, metric, check)
    if not any(r["state"] != "failed" for r in rows):
        last = rows[-1]["error"] if rows else "no trial ran"
        raise UsageError(
            f"Every trial of study {name!r} failed; the last: {last} "
            f"(all recorded: `{command('study', name)}`)."
        )
    ref = None
    overall = studies.best_trial(st)
    if register and best is not None and overall is not None and overall.number == best["number"]:
        ref = _register(reg, register, factory, base_config, inputs, st, best, metric, sampler)
    elif register and overall is not None:
        ref = None  # an earlier session's trial is still the best: its model is not at hand
    note = _register_note(register, ref, overall, best)
    return run_summary(name, resumed, direction, metric, rows, overall, ref, note)


def _positive(value, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UsageError(f"{option(what, value)}: give a whole number of at least 1.")
    return n


def _register_note(register, ref, overall, best) -> str:
    if not register:
        return ""
    if ref:
        return f"registered trial {overall.number}'s model as {ref}"
    if overall is None:
        return "nothing registered: no trial completed"
    return (
        f"nothing registered: the study's best is trial {overall.number} from an earlier "
        "session, whose model was not kept; no trial of this run beat it"
    )


def optimise(st, space, train, n: int, metric: str, check=None) -> tuple[list[dict], dict | None]:
    """``n`` trials of Optuna study ``st`` in this process, one after another: the trial loop
    of ``run_function``, on any study (the benchmark runs it on in-memory ones). Returns the
    trial rows and the best trial of these (with its model), or None. ``check(outcome,
    params, number)`` may refuse a complete trial (``UsageError``): it fails alone."""
    opt = studies.optuna()
    rows, best = [], None
    sign = 1 if st.direction == opt.study.StudyDirection.MAXIMIZE else -1
    for _ in range(n):
        if studies.exhausted(st):
            break
        started = time.time()
        trial = st.ask()
        trial.set_user_attr("runner", studies.runner_mark())
        params = suggest_params(st, trial, space, started)

        def report(step, value, trial=trial):
            trial.report(float(value), int(step))
            if trial.should_prune():
                raise opt.TrialPruned(f"pruned at step {step}")

        try:
            outcome = _outcome(train(dict(params), report), metric)
        except opt.TrialPruned:
            outcome = Outcome("pruned")
        except KeyboardInterrupt:
            record(st, trial, Outcome("failed", error="interrupted"), started, params)
            raise Interrupted(
                f"Interrupted in trial {trial.number}; the trials before it are recorded."
            ) from None
        except Exception as exc:
            outcome = Outcome("failed", error=one_line(exc))
        if check is not None and outcome.state == "complete":
            try:
                check(outcome, params, trial.number)
            except UsageError as exc:
                outcome = Outcome("failed", metrics=_safe(outcome.metrics), error=str(exc))
        record(st, trial, outcome, started, params)
        rows.append(trial_row(trial.number, outcome, params, time.time() - started))
        if outcome.state == "complete" and (
            best is None or sign * outcome.value > sign * best["value"]
        ):
            best = {**rows[-1], "model": outcome.model, "config": outcome.config}
    return rows, best


def _outcome(got, metric: str) -> Outcome:
    try:
        metrics, model, config = split_result(got)
        value = metric_value(metrics, metric)
    except UsageError as exc:
        metrics = got[0] if isinstance(got, tuple) and got and isinstance(got[0], dict) else {}
        return Outcome("failed", metrics=_safe(metrics), error=str(exc))
    return Outcome("complete", metrics=metrics, value=value, model=model, config=config)


def _safe(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _registrable(factory: str, base: dict):
    """The check each trial's model passes as it completes when the best is to be
    registered: found only after the last trial, a bad model would lose the study's best."""

    def check(outcome, params: dict, number: int) -> None:
        model = outcome.model
        if isinstance(model, Path):
            return  # a job trial's saved weights
        if model is None or not hasattr(model, "state_dict"):
            raise UsageError(
                f"Trial {number}: train returned {type(model).__name__} as its model: return "
                f"a torch module to register it (or leave out {option('register')})."
            )
        try:
            config = outcome.config
            if config is None:
                config = _factory_config(factory, base, params)
        except (ImportError, AttributeError):
            return  # registering names what is wrong with the factory
        if isinstance(config, dict):
            _check_accepts(factory, config, number)

    return check


def _check_accepts(factory: str, config: dict, number: int) -> None:
    """The factory's signature takes ``config`` as keyword arguments (nothing is built)."""
    import inspect

    try:
        inspect.signature(_factory_object(factory)).bind(**config)
    except (ValueError, ImportError, AttributeError):
        return  # no signature to read: registering will tell
    except TypeError as exc:
        raise UsageError(
            f"Trial {number}: {option('factory', factory)} does not take its config "
            f"{json.dumps(config, default=str)}: {exc}."
        ) from None


def _factory_object(factory: str):
    import importlib

    module, _, attr = factory.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _factory_config(factory: str, base: dict, params: dict) -> dict:
    """``base`` plus the trial parameters the factory takes as keyword arguments."""
    import inspect

    try:
        accepted = inspect.signature(_factory_object(factory)).parameters
    except (TypeError, ValueError):
        return dict(base)
    return {**base, **{k: v for k, v in params.items() if k in accepted}}


def _register(reg, name, factory, base, inputs, st, best, metric, sampler) -> str:
    from ..registering import register

    config = best["config"]
    if config is None:
        config = _factory_config(factory, base, best["params"])
    edge = {
        "operation": "tune",
        "parent": None,
        "plugin": "optuna",
        "params": {
            "study": st.study_name,
            "trial": best["number"],
            "params": best["params"],
            "metric": metric,
            "value": best["value"],
            "direction": st.direction.name.lower(),
            "sampler": sampler,
            "job": best.get("job"),
        },
    }
    with tempfile.TemporaryDirectory(prefix="tune-") as tmp:
        weights = best["model"] if isinstance(best["model"], Path) else None
        if weights is None:
            weights = Path(tmp) / "weights.safetensors"
            _save_weights(best["model"], weights, best["number"])
        row = register(
            reg,
            name,
            from_torch=factory,
            weights=weights,
            config=config,
            metrics=best["metrics"],
            inputs=inputs,
            lineage=[edge],
        )
    return row["ref"]


def _save_weights(model, path: Path, number: int) -> None:
    if model is None or not hasattr(model, "state_dict"):
        raise UsageError(
            f"Trial {number} is the best, but train returned {type(model).__name__} as its "
            f"model: return a torch module to register it (or leave out {option('register')})."
        )
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
