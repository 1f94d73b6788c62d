"""What an explainer is handed and what it hands back.

A :class:`Problem` reduces every version to one number per row (the predicted class's
output, or a sentence's cosine similarity to a target sentence) as a function of a float
array ``x``: feature rows as they are, or for text one presence value per token (1 kept,
0 dropped from the attention). The same problem is offered two ways: ``score`` through the
version's runner (any format: ONNX, int8, torch), and, where the version has a torch module
with float weights, a differentiable ``torch_score`` (or, for text, ``layer``: the token
embedding module and a score of the token ids) for gradient methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Layer:
    """Text for gradient methods: token ``ids`` and ``baseline_ids`` (padding, the special
    tokens kept) as torch tensors, the embedding ``module``, and ``score(ids) -> [n]``,
    differentiable through that module."""

    ids: Any
    baseline_ids: Any
    module: Any
    score: Callable


@dataclass
class Problem:
    who: str
    format: str
    x: np.ndarray  # [rows, features] float
    baseline: np.ndarray  # [rows, features]
    score: Callable[[np.ndarray], np.ndarray]  # [n, features] -> [n], through the runner
    torch_score: Callable | None = None  # the same, differentiable (feature rows)
    layer: Layer | None = None  # text, differentiable through the token embeddings
    passes: int = 0  # rows the model was run on so far

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def features(self) -> int:
        return int(np.prod(self.x.shape[1:]))

    @property
    def gradients(self) -> bool:
        return self.torch_score is not None or self.layer is not None

    def count(self, fn: Callable, size: Callable = len) -> Callable:
        """``fn`` that adds the rows of each call to ``passes`` (what a budget counts)."""

        def counted(x, *args, **kwargs):
            self.passes += int(size(x))
            return fn(x, *args, **kwargs)

        return counted


@dataclass
class Attribution:
    """One value per feature of ``x`` (``[rows, features]``); ``delta`` where the method
    has one (Integrated Gradients: ``|sum(values) - (score(x) - score(baseline))|`` per
    row, how far it is from complete)."""

    values: np.ndarray
    delta: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
