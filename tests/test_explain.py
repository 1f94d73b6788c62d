"""Explaining, in process, on real versions: Integrated Gradients is complete within the
delta it reports; a feature the model cannot see gets nothing and a planted one comes first,
whatever the method; MiniLM's similarity to a target sentence is carried by its content
words, through torch (gradients) and through ONNX (runner only); and each mistake a user can
make is one line saying what would work."""

from __future__ import annotations

import numpy as np
import pytest

from maas_lab import api
from maas_lab.errors import UsageError
from maas_lab.explaining import OverBudget, explain

torch = pytest.importorskip("torch")
pytest.importorskip("captum")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("registry")
    patch.setenv("MAAS_LAB_HOME", str(root))
    patch.setenv("MAAS_LAB_PROGRESS", "0")
    yield root
    api.close_all()
    patch.undo()


def _register(name, model, config, inputs, work, task="classification"):
    from safetensors.torch import save_file

    weights = work / f"{name}.safetensors"
    save_file(model.eval().state_dict(), str(weights))
    return api.register(
        name,
        from_torch="maas_lab.zoo:mlp",
        config=config,
        weights=weights,
        task=task,
        inputs=[inputs],
    )["ref"]


@pytest.fixture(scope="module")
def digits(home, tmp_path_factory):
    """An MLP trained on the digits in seconds (full batches): a torch version."""
    from maas_lab.testing import trained_digits_mlp

    model, config = trained_digits_mlp()
    work = tmp_path_factory.mktemp("digits")
    return _register("digits", model, config, "input:float32:batch,64", work)


@pytest.fixture(scope="module")
def planted(home, tmp_path_factory):
    """An MLP over 8 features whose first layer has zero weights for feature 3 (it cannot
    see it) and weights 30 times the others' for feature 5 (the planted signal)."""
    from maas_lab.zoo import mlp

    torch.manual_seed(1)
    config = {"in_features": 8, "hidden": 16, "out_features": 2}
    model = mlp(**config)
    with torch.no_grad():
        first = model[0].weight
        first.mul_(0.1)
        first[:, 5] *= 30.0
        first[:, 3] = 0.0
    work = tmp_path_factory.mktemp("planted")
    ref = _register("planted", model, config, "input:float32:batch,8", work)
    x = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    x[:, 3] = 5.0  # large, and still worth nothing
    return {"ref": ref, "x": x}


def test_integrated_gradients_is_complete_within_its_reported_delta(digits):
    e = explain(api.registry(), digits, data="sklearn:digits", rows="0:4")
    assert e.explainer == "integrated-gradients" and e.options["steps"] == 50
    assert e.values.shape == (4, 64) and e.delta.shape == (4,)
    gap = e.scores - e.baseline_scores
    # Completeness: the attributions add up to the change of the explained class's output
    # between the blank image and the digit, up to the delta Captum reports...
    assert np.all(np.abs(e.values.sum(1) - gap) <= e.delta + 1e-6)
    # ...and that delta is small beside the change it explains.
    assert np.all(e.delta < 0.02 * np.abs(gap))
    assert e.labels == [0, 1, 2, 3]  # the predicted classes of the first four digits
    assert e.passes == 4 * 52  # 50 steps and the two ends, per row
    # Read as a person would: an 8 x 8 heat map per digit, beside the digit.
    assert e.grid == (8, 8)
    text = str(e)
    assert "row 3: class 3" in text and "delta" in text
    html = e._repr_html_()
    assert html.count("<td") == 4 * 2 * 64 and "0x" not in html
    row = e.to_dict()["rows"][0]
    assert row["label"] == 0 and len(row["attributions"]) == 64 and row["row"] == 0


@pytest.mark.parametrize("method", ["integrated-gradients", "occlusion", "kernel-shap"])
def test_an_unseen_feature_gets_nothing_and_the_planted_one_comes_first(planted, method):
    options = {"samples": 100} if method == "kernel-shap" else {}
    e = explain(api.registry(), planted["ref"], planted["x"], explainer=method, **options)
    assert e.explainer == method and e.values.shape == (6, 8)
    if method == "kernel-shap":  # a regression over samples: zero up to its fit
        assert np.all(np.abs(e.values[:, 3]) < 0.02 * np.abs(e.values).max(1))
    else:  # exactly: the model's output does not depend on it at all
        assert np.all(e.values[:, 3] == 0.0)
    assert [e.ranked(i)[0][0] for i in range(6)] == ["x[5]"] * 6
    assert str(e).splitlines()[2].split()[0] == "x[5]"  # a shell lists it first
    assert "<td>x[5]</td>" in e._repr_html_()


@pytest.mark.slow  # the export's parity checks
def test_occlusion_through_onnx_agrees_with_gradients_on_torch(digits):
    onnx_ref = api.export(digits, "onnx")["ref"]
    reg = api.registry()
    occluded = explain(reg, onnx_ref, data="sklearn:digits", rows="0:2")
    assert occluded.explainer == "occlusion" and occluded.delta is None
    assert occluded.passes == 2 * 65
    gradients = explain(reg, digits, data="sklearn:digits", rows="0:2")
    for i in range(2):  # different methods, the same pixels matter
        assert np.corrcoef(occluded.values[i], gradients.values[i])[0, 1] > 0.8
    with pytest.raises(UsageError) as err:
        explain(reg, onnx_ref, data="sklearn:digits", explainer="integrated-gradients")
    message = str(err.value)
    assert "gradients" in message and "occlusion" in message and "kernel-shap" in message


def test_mistakes_are_one_line_saying_what_works(digits, planted, tmp_path):
    reg = api.registry()
    with pytest.raises(UsageError, match="max_passes=-5: give the most rows"):
        explain(reg, digits, data="sklearn:digits", max_passes=-5)
    # a version registered without a signature: its runner would ask for an input shape
    from safetensors.torch import save_file

    from maas_lab.zoo import mlp

    save_file(mlp(hidden=8).state_dict(), tmp_path / "w.safetensors")
    bare = api.register(
        "bare",
        from_torch="maas_lab.zoo:mlp",
        config={"hidden": 8},
        weights=tmp_path / "w.safetensors",
    )["ref"]
    with pytest.raises(UsageError, match="takes no sentences.*--data|takes no sentences.*data="):
        explain(reg, bare, "hello world")
    with pytest.raises(UsageError, match="No explainer named 'lime'.*occlusion"):
        explain(reg, digits, data="sklearn:digits", explainer="lime")
    with pytest.raises(UsageError, match=r"rows=\(?'?0:4000'?\)? is out of range.*1797 rows"):
        explain(reg, digits, data="sklearn:digits", rows="0:4000")
    with pytest.raises(UsageError, match="not a row range"):
        explain(reg, digits, data="sklearn:digits", rows="first")
    # The shape it needs, named: digits rows (64 features) for a model of 8 features.
    with pytest.raises(UsageError, match=r"shaped \[64\].*takes \['batch', 8\]"):
        explain(reg, planted["ref"], data="sklearn:digits")
    with pytest.raises(UsageError, match="takes feature rows, not sentences"):
        explain(reg, digits, "A man is eating food.")
    with pytest.raises(UsageError, match="target"):
        explain(reg, digits, data="sklearn:digits", target="Someone has a meal.")
    with pytest.raises(UsageError, match="label=12 is out of range.*10 classes"):
        explain(reg, digits, data="sklearn:digits", label=12)
    with pytest.raises(OverBudget, match="would run the model on 5200 rows, over the limit"):
        explain(reg, digits, data="sklearn:digits", rows="0:100", max_passes=1000)
    with pytest.raises(UsageError, match="steps=0 must be at least 1"):
        explain(reg, digits, data="sklearn:digits", steps=0)
    with pytest.raises(UsageError, match="is not a class number"):
        explain(reg, digits, data="sklearn:digits", label="cat")
    with pytest.raises(UsageError, match="has no option"):
        explain(reg, digits, data="sklearn:digits", explainer="occlusion", steps=5)


@pytest.fixture(scope="module")
def minilm_home(minilm_onnx, tmp_path_factory):
    return minilm_onnx.copy_to(tmp_path_factory.mktemp("minilm") / "registry")


@pytest.fixture
def minilm(home, minilm_home, monkeypatch):
    """``minilm@1`` (the Hugging Face folder, torch), the test in a copy of the run's MiniLM
    registry (tests/conftest.py), where ``minilm@2`` is its ONNX export with mean pooling."""
    monkeypatch.setenv("MAAS_LAB_HOME", str(minilm_home))
    return "minilm@1"


SENTENCE, TARGET = "A man is eating food.", "Someone has a meal."


def _content_first(e):
    score = dict(e.ranked(0))
    top = e.ranked(0)[0][0]
    assert top in ("eating", "food"), e.ranked(0)
    assert min(score["eating"], score["food"]) > max(score["a"], score["."]), e.ranked(0)


@pytest.mark.slow
def test_minilm_similarity_is_carried_by_its_content_words(minilm):
    reg = api.registry()
    e = explain(reg, minilm, SENTENCE, target=TARGET)
    assert e.explainer == "integrated-gradients" and e.kind == "tokens"
    assert e.tokens[0] == ["[CLS]", "a", "man", "is", "eating", "food", ".", "[SEP]"]
    _content_first(e)
    assert e.delta[0] < 0.05 * abs(e.values[0].sum())
    html = e._repr_html_()
    assert html.count("<span") == 8 and "eating" in html
    assert "similarity to 'Someone has a meal.'" in str(e)
    with pytest.raises(UsageError, match="embeds sentences.*target"):
        explain(reg, minilm, SENTENCE)
    with pytest.raises(UsageError, match="takes sentences, not feature rows"):
        explain(reg, minilm, data="sklearn:digits")


@pytest.mark.slow
def test_minilm_through_onnx_without_gradients(minilm):
    onnx_ref = "minilm@2"  # minilm exported to ONNX with mean pooling
    assert api.show(onnx_ref)["format"] == "onnx"
    reg = api.registry()
    e = explain(reg, onnx_ref, SENTENCE, target=TARGET)
    assert e.explainer == "kernel-shap"  # the default for text without gradients
    _content_first(e)
    occluded = explain(reg, onnx_ref, SENTENCE, target=TARGET, explainer="occlusion")
    assert occluded.values.shape == (1, 8) and occluded.passes == 9
    assert abs(occluded.values[0][0]) < 1e-6 and abs(occluded.values[0][-1]) < 1e-6  # kept
