"""Tests of `fp16`, used through maas_lab as a user does.

Each test works on a registry of its own (``maas_home``) and a model registered there by
a ``maas_lab.testing`` fixture, and checks what a user would see: the new version, its
files, its measured fidelity and its lineage.
"""

import numpy as np
import onnx
import pytest
import torch
from safetensors import safe_open

from maas_lab import api
from maas_lab.errors import UsageError
from maas_lab.testing import registry_snapshot

COMPRESSOR = "fp16"
DISTRIBUTION = "maas-fp16"


def dtypes(ref: str) -> dict[str, str]:
    """The stored dtype of each weight tensor of a torch version."""
    checkout = api.registry().checkout(ref)
    out = {}
    for path in checkout.by_role("weights"):
        with safe_open(str(path), framework="pt") as f:
            out.update({k: str(f.get_slice(k).get_dtype()) for k in f.keys()})
    return out


def test_the_plugin_is_found_through_its_entry_point(maas_plugins):
    comp = maas_plugins.get("compressor", COMPRESSOR)
    assert (comp.distribution, comp.version) == (DISTRIBUTION, "0.1.0")
    assert comp.formats == ("torch", "onnx")


def test_a_torch_version_is_stored_in_float16_at_half_the_size(tiny_torch_version):
    report = api.compress(tiny_torch_version, COMPRESSOR, max_drop="cosine=0.001", budget_s=0.1)
    new = api.show(report["ref"]).data
    assert new["format"] == "torch"
    assert set(dtypes(new["ref"]).values()) == {"F16"}
    done = report.data["report"]
    assert done["weight_bytes_after"] * 2 == done["weight_bytes_before"]
    assert done["tensors_cast"] == 4 and done["kept_float32"] == []
    # the file holds a header besides the weights: a tiny model is a bit over half
    assert new["size_bytes"] < 0.7 * api.show(tiny_torch_version)["size_bytes"]
    assert new["metrics"]["cosine_mean"] > 0.999  # measured by maas_lab, within budget
    (edge,) = new["parents"]
    assert (edge["ref"], edge["operation"]) == (tiny_torch_version, "compress")
    assert (edge["plugin"], edge["plugin_version"]) == (COMPRESSOR, "0.1.0")
    # it loads as a normal float32 torch model whose weights were rounded to float16
    model = api.load(new["ref"])
    original = api.load(tiny_torch_version)
    assert next(model.parameters()).dtype == torch.float32
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-2)


def test_an_onnx_version_runs_in_float16_with_float32_inputs_and_outputs(tiny_onnx_version):
    report = api.compress(tiny_onnx_version, COMPRESSOR, max_drop="cosine=0.001", budget_s=0.1)
    new = api.show(report["ref"]).data
    assert new["format"] == "onnx" and new["metrics"]["cosine_mean"] > 0.999
    checkout = api.registry().checkout(new["ref"])
    (path,) = [checkout.dir / f["name"] for f in checkout.files if f["name"].endswith(".onnx")]
    graph = onnx.load(str(path)).graph
    assert {t.data_type for t in graph.initializer} == {onnx.TensorProto.FLOAT16}
    done = report.data["report"]
    assert done["weight_bytes_after"] * 2 == done["weight_bytes_before"]
    runner = api.runner(new["ref"])
    out = runner.infer({"input": np.ones((2, 8), np.float32)})
    (value,) = out.values()
    assert value.dtype == np.float32 and value.shape == (2, 3)
    assert new["parents"][0]["plugin"] == COMPRESSOR


def test_keep_leaves_the_named_tensors_in_float32(tiny_torch_version):
    report = api.compress(tiny_torch_version, COMPRESSOR, keep="2.weight,2.bias", budget_s=0.1)
    stored = dtypes(report["ref"])
    assert stored == {"0.weight": "F16", "0.bias": "F16", "2.weight": "F32", "2.bias": "F32"}
    assert report.data["report"]["kept_float32"] == ["2.bias", "2.weight"]


def test_weights_beyond_float16_range_stay_float32(maas_home, tiny_torch_model, tmp_path):
    from safetensors.torch import save_file

    state = tiny_torch_model["model"].state_dict()
    state["2.bias"] = torch.tensor([1e5, -1e5, 0.0])
    save_file(state, str(tmp_path / "big.safetensors"))
    ref = api.register(
        "big",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tmp_path / "big.safetensors",
        inputs=["input:float32:batch,8"],
    )["ref"]
    report = api.compress(ref, COMPRESSOR, budget_s=0.1)
    assert report.data["report"]["kept_float32"] == ["2.bias"]
    assert dtypes(report["ref"])["2.bias"] == "F32"


def test_an_unknown_name_to_keep_is_refused_and_nothing_is_registered(
    tiny_torch_version, maas_home
):
    before = registry_snapshot(maas_home)
    with pytest.raises(UsageError, match="2.wieght.*0.bias"):
        api.compress(tiny_torch_version, COMPRESSOR, keep="2.wieght")
    assert registry_snapshot(maas_home) == before
