"""Small, importable model factories for tutorials, tests and ``--student`` in distillation.

A torch version stores ``{"factory": "maas_lab.zoo:mlp", "kwargs": {...}}``, so these must stay
importable and keep their signatures: changing one changes every registered model that uses it.
"""

from __future__ import annotations


def mlp(
    in_features: int = 64,
    hidden: int = 128,
    out_features: int = 10,
    layers: int = 1,
    dropout: float = 0.0,
):
    """A ReLU multilayer perceptron: ``layers`` hidden layers of width ``hidden``."""
    from torch import nn

    if layers < 1 or hidden < 1:
        raise ValueError("mlp needs layers >= 1 and hidden >= 1")
    mods: list = []
    width = in_features
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            mods.append(nn.Dropout(dropout))
        width = hidden
    mods.append(nn.Linear(width, out_features))
    return nn.Sequential(*mods)
