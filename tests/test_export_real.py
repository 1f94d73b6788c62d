"""Exports of real models through the public API and the `maas export` command: what a user
gets (a new version with signature, parity and lineage) and what a user is refused."""

import textwrap

import numpy as np
import pytest
import torch

from maas_lab import api
from maas_lab.cli import run
from maas_lab.errors import UsageError
from maas_lab.testing import registry_snapshot

MODELS = textwrap.dedent(
    """
    import torch

    class Eigen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            h = self.lin(x)
            return torch.linalg.eigvalsh(h.T @ h).unsqueeze(0).expand(x.shape[0], -1)

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.lin(x)
            return -self.lin(x)

    def eigen():
        return Eigen()

    def branchy():
        return Branchy()
    """
)


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A module of the user's own, importable like one in a notebook's folder."""
    (tmp_path / "user_models.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def register_factory(tmp_path, name, factory, model):
    from safetensors.torch import save_file

    weights = tmp_path / f"{name}.safetensors"
    save_file(model.state_dict(), str(weights))
    return api.register(name, from_torch=factory, weights=weights, inputs=["x:float32:batch,4"])


@pytest.mark.slow
def test_digits_mlp_exports_to_every_format(maas_home, tiny_torch_model):
    api.register(
        "digits-mlp",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
        inputs=["input:float32:batch,8"],
    )
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    expected = tiny_torch_model["model"](torch.from_numpy(x)).detach().numpy()
    for number, to in enumerate(["onnx", "torchscript", "torch-export"], start=2):
        report = run(["export", "digits-mlp@1", "--to", to])
        info = report.data
        assert (info["ref"], info["format"]) == (f"digits-mlp@{number}", to)
        assert info["signature"]["inputs"][0]["shape"] == ["batch", 8]
        assert info["metrics"]["parity_max_abs_diff"] < 1e-5
        (edge,) = info["parents"]
        assert (edge["ref"], edge["operation"]) == ("digits-mlp@1", "export")
        ((name, out),) = api.runner(info["ref"]).infer({"input": x}).items()
        np.testing.assert_allclose(out, expected, atol=1e-5)
    history = api.history("digits-mlp")["versions"]
    assert [v["derived"] for v in history[1:]] == ["export from digits-mlp@1"] * 3


def test_unsupported_operator_is_named_and_registers_nothing(maas_home, user_models):
    import user_models as m

    register_factory(user_models, "eigen", "user_models:eigen", m.eigen())
    before = registry_snapshot(maas_home)
    with pytest.raises(UsageError) as err:
        api.export("eigen@1", "onnx", exporter="torchscript")
    message = str(err.value)
    assert "linalg_eigvalsh" in message and "torchscript exporter" in message
    assert "exporter='dynamo' or to='torch-export' or to='torchscript'" in message
    assert registry_snapshot(maas_home) == before


def test_data_dependent_control_flow_is_refused_through_the_api(maas_home, user_models):
    import user_models as m

    register_factory(user_models, "branchy", "user_models:branchy", m.branchy())
    before = registry_snapshot(maas_home)
    with pytest.raises(UsageError, match="control flow|data-dependent"):
        api.export("branchy@1", "torchscript")
    assert registry_snapshot(maas_home) == before


def test_a_format_no_exporter_makes_from_this_model(maas_home, tmp_path, tiny_torch_model):
    api.register(
        "digits-mlp",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
        inputs=["input:float32:batch,8"],
    )
    api.export("digits-mlp@1", "onnx")
    with pytest.raises(UsageError, match=r"No exporter makes 'torchscript' from format 'onnx'"):
        api.export("digits-mlp@2", "torchscript")
    with pytest.raises(UsageError, match=r"Exporters that take 'torch': onnx \(to onnx\)"):
        api.export("digits-mlp@1", "coreml")


@pytest.mark.slow  # the shared export, if no test made it before
def test_minilm_exports_to_onnx_with_sentence_embeddings(minilm_onnx):
    """What ``api.export`` returned for the run's shared MiniLM export (tests/conftest.py),
    made there as here: registered from the Hugging Face folder, exported with pooling."""
    report = minilm_onnx.export
    info = report.data
    assert info["format"] == "onnx" and info["task"] == "sentence-embedding"
    assert info["signature"]["outputs"] == [
        {"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", 384]}
    ]
    assert info["metrics"]["parity_min_cosine"] > 0.9999
    assert "tokenizer.json" in {f["name"] for f in info["files"]}
    assert "all-MiniLM-L6-v2" in info["card"]  # the card travels with the export
    text = str(report)
    assert "derived from  minilm@1  export" in text and "sentence_embedding" in text
