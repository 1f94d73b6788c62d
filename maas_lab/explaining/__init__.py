"""Attributions for any version: which input features or tokens made an answer.

``explain(reg, ref, ...)`` is the capability the API, CLI, magic and server use; explainers
are plugins (``maas_explainers``: Captum's Integrated Gradients, occlusion, Kernel SHAP in
the built-in ``maas_captum``). See docs/explain.md.
"""

from .build import Setup, build
from .explain import (
    OverBudget,
    choose,
    explain,
    explainer_names,
    price,
    run_explainer,
    select_rows,
)
from .problem import Attribution, Layer, Problem
from .result import Explanation

__all__ = [
    "Attribution",
    "Explanation",
    "Layer",
    "OverBudget",
    "Problem",
    "Setup",
    "build",
    "choose",
    "explain",
    "explainer_names",
    "price",
    "run_explainer",
    "select_rows",
]
