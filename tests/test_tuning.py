"""Tuning on Optuna: samplers that find a known optimum, studies stored and resumed under
the registry's home, trials recorded whatever they did (complete, pruned, failed), the
best registered with a ``tune`` lineage edge, compressor options tuned within ``--keep``,
and trials as real recorded jobs."""

import json
import statistics
import warnings

import pytest

from maas_lab.errors import UsageError
from maas_lab.registry import open as open_registry
from maas_lab.tuning import describe, list_studies, run_compressor, run_function, studies
from maas_lab.tuning.functions import optimise
from maas_lab.tuning.space import grid_of, parse_keep, parse_over

optuna = pytest.importorskip("optuna")

OPTIMUM = {"x": 1.5, "y": -2.0, "z": 0.5}


def sphere_space(trial):
    return {k: trial.suggest_float(k, -5, 5) for k in OPTIMUM}


def sphere(params, report):
    return {"loss": sum((params[k] - v) ** 2 for k, v in OPTIMUM.items())}, None


def best_of(sampler, seed, trials=30):
    st = optuna.create_study(
        direction="minimize", sampler=studies.sampler(sampler, seed), pruner=studies.pruner("none")
    )
    optimise(st, sphere_space, sphere, trials, "loss")
    return st.best_value


def test_tpe_beats_random_search_at_equal_trials_over_seeds():
    tpe = [best_of("tpe", seed) for seed in range(5)]
    rnd = [best_of("random", seed) for seed in range(5)]
    print(
        f"mean best loss after 30 trials: tpe {statistics.mean(tpe):.3f}, "
        f"random {statistics.mean(rnd):.3f}"
    )
    # Seeded samplers are deterministic: the same seed finds the same best again.
    assert best_of("tpe", 3) == tpe[3] and best_of("random", 3) == rnd[3]
    # Measured here: tpe 0.53, random 1.56 (3x); half that margin is asked.
    assert statistics.mean(tpe) < 0.67 * statistics.mean(rnd)


def quadratic_space(trial):
    return {"x": trial.suggest_float("x", -3, 3)}


def quadratic(params, report):
    return {"score": -((params["x"] - 1) ** 2), "x": params["x"]}, None


def test_a_study_is_stored_under_the_home_and_resumes_its_numbering(maas_home):
    reg = open_registry()
    first = run_function(
        reg, quadratic_space, quadratic, trials=3, metric="score", study="q", seed=0
    )
    assert not first["resumed"] and (maas_home / "studies.db").is_file()
    again = run_function(
        open_registry(), quadratic_space, quadratic, trials=2, metric="score", study="q", seed=1
    )
    assert again["resumed"]
    assert [r["number"] for r in first["trials"] + again["trials"]] == [0, 1, 2, 3, 4]
    shown = describe(reg, "q")
    assert [r["trial"] for r in shown.data["trials"]] == [0, 1, 2, 3, 4]
    assert {r["state"] for r in shown.data["trials"]} == {"complete"}
    assert all(
        r["duration_s"] is not None and "score" in r["metrics"] for r in shown.data["trials"]
    )
    best = max(shown.data["trials"], key=lambda r: r["value"])
    assert shown.data["best"]["trial"] == best["trial"]
    assert shown.parts[2][1].png.startswith(b"\x89PNG")  # the best-vs-trials plot
    assert shown.data["importance"] == {"x": 1.0}
    listed = list_studies(reg).dicts()
    assert [(s["study"], s["trials"], s["direction"]) for s in listed] == [("q", 5, "maximize")]
    assert listed[0]["best"] == best["value"]
    with pytest.raises(UsageError, match="tunes metric 'score', not 'x'"):
        run_function(reg, quadratic_space, quadratic, trials=1, metric="x", study="q")
    run_function(
        reg,
        quadratic_space,
        lambda p, r: ({"score": 1.0}, None),
        trials=2,
        metric="score",
        study="flat",
    )
    with warnings.catch_warnings():  # Optuna's ped_anova warns on equal values: not shown
        warnings.simplefilter("error")
        assert list(describe(reg, "flat").data["importance"]) == ["x"]


def test_trials_are_recorded_as_pruned_failed_or_complete_and_the_study_goes_on(maas_home):
    reg = open_registry()
    calls = []

    def train(params, report):
        calls.append(params["x"])
        n = len(calls)
        if n == 3:
            raise RuntimeError("out of memory\nlong traceback text")
        if n == 4:
            return {"acc": 1.0}, None  # not the metric tuned
        for step in range(3):
            report(step, 0.0 if n == 8 else 10.0 + n)  # trial 7 is far below the median
        return {"score": 10.0 + n}, None

    result = run_function(
        reg, quadratic_space, train, trials=8, metric="score", study="p", sampler="random", seed=0
    )
    states = [r["state"] for r in result["trials"]]
    assert states == ["complete"] * 2 + ["failed"] * 2 + ["complete"] * 3 + ["pruned"]
    rows = describe(reg, "p").data["trials"]
    assert rows[2]["error"] == "RuntimeError: out of memory"
    assert rows[3]["error"] == "The trial returned no metric 'score'; it returned: acc."
    assert rows[7]["state"] == "pruned" and rows[7]["intermediate"] == {0: 0.0}
    assert result["best"]["number"] == 6


def test_a_metric_no_trial_returns_fails_the_command_naming_what_it_got(maas_home):
    with pytest.raises(UsageError, match=r"no metric 'accuracy'; it returned: acc, loss"):
        run_function(
            open_registry(),
            quadratic_space,
            lambda p, r: ({"acc": 1.0, "loss": 0.1}, None),
            trials=2,
            metric="accuracy",
            study="m",
        )
    rows = describe(open_registry(), "m").data["trials"]
    assert [r["state"] for r in rows] == ["failed", "failed"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trials": 0}, "at least 1 trial"),
        ({"sampler": "cmaes"}, "no such sampler; choose tpe, random, grid"),
        ({"pruner": "hyperband"}, "no such pruner; choose median, none"),
        ({"sampler": "grid"}, "needs a finite space"),
        ({"space": lambda t: {}}, "empty dict in trial 0"),
        ({"space": lambda t: [t.suggest_float("x", 0, 1)]}, "returned list in trial 0"),
        ({"space": lambda t: {"x": t.suggest_float("x", 1.0, 0.0)}}, "Fix the search space"),
        ({"direction": "up"}, "choose maximize or minimize"),
        ({"register": "best", "factory": None}, "needs --factory|needs factory"),
    ],
)
def test_bad_search_input_is_one_clear_line(maas_home, kwargs, message):
    args = {"space": quadratic_space, "trials": 2, "metric": "score", "study": "bad", **kwargs}
    with pytest.raises(UsageError, match=message):
        run_function(open_registry(), train=quadratic, **args)


def test_the_best_model_is_registered_with_a_tune_lineage_edge(maas_home):
    torch = pytest.importorskip("torch")
    from maas_lab.testing import blobs
    from maas_lab.zoo import mlp

    x, y = blobs(300)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    code = """
def space(trial):
    return {"hidden": trial.suggest_int("hidden", 4, 16),
            "lr": trial.suggest_float("lr", 0.1, 1.0)}
"""

    def train(params, report):
        torch.manual_seed(0)
        model = mlp(in_features=8, hidden=params["hidden"], out_features=3)
        for _ in range(30):  # plain gradient steps: torch.optim's first use imports dynamo
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= params["lr"] * p.grad
        acc = float((model(xt).argmax(1) == yt).float().mean())
        return {"accuracy": acc}, model.eval()

    result = run_function(
        open_registry(),
        train=train,
        code=code,
        trials=3,
        metric="accuracy",
        register="blobs-tuned",
        factory="maas_lab.zoo:mlp",
        config={"in_features": 8, "out_features": 3},
        inputs=["input:float32:batch,8"],
        seed=0,
    )
    best = result["best"]
    assert result["study"] == "blobs-tuned" and result["registered"] == "blobs-tuned@1"
    reg = open_registry()
    row = reg.resolve("blobs-tuned@1")
    assert row["config"]["kwargs"]["hidden"] == best["params"]["hidden"]
    edge = reg.db.execute(
        "select operation, plugin, params from lineage where child_id = ?", [row["id"]]
    ).fetchone()
    params = json.loads(edge[2])
    assert edge[:2] == ("tune", "optuna")
    assert params["study"] == "blobs-tuned" and params["trial"] == best["number"]
    assert params["params"] == best["params"] and params["metric"] == "accuracy"
    # The registered weights are the best trial's model: they score what the trial said.
    from maas_lab.runners import load

    model = load(reg.checkout("blobs-tuned@1"), {})
    got = float((model(xt).argmax(1) == yt).float().mean())
    assert got == pytest.approx(best["value"])


def test_over_and_keep_are_parsed_against_the_compressors_schema():
    from maas_lab.components import Param

    params = (Param("smooth", "float", 0.5), Param("outliers", "int", 0), Param("mode", "str"))
    dims = parse_over("smooth=0..0.9,outliers=0..4:2,mode=a|b", params)
    assert [(d.name, d.type, d.grid()) for d in dims] == [
        ("smooth", "float", None),
        ("outliers", "int", [0, 2, 4]),
        ("mode", "choice", ["a", "b"]),
    ]
    with pytest.raises(UsageError, match="names 'alpha', which this compressor does not take"):
        parse_over("alpha=0..1", params)
    with pytest.raises(UsageError, match="low end 0.9 is above the high end 0.1"):
        parse_over("smooth=0.9..0.1", params)
    with pytest.raises(UsageError, match="is empty"):
        parse_over("", params)
    with pytest.raises(UsageError, match="takes whole numbers"):
        parse_over("outliers=0..2.5", params)
    assert [c.text() for c in parse_keep("cosine_min>=0.99,size_ratio<=0.5")] == [
        "cosine_min>=0.99",
        "size_ratio<=0.5",
    ]
    with pytest.raises(UsageError, match="write metric>=value"):
        parse_keep("cosine_min~0.99")
    with pytest.raises(UsageError, match=r"keep cosine_min: 'e' is not a number"):
        parse_keep("cosine_min>=e")
    # A typo'd step is counted, not built: refused at once in one line.
    for over in ("smooth=0..0.9:1e-10", "outliers=0..10000000000"):
        with pytest.raises(UsageError, match=r"The grid has [\d,]+ points \(at most 10,000\)"):
            grid_of(parse_over(over, params))
    assert grid_of(parse_over("outliers=0..4:2,mode=a|b", params)) == {
        "outliers": [0, 2, 4],
        "mode": ["a", "b"],
    }
    with pytest.raises(UsageError, match="^Study name"):
        studies.check_study_name("s" * 300)


def test_a_model_that_cannot_be_registered_fails_its_trial_as_it_completes(maas_home):
    torch = pytest.importorskip("torch")
    args = {"space": quadratic_space, "metric": "score", "register": "q"}
    args |= {"factory": "maas_lab.zoo:mlp", "trials": 2}
    with pytest.raises(UsageError, match="train returned str as its model"):
        run_function(open_registry(), train=lambda p, r: ({"score": 1.0}, "w"), **args)
    rows = describe(open_registry(), "q").data["trials"]
    assert [r["state"] for r in rows] == ["failed", "failed"]  # the study went on
    args |= {"study": "q2", "config": {"bogus": 1}}
    linear = torch.nn.Linear(1, 1)
    with pytest.raises(UsageError, match=r"does not take its config \{\"bogus\": 1"):
        run_function(open_registry(), train=lambda p, r: ({"score": 1.0}, linear), **args)


@pytest.fixture
def digits_version(maas_home, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from maas_lab import api, datasets
    from maas_lab.zoo import mlp

    train = datasets.load("sklearn:digits").split("train")
    torch.manual_seed(0)
    model = mlp(hidden=32)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    for _ in range(100):  # plain gradient steps: torch.optim's first use imports dynamo
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    return api.register(
        "digits",
        from_torch="maas_lab.zoo:mlp",
        config={"hidden": 32},
        weights=tmp_path / "w.safetensors",
        task="classification",
        inputs=["input:float32:batch,64"],
    )["ref"]


def test_compressor_options_are_tuned_within_keep_and_the_best_registered(digits_version):
    reg = open_registry()
    with pytest.raises(UsageError, match="names 'spars', which this compressor does not take"):
        run_compressor(reg, digits_version, "prune", "spars=0..1", trials=1)
    with pytest.raises(UsageError, match="'bogus'.*choose one of .*accuracy.*speed"):
        run_compressor(reg, digits_version, "prune", "sparsity=0..1", metric="bogus")
    assert studies.names(reg.root) == []
    # Every trial of a new study failed (no data: no accuracy): the study is not kept, so
    # the same default study name takes the next run's metric.
    with pytest.raises(UsageError, match="no metric 'accuracy'.*the study was not kept"):
        run_compressor(reg, digits_version, "prune", "sparsity=0.5..0.6", metric="accuracy")
    assert studies.names(reg.root) == []
    result = run_compressor(
        reg,
        digits_version,
        "prune",
        "sparsity=0.2..0.95:0.25",
        trials=4,
        sampler="grid",
        metric="size_ratio",
        keep="accuracy>=0.8",
        data="sklearn:digits",
        budget_s=0.02,
        seed=0,
    )
    rows = result["trials"]
    assert sorted(r["params"]["sparsity"] for r in rows) == [0.2, 0.45, 0.7, 0.95]
    for r in rows:
        assert r["state"] in ("complete", "infeasible")
        assert (r["metrics"]["accuracy"] >= 0.8) == (r["state"] == "complete")
        if r["state"] == "infeasible":
            assert r["error"].startswith("accuracy ") and "fails accuracy>=0.8" in r["error"]
    feasible = [r for r in rows if r["state"] == "complete"]
    best = min(feasible, key=lambda r: r["value"])
    assert result["best"]["number"] == best["number"]
    assert result["registered"] == "digits@2"
    row = reg.resolve("digits@2")
    edge = reg.db.execute(
        "select operation, parent_id, params from lineage where child_id = ?", [row["id"]]
    ).fetchone()
    params = json.loads(edge[2])
    assert edge[0] == "tune" and edge[1] == reg.resolve(digits_version)["id"]
    assert params["trial"] == best["number"] and params["params"] == best["params"]
    assert params["compressor"] == "prune" and params["keep"] == ["accuracy>=0.8"]
    stored = dict(
        reg.db.execute("select name, value from metrics where version_id = ?", [row["id"]])
    )
    assert stored["accuracy"] == pytest.approx(best["metrics"]["accuracy"])


JOB_CELL = """
import os

def space(trial):
    return {"hidden": trial.suggest_int("hidden", 4, 8), "crash": trial.number == 1}

def train(params, report):
    if params["crash"]:
        os._exit(3)  # a crash that would take a kernel down
    import torch
    from maas_lab.zoo import mlp
    torch.manual_seed(0)
    model = mlp(in_features=4, hidden=params["hidden"], out_features=2)
    report(1, 0.5)
    return {"score": 0.5, "hidden": params["hidden"]}, model
"""


@pytest.mark.slow
def test_trials_as_recorded_jobs_survive_a_crash_and_register_the_best(maas_home):
    from maas_lab import api

    result = run_function(
        open_registry(),
        code=JOB_CELL,
        trials=2,
        metric="score",
        processes=2,
        parallel=2,  # both trials' jobs at once: the bound is 2
        register="jobbed",
        factory="maas_lab.zoo:mlp",
        config={"in_features": 4, "out_features": 2},
        seed=0,
    )
    ok, crashed = result["trials"]
    assert ok["state"] == "complete" and ok["job"] and ok["metrics"]["score"] == 0.5
    assert crashed["state"] == "failed" and crashed["error"].startswith(f"job {crashed['job']} ")
    jobs = {j["job"]: j for j in api.jobs().dicts()}
    assert jobs[ok["job"]]["status"] == "succeeded" and jobs[ok["job"]]["processes"] == 2
    assert jobs[crashed["job"]]["status"] == "failed"
    assert result["registered"] == "jobbed@1"
    edge = open_registry().db.execute("select params from lineage").fetchone()
    assert json.loads(edge[0])["job"] == ok["job"]
