"""Names and references: ``name`` (latest), ``name@3`` (version), ``name@prod`` (alias).

Every name that may become part of a path or a row is checked here, once, so that nothing a
user types can escape the registry root or collide with a device name on another OS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

# Always used with fullmatch: ``$`` (and ``match``) would accept a name ending in "\n".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
MAX_NAME = 128
RESERVED = {"latest"}
_DEVICES = {"con", "prn", "aux", "nul"} | {f"{d}{i}" for d in ("com", "lpt") for i in range(10)}


def _check(kind: str, value: str, pattern: re.Pattern, rule: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"A {kind} cannot be empty.")
    shown = value if len(value) <= 40 else value[:40] + "..."
    if len(value) > MAX_NAME:
        raise UsageError(
            f"{kind.capitalize()} {shown!r} is {len(value)} characters; the limit is {MAX_NAME}."
        )
    if not pattern.fullmatch(value) or ".." in value:
        raise UsageError(f"Invalid {kind} {shown!r}: {rule}")
    if value.split(".")[0].lower() in _DEVICES:
        raise UsageError(
            f"Invalid {kind} {value!r}: it is a reserved device name on Windows. Pick another."
        )
    return value


_DIGITS = re.compile(r"[0-9]+")


MAX_NUMBER = 2**63 - 1  # SQLite's largest integer: versions and job ids fit in it


def is_digits(text: str) -> bool:
    """ASCII digits only. Not ``str.isdigit()``: it takes '²' and other digits that ``int()``
    refuses, which turned a typed version into a traceback instead of an error."""
    return isinstance(text, str) and _DIGITS.fullmatch(text) is not None


def check_model_name(name: str) -> str:
    return _check(
        "model name",
        name,
        _NAME,
        "use letters, digits, '.', '_' or '-', starting with a letter or digit "
        "(no '/', '..', spaces or control characters).",
    )


def check_alias(alias: str) -> str:
    _check(
        "alias",
        alias,
        _KEY,
        "use letters, digits, '.', '_' or '-', starting with a letter (e.g. prod, staging).",
    )
    if alias.lower() in RESERVED:
        raise UsageError(f"{alias!r} is reserved: 'name' alone already means the latest version.")
    return alias


def check_key(kind: str, key: str) -> str:
    """Tag and metric keys: identifiers a person would type, never paths."""
    return _check(kind, key, _KEY, "use letters, digits, '.', '_' or '-', starting with a letter.")


@dataclass(frozen=True)
class Ref:
    """A parsed reference. Exactly one of ``version`` and ``alias`` is set, or neither."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str) -> Ref:
    """Parse ``name``, ``name@N`` or ``name@alias``; raise UsageError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("Give a model reference: name, name@VERSION or name@ALIAS.")
    name, sep, rest = text.strip().partition("@")
    check_model_name(name)
    if not sep:
        return Ref(name)
    if not rest:
        raise UsageError(f"{text!r} ends with '@': add a version number or alias, e.g. {name}@1.")
    if is_digits(rest):
        number = int(rest)
        if number < 1:
            raise UsageError(f"Version numbers start at 1; got {text!r}.")
        if number > MAX_NUMBER:
            raise UsageError(f"{text!r}: no version has so large a number.")
        return Ref(name, version=number)
    if rest.lower() == "latest":
        return Ref(name)
    return Ref(name, alias=check_alias(rest))


def check_relative_file_name(name: str) -> str:
    """A file name inside a version (e.g. ``1_Pooling/config.json``): relative, no escapes."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"File name {name!r} must be a plain relative path inside the model.")
    for part in parts:
        if any(ord(c) < 32 or ord(c) == 127 for c in part) or len(part) > 255:
            raise UsageError(
                f"File name {name!r} contains a control character or a part over 255 "
                "characters; rename the file."
            )
        if part.split(".")[0].lower() in _DEVICES:
            raise UsageError(f"File name {name!r} uses a reserved Windows device name.")
    return "/".join(parts)
