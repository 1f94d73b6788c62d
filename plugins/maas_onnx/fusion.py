"""Transformer op fusion on export: onnxruntime's transformer optimizer rewrites a BERT-like
encoder's attention, layer norms and GELU, each exported as dozens of small ops, into its
fused ``com.microsoft`` ops (Attention, SkipLayerNormalization, EmbedLayerNormalization,
BiasGelu), which its CPU kernels run in one pass each.

Why it is done this way (measured on this machine, AMD EPYC with AVX2 only, 2 threads,
MiniLM, benchmarks/compression.py on a quiet machine, against torch fp32 eager in the same
run):

- The optimizer's patterns match the TorchScript-based exporter's graph of the *eager*
  attention. On the dynamo exporter's graph it fused only BiasGelu and LayerNormalization,
  no Attention; on SDPA attention it finds no Attention either; and its shape inference
  fails at opset 18 (TypeError), which leaves SkipLayerNormalization unfused. So a fused
  export traces the eager attention (the reference implementation; same outputs) through
  the TorchScript path at opset 17.
- What fusion bought: fp32 batch 1 x 32 tokens 1.78x -> 2.88x torch, batch 32 x 128
  0.99x -> 1.14x; per-channel int8 (smoothed) 2.20x -> 3.79x and 1.34x -> 1.74x, at the
  same fidelity (sentence cosine 0.9957 against 0.9957 unfused).
- The attention mask is kept as it is (``use_raw_attention_mask``): the optimizer's default
  reduces it to one length per row, which reads every row as right-padded, so left-padded or
  gapped masks attended to the padding (max abs diff 0.02 on a 2-layer BERT). No slower:
  946 ms against 987 ms at batch 32 x 128.
- ``opt_level=0``: only the Python fusions, so the file keeps standard ops elsewhere and runs
  on any onnxruntime build; the session applies its own optimisations when it loads.
- Which architectures: those the optimizer's ``bert`` model type covers (encoder-only,
  post-LayerNorm BERT blocks). MiniLM (a BERT) is the trained one shipped offline; small
  random BERT, DistilBERT, RoBERTa, XLM-R, CamemBERT and ELECTRA encoders all fused
  (Attention, SkipLayerNormalization, BiasGelu) and matched eager; MPNet's relative position
  bias keeps its attention unfused (SkipLayerNormalization and BiasGelu only). For any of
  them the export's checks, run on the fused graph, are what vouch for the result, and a
  fusion that fails them is dropped with the reason rather than shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Hugging Face model_type -> the optimizer's model type whose fusions fit its blocks.
FUSABLE = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "distilbert": "bert",
    "electra": "bert",
    "mpnet": "bert",
}
HEADS = ("num_attention_heads", "n_heads")
HIDDEN = ("hidden_size", "dim")


@dataclass
class Plan:
    """What the optimizer needs to know about the encoder."""

    model_type: str  # Hugging Face's
    optimizer_type: str
    heads: int
    hidden: int

    def describe(self) -> dict:
        return {
            "model_type": self.model_type,
            "optimizer_model_type": self.optimizer_type,
            "num_heads": self.heads,
            "hidden_size": self.hidden,
        }


def hf_config(checkout):
    """The transformers config of an ``hf`` version (its config.json only), else ``None``."""
    if checkout.format != "hf":
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(checkout.dir), local_files_only=True)
    except Exception:  # the loader will say what is wrong with the folder
        return None


def plan_for(config) -> tuple[Plan | None, str]:
    """The fusion plan for a model's transformers config, or ``None`` and why not."""
    model_type = getattr(config, "model_type", None) if config is not None else None
    if model_type is None:
        return None, "not a Hugging Face transformer encoder"
    if model_type not in FUSABLE:
        return None, (
            f"onnxruntime's transformer optimizer has no fusions for model_type {model_type!r} "
            f"(fused: {', '.join(sorted(FUSABLE))})"
        )
    heads = next((getattr(config, a) for a in HEADS if isinstance(getattr(config, a, 0), int)), 0)
    hidden = next((getattr(config, a) for a in HIDDEN if isinstance(getattr(config, a, 0), int)), 0)
    if not heads or not hidden:
        return None, f"its config names no attention head count or hidden size ({model_type})"
    return Plan(model_type, FUSABLE[model_type], heads, hidden), ""


def fuse(src: Path, folder: Path, plan: Plan, external: bool) -> dict[str, int]:
    """Write the fused graph of ``src`` to ``folder/model.onnx``; returns the fused op counts
    (those above zero). Raises if the optimizer fails."""
    import contextlib
    import io
    import logging

    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    folder.mkdir(parents=True)
    options = FusionOptions(plan.optimizer_type)
    # The 2-D attention mask as it is: by default the optimizer reduces it to one length per
    # row, which treats every row as right-padded (a left-padded or gapped mask then attended
    # to the padding: max abs diff 0.02 on a 2-layer BERT).
    options.use_raw_attention_mask(True)
    # it prints shape inference failures and logs a warning per pattern it skips; what was
    # fused is in the counts returned
    was = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = optimize_model(
                str(src),
                model_type=plan.optimizer_type,
                num_heads=plan.heads,
                hidden_size=plan.hidden,
                optimization_options=options,
                opt_level=0,
            )
        path = str(folder / "model.onnx")
        model.save_model_to_file(path, use_external_data_format=external)
    finally:
        logging.disable(was)
    # what is really onnxruntime's own op in the file (its statistics also count standard
    # LayerNormalization nodes, which opset 17 exports have anyway)
    counts: dict[str, int] = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
