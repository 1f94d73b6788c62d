"""Parity: run a model and its export on the same inputs, and say how far apart they are.

An export that silently changes the numbers is worse than none, and an exporter's exit code
proves nothing (the dynamo exporter once wrote an invalid graph that exported "fine"). So
the core, not the plugin, runs both sides through their serving backends and compares.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ParityError

# Per output dtype: largest absolute difference, and smallest cosine between rows.
TOLERANCE = {
    "float64": {"atol": 1e-6, "min_cosine": 0.999999},
    "float32": {"atol": 1e-4, "min_cosine": 0.9999},
    "float16": {"atol": 1e-2, "min_cosine": 0.999},
    "bfloat16": {"atol": 5e-2, "min_cosine": 0.99},
}
DEFAULT_TOLERANCE = {"atol": 1e-3, "min_cosine": 0.999}
# Sizes given to named dims when inputs are generated; two sets with no value in common, so
# a model run on each shows which output dims follow which input dims.
DIM_SIZES = {"batch": 4, "sequence": 16, "*": 8}
OTHER_DIM_SIZES = {"batch": 3, "sequence": 11, "*": 5}


def feeds_from_signature(
    signature: dict, sizes: dict | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs for every tensor of a signature, with a fixed seed; named dims get ``sizes``
    (by name, ``"*"`` for any other name; default :data:`DIM_SIZES`)."""
    sizes = sizes or DIM_SIZES
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in signature["inputs"]:
        shape = [d if isinstance(d, int) else sizes.get(d, sizes["*"]) for d in spec["shape"]]
        dtype, name = np.dtype(spec["dtype"]), spec["name"]
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in name or dtype.kind == "b":
            feeds[name] = np.ones(shape, dtype=dtype)
        elif "type" in name:
            feeds[name] = np.zeros(shape, dtype=dtype)
        else:
            feeds[name] = rng.integers(0, 1000, size=shape).astype(dtype)
    return feeds


def pair_outputs(reference: dict, candidate: dict) -> list[tuple[str, str]]:
    """Outputs to compare: same names, or the only output of each side."""
    common = [n for n in reference if n in candidate]
    if common:
        return [(n, n) for n in common]
    if len(reference) == 1 and len(candidate) == 1:
        return [(next(iter(reference)), next(iter(candidate)))]
    raise ParityError(
        f"Cannot pair outputs {sorted(reference)} with {sorted(candidate)}: no common names."
    )


def compare(reference: dict, candidate: dict) -> dict[str, dict[str, Any]]:
    """Per output: max and mean absolute difference, mean and min cosine over batch rows."""
    figures = {}
    for ref_name, cand_name in pair_outputs(reference, candidate):
        a = np.asarray(reference[ref_name], dtype=np.float64)
        b = np.asarray(candidate[cand_name], dtype=np.float64)
        if a.shape != b.shape:
            raise ParityError(
                f"Output {cand_name!r} has shape {list(b.shape)}; the parent's {ref_name!r} has "
                f"{list(a.shape)}."
            )
        rows_a, rows_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        norms = np.linalg.norm(rows_a, axis=1) * np.linalg.norm(rows_b, axis=1)
        cos = np.where(norms > 0, (rows_a * rows_b).sum(1) / np.maximum(norms, 1e-300), 1.0)
        figures[cand_name] = {
            "dtype": str(np.asarray(candidate[cand_name]).dtype),
            "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
            "mean_abs_diff": float(np.abs(a - b).mean()) if a.size else 0.0,
            "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min()),
        }
    return figures


def violations(
    figures: dict, atol: float | None = None, min_cosine: float | None = None
) -> list[str]:
    """What is beyond tolerance (defaults per dtype, overridden by the arguments)."""
    problems = []
    for name, f in figures.items():
        limits = {**TOLERANCE.get(f["dtype"], DEFAULT_TOLERANCE)}
        if atol is not None:
            limits["atol"] = atol
        if min_cosine is not None:
            limits["min_cosine"] = min_cosine
        if f["max_abs_diff"] > limits["atol"]:
            problems.append(f"{name}: max abs diff {f['max_abs_diff']:.3g} > {limits['atol']:g}")
        if f["min_cosine"] < limits["min_cosine"]:
            problems.append(f"{name}: min cosine {f['min_cosine']:.6f} < {limits['min_cosine']:g}")
    return problems


def output_specs(inputs: list[dict], run: Any) -> list[dict]:
    """Output tensors of a model, from two runs on generated inputs of different sizes: a dim
    that moves with an input's named dim takes its name, one that moves otherwise is
    ``dim_<i>``, one that stays put is that number."""
    from .components import tensor

    signature = {"inputs": inputs, "outputs": []}
    first = run(feeds_from_signature(signature, DIM_SIZES))
    second = run(feeds_from_signature(signature, OTHER_DIM_SIZES))
    names = {d for t in inputs for d in t["shape"] if isinstance(d, str)}

    def size(sizes: dict, name: str) -> int:
        return sizes.get(name, sizes["*"])

    specs = []
    for name, a in first.items():
        b = np.asarray(second[name])
        shape = []
        for i, (x, y) in enumerate(zip(np.shape(a), b.shape, strict=True)):
            if x == y:
                shape.append(int(x))
                continue
            moved = [
                n for n in sorted(names) if (size(DIM_SIZES, n), size(OTHER_DIM_SIZES, n)) == (x, y)
            ]
            shape.append(moved[0] if len(moved) == 1 else f"dim_{i}")
        specs.append(tensor(name, str(np.asarray(a).dtype), shape))
    return specs
