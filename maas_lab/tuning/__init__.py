"""Hyper-parameter search on Optuna: studies stored beside the registry, trials in this
process or as recorded jobs, the best result registered with a ``tune`` lineage edge.

``functions.run_function`` tunes a ``train(params, report)`` function over a ``space(trial)``;
``compressors.run_compressor`` tunes a compressor's options, measured side by side with the
parent as ``compress`` measures; ``views`` lists and shows studies. Optuna is imported only
when one of these runs (it is the ``tune`` extra), so ``%load_ext maas_lab`` stays light.
"""

from __future__ import annotations

from .compressors import run_compressor
from .functions import run_function
from .views import describe, list_studies

__all__ = ["describe", "list_studies", "run_compressor", "run_function"]
