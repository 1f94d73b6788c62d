"""Numpy feeds as torch tensors, shared by the exporters (``checked``, ``hf``, ``exporters``)
and the ``torch-int8`` compressor. Imports torch only when called."""

from __future__ import annotations

import numpy as np


def tensors(feeds: dict) -> tuple:
    """``feeds``' arrays, in order, as (contiguous) torch tensors sharing their memory."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in feeds.values())
