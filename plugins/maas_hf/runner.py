"""Runner for Hugging Face folders: token ids in, hidden states (and sentence embeddings) out.

The names match what the ONNX exporter writes (``input_ids``, ``attention_mask``,
``token_type_ids``, ``last_hidden_state``, ``sentence_embedding``), so the core can feed a
model and its export the same arrays and compare outputs by name.
"""

from __future__ import annotations

import inspect

import numpy as np

from maas_lab.components import tensor


def default_pooling(pooling_config: dict | None) -> str:
    """``mean`` when the folder's sentence-transformers pooling config says mean tokens."""
    return "mean" if (pooling_config or {}).get("pooling_mode_mean_tokens") else "none"


def input_names(model, tokenizer) -> list[str]:
    """``token_type_ids`` only where the model takes it and the tokenizer (or, without one,
    the config's ``type_vocab_size``) says it is used."""
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        if tokenizer is not None:
            uses = "token_type_ids" in tokenizer.model_input_names
        else:
            uses = (getattr(model.config, "type_vocab_size", 0) or 0) > 0
        if uses:
            names.append("token_type_ids")
    return names


def hidden_size(config):
    for attr in ("hidden_size", "d_model", "dim"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    return "hidden"


class HFRunner:
    """A transformers encoder on numpy feeds, with optional mean pooling + L2 norm."""

    def __init__(self, hf, pooling: str, who: str):
        self.model, self.tokenizer, self.pooling, self.who = hf.model, hf.tokenizer, pooling, who
        hidden = hidden_size(self.model.config)
        names = input_names(self.model, self.tokenizer)
        outputs = [tensor("last_hidden_state", "float32", ["batch", "sequence", hidden])]
        if pooling == "mean":
            outputs.append(tensor("sentence_embedding", "float32", ["batch", hidden]))
        self.signature = {
            "inputs": [tensor(n, "int64", ["batch", "sequence"]) for n in names],
            "outputs": outputs,
        }

    def __repr__(self) -> str:
        return f"<HFRunner {self.who}: pooling={self.pooling}>"

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch
        from maas_torch.signature import check_feeds

        from .text import mean_pool

        arrays = check_feeds(self.signature["inputs"], feeds, self.who)
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        with torch.inference_mode():
            hidden = self.model(**tensors).last_hidden_state
            out = {"last_hidden_state": hidden.float().numpy()}
            if self.pooling == "mean":
                pooled = mean_pool(hidden, tensors["attention_mask"])
                out["sentence_embedding"] = pooled.float().numpy()
        return out

    def example_feeds(self, batch: int) -> dict[str, np.ndarray]:
        """Real sentences through the tokenizer; random ids when the folder has none."""
        names = [t["name"] for t in self.signature["inputs"]]
        if self.tokenizer is not None:
            from .text import tokenize

            return tokenize(self.tokenizer, batch, names)
        rng = np.random.default_rng(0)
        vocab = int(getattr(self.model.config, "vocab_size", 2) or 2)
        ids = rng.integers(0, vocab, size=(batch, 16)).astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return feeds


def run_hf(checkout, options: dict) -> HFRunner:
    from .loaders import load_hf_folder

    if options.get("threads"):
        import torch

        torch.set_num_threads(int(options["threads"]))
    hf = load_hf_folder(checkout, {"tokenizer": True})
    pooling = options.get("pooling") or default_pooling(hf.pooling)
    return HFRunner(hf, pooling, checkout.ref)
