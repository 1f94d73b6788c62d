"""What a person types for ``maas predict`` turned into the request a model expects."""

from __future__ import annotations

import json

import numpy as np

from ..errors import UsageError


def predict_inputs(texts, json_values: str | None, array: str | None):
    given = [bool(texts), json_values is not None, array is not None]
    if sum(given) != 1:
        raise UsageError(
            "Give the input one way: sentences as arguments, --json '[...]', or "
            "--array NAME (a notebook variable or .npy file)."
        )
    if texts:
        return list(texts)
    if json_values is not None:
        try:
            values = json.loads(json_values)
        except ValueError as exc:
            raise UsageError(
                f"--json is not valid JSON ({exc}); e.g. --json '[0.5, 1, 2]'."
            ) from None
        return _rectangular(values, "--json")
    from .. import datasets

    found, value = datasets.notebook_variable(array)
    if found:
        return _rectangular(value, f"--array {array}")
    if str(array).endswith(".npy"):
        try:
            return np.load(array, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"Cannot read {array}: {exc}.") from None
    raise UsageError(f"--array {array!r} is neither a notebook variable nor a .npy file.")


def _rectangular(values, what: str) -> np.ndarray:
    """An array from nested lists, or a usage error when the rows differ in length."""
    try:
        return np.asarray(values)
    except ValueError:
        raise UsageError(
            f"{what} is not rectangular: every row must have the same length "
            "(a batch of equal rows, e.g. [[0.5, 1], [2, 3]])."
        ) from None


def fit_to_model(metadata: dict, inputs):
    """A bare array for a one-input model: cast to its datatype, given a batch axis if it
    is one short. Sentences and dicts pass through unchanged."""
    if isinstance(inputs, dict) or not isinstance(inputs, np.ndarray):
        return inputs
    from .wire import numpy_dtype

    specs = [t for t in metadata.get("inputs", []) if t["name"] != "text"]
    if len(specs) != 1:
        names = ", ".join(t["name"] for t in specs)
        raise UsageError(f"The model takes several inputs ({names}); pass a dict of arrays.")
    spec = specs[0]
    if spec["datatype"] == "BYTES":
        return {spec["name"]: inputs}
    arr = inputs
    if arr.ndim == len(spec["shape"]) - 1:
        arr = arr[None, ...]
    return {spec["name"]: arr.astype(numpy_dtype(spec["datatype"]))}
