"""Built-in plugin: PyTorch models from a factory plus safetensors weights, TorchScript, and
``torch.export`` programs (.pt2); their runners, and exporters to TorchScript and .pt2 from
factory models and Hugging Face encoders (``hf.py``: token ids in, hidden states or pooled
sentence embeddings out, tokenizer files carried along).

This module holds only the parameter schemas, the Component declarations and the hook
implementations. Imports torch only when a model is validated or loaded, so ``%load_ext
maas_lab`` stays fast: the loaders and validators live in ``loaders`` (imported here, light),
the rest of the work in ``runners``, ``exporters``, ``prune``, ``quantize`` and ``distill``,
imported on use. Modules of this package import downward only, never this one:

    __init__ -> loaders, and on use runners, exporters, prune, quantize, distill
    quantize -> checked, exporters, hf, runners, tensors
    exporters -> checked, hf, tensors, pt2;  hf -> checked, tensors
    checked -> signature, tensors, and on use loaders, runners
    runners -> signature, and on use loaders, pt2
    prune -> loaders, sparse, structured;  distill, structured -> loaders
    loaders -> on use sparse, pt2

Across plugins, ``hf`` and ``runners`` use ``maas_hf`` (loaders, runner, text) on use.
A "torch" version's config is ``{"factory": "module:callable", "kwargs": {...}}``.
"""

from __future__ import annotations

from pathlib import Path

from maas_lab import Component, Param, hookimpl

from .loaders import (
    STRUCTURED_FACTORY,
    factory_code_refs,
    load_factory_model,
    load_pt2_module,
    load_torchscript,
    require_torch,
    validate_factory_model,
    validate_pt2,
    validate_torchscript,
)

# Re-exported: callers (and tests) import these from the package.
from .loaders import build as build
from .loaders import model_file as model_file
from .loaders import resolve_factory as resolve_factory

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"

__version__ = "0.1.0"


# Thin wrappers keep the heavy modules out of plugin discovery.
def _run_factory(checkout, options):
    from .runners import run_factory

    return run_factory(checkout, options)


def _run_torchscript(checkout, options):
    from .runners import run_torchscript

    return run_torchscript(checkout, options)


def _run_exported(checkout, options):
    from .runners import run_exported

    return run_exported(checkout, options)


def _export_torchscript(checkout, options, workdir):
    from .exporters import export_torchscript

    require_torch()
    return export_torchscript(checkout, options, Path(workdir))


def _export_program(checkout, options, workdir):
    from .exporters import export_program

    require_torch()
    return export_program(checkout, options, Path(workdir))


def _prune(checkout, options, workdir, context):
    from .prune import prune

    require_torch()
    return prune(checkout, options, Path(workdir), context)


def _quantize(checkout, options, workdir, context):
    from .quantize import quantize

    require_torch()
    return quantize(checkout, options, Path(workdir), context)


def _distill(checkout, options, workdir, context):
    from .distill import distill

    require_torch()
    return distill(checkout, options, Path(workdir), context)


DEVICE = Param("device", default="cpu", help="torch device to load onto, e.g. cpu or cuda:0")
THREADS = Param(
    "threads", "int", 0, "torch intra-op threads for the whole process; 0 leaves it as it is"
)
INPUT_SHAPE = Param(
    "input_shape",
    "str",
    None,
    "input shape when the version has no stored signature, e.g. 'batch,64' (named dims are "
    "dynamic; separate several inputs with ';')",
)
INPUT_DTYPE = Param(
    "input_dtype",
    "str",
    "float32",
    "numpy dtype of the input(s) given by --input_shape: one, or one per input with ';'",
)
POOLING = Param(
    "pooling",
    "str",
    "none",
    "hf text encoders: mean bakes mean pooling + L2 norm into the export (output "
    "sentence_embedding); none keeps last_hidden_state",
    choices=("none", "mean"),
)


@hookimpl
def maas_loaders(register):
    register(
        Component(
            name="torch-factory",
            description="PyTorch module built by an importable factory, weights from safetensors",
            formats=("torch",),
            run=load_factory_model,
            validate=validate_factory_model,
            params=(DEVICE,),
            code_refs=factory_code_refs,
            trusted_code=(STRUCTURED_FACTORY,),
        )
    )
    register(
        Component(
            name="torchscript",
            description="TorchScript archive loaded with torch.jit.load",
            formats=("torchscript",),
            run=load_torchscript,
            validate=validate_torchscript,
            params=(DEVICE,),
        )
    )
    register(
        Component(
            name="torch-export",
            description="torch.export program (.pt2), checked to hold no pickles or foreign code",
            formats=("torch-export",),
            run=load_pt2_module,
            validate=validate_pt2,
        )
    )


@hookimpl
def maas_serving_backends(register):
    register(
        Component(
            name="torch",
            description="Factory-built PyTorch module in inference mode",
            formats=("torch",),
            run=_run_factory,
            params=(DEVICE, THREADS, INPUT_SHAPE, INPUT_DTYPE),
        )
    )
    register(
        Component(
            name="torchscript",
            description="TorchScript archive in inference mode",
            formats=("torchscript",),
            run=_run_torchscript,
            params=(DEVICE, THREADS, INPUT_SHAPE, INPUT_DTYPE),
        )
    )
    register(
        Component(
            name="torch-export",
            description="torch.export program (.pt2) in inference mode, on CPU",
            formats=("torch-export",),
            run=_run_exported,
            params=(THREADS,),
        )
    )


@hookimpl
def maas_exporters(register):
    register(
        Component(
            name="torchscript",
            description="TorchScript by torch.jit.trace, refused if the trace does not generalise",
            formats=("torch", "hf"),
            produces="torchscript",
            run=_export_torchscript,
            params=(POOLING, INPUT_SHAPE, INPUT_DTYPE),
        )
    )
    register(
        Component(
            name="torch-export",
            description="torch.export program with dynamic named dims, saved as model.pt2",
            formats=("torch", "hf"),
            produces="torch-export",
            run=_export_program,
            params=(POOLING, INPUT_SHAPE, INPUT_DTYPE),
        )
    )


PRUNE_PARAMS = (
    Param(
        "sparsity",
        "float",
        0.5,
        "fraction of weights zeroed, smallest magnitude first, "
        "across all Linear/Conv layers (unstructured)",
    ),
    Param(
        "structured",
        "bool",
        False,
        "remove whole neurons/channels and rebuild smaller "
        "layers: smaller and faster (uses --amount)",
    ),
    Param(
        "amount",
        "float",
        0.5,
        "structured: fraction of each hidden layer's neurons or "
        "channels removed, lowest L2 norm first",
    ),
    Param(
        "storage",
        "str",
        "sparse",
        "unstructured: sparse stores only the kept weights and "
        "a bitmask; dense keeps zeros in place",
        choices=("sparse", "dense"),
    ),
    Param(
        "finetune_epochs",
        "int",
        0,
        "epochs of fine-tuning on --data after pruning (pruned weights stay zero)",
    ),
    Param(
        "finetune",
        "code",
        None,
        "module:callable(model, data) that fine-tunes the pruned "
        "model in place, instead of the built-in loop",
    ),
    Param("lr", "float", 1e-3, "learning rate of the built-in fine-tuning"),
)

QUANTIZE_PARAMS = (
    Param(
        "layers",
        "str",
        "linear",
        "module types quantized dynamically to int8",
        choices=("linear", "linear+lstm"),
    ),
    POOLING,
)

DISTILL_PARAMS = (
    Param(
        "student", "code", None, "importable factory of the student, module:callable", required=True
    ),
    Param("config", "str", "{}", "the student factory's keyword arguments, a JSON object"),
    Param("epochs", "int", 50, "most epochs; training stops earlier when validation stalls"),
    Param("temperature", "float", 4.0, "softens teacher and student outputs for the KD loss"),
    Param(
        "alpha",
        "float",
        0.5,
        "weight of the soft-target loss; 1-alpha goes to the labels (0 trains the student alone)",
    ),
    Param("lr", "float", 0.01, "Adam learning rate"),
    Param("batch_size", "int", 64, "rows per training step"),
    Param("patience", "int", 15, "epochs without a better validation accuracy before stopping"),
    Param("seed", "int", 0, "seed for initialisation and shuffling"),
    Param(
        "processes",
        "int",
        1,
        "train data-parallel on this many processes (a maas launch job through accelerate)",
    ),
)


@hookimpl
def maas_compressors(register):
    register(
        Component(
            name="prune",
            description="Magnitude pruning: sparse storage, or structured (smaller layers)",
            formats=("torch",),
            produces="torch",
            run=_prune,
            params=PRUNE_PARAMS,
        )
    )
    register(
        Component(
            name="torch-int8",
            description="torch dynamic int8 quantization of Linear (and LSTM) layers, saved "
            "as TorchScript",
            formats=("torch", "hf"),
            produces="torchscript",
            run=_quantize,
            params=QUANTIZE_PARAMS,
        )
    )
    register(
        Component(
            name="distill",
            description="Knowledge distillation from the version (teacher) into a student "
            "factory, on labelled data",
            formats=("torch", "torchscript", "torch-export", "onnx"),
            produces="torch",
            run=_distill,
            params=DISTILL_PARAMS,
            extra={"operation": "distill"},
        )
    )
