"""Structured pruning: whole neurons (Linear) or channels (Conv) removed, layers rebuilt smaller.

Which layers can shrink is read from the model's structure, never guessed: inside an
``nn.Sequential`` (nested ones are flattened), a producer (``Linear``, or ``Conv1d/2d/3d``
with ``groups=1``) whose outputs reach the next layer of the same kind only through
element-wise modules (activations, ``Dropout``, ``Identity``), ``BatchNorm`` and, between
convolutions, pooling, may lose outputs: the consumer loses the matching inputs and the
BatchNorm the matching features. Anything else after a producer (``Flatten``, a custom
module, ``LayerNorm``, the end of the chain, whose outputs go who knows where) keeps that
producer whole, and the plan says why. The model's final layer is never narrowed.

A pruned version is stored like any torch version: config ``{"factory":
"maas_torch.structured:rebuild", "kwargs": {"base": <original factory>, "base_kwargs":
{...}, "widths": {producer path: outputs kept}}}`` and safetensors weights of the smaller
model. :func:`rebuild` builds the original model and swaps in the narrower layers, so the
result loads, exports and serves everywhere a torch version does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from maas_lab.errors import UsageError
from maas_lab.hints import option

FACTORY = "maas_torch.structured:rebuild"
SUPPORTED = (
    "nn.Sequential chains (nested allowed) of Linear, or Conv1d/2d/3d with groups=1, joined by "
    "element-wise activations (ReLU, GELU, Tanh, ...), Dropout, Identity, BatchNorm and, "
    "between convolutions, pooling"
)


@dataclass
class Link:
    """A producer whose outputs can shrink, the BatchNorms after it, and its one consumer."""

    producer: str
    consumer: str
    norms: list[str] = field(default_factory=list)
    width: int = 0


def _elementwise():
    from torch import nn

    return (
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Sigmoid,
        nn.Tanh,
        nn.Hardtanh,
        nn.Hardswish,
        nn.Hardsigmoid,
        nn.Softplus,
        nn.Softsign,
        nn.Tanhshrink,
        nn.LogSigmoid,
        nn.Threshold,
        nn.Identity,
        nn.modules.dropout._DropoutNd,
    )


def _pools():
    from torch.nn.modules import pooling

    return (
        pooling._MaxPoolNd,
        pooling._AvgPoolNd,
        pooling._AdaptiveAvgPoolNd,
        pooling._AdaptiveMaxPoolNd,
    )


def _kind(module) -> str | None:
    """``linear`` or ``conv<N>d`` for a layer this module can narrow, else ``None``."""
    from torch import nn

    if type(module) is nn.Linear:
        return "linear"
    for n, cls in ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)):
        if type(module) is cls and module.groups == 1:
            return f"conv{n}d"
    return None


def _width(module, side: str) -> int:
    if _kind(module) == "linear":
        return module.out_features if side == "out" else module.in_features
    return module.out_channels if side == "out" else module.in_channels


def _name(module) -> str:
    return type(module).__name__


def _norm_for(kind: str):
    from torch import nn

    return {
        "linear": nn.BatchNorm1d,
        "conv1d": nn.BatchNorm1d,
        "conv2d": nn.BatchNorm2d,
        "conv3d": nn.BatchNorm3d,
    }[kind]


def _is_chain(module) -> bool:
    """An ``nn.Sequential`` that runs as one (a subclass with its own ``forward``, e.g. a
    residual block, is a module this pruner cannot see into)."""
    from torch import nn

    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _chains(model) -> list[list[tuple[str, object]]]:
    """Every ``nn.Sequential``'s layers in order (nested Sequentials flattened), including
    Sequentials inside other modules; the model's own chain first when it is one."""

    chains: list = []

    def flatten(seq, prefix, out):
        for name, child in seq.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if _is_chain(child):
                flatten(child, path, out)
            else:
                out.append((path, child))
                walk(child, path)

    def walk(module, prefix):
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if _is_chain(child):
                chain: list = []
                flatten(child, path, chain)
                chains.append(chain)
            else:
                walk(child, path)

    if _is_chain(model):
        top: list = []
        flatten(model, "", top)
        chains.insert(0, top)
    else:
        walk(model, "")
    return chains


def plan(model) -> tuple[dict[str, Link], list[str]]:
    """The producers whose outputs can be removed, and notes on the layers kept whole."""
    from torch import nn

    uses = defaultdict(list)
    for path, module in model.named_modules(remove_duplicate=False):
        uses[id(module)].append(path)
    shared = {i for i, paths in uses.items() if len(paths) > 1}
    links: dict[str, Link] = {}
    notes: list[str] = []
    chained = set()
    chains = _chains(model)
    for number, chain in enumerate(chains):
        is_model = number == 0 and _is_chain(model)
        for i, (path, module) in enumerate(chain):
            kind = _kind(module)
            if kind is None:
                continue
            chained.add(path)
            if id(module) in shared:
                notes.append(f"{path}: the same module is used at several places; kept whole")
                continue
            width = _width(module, "out")
            norms: list[str] = []
            for later_path, later in chain[i + 1 :]:
                if type(later) is _norm_for(kind) and later.num_features == width:
                    if id(later) in shared:
                        notes.append(f"{path}: followed by shared {later_path}; kept whole")
                        break
                    norms.append(later_path)
                    continue
                if isinstance(later, _elementwise()) or (
                    isinstance(later, nn.PReLU) and later.num_parameters == 1
                ):
                    continue
                if kind != "linear" and isinstance(later, _pools()):
                    continue
                if _kind(later) == kind and _width(later, "in") == width:
                    if id(later) in shared:
                        notes.append(f"{path}: feeds shared {later_path}; kept whole")
                    else:
                        links[path] = Link(path, later_path, norms, width)
                    break
                notes.append(
                    f"{path} ({_name(module)}) feeds {later_path} ({_name(later)}), which this "
                    "pruner cannot follow; kept whole"
                )
                break
            else:
                if is_model:
                    notes.append(f"{path}: the model's output layer; kept whole")
                else:
                    notes.append(
                        f"{path}: its outputs leave the nn.Sequential (the next step is outside "
                        "it); kept whole"
                    )
    for path, module in model.named_modules():
        if path and _kind(module) and path not in chained:
            notes.append(
                f"{path} ({_name(module)}): not in a plain nn.Sequential chain; kept whole"
            )
    return links, notes


def _get(model, path: str):
    return model.get_submodule(path)


def _set(model, path: str, module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _narrowed(old, n_in: int, n_out: int):
    """A fresh layer like ``old`` with ``n_in`` inputs and ``n_out`` outputs."""
    from torch import nn

    dtype, device = old.weight.dtype, old.weight.device
    if isinstance(old, nn.Linear):
        return nn.Linear(n_in, n_out, bias=old.bias is not None, device=device, dtype=dtype)
    return type(old)(
        n_in,
        n_out,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=1,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=device,
        dtype=dtype,
    )


def _narrowed_norm(old, n: int):
    return type(old)(
        n,
        eps=old.eps,
        momentum=old.momentum,
        affine=old.affine,
        track_running_stats=old.track_running_stats,
        device=None if old.weight is None else old.weight.device,
    )


def apply(model, links: dict[str, Link], keep: dict[str, object], copy: bool = True) -> None:
    """Narrow ``model`` in place: ``keep`` maps a producer to the indices (a LongTensor) of
    the outputs it keeps, or to a count when ``copy`` is false (fresh layers, for loading)."""
    import torch

    out_idx: dict[str, object] = {}
    in_idx: dict[str, object] = {}
    norms: dict[str, object] = {}
    for producer, kept in keep.items():
        link = links[producer]
        out_idx[producer] = kept
        in_idx[link.consumer] = kept
        for norm in link.norms:
            norms[norm] = kept

    def count(kept):
        return kept if isinstance(kept, int) else int(kept.numel())

    for path in sorted(set(out_idx) | set(in_idx)):
        old = _get(model, path)
        o, i = out_idx.get(path), in_idx.get(path)
        n_out = _width(old, "out") if o is None else count(o)
        n_in = _width(old, "in") if i is None else count(i)
        new = _narrowed(old, n_in, n_out)
        if copy:
            with torch.no_grad():
                w = old.weight
                if o is not None:
                    w = w.index_select(0, o)
                if i is not None:
                    w = w.index_select(1, i)
                new.weight.copy_(w)
                if old.bias is not None:
                    new.bias.copy_(old.bias if o is None else old.bias.index_select(0, o))
        new.train(old.training)
        _set(model, path, new)
    for path, kept in norms.items():
        old = _get(model, path)
        new = _narrowed_norm(old, count(kept))
        if copy:
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean", "running_var"):
                    src, dst = getattr(old, name), getattr(new, name)
                    if src is not None and dst is not None:
                        dst.copy_(src.index_select(0, kept))
                if old.num_batches_tracked is not None:
                    new.num_batches_tracked.copy_(old.num_batches_tracked)
        new.train(old.training)
        _set(model, path, new)


def importance(module):
    """L2 norm of each output neuron's or channel's incoming weights."""
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1).norm(dim=1)


def choose(model, links: dict[str, Link], amount: float) -> dict[str, object]:
    """Per producer, the outputs kept: the ``1 - amount`` share with the largest L2 norm
    (at least one), in their original order."""
    import torch

    keep = {}
    for path, link in links.items():
        scores = importance(_get(model, path))
        n_keep = max(1, link.width - int(round(amount * link.width)))
        if n_keep >= link.width:
            continue
        top = torch.topk(scores, n_keep).indices
        keep[path] = torch.sort(top).values
    return keep


def unsupported(model, notes: list[str]) -> str:
    why = "; ".join(notes[:5]) if notes else "it has no Linear or Conv layer"
    return (
        f"Structured pruning found no layer of {type(model).__name__} whose outputs it can "
        f"remove ({why}). It supports {SUPPORTED}; a layer is narrowed only when its one "
        "consumer is the next Linear/Conv in the same chain (the model's output layer never "
        f"is). Use unstructured pruning (leave {option('structured')} off) instead."
    )


def rebuild(base: str, base_kwargs: dict | None = None, widths: dict | None = None):
    """The model made by factory ``base(**base_kwargs)`` with the layers at the paths in
    ``widths`` narrowed to that many outputs (and their consumers and BatchNorms to match).
    Weights are fresh: the version's safetensors file holds the trained ones."""
    from .loaders import build

    if base == FACTORY:
        raise UsageError("rebuild's base must be the original factory, not rebuild itself.")
    model = build({"factory": base, "kwargs": base_kwargs or {}})
    links, _ = plan(model)
    widths = dict(widths or {})
    unknown = sorted(set(widths) - set(links))
    if unknown:
        raise UsageError(
            f"{FACTORY}: {', '.join(unknown)} are not layers of {base}({base_kwargs or {}}) "
            f"whose outputs can be narrowed (those are: {', '.join(links) or 'none'})."
        )
    for path, n in widths.items():
        if not isinstance(n, int) or not 1 <= n <= links[path].width:
            raise UsageError(
                f"{FACTORY}: width {n!r} for {path} must be an integer in 1..{links[path].width}."
            )
    apply(model, links, {p: n for p, n in widths.items() if n < links[p].width}, copy=False)
    return model


def base_of(config: dict) -> tuple[str, dict, dict]:
    """``(base factory, base kwargs, widths so far)`` of a version's config: a rebuilt
    version composes with its own base rather than nesting rebuilds."""
    kwargs = config.get("kwargs") or {}
    if config.get("factory") == FACTORY:
        widths = dict(kwargs.get("widths") or {})
        return kwargs["base"], dict(kwargs.get("base_kwargs") or {}), widths
    return config["factory"], dict(kwargs), {}
