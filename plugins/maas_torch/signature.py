"""Signatures for models that do not describe their own tensors (factory modules, TorchScript).

numpy only, no torch: ``maas_onnx`` uses these helpers too, and importing a plugin must stay
light. Exporters trace with one set of sizes for the named (dynamic) dims and check with
another, so that a dim the export froze shows up as a failure instead of a wrong answer.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from maas_lab.components import tensor
from maas_lab.errors import UsageError
from maas_lab.hints import option
from maas_lab.registry.refs import is_digits

# Sizes given to named dims: TRACE when exporting, CHECK to prove the export stayed dynamic.
# Both avoid 0 and 1, which tracers are allowed to specialise on.
TRACE_SIZES = {"batch": 2, "sequence": 8}
CHECK_SIZES = {"batch": 3, "sequence": 5}
TRACE_OTHER, CHECK_OTHER = 4, 6

_DIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_shapes(shape_text: str, dtype_text: str = "float32") -> list[dict]:
    """Input tensors from ``--input_shape`` / ``--input_dtype`` ('batch,64;batch,8')."""
    shapes = [s.strip() for s in str(shape_text).split(";") if s.strip()]
    dtypes = [d.strip() for d in str(dtype_text or "float32").split(";") if d.strip()]
    if not shapes:
        raise UsageError(f"{option('input_shape')} is empty; give it like 'batch,64'.")
    if len(dtypes) == 1:
        dtypes = dtypes * len(shapes)
    if len(dtypes) != len(shapes):
        raise UsageError(
            f"{option('input_dtype')} gives {len(dtypes)} dtypes for {len(shapes)} inputs; give "
            "one, or one per input separated by ';'."
        )
    out = []
    for i, (text, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
        dims: list[Any] = []
        for part in (p.strip() for p in text.split(",")):
            if is_digits(part) and int(part) > 0:
                dims.append(int(part))
            elif _DIM_NAME.fullmatch(part):
                dims.append(part)
            else:
                raise UsageError(
                    f"{option('input_shape')} {text!r}: {part!r} is neither a positive size nor "
                    "a dim name (letters, digits, '_'); write it like 'batch,64'."
                )
        try:
            dtype = np.dtype(dtype).name
        except TypeError:
            raise UsageError(
                f"{option('input_dtype')} {dtype!r} is not a numpy dtype name."
            ) from None
        name = "input" if len(shapes) == 1 else f"input_{i}"
        out.append(tensor(name, dtype, dims))
    return out


def resolve_signature(checkout, options: dict, what: str) -> dict:
    """The stored signature, else one from ``input_shape``; outputs may be empty (unknown).

    ``what`` names the component in the error, which says how to give the shape.
    """
    stored = getattr(checkout, "signature", None) or (checkout.config or {}).get("signature")
    if stored and stored.get("inputs"):
        return {"inputs": list(stored["inputs"]), "outputs": list(stored.get("outputs") or [])}
    if options.get("input_shape"):
        return {
            "inputs": parse_shapes(options["input_shape"], options.get("input_dtype")),
            "outputs": [],
        }
    raise UsageError(
        f"{what} needs the model's input shape: {checkout.ref} has no stored signature. Give "
        f"it with {option('input_shape')}, e.g. {option('input_shape', 'batch,64')} (and "
        f"{option('input_dtype')} if not float32), or register the version with a signature."
    )


def concrete(shape: list, batch: int, sizes: dict, other: int) -> list[int]:
    """A shape with its named dims replaced by sizes (``batch`` by ``batch``)."""
    out = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        elif d == "batch":
            out.append(batch)
        else:
            out.append(sizes.get(d, other))
    return out


def random_feeds(
    inputs: list[dict], batch: int, sizes: dict | None = None, other: int = 4, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded inputs for a signature: normal floats; ones for masks; 0/1 for integer inputs,
    which are valid indices for any embedding table."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = concrete(spec["shape"], batch, sizes or {}, other)
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in spec["name"]:
            feeds[spec["name"]] = np.ones(shape, dtype=dtype)
        elif dtype.kind == "b":
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def trace_and_check_feeds(inputs: list[dict]) -> tuple[dict, dict, dict]:
    """Feeds to export with, feeds to check the export on, and the check sizes per dim name."""
    trace = random_feeds(inputs, TRACE_SIZES["batch"], TRACE_SIZES, TRACE_OTHER, seed=0)
    check = random_feeds(inputs, CHECK_SIZES["batch"], CHECK_SIZES, CHECK_OTHER, seed=1)
    return trace, check, dim_sizes(inputs, check)


def dim_sizes(inputs: list[dict], feeds: dict) -> dict[str, int]:
    """Named dim -> its size in ``feeds``."""
    sizes = {}
    for spec in inputs:
        for d, n in zip(spec["shape"], np.shape(feeds[spec["name"]]), strict=False):
            if isinstance(d, str):
                sizes.setdefault(d, int(n))
    return sizes


def outputs_from_runs(first: dict, first_sizes: dict, second: dict, second_sizes: dict) -> list:
    """Output signature from two runs at different dim sizes: a dim that moved with an input's
    named dim takes its name; a dim that moved otherwise is ``dim_<axis>``."""
    out = []
    for name, a in first.items():
        b = second[name]
        dims: list[Any] = []
        for axis, (n1, n2) in enumerate(zip(np.shape(a), np.shape(b), strict=False)):
            if n1 == n2:
                dims.append(int(n1))
                continue
            named = [d for d in first_sizes if first_sizes[d] == n1 and second_sizes.get(d) == n2]
            dims.append("batch" if "batch" in named else (named[0] if named else f"dim_{axis}"))
        out.append(tensor(name, np.asarray(a).dtype.name, dims))
    return out


def check_feeds(inputs: list[dict], feeds: dict, who: str) -> dict[str, np.ndarray]:
    """The feeds a model takes, in signature order, with safe dtype casts; clear errors for
    missing inputs, wrong ranks or fixed sizes. Extra feeds are ignored, so one set of
    feeds can serve a model and its export even when one takes an input the other dropped."""
    missing = [s["name"] for s in inputs if s["name"] not in feeds]
    if missing:
        expected = ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in inputs)
        raise UsageError(f"{who} needs inputs {', '.join(missing)}; it takes {expected}.")
    out = {}
    for spec in inputs:
        value = np.asarray(feeds[spec["name"]])
        want = np.dtype(spec["dtype"])
        if value.dtype != want:
            if not np.can_cast(value.dtype, want, "same_kind"):
                raise UsageError(
                    f"{who}: input {spec['name']!r} is {value.dtype}; the model takes {want}."
                )
            value = value.astype(want)
        shape = spec["shape"]
        if value.ndim != len(shape) or any(
            isinstance(d, int) and d != n for d, n in zip(shape, value.shape, strict=True)
        ):
            raise UsageError(
                f"{who}: input {spec['name']!r} has shape {list(value.shape)}; the model takes "
                f"{shape} (named dims are free)."
            )
        out[spec["name"]] = np.ascontiguousarray(value)
    return out


def max_abs_diff(expected: dict, got: dict) -> float:
    """Largest absolute difference over outputs matched by position (names may differ)."""
    if len(expected) != len(got):
        return float("inf")
    worst = 0.0
    for a, b in zip(expected.values(), got.values(), strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        if a.size:
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def tolerance(expected: dict) -> float:
    """What an export may differ from eager by: scaled to the outputs' magnitude."""
    scale = max((float(np.abs(v).max()) for v in expected.values() if np.size(v)), default=1.0)
    return 1e-4 * max(1.0, scale)
