"""Values people type (sizes, KEY=VALUE pairs, JSON configs), read once for every front end."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import UsageError
from .hints import option
from .registry.refs import is_digits

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_size(text: str | int | float) -> int:
    """``30MB`` -> 30_000_000, ``30MiB`` -> 31_457_280, plain numbers are bytes."""
    if isinstance(text, int | float):
        return int(text)
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"Cannot read size {text!r}; write e.g. 30MB, 512kB or 1.5GiB.")
    unit = (m.group(2) or "").lower()
    base = unit.rstrip("b").rstrip("i")
    factor = _UNITS[base] if "i" not in unit else 1024 ** " kmgt".index(base or " ")
    return int(float(m.group(1)) * factor)


def parse_pairs(items, what: str = "tag", numeric: bool = False) -> dict[str, Any]:
    """``["k=v", "flag"]`` (or a dict) -> ``{"k": "v", "flag": ""}``."""
    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if numeric and not sep:
            raise UsageError(f"Write {what}s as name=value, e.g. accuracy=0.97; got {item!r}.")
        out[key] = value.strip()
    return out


def parse_config(config: str | dict | None) -> dict:
    if config is None or isinstance(config, dict):
        return dict(config or {})
    try:
        value = json.loads(config)
    except ValueError as exc:
        raise UsageError(
            f"{option('config')} must be a JSON object, e.g. '{{\"hidden\": 256}}': {exc}."
        ) from None
    if not isinstance(value, dict):
        raise UsageError(f"{option('config')} must be a JSON object, e.g. '{{\"hidden\": 256}}'.")
    return value


_DTYPES = {
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
}


def parse_inputs(items) -> list[dict]:
    """``["input:float32:batch,64"]`` -> signature inputs; a dim is a number or a name."""
    from .components import tensor

    out = []
    for item in [items] if isinstance(items, str) else items:
        name, dtype, dims = (list(str(item).split(":")) + ["", ""])[:3]
        if not name or dtype not in _DTYPES or not dims:
            raise UsageError(
                f"{option('inputs', flag='--input')} {item!r} should be NAME:DTYPE:DIMS, e.g. "
                f"input:float32:batch,64 (dtypes: {', '.join(sorted(_DTYPES))})."
            )
        shape = [int(d) if is_digits(d.strip()) else d.strip() for d in dims.split(",")]
        if any(d == "" for d in shape):
            raise UsageError(f"{option('inputs', flag='--input')} {item!r} has an empty dimension.")
        out.append(tensor(name, dtype, shape))
    return out


def parse_signature(value: str | dict) -> dict:
    """A whole signature, as a dict or JSON: ``{"inputs": [...], "outputs": [...]}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise UsageError(f"{option('signature')} is not valid JSON: {exc}.") from None
    ok = isinstance(value, dict) and all(
        isinstance(value.get(k), list)
        and all(isinstance(t, dict) and {"name", "dtype", "shape"} <= set(t) for t in value[k])
        for k in ("inputs", "outputs")
    )
    if not ok:
        raise UsageError(
            f"{option('signature')} must look like "
            '{"inputs": [{"name": "x", "dtype": "float32", '
            '"shape": ["batch", 64]}], "outputs": [...]}.'
        )
    return value
