"""Realistic text inputs: real sentences through the model's own tokenizer.

Parity checks on random token ids miss what matters for text models (padding, varied
lengths, the attention mask), so runners that have a tokenizer offer these instead. Shared
with ``maas_onnx``, whose exports of text models carry the tokenizer files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Different lengths on purpose: a padded batch has masks with zeros in it.
SENTENCES = (
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Hi.",
    "Stock markets fell sharply today after the central bank raised interest rates again.",
    "Can you recommend a good book?",
    "The committee postponed its decision on the new bridge until engineers could confirm "
    "that the foundations would survive a once-in-a-century flood.",
    "I love this song.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
)


def load_tokenizer(folder: Path):
    """The folder's tokenizer, offline; ``None`` when it has none."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError):
        return None


def sentences(batch: int, start: int = 0) -> list[str]:
    return [SENTENCES[(start + i) % len(SENTENCES)] for i in range(batch)]


def tokenize(tokenizer, batch: int, names: list[str], start: int = 0) -> dict[str, np.ndarray]:
    """``batch`` sentences (from the ``start``-th) padded to the longest, as int64 arrays for
    the inputs in ``names`` (token type ids are zeros when the tokenizer makes none)."""
    from maas_lab.evaluation import tokenize as encode

    return encode(tokenizer, sentences(batch, start), names)


def mean_pool(hidden, mask):
    """Mean over the tokens the mask keeps, then L2 normalisation: what
    ``SentenceTransformer.encode`` does for all-MiniLM-L6-v2 (torch tensors in, out)."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed, p=2, dim=1)
