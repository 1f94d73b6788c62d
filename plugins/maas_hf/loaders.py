"""What the ``hf-transformers`` loader does: check a Hugging Face folder before it is stored,
and open it with transformers (offline, safetensors only) as an :class:`HFModel`.

transformers (and torch) are imported only when a folder is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from maas_lab.errors import BackendUnavailable, UsageError


class HFModel:
    """A transformers model with its tokenizer; ``encode`` for sentence embedders."""

    def __init__(self, model, tokenizer, pooling: dict | None, ref: str):
        self.model, self.tokenizer, self.pooling, self.ref = model, tokenizer, pooling, ref

    def __repr__(self) -> str:
        return f"<HFModel {self.ref}: {type(self.model).__name__}, pooling={bool(self.pooling)}>"

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def encode(self, sentences, batch_size: int = 32, normalize: bool = True):
        """Sentence embeddings as a float32 numpy array of shape (n, hidden)."""
        import numpy as np
        import torch

        if isinstance(sentences, str):
            sentences = [sentences]
        out = []
        with torch.inference_mode():
            for i in range(0, len(sentences), batch_size):
                batch = self.tokenizer(
                    list(sentences[i : i + batch_size]),
                    padding=True,
                    truncation=True,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out.append(emb.numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype="float32")


def validate_hf_folder(files: dict[str, Path], config: dict) -> None:
    if "config.json" not in files:
        raise UsageError("A Hugging Face folder needs config.json at its top level.")
    try:
        cfg = json.loads(files["config.json"].read_text())
    except ValueError as exc:
        raise UsageError(f"config.json is not valid JSON: {exc}.") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise UsageError("config.json has no model_type; is this a transformers model folder?")


def load_hf_folder(checkout, options: dict):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise BackendUnavailable(
            "Loading Hugging Face folders needs transformers: `pip install 'maas-lab[torch]'`."
        ) from None
    from transformers.utils import logging as hf_logging

    from maas_lab import progress

    folder = str(checkout.dir)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    if progress.libraries_quiet():  # off, or our own steps show the loading
        hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    model.eval()
    tokenizer = None
    if options["tokenizer"] and any(f["role"] == "tokenizer" for f in checkout.files):
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    pooling = None
    pooling_file = checkout.dir / "1_Pooling" / "config.json"
    if pooling_file.exists():
        pooling = json.loads(pooling_file.read_text())
    return HFModel(model, tokenizer, pooling, checkout.ref)
