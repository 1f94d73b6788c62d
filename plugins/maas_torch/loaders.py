"""What the ``torch-factory``, ``torchscript`` and ``torch-export`` loaders do: build a
factory model (``module:callable`` through the core's trust check) and load its safetensors
weights, open a TorchScript archive or a ``torch.export`` program, and check each kind of
version before it is stored.

Imports torch only when a model is validated or loaded, so that the package (which imports
this module for its Component declarations) stays fast to discover.
A "torch" version's config is ``{"factory": "module:callable", "kwargs": {...}}``.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

from maas_lab.errors import BackendUnavailable, UsageError
from maas_lab.hints import option


def require_torch():
    """The ``torch`` module, or ``BackendUnavailable`` saying how to install it."""
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
            + f". Check {option('config')} against the model that produced the weights."
        )


def load_factory_model(checkout, options: dict):
    from . import sparse

    require_torch()
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
    torch = require_torch()
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
    require_torch()
    check_pt2(programs[0])


def load_pt2_module(checkout, options: dict):
    """The program as a callable module; its graph is ``.graph``, its code ``.code``."""
    from .pt2 import load_pt2

    require_torch()
    (path,) = [checkout.dir / f["name"] for f in checkout.files if f["name"].endswith(".pt2")]
    return load_pt2(path).module()
