"""Where studies live and how one is opened: Optuna's own SQLite storage at
``<registry root>/studies.db``, beside the registry's database and never inside it, so
Optuna's tables and migrations stay Optuna's and ``optuna-dashboard sqlite:///...`` reads
them as they are.

A study is opened by name (checked as model names are, since it names the files and the
version it may register); opening an existing one resumes it: its trials keep their
numbers and new ones continue after them. What a study tunes (a function, or a compressor
on a parent version; its metric and direction) is stored in its user attributes, and a
resume that asks for something else is refused rather than mixing two searches.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import NotFoundError, UsageError
from ..hints import command, option

FILE = "studies.db"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
_STORES: dict = {}


def optuna():
    """Optuna, imported on first use, with its per-trial INFO lines silenced (our own
    progress says what happens); a clear line when the ``tune`` extra is missing."""
    try:
        import optuna as module
    except ImportError:
        raise UsageError(
            "Tuning needs Optuna: pip install 'maas-lab[tune]' (or pip install optuna)."
        ) from None
    module.logging.set_verbosity(module.logging.WARNING)
    return module


def check_study_name(name: str) -> str:
    from ..registry.refs import check_model_name

    if not isinstance(name, str):
        raise UsageError(f"A study name must be text, got {type(name).__name__}.")
    try:
        return check_model_name(name)
    except UsageError as exc:  # the same rule, named for what was typed
        text = str(exc).replace("Model name", "Study name").replace("model name", "study name")
        raise UsageError(text) from None


def storage_path(root) -> Path:
    """``<root>/studies.db``: a fixed name under the registry's root, refused if it is a
    link (a link would write the study wherever it points)."""
    root = Path(root).resolve()
    path = root / FILE
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{path} is not a plain file: move it away so studies can be stored.")
    return path


def storage(root):
    """Optuna's ``RDBStorage`` on ``<root>/studies.db`` (created on first use). SQLite waits
    up to 30 s for a lock: a job's process reports into the same file as the kernel."""
    opt = optuna()
    path = storage_path(root)
    key = (str(path), path.stat().st_ino if path.is_file() else None)
    if key in _STORES:
        return _STORES[key]  # one engine per file and process: opening runs a schema check
    path.parent.mkdir(parents=True, exist_ok=True)
    store = opt.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}}
    )
    from sqlalchemy import event

    event.listen(store.engine, "connect", _pragmas)
    store.engine.dispose()  # the connection that made the tables: reopened with the pragmas
    _STORES[(str(path), path.stat().st_ino)] = store
    return store


def _pragmas(connection, _record) -> None:
    """WAL, so the kernel reads while a job's process writes, and ``synchronous=NORMAL``:
    each of a trial's dozen small writes costs a millisecond, not a full fsync (a power cut
    may lose the last trials' writes; the file stays consistent)."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sampler(name: str, seed: int | None = None, grid: dict | str | None = None):
    """``tpe`` (default), ``random`` or ``grid`` (needs ``grid``: every parameter's values)."""
    opt = optuna()
    name = (name or "tpe").lower()
    if name == "tpe":
        return opt.samplers.TPESampler(seed=seed)
    if name == "random":
        return opt.samplers.RandomSampler(seed=seed)
    if name == "grid":
        if isinstance(grid, str):
            import json

            try:
                grid = json.loads(grid)
            except ValueError as exc:
                raise UsageError(f"{option('grid')} is not JSON: {exc}.") from None
            if not isinstance(grid, dict):
                raise UsageError(f"{option('grid')} must be a JSON object of value lists.")
        if not grid:
            raise UsageError(
                f"{option('sampler', 'grid')} needs a finite space: give {option('grid')} "
                "(a dict of lists, e.g. {'hidden': [32, 64], 'lr': [0.01, 0.1]}), or in "
                f"compressor tuning steps or choices in {option('over')} (smooth=0..0.9:0.3, "
                "a|b)."
            )
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise UsageError(
                    f"{option('grid')}: {key!r} needs a non-empty list of values, got {values!r}."
                )
        return _grid_sampler(opt)({k: list(v) for k, v in grid.items()}, seed=seed)
    raise UsageError(f"{option('sampler', name)}: no such sampler; choose {', '.join(SAMPLERS)}.")


def _grid_sampler(opt):
    class Grid(opt.samplers.GridSampler):
        """Optuna's grid, less its ``study.stop()`` once every point was tried: that only
        works inside ``study.optimize``, and these loops use ask and tell (they stop when
        :func:`exhausted` says so)."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return Grid


def exhausted(study) -> bool:
    """A grid study has tried every point: further trials would repeat one."""
    opt = optuna()
    smp = study.sampler
    return isinstance(smp, opt.samplers.GridSampler) and smp.is_exhausted(study)


def pruner(name: str):
    """``median`` (default: stop a trial whose reported value is worse than the median of
    earlier trials at the same step, after 5 complete trials) or ``none``."""
    opt = optuna()
    name = (name or "median").lower()
    if name == "median":
        return opt.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "none":
        return opt.pruners.NopPruner()
    raise UsageError(f"{option('pruner', name)}: no such pruner; choose {', '.join(PRUNERS)}.")


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UsageError(f"{option('direction', direction)}: choose maximize or minimize.")
    return direction


def check_trials(trials) -> int:
    try:
        n = int(trials)
        if isinstance(trials, bool) or (isinstance(trials, float) and n != trials):
            raise ValueError(trials)
    except (TypeError, ValueError):
        raise UsageError(f"{option('trials', trials)}: give a whole number of trials.") from None
    if n < 1:
        raise UsageError(
            f"{option('trials', trials)}: give at least 1 trial, e.g. {option('trials', 30)}."
        )
    return n


def names(root) -> list[str]:
    if not storage_path(root).exists():
        return []
    return list(optuna().get_all_study_names(storage(root)))


def load(root, name: str, sampler_=None, pruner_=None):
    """An existing study; ``NotFoundError`` (with the nearest names) when there is none."""
    check_study_name(name)
    known = names(root)
    if name not in known:
        raise NotFoundError("study", name, known)
    return optuna().load_study(
        study_name=name, storage=storage(root), sampler=sampler_, pruner=pruner_
    )


def open_study(root, name: str, *, direction: str, kind: dict, sampler_, pruner_):
    """Create study ``name``, or resume it when it exists and tunes the same thing (``kind``:
    what, metric, direction). Trials an earlier session left running (its process is gone)
    are marked failed first, so they are not counted as pending forever."""
    opt = optuna()
    check_study_name(name)
    store = storage(root)
    if name in names(root):
        study = opt.load_study(study_name=name, storage=store, sampler=sampler_, pruner=pruner_)
        had = study.user_attrs.get("kind", {})
        differ = [k for k in kind if k in had and had[k] != kind[k]]
        if differ:
            k = differ[0]
            raise UsageError(
                f"Study {name!r} tunes {k} {had[k]!r}, not {kind[k]!r}: resume it as it was, "
                f"or give another {option('study')} (see `{command('study', name)}`)."
            )
        _fail_abandoned(store, name, study)
        return study, True
    study = opt.create_study(
        study_name=name, storage=store, sampler=sampler_, pruner=pruner_, direction=direction
    )
    study.set_user_attr("kind", kind)
    return study, False


def runner_mark() -> dict:
    """Who runs a trial: recorded on it, so a later session can tell a trial whose process
    is gone from one another kernel is running now."""
    from ..serving.state import process_started

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_started(os.getpid()),
    }


def _fail_abandoned(store, name: str, study) -> None:
    from ..serving.state import same_process

    opt = optuna()
    running = opt.trial.TrialState.RUNNING
    for t in study.get_trials(deepcopy=False, states=(running,)):
        mark = t.user_attrs.get("runner") or {}
        alive = mark.get("host") == socket.gethostname() and same_process(
            mark.get("pid") or 0, mark.get("started")
        )
        if alive:
            continue
        trial_id = store.get_trial_id_from_study_id_trial_number(
            store.get_study_id_from_name(name), t.number
        )
        store.set_trial_user_attr(
            trial_id, "error", "abandoned: the session running it ended before it did"
        )
        store.set_trial_state_values(trial_id, state=opt.trial.TrialState.FAIL)


def best_trial(study):
    """The best complete trial that met the study's constraints, or None. Optuna's own
    ``best_trial`` knows nothing of ``--keep``, so the choice is made here."""
    opt = optuna()
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(opt.trial.TrialState.COMPLETE,))
        if t.value is not None and t.user_attrs.get("feasible", True)
    ]
    if not done:
        return None
    sign = 1 if study.direction == opt.study.StudyDirection.MAXIMIZE else -1
    return max(done, key=lambda t: (sign * t.value, -t.number))
