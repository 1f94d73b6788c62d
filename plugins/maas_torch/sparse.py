"""Sparse storage of pruned weights in safetensors: only the kept values and a bitmask.

A pruned weight ``W`` is stored as two tensors: ``<name>::values``, its non-zeros in C
order (1-D, the weight's dtype), and ``<name>::mask``, one bit per element of ``W``
(``numpy.packbits``, big bit order, C order, 1 = kept; the bits past the last element are
0). The dense shape of every sparse tensor is in the file's metadata (key ``maas_sparse``,
JSON) and in the version's config (``config["sparse"]``): ``{"format": "bitmask-v1",
"tensors": {name: shape}}``. Other tensors are stored as they are.

At 80% sparsity a float32 weight takes 20% x 4 bytes + 1/8 byte per element: 23% of dense.
Loading gives the ordinary dense state dict back, so every loader, runner and exporter that
builds from ``load_factory_model`` works on sparse versions unchanged. Nothing here trusts
the file: counts, lengths and shapes are checked before a tensor is rebuilt.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from maas_lab.errors import UsageError
from maas_lab.hints import command

FORMAT = "bitmask-v1"
META_KEY = "maas_sparse"
VALUES, MASK = "::values", "::mask"
# safetensors dtypes a sparse tensor's values may have
_VALUE_DTYPES = ("F16", "BF16", "F32", "F64")


def pack(weight) -> tuple:
    """``weight`` (a torch tensor) as ``(values, mask)``: its non-zeros and packed bitmask."""
    import torch

    flat = weight.detach().reshape(-1).cpu()
    keep = flat != 0
    mask = np.packbits(keep.numpy())
    return flat[keep].clone(), torch.from_numpy(mask)


def unpack(values, mask, shape, name: str = "tensor"):
    """The dense tensor of ``shape`` from its non-zero ``values`` and packed ``mask``."""
    import torch

    bits = _bits(mask, shape, name, int(values.numel()))
    dense = torch.zeros(bits.size, dtype=values.dtype)
    dense[torch.from_numpy(bits)] = values.reshape(-1).to("cpu")
    return dense.reshape(shape)


def _bits(mask, shape, name: str, n_values: int) -> np.ndarray:
    """The mask's bits as a bool array, after checking it fits ``shape`` and ``n_values``."""
    numel = math.prod(shape)
    packed = np.asarray(mask.cpu().numpy() if hasattr(mask, "cpu") else mask)
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (numel + 7) // 8:
        raise UsageError(
            f"Sparse tensor {name!r}: its mask is {packed.dtype} {list(packed.shape)}, but a "
            f"{FORMAT} mask of shape {list(shape)} is uint8 [{(numel + 7) // 8}]. The weights "
            "file is damaged or was not written by maas_torch."
        )
    bits = np.unpackbits(packed)
    if bits[numel:].any():
        raise UsageError(
            f"Sparse tensor {name!r}: its mask has bits set past the tensor's {numel} "
            "elements. The weights file is damaged or was edited."
        )
    bits = bits[:numel].astype(bool)
    kept = int(bits.sum())
    if kept != n_values:
        raise UsageError(
            f"Sparse tensor {name!r}: its mask marks {kept} kept weights (popcount) but "
            f"{n_values} values are stored. The weights file is damaged or was edited; "
            f"re-create it ({command('compress', 'REF', with_='prune')}) rather than loading it."
        )
    return bits


def save(state: dict, sparse_names, path: Path, metadata: dict | None = None) -> dict:
    """Write ``state`` to ``path``, the tensors in ``sparse_names`` as values + mask where that
    is smaller than dense. Returns the description stored in the file and the config
    (``{"format", "tensors": {name: shape}}``); ``tensors`` is empty when none was worth it."""
    from safetensors.torch import save_file

    out, shapes = {}, {}
    wanted = set(sparse_names)
    for name, tensor in state.items():
        if VALUES in name or MASK in name:
            raise ValueError(f"tensor name {name!r} clashes with the sparse suffixes")
        if name in wanted and tensor.is_floating_point():
            values, mask = pack(tensor)
            sparse_bytes = values.numel() * values.element_size() + mask.numel()
            if sparse_bytes < tensor.numel() * tensor.element_size():
                out[name + VALUES] = values.contiguous()
                out[name + MASK] = mask.contiguous()
                shapes[name] = list(tensor.shape)
                continue
        out[name] = tensor.detach().contiguous()
    spec = {"format": FORMAT, "tensors": shapes}
    meta = {**(metadata or {}), "format": "pt"}
    if shapes:
        meta[META_KEY] = json.dumps(spec, sort_keys=True)
    save_file(out, str(path), metadata=meta)
    return spec


def file_spec(path: Path) -> dict | None:
    """The sparse description in a safetensors file's metadata, or ``None``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get(META_KEY)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise UsageError(
            f"{Path(path).name}: its {META_KEY} metadata is not JSON; the file is damaged."
        ) from None


def resolve_spec(path: Path, config: dict | None) -> dict | None:
    """The sparse description that applies to ``path``: the config's and the file's, which
    must agree when both are present; ``None`` for a dense file. Checked for form."""
    stated = (config or {}).get("sparse")
    found = file_spec(path)
    if stated is not None and found is not None and _norm(stated) != _norm(found):
        raise UsageError(
            f"{Path(path).name}: the version's config describes sparse tensors "
            f"{sorted(stated.get('tensors', {}))} but the file's metadata describes "
            f"{sorted(found.get('tensors', {}))}. The weights and config do not belong together."
        )
    spec = stated if stated is not None else found
    if spec is None:
        return None
    kind = spec.get("format") if isinstance(spec, dict) else spec
    if kind != FORMAT:
        raise UsageError(
            f"{Path(path).name}: sparse format {kind!r} is not one this maas_torch reads "
            f"({FORMAT}). Upgrade the maas_torch plugin."
        )
    if not spec.get("tensors"):
        return None
    tensors = spec.get("tensors")
    if not isinstance(tensors, dict) or not all(
        isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s)
        for s in tensors.values()
    ):
        raise UsageError(
            f"{Path(path).name}: the sparse description must map tensor names to shapes "
            f"(lists of sizes); got {tensors!r}."
        )
    return spec


def _norm(spec) -> dict:
    if not isinstance(spec, dict):
        return {"spec": spec}
    tensors = {k: list(v) for k, v in (spec.get("tensors") or {}).items()}
    return {"format": spec.get("format"), "tensors": tensors}


def logical_shapes(path: Path, spec: dict | None) -> dict[str, list[int]]:
    """``{tensor name: dense shape}`` of the file, checking every sparse pair fully (names,
    dtypes, mask length, popcount against the number of values) without densifying."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
        sparse = (spec or {}).get("tensors") or {}
        for name, shape in sparse.items():
            missing = [k for k in (name + VALUES, name + MASK) if k not in keys]
            if missing:
                raise UsageError(
                    f"{Path(path).name}: sparse tensor {name!r} lacks {', '.join(missing)}. "
                    "The weights file is damaged or was edited."
                )
            if name in keys:
                raise UsageError(
                    f"{Path(path).name}: {name!r} is stored both dense and sparse; the file "
                    "is damaged or was edited."
                )
            values = f.get_slice(name + VALUES)
            if len(values.get_shape()) != 1 or values.get_dtype() not in _VALUE_DTYPES:
                raise UsageError(
                    f"{Path(path).name}: sparse tensor {name!r} has values "
                    f"{values.get_dtype()} {values.get_shape()}; they must be a 1-D float array."
                )
            _bits(f.get_tensor(name + MASK), shape, name, values.get_shape()[0])
            del shapes[name + VALUES], shapes[name + MASK]
            shapes[name] = list(shape)
    stray = sorted(k for k in shapes if VALUES in k or MASK in k)
    if stray:
        raise UsageError(
            f"{Path(path).name}: tensors {', '.join(stray[:5])} look sparse but no sparse "
            "description (config['sparse'] or the file's metadata) names them."
        )
    return shapes


def load(path: Path, config: dict | None = None, device: str = "cpu") -> dict:
    """The dense state dict of a (possibly sparse) safetensors file, checked."""
    from safetensors.torch import load_file

    spec = resolve_spec(path, config)
    state = load_file(str(path), device="cpu")
    if spec is not None:
        logical_shapes(path, spec)  # every pair checked before anything is rebuilt
        for name, shape in spec["tensors"].items():
            values, mask = state.pop(name + VALUES), state.pop(name + MASK)
            state[name] = unpack(values, mask, shape, name)
    if device != "cpu":
        state = {k: v.to(device) for k, v in state.items()}
    return state
