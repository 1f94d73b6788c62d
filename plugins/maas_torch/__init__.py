"""Built-in plugin: PyTorch models from a factory plus safetensors weights, TorchScript, and
``torch.export`` programs (.pt2); their runners, and exporters to TorchScript and .pt2 from
factory models and Hugging Face encoders (``hf.py``: token ids in, hidden states or pooled
sentence embeddings out, tokenizer files carried along).

Imports torch only when a model is validated or loaded, so ``%load_ext maas_lab`` stays fast:
the work lives in ``runners``, ``exporters``, ``signature`` and ``pt2``, imported on use.
A "torch" version's config is ``{"factory": "module:callable", "kwargs": {...}}``.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

from maas_lab import Component, Param, hookimpl
from maas_lab.errors import BackendUnavailable, UsageError

__version__ = "0.1.0"


def _torch():
    try:
        import torch
    except ImportError:
        raise BackendUnavailable(
            "This needs PyTorch. Install it with `pip install 'maas-lab[torch]'`."
        ) from None
    return torch


STRUCTURED_FACTORY = "maas_torch.structured:rebuild"


def resolve_factory(ref: str):
    """Import ``module:callable`` through the core's trust check (``maas_lab.trust``): a
    reference nobody trusted (one that came with a bundle, say) is never imported."""
    from maas_lab import trust

    return trust.resolve(ref)


def factory_code_refs(config: dict) -> list[str]:
    """Every code reference a torch config makes ``build`` import: the factory, and the
    base factory a structured-pruned version rebuilds (``structured.py``)."""
    refs = [config.get("factory")]
    kwargs = config.get("kwargs")
    if config.get("factory") == STRUCTURED_FACTORY and isinstance(kwargs, dict):
        refs.append(kwargs.get("base"))
    bad = [r for r in refs if not isinstance(r, str) or not r]
    if bad:
        raise UsageError(
            "A torch version's config needs 'factory' (module:callable) and, for a "
            f"structured-pruned one, kwargs 'base'; got {config!r:.200}."
        )
    return refs


def build(config: dict):
    factory = config.get("factory")
    kwargs = config.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UsageError(f"Factory {factory!r}: its kwargs must be a JSON object, got {kwargs!r}.")
    fn = resolve_factory(factory)
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise UsageError(f"Factory {factory!r} rejected its config {kwargs!r}: {exc}.") from None


def validate_factory_model(files: dict[str, Path], config: dict) -> None:
    """Build the architecture and check the weights fit it, before anything is stored.

    Sparse weights (``sparse.py``: values + bitmask, described in ``config["sparse"]`` or
    the file's metadata) are checked pair by pair and compared by their dense shapes."""
    from . import sparse

    model = build(config)
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = [p for n, p in files.items() if n.endswith(".safetensors")]
    got = sparse.logical_shapes(weights[0], sparse.resolve_spec(weights[0], config))
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if wrong:
            parts.append(
                "shape mismatch " + ", ".join(f"{k} {got[k]} vs {expected[k]}" for k in wrong[:5])
            )
        raise UsageError(
            f"The weights do not fit {config.get('factory')}({config.get('kwargs') or {}}): "
            + "; ".join(parts)
            + ". Check --config against the model that produced the weights."
        )


def load_factory_model(checkout, options: dict):
    from . import sparse

    _torch()
    model = build(checkout.config)
    weights = checkout.by_role("weights")
    state = sparse.load(weights[0], checkout.config, device=options["device"])
    model.load_state_dict(state, strict=True)
    return model.to(options["device"]).eval()


def model_file(checkout, suffix: str) -> Path:
    """The version's model file: the one with role ``model`` (an export of a text model also
    carries tokenizer and config files), else the only file ending in ``suffix``, else the
    only file."""
    files = checkout.files
    chosen = [f for f in files if f.get("role") == "model"]
    if len(chosen) != 1:
        chosen = [f for f in files if f["name"].endswith(suffix)]
    if len(chosen) != 1 and len(files) == 1:
        chosen = list(files)
    if len(chosen) != 1:
        raise UsageError(
            f"{checkout.ref} has no single model file: {[f['name'] for f in files]} (expected "
            f"one with role 'model' or ending in {suffix})."
        )
    return checkout.dir / chosen[0]["name"]


def validate_torchscript(files: dict[str, Path], config: dict) -> None:
    path = next(iter(files.values()))  # the model comes first; any others travel with it
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        raise UsageError(f"{path.name} is not a TorchScript archive (not a zip file).") from None
    if not any("/code/" in n for n in names):
        raise UsageError(
            f"{path.name} is a torch.save archive, not TorchScript: it would need unpickling. "
            "Save it with torch.jit.script(model).save(path) or torch.jit.trace(...).save(path)."
        )


def load_torchscript(checkout, options: dict):
    torch = _torch()
    path = model_file(checkout, ".torchscript")
    with warnings.catch_warnings():  # torch.jit.load is deprecated, and still what opens it
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=options["device"]).eval()


def validate_pt2(files: dict[str, Path], config: dict) -> None:
    from .pt2 import check_pt2

    programs = [p for n, p in files.items() if n.endswith(".pt2")]
    if len(programs) != 1:
        raise UsageError(
            f"A torch-export version needs exactly one .pt2 file; got {len(programs)}."
        )
    _torch()
    check_pt2(programs[0])


def load_pt2_module(checkout, options: dict):
    """The program as a callable module; its graph is ``.graph``, its code ``.code``."""
    from .pt2 import load_pt2

    _torch()
    (path,) = [checkout.dir / f["name"] for f in checkout.files if f["name"].endswith(".pt2")]
    return load_pt2(path).module()


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

    _torch()
    return export_torchscript(checkout, options, Path(workdir))


def _export_program(checkout, options, workdir):
    from .exporters import export_program

    _torch()
    return export_program(checkout, options, Path(workdir))


def _prune(checkout, options, workdir, context):
    from .prune import prune

    _torch()
    return prune(checkout, options, Path(workdir), context)


def _quantize(checkout, options, workdir, context):
    from .quantize import quantize

    _torch()
    return quantize(checkout, options, Path(workdir), context)


def _distill(checkout, options, workdir, context):
    from .distill import distill

    _torch()
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
    ),  # fmt: skip
    Param(
        "structured",
        "bool",
        False,
        "remove whole neurons/channels and rebuild smaller "
        "layers: smaller and faster (uses --amount)",
    ),  # fmt: skip
    Param(
        "amount",
        "float",
        0.5,
        "structured: fraction of each hidden layer's neurons or "
        "channels removed, lowest L2 norm first",
    ),  # fmt: skip
    Param(
        "storage",
        "str",
        "sparse",
        "unstructured: sparse stores only the kept weights and "
        "a bitmask; dense keeps zeros in place",
        choices=("sparse", "dense"),
    ),  # fmt: skip
    Param(
        "finetune_epochs",
        "int",
        0,
        "epochs of fine-tuning on --data after pruning (pruned weights stay zero)",
    ),  # fmt: skip
    Param(
        "finetune",
        "code",
        None,
        "module:callable(model, data) that fine-tunes the pruned "
        "model in place, instead of the built-in loop",
    ),  # fmt: skip
    Param("lr", "float", 1e-3, "learning rate of the built-in fine-tuning"),
)

QUANTIZE_PARAMS = (
    Param(
        "layers",
        "str",
        "linear",
        "module types quantized dynamically to int8",
        choices=("linear", "linear+lstm"),
    ),  # fmt: skip
    POOLING,
)

DISTILL_PARAMS = (
    Param(
        "student", "code", None, "importable factory of the student, module:callable", required=True
    ),  # fmt: skip
    Param("config", "str", "{}", "the student factory's keyword arguments, a JSON object"),
    Param("epochs", "int", 50, "most epochs; training stops earlier when validation stalls"),
    Param("temperature", "float", 4.0, "softens teacher and student outputs for the KD loss"),
    Param(
        "alpha",
        "float",
        0.5,
        "weight of the soft-target loss; 1-alpha goes to the labels (0 trains the student alone)",
    ),  # fmt: skip
    Param("lr", "float", 0.01, "Adam learning rate"),
    Param("batch_size", "int", 64, "rows per training step"),
    Param("patience", "int", 15, "epochs without a better validation accuracy before stopping"),
    Param("seed", "int", 0, "seed for initialisation and shuffling"),
    Param(
        "processes",
        "int",
        1,
        "train data-parallel on this many processes (a `maas launch` job through accelerate)",
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
