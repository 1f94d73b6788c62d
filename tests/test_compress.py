"""The compression core: datasets, side-by-side evaluation, budgets, distillation, and what a
failed or interrupted compression leaves behind (nothing)."""

import numpy as np
import pytest

from maas_lab import Component, api, datasets, hookimpl
from maas_lab.compression import parse_budget
from maas_lab.errors import BudgetError, Interrupted, UsageError
from maas_lab.testing import registry_snapshot

torch = pytest.importorskip("torch")


def train_digits(hidden=64, epochs=30, seed=0):
    from maas_lab.zoo import mlp

    torch.manual_seed(seed)
    train = datasets.load("sklearn:digits").split("train")
    model = mlp(hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    return model.eval()


@pytest.fixture
def digits(maas_home, tmp_path):
    from safetensors.torch import save_file

    model = train_digits()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    api.register(
        "digits",
        from_torch="maas_lab.zoo:mlp",
        config={"hidden": 64},
        weights=tmp_path / "w.safetensors",
        task="classification",
        inputs=["input:float32:batch,64"],
    )
    return model


class StopAfter(torch.nn.Module):
    """A student whose training the user interrupts (Ctrl-C) after a few steps."""

    def __init__(self, steps=5):
        super().__init__()
        self.net, self.steps = torch.nn.Linear(64, 10), steps

    def forward(self, x):
        if self.training:
            self.steps -= 1
            if self.steps < 0:
                raise KeyboardInterrupt
        return self.net(x)


def stop_after(steps=5):
    return StopAfter(steps)


# ---------------------------------------------------------------------- datasets


def test_dataset_specs(tmp_path):
    digits = datasets.load("sklearn:digits")
    assert digits.x.shape == (1797, 64) and digits.x.max() <= 1.0 and digits.labelled
    parts = [digits.split(p) for p in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 1797
    assert len(parts[2]) == 1797 // 4
    # stratified: every class is in the test split in about its share
    assert min(np.bincount(parts[2].y)) >= 40
    # the same rows every time
    assert np.array_equal(digits.split("test").y, datasets.load("sklearn:digits").split("test").y)
    assert len(datasets.load("builtin:sentences")) == 200
    np.savez(tmp_path / "d.npz", x=np.ones((10, 3)), y=np.arange(10))
    assert datasets.load(str(tmp_path / "d.npz")).x.dtype == np.float32
    (tmp_path / "s.txt").write_text("one\n\ntwo\n")
    assert datasets.load(str(tmp_path / "s.txt")).texts == ["one", "two"]
    assert datasets.load((np.zeros((4, 2)), np.array([0, 1, 0, 1]))).labelled
    assert datasets.load(["a b", "c"]).texts == ["a b", "c"]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("sklearn:mnist", "Bundled ones: sklearn:digits"),
        ("nowhere.npz", "neither a file nor a known dataset"),
        ("builtin:poems", "only builtin dataset"),
        ((np.zeros((4, 2)), np.zeros(3)), "x has 4 rows but y has 3"),
        ((np.zeros((4, 2)), np.zeros(4)), "integer class label"),
        ({"x": 1}, "cannot use a dict"),
    ],
)
def test_bad_dataset_specs_say_what_works(spec, message):
    with pytest.raises(UsageError, match=message):
        datasets.load(spec)


def test_npz_without_x_and_a_notebook_variable(tmp_path):
    np.savez(tmp_path / "bad.npz", features=np.ones((3, 2)))
    with pytest.raises(UsageError, match="it needs 'x'"):
        datasets.load(str(tmp_path / "bad.npz"))
    with datasets.notebook_scope({"rows": (np.ones((6, 2)), np.arange(6) % 2)}):
        assert datasets.load("rows").name == "rows"
    with pytest.raises(UsageError):
        datasets.load("rows")


def test_budget_parsing():
    assert parse_budget(["cosine=0.005", "accuracy=0.01"]) == {
        "cosine_mean": 0.005,
        "accuracy": 0.01,
    }
    for bad, message in [
        ("speed=1", "budgets can bound"),
        ("cosine=x", "needs a number"),
        ("cosine=1.5", r"in \[0, 1\)"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_budget([bad])


# ---------------------------------------------------------------------- evaluation


def test_compare_torch_and_onnx_side_by_side(digits):
    api.export("digits@1", "onnx")
    report = api.compare("digits@1", "digits@2", data="sklearn:digits", budget_s=0.2, log=True)
    rows = report.data["rows"]
    test = datasets.load("sklearn:digits").split("test")
    with torch.inference_mode():
        expected = (digits(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean()
    assert rows[0]["accuracy"] == pytest.approx(expected)
    assert rows[1]["accuracy"] == pytest.approx(expected)
    for r in rows:
        assert r["latency_ms"] > 0 and r["throughput"] > 0 and 0 < r["macro_f1"] <= 1
    assert rows[0]["size_bytes"] == api.show("digits@1")["size_bytes"]
    assert api.show("digits@2")["metrics"]["accuracy"] == pytest.approx(expected)  # --log
    assert "accuracy" in str(report) and "<img" in report._repr_html_()


def test_fidelity_without_labels_compares_against_the_first(digits):
    api.export("digits@1", "onnx")
    rows = api.compare("digits@1", "digits@2", budget_s=0.1).data["rows"]
    assert "cosine_mean" not in rows[0]
    assert rows[1]["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert rows[1]["cosine_min"] == pytest.approx(1.0, abs=1e-6)


def test_data_that_does_not_fit_the_model_is_named(digits):
    with pytest.raises(UsageError, match=r"rows are shaped \[4\].*takes \['batch', 64\]"):
        api.compare("digits@1", data="sklearn:iris", budget_s=0.1)


def test_a_third_party_evaluator_joins_the_report(digits, maas_plugins):
    def nonzero(subjects, context):
        return [{"nonzero": 7.0} for _ in subjects]

    class Params:
        @hookimpl
        def maas_evaluators(self, register):
            register(Component("nonzero", "A constant, to see it reported", run=nonzero))

    maas_plugins.register(Params(), "params")
    rows = api.compare("digits@1", budget_s=0.05).data["rows"]
    assert rows[0]["nonzero"] == 7.0


# ---------------------------------------------------------------------- distillation


def test_distill_registers_a_student_with_lineage(digits):
    report = api.distill(
        "digits@1",
        "maas_lab.zoo:mlp",
        config={"hidden": 16},
        data="sklearn:digits",
        epochs=15,
        budget_s=0.1,
    )
    info = api.show(report["ref"]).data
    assert info["format"] == "torch" and info["config"]["kwargs"] == {"hidden": 16}
    assert info["parents"][0]["operation"] == "distill"
    assert info["parents"][0]["ref"] == "digits@1"
    assert info["metrics"]["accuracy"] > 0.85
    assert info["size_bytes"] < api.show("digits@1")["size_bytes"] / 3
    model = api.load(report["ref"])
    assert sum(p.numel() for p in model.parameters()) == 64 * 16 + 16 + 16 * 10 + 10
    assert report.data["report"]["epochs_run"] <= 15


def test_distill_bad_input_leaves_the_registry_as_it_was(digits, maas_home, tmp_path):
    before = registry_snapshot(maas_home)
    cases = [
        (dict(config={"hidden": 16, "out_features": 5}), UsageError, r"outputs \[10\].*\[5\]"),
        (dict(config={"in_features": 8}), UsageError, "fails on rows shaped"),
        (dict(data="builtin:sentences"), UsageError, "needs labelled rows"),
        (dict(alpha=1.5), UsageError, "^alpha must be in"),
        (dict(processes=0), UsageError, "^processes must be at least 1"),
        (dict(config="{hidden: 3}"), UsageError, "JSON object"),
    ]
    for change, error, message in cases:
        kwargs = dict(config={"hidden": 16}, data="sklearn:digits", epochs=2, budget_s=0.05)
        kwargs.update(change)
        with pytest.raises(error, match=message):
            api.distill("digits@1", "maas_lab.zoo:mlp", **kwargs)
    with pytest.raises(Interrupted, match="nothing was registered"):
        api.distill("digits@1", "test_compress:stop_after", data="sklearn:digits", epochs=3)
    assert registry_snapshot(maas_home) == before


def test_over_budget_is_refused_unless_asked(digits, maas_home):
    before = registry_snapshot(maas_home)
    tiny = dict(config={"hidden": 2}, data="sklearn:digits", epochs=2, budget_s=0.05)
    with pytest.raises(BudgetError, match=r"accuracy dropped .* Best reached: accuracy 0\."):
        api.distill("digits@1", "maas_lab.zoo:mlp", max_drop=["accuracy=0.01"], **tiny)
    assert registry_snapshot(maas_home) == before
    report = api.distill(
        "digits@1", "maas_lab.zoo:mlp", max_drop=["accuracy=0.01"], allow_over_budget=True, **tiny
    )
    assert api.show(report["ref"])["tags"] == {"budget": "exceeded"}


def test_a_compressor_that_cannot_take_the_format_lists_those_that_can(digits):
    api.export("digits@1", "onnx")
    with pytest.raises(
        UsageError, match=r"'prune' takes torch versions, not \w+@\d+ \(onnx\).*: .*ort-int8"
    ):
        api.compress("digits@2", "prune")
    with pytest.raises(UsageError, match=r"No compressor named 'zip'.*prune"):
        api.compress("digits@1", "zip")
    with pytest.raises(UsageError, match="has no option colour"):
        api.compress("digits@1", "prune", colour="red")


def test_magic_and_cli_share_compare(digits, maas_shell):
    result = maas_shell.run_line_magic(
        "maas", "compare digits@1 --data sklearn:digits --budget-s 0.05"
    )
    assert result.data["rows"][0]["accuracy"] > 0.9


def test_compare_names_each_figure_and_records_it_unless_told_not_to(digits):
    """Each timing column says what it measured (batch-1 median latency, batch-32 rows/s);
    each speed-up sits beside, and is computed from, that same measurement; sizes read in
    MB; and the figures are recorded by default, so `recommend` right after can rank them."""
    from maas_lab.cli import run

    api.export("digits@1", "onnx")
    run(["compare", "digits@1", "digits@2", "--budget-s", "0.05", "--no-log"])
    assert "latency_ms" not in api.show("digits@2")["metrics"]  # opted out: nothing stored
    report = run(["compare", "digits@1", "digits@2", "--budget-s", "0.05"])
    text = str(report)
    for column in (
        "latency b1 ms (median)",
        "b1 speed-up",
        "throughput b32 rows/s",
        "b32 speed-up",
        "size",
    ):
        assert column in text, column
    assert "speed-up  " not in text.replace("b1 speed-up", "").replace("b32 speed-up", "")
    first, second = report.data["rows"]
    assert second["b1 speed-up"] == pytest.approx(first["latency_ms"] / second["latency_ms"])
    assert second["b32 speed-up"] == pytest.approx(second["throughput"] / first["throughput"])
    chart = report.parts[1][1]
    assert chart.series["size MB"] == pytest.approx(
        [r["size_bytes"] / 1e6 for r in (first, second)]
    )
    assert "size_bytes" not in chart.series
    ranked = api.recommend(sort="latency").rows
    assert {r["ref"] for r in ranked if r["latency_ms"]} == {"digits@1", "digits@2"}
    assert api.show("digits@2")["metrics"]["latency_ms"] == pytest.approx(second["latency_ms"])
