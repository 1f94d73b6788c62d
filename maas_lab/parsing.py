"""Values people type (sizes, KEY=VALUE pairs, JSON configs), read once for every front end."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import UsageError

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
            f"--config must be a JSON object, e.g. '{{\"hidden\": 256}}': {exc}."
        ) from None
    if not isinstance(value, dict):
        raise UsageError("--config must be a JSON object, e.g. '{\"hidden\": 256}'.")
    return value
