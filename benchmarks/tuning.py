"""Benchmark the samplers ``maas tune`` offers (TPE, random, grid) on a synthetic objective
with a known optimum: how close each gets at equal trials.

Why: ``--sampler tpe`` is the default because it should reach a better model in fewer
trials than random search; this measures by how much, through the same trial loop
``maas tune`` runs (``maas_lab.tuning.functions.optimise``) and the same sampler settings
(``maas_lab.tuning.studies.sampler``), on in-memory studies so only the search is timed.

The objective: minimise the squared distance to (1.5, -2.0, 0.5) over [-5, 5]^3 (the best
possible is 0). Grid search walks a 3 x 3 x 3 grid (-5, 0, 5 per axis; 27 points, visited in
a seeded random order), so its best can never go below the distance to the nearest grid
point, (0, 0, 0): 6.5. Each sampler runs ``--seeds`` (10) seeds of ``--trials`` (30) trials;
the table shows the median over seeds of the best value after 10, 20 and 30 trials, and how
many seeds TPE beat random search on. TPE's first 10 trials are its random start-up
(Optuna's ``n_startup_trials``), drawn from the same seeded generator as random search, so
the two agree up to trial 10 and part after it. ``--plot FILE`` draws the median best-so-far curves;
``--sqlite`` also times 30 trials through a real ``studies.db`` (what each trial costs in
Optuna's SQLite storage). Takes a few seconds.

Run: ``python benchmarks/tuning.py [--seeds N] [--trials N] [--plot out.png] [--sqlite]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPTIMUM = {"x": 1.5, "y": -2.0, "z": 0.5}
GRID = {k: [-5.0, 0.0, 5.0] for k in OPTIMUM}


def space(trial):
    return {k: trial.suggest_float(k, -5, 5) for k in OPTIMUM}


def train(params, report):
    return {"loss": sum((params[k] - v) ** 2 for k, v in OPTIMUM.items())}, None


def curve(sampler: str, seed: int, trials: int) -> list[float]:
    """Best loss so far after each trial."""
    from maas_lab.tuning import studies
    from maas_lab.tuning.functions import optimise
    from maas_lab.tuning.plots import best_so_far

    opt = studies.optuna()
    st = opt.create_study(
        direction="minimize",
        sampler=studies.sampler(sampler, seed, GRID if sampler == "grid" else None),
        pruner=studies.pruner("none"),
    )
    rows, _ = optimise(st, space, train, trials, "loss")
    values = best_so_far([r["value"] for r in rows], maximize=False)
    return values + [values[-1]] * (trials - len(values))  # a grid stops when walked


def sqlite_cost(trials: int = 30) -> float:
    """Seconds per trial of the same search through a real ``<home>/studies.db``."""
    from maas_lab.registry import open as open_registry
    from maas_lab.tuning import run_function

    with tempfile.TemporaryDirectory() as home:
        reg = open_registry(home)
        run_function(reg, space, train, trials=1, metric="loss", direction="minimize", study="w")
        start = time.perf_counter()
        run_function(
            reg, space, train, trials=trials, metric="loss", direction="minimize", study="b"
        )
        took = time.perf_counter() - start
        reg.close()
    return took / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--plot", help="write the median best-so-far curves to this PNG")
    ap.add_argument("--sqlite", action="store_true", help="also time trials in studies.db")
    args = ap.parse_args()
    os.environ.setdefault("MAAS_LAB_PROGRESS", "0")
    start = time.perf_counter()
    curves = {
        s: [curve(s, seed, args.trials) for seed in range(args.seeds)]
        for s in ("tpe", "random", "grid")
    }
    marks = [m for m in (10, 20, 30) if m <= args.trials] or [args.trials]
    print(
        f"Median best loss over {args.seeds} seeds (optimum 0; "
        f"lower is better; {args.trials} trials each)"
    )
    print("sampler  " + "  ".join(f"{m:>4} trials" for m in marks))
    for s, runs in curves.items():
        cells = "  ".join(f"{statistics.median(r[m - 1] for r in runs):>11.3f}" for m in marks)
        print(f"{s:<8} {cells}")
    last = args.trials - 1
    wins = sum(t[last] < r[last] for t, r in zip(curves["tpe"], curves["random"], strict=True))
    means = {s: statistics.mean(r[last] for r in runs) for s, runs in curves.items()}
    print(
        f"TPE beat random search on {wins} of {args.seeds} seeds; mean best at "
        f"{args.trials} trials: tpe {means['tpe']:.3f}, random {means['random']:.3f}, "
        f"grid {means['grid']:.3f}"
    )
    print(f"({time.perf_counter() - start:.1f} s, in-memory studies)")
    if args.sqlite:
        print(f"Through <home>/studies.db: {1000 * sqlite_cost(args.trials):.0f} ms per trial")
    if args.plot:
        from maas_lab.tuning.plots import curves as draw

        median = {
            s: [statistics.median(r[i] for r in runs) for i in range(args.trials)]
            for s, runs in curves.items()
        }
        draw(median, "best loss so far (median over seeds)", "TPE vs random vs grid").save(
            args.plot
        )
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
