"""Built-in plugin: Hugging Face style model folders (config, safetensors, tokenizer).

Loading is offline only (``local_files_only``) and safetensors only (``use_safetensors``):
nothing is downloaded and no pickle is read. A folder with a sentence-transformers pooling
config (like all-MiniLM-L6-v2) gets ``encode()``, which reproduces
``SentenceTransformer.encode``: mean pooling over the attention mask, then L2 normalisation.
The ``hf`` serving backend (``runner.py``) gives the same as ``sentence_embedding``.

This module holds only the parameter schemas, the Component declarations and the hook
implementations; the loader lives in ``loaders`` (light: transformers is imported on use),
the runner in ``runner``. Modules of this package import downward only, never this one:
``__init__ -> loaders``, and on use ``runner``; ``runner -> loaders, text``.
"""

from __future__ import annotations

from maas_lab import Component, Param, hookimpl

# HFModel is re-exported, as load_hf_folder is: callers import them from the package.
from .loaders import HFModel as HFModel
from .loaders import load_hf_folder, validate_hf_folder

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"

__version__ = "0.1.0"


@hookimpl
def maas_loaders(register):
    register(
        Component(
            name="hf-transformers",
            description="Hugging Face folder via transformers, offline and safetensors-only",
            formats=("hf",),
            run=load_hf_folder,
            validate=validate_hf_folder,
            params=(Param("tokenizer", "bool", True, "also load the tokenizer if present"),),
        )
    )


def _run_hf(checkout, options):
    from .runner import run_hf

    return run_hf(checkout, options)


POOLING = Param(
    "pooling",
    "str",
    None,
    "mean: also output sentence_embedding (mean over the attention mask, L2-normalised); "
    "default mean if the folder's 1_Pooling/config.json says mean tokens, else none",
    choices=("none", "mean"),
)


@hookimpl
def maas_serving_backends(register):
    register(
        Component(
            name="hf",
            description="Hugging Face encoder on token ids: hidden states, sentence embeddings",
            formats=("hf",),
            run=_run_hf,
            params=(
                POOLING,
                Param("threads", "int", 0, "torch intra-op threads for the process; 0 keeps it"),
            ),
        )
    )
