"""Hugging Face encoders (format ``hf``) made exportable: a wrapper module that takes the token
tensors positionally and returns one tensor, with feeds to export with and cases to check on.

The wrapper is the same as the ONNX exporter's: inputs ``input_ids``, ``attention_mask`` and
``token_type_ids`` (the last only where the model and its tokenizer use it), int64 with dims
``batch`` and ``sequence``; output ``last_hidden_state`` or, with ``pooling="mean"``, mean
pooling over the attention mask and L2 normalisation baked in as ``sentence_embedding``
(what ``SentenceTransformer.encode`` gives for all-MiniLM-L6-v2). The tokenizer files and
``config.json`` travel with the export so that its runner can tokenize real sentences.

Checks: real sentences of varied lengths are exported with (padded, so the attention mask
holds zeros); the export is then compared with the eager model on other batch AND sequence
sizes, once padded and once unpadded (an all-ones mask is where transformers may take
another branch), and once padded on the left with a masked token among the real ones (a
fused attention that reads the mask as one length per row fails there), before anything is
returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maas_lab.components import tensor
from maas_lab.errors import UsageError
from maas_lab.hints import option

from .checked import Checked, Prepared
from .tensors import tensors

POOLINGS = ("none", "mean")
KEPT_ROLES = ("tokenizer", "config")
MAX_SEQUENCE = 512  # BERT-style position tables; the config's max_position_embeddings wins


def encoder_module(model, pooling: str):
    """``model`` (a transformers encoder) as a module ``forward(input_ids, attention_mask,
    token_type_ids=None) -> tensor``: hidden states, or pooled sentence embeddings."""
    import torch
    from maas_hf.text import mean_pool

    if pooling not in POOLINGS:
        raise UsageError(
            f"{option('pooling')} must be one of {', '.join(POOLINGS)}; got {pooling!r}."
        )
    pooled = pooling == "mean"

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.model(**kwargs).last_hidden_state
            return mean_pool(hidden, attention_mask) if pooled else hidden

    return Encoder(model).eval()


def max_sequence(config) -> int:
    """The longest sequence the model takes: its position table, else 512."""
    n = getattr(config, "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 1 else MAX_SEQUENCE


def _resize(feeds: dict, length: int, pad_id: int) -> dict:
    """``feeds`` cut or padded (pad id, mask 0, type 0) to ``length`` tokens."""
    out = {}
    for name, a in feeds.items():
        if a.shape[1] >= length:
            out[name] = np.ascontiguousarray(a[:, :length])
        else:
            fill = pad_id if name == "input_ids" else 0
            extra = np.full((a.shape[0], length - a.shape[1]), fill, dtype=a.dtype)
            out[name] = np.concatenate([a, extra], axis=1)
    return out


def _left_padded(feeds: dict, pad_id: int) -> dict:
    """``feeds`` (right-padded) with each row's padding moved to the front, and a gap in the
    first row's mask (a masked token among real ones): a client may send either, and a graph
    that reads the mask as one length per row (a fused attention can) gets them wrong."""
    mask = feeds["attention_mask"]
    out = {name: np.empty_like(a) for name, a in feeds.items()}
    for row, real in enumerate(mask.sum(1)):
        pad = mask.shape[1] - int(real)
        for name, a in feeds.items():
            fill = pad_id if name == "input_ids" else 0
            out[name][row] = np.concatenate([np.full(pad, fill, a.dtype), a[row, : int(real)]])
    first = np.flatnonzero(out["attention_mask"][0])
    if len(first) > 2:
        out["attention_mask"][0, first[len(first) // 2]] = 0
    return out


def text_feeds(tokenizer, names: list[str]) -> tuple[dict, list[dict]]:
    """Real sentences: feeds to export with (batch 2, padded), and check feeds at other batch
    and sequence sizes, one padded (batch 3) and one unpadded (batch 1), and the padded one
    padded on the left, with a gap."""
    from maas_hf.text import tokenize

    pad_id = tokenizer.pad_token_id or 0
    trace = tokenize(tokenizer, 2, names)
    length = trace["input_ids"].shape[1]
    padded = tokenize(tokenizer, 3, names, start=2)
    if padded["input_ids"].shape[1] == length:
        padded = _resize(padded, length + 1, pad_id)
    single = tokenize(tokenizer, 1, names, start=5)
    other = single["input_ids"].shape[1]
    while other in (length, padded["input_ids"].shape[1]) and other > 2:
        other -= 1  # cut, not padded: this case keeps an all-ones mask
    single = _resize(single, other, pad_id)
    return trace, [padded, single, _left_padded(padded, pad_id)]


def random_token_feeds(names: list[str], vocab: int) -> tuple[dict, list[dict]]:
    """Without a tokenizer: random ids, (batch, sequence) = (2, 8) to export with, and (3, 5)
    padded, (1, 6) unpadded and (3, 5) padded on the left, with a gap, to check on."""
    rng = np.random.default_rng(0)

    def feeds(batch, length, real):
        out = {}
        for n in names:
            if n == "input_ids":
                out[n] = rng.integers(0, vocab, (batch, length)).astype(np.int64)
            elif n == "attention_mask":
                out[n] = (np.arange(length)[None, :] < np.asarray(real)[:, None]).astype(np.int64)
            else:
                out[n] = np.zeros((batch, length), np.int64)
        return out

    padded = feeds(3, 5, [5, 3, 4])
    return feeds(2, 8, [8, 6]), [padded, feeds(1, 6, [6]), _left_padded(padded, 0)]


class HFPrepared(Checked):
    """A Hugging Face encoder wrapped by :func:`encoder_module`, with its signature, trace
    arguments and check cases; the same interface as ``checked.Prepared``, so the
    TorchScript, torch.export (and ONNX) exporters can take either."""

    def __init__(
        self, checkout, options: dict, what: str = "The exporter", eager_attention: bool = False
    ):
        import torch
        from maas_hf.loaders import load_hf_folder
        from maas_hf.runner import hidden_size, input_names

        pooling = options.get("pooling") or "none"
        hf = load_hf_folder(checkout, {"tokenizer": True})
        names = input_names(hf.model, hf.tokenizer)
        if eager_attention and hasattr(hf.model, "set_attn_implementation"):
            hf.model.set_attn_implementation("eager")  # graph optimizers match its ops
        self.model_config = hf.model.config
        self.ref, self.dir = checkout.ref, Path(checkout.dir)
        self.model = encoder_module(hf.model, pooling)
        self.max_sequence = max_sequence(hf.model.config)
        hidden = hidden_size(hf.model.config)
        self.inputs = [tensor(n, "int64", ["batch", "sequence"]) for n in names]
        self.outputs = [
            tensor("sentence_embedding", "float32", ["batch", hidden])
            if pooling == "mean"
            else tensor("last_hidden_state", "float32", ["batch", "sequence", hidden])
        ]
        self.output_names = [t["name"] for t in self.outputs]
        if hf.tokenizer is not None:
            trace, checks = text_feeds(hf.tokenizer, names)
        else:
            vocab = int(getattr(hf.model.config, "vocab_size", 2) or 2)
            trace, checks = random_token_feeds(names, vocab)
        self.trace_feeds = trace
        self.trace_args = tuple(torch.from_numpy(trace[n]) for n in names)
        with torch.no_grad():
            self.cases = [
                (feeds, {self.output_names[0]: self.model(*tensors(feeds)).float().numpy()})
                for feeds in checks
            ]
        self.config = {"exported_from": "hf", "pooling": pooling}
        self.keep = [f for f in checkout.files if f["role"] in KEPT_ROLES]
        self.tokenized = hf.tokenizer is not None

    def dynamic_shapes(self) -> tuple:
        """``Dim("batch")`` and ``Dim("sequence", max=...)`` shared by every input."""
        import torch

        batch = torch.export.Dim("batch")
        sequence = torch.export.Dim("sequence", max=self.max_sequence)
        return tuple({0: batch, 1: sequence} for _ in self.inputs)


def prepare(checkout, options: dict, what: str, eager_attention: bool = False):
    """The exporter's starting point for a version: :class:`HFPrepared` for ``hf``, else
    ``checked.Prepared`` (where ``pooling`` has no meaning). ``eager_attention`` traces an
    encoder's attention as the reference implementation rather than SDPA: onnxruntime's
    transformer fusions match the former's ops."""
    if checkout.format == "hf":
        return HFPrepared(checkout, options, what, eager_attention)
    if (options.get("pooling") or "none") != "none":
        raise UsageError(
            f"{option('pooling')} applies to Hugging Face text encoders (format hf); "
            f"{checkout.ref} is a {checkout.format} model. Leave {option('pooling')} at none."
        )
    return Prepared(checkout, options, what)
