"""The protobuf text format, as far as Triton's ``config.pbtxt`` uses it: written and read.

We write configs from plain dicts and read them back to check what was written (and to take
in a repository someone else made). The subset: messages ``name { ... }``, scalar fields
``name: value`` with strings (double-quoted, backslash escapes), integers, floats, ``true``
/ ``false`` and enum identifiers (``TYPE_FP32``), list syntax ``name: [1, 2]``, repeated
fields by repetition, ``#`` comments, and maps written as repeated ``{ key: ... value:
{ ... } }`` entries (``parameters``). Enum identifiers are kept apart from strings by the
:class:`Enum` type, so what is read back compares equal to what was meant.

Without a schema the reader cannot tell a repeated field written once from a singular one:
:func:`loads` gives a list only where a field appears more than once or in ``[...]``, and
``repeated=`` names the fields to always read as lists.
"""

from __future__ import annotations

import json
import re

from ..errors import UsageError


class Enum(str):
    """An enum value (written bare: ``TYPE_FP32``), not a string (written quoted)."""

    def __repr__(self) -> str:
        return f"Enum({str(self)!r})"


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# ---------------------------------------------------------------------- writing


def dumps(message: dict) -> str:
    """``message`` as protobuf text: dict -> message, list -> repeated field, Enum -> bare."""
    lines: list[str] = []
    _write(message, lines, 0)
    return "\n".join(lines) + "\n"


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        if not _IDENT.match(value):
            raise ValueError(f"{value!r} is not an enum identifier")
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # the escapes protobuf text reads too
    raise TypeError(f"cannot write {type(value).__name__} in protobuf text")


def _write(message: dict, lines: list[str], depth: int) -> None:
    pad = "  " * depth
    for key, value in message.items():
        if not _IDENT.match(key):
            raise ValueError(f"{key!r} is not a field name")
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not any(isinstance(v, dict) for v in values):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in values)}]")
            continue
        for v in values:
            if isinstance(v, dict):
                lines.append(f"{pad}{key} {{")
                _write(v, lines, depth + 1)
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")


# ---------------------------------------------------------------------- reading

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[{}\[\]:,;<>])
    )""",
    re.VERBOSE,
)


def _tokens(text: str):
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            return
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise UsageError(f"config.pbtxt line {line}: cannot read {text[pos : pos + 20]!r}.")
        pos = m.end()
        if m.lastgroup != "comment":
            yield m.lastgroup, m.group(m.lastgroup)


def loads(text: str, repeated: tuple[str, ...] = ()) -> dict:
    """The message ``text`` holds, as dicts, lists, str, int, float, bool and :class:`Enum`.
    Raises ``UsageError`` naming the line of anything outside the subset."""
    tokens = list(_tokens(text))
    message, pos = _message(tokens, 0, set(repeated))
    if pos != len(tokens):
        raise UsageError(f"config.pbtxt: unexpected {tokens[pos][1]!r} at the top level.")
    return message


def _value(kind: str, text: str):
    if kind == "string":
        body = text[1:-1]
        if text[0] == "'":
            body = body.replace('"', '\\"').replace("\\'", "'")
        return json.loads(f'"{body}"')
    if kind == "number":
        return float(text) if any(c in text for c in ".eE") else int(text)
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    return Enum(text)


def _add(message: dict, key: str, value, repeated: set[str]) -> None:
    if key in message:
        old = message[key]
        message[key] = [*old, value] if isinstance(old, list) else [old, value]
    else:
        message[key] = [value] if key in repeated else value


def _message(tokens, pos: int, repeated: set[str], close: str | None = None):
    message: dict = {}
    while pos < len(tokens):
        kind, text = tokens[pos]
        if kind == "punct" and text == close:
            return message, pos + 1
        if kind == "punct" and text in ",;":
            pos += 1
            continue
        if kind != "ident":
            raise UsageError(f"config.pbtxt: expected a field name, found {text!r}.")
        key = text
        pos += 1
        colon = pos < len(tokens) and tokens[pos] == ("punct", ":")
        pos += colon
        if pos >= len(tokens):
            raise UsageError(f"config.pbtxt: {key} has no value.")
        kind, text = tokens[pos]
        if kind == "punct" and text in "{<":
            sub, pos = _message(tokens, pos + 1, repeated, "}" if text == "{" else ">")
            _add(message, key, sub, repeated)
        elif kind == "punct" and text == "[":
            pos += 1
            items = []
            while tokens[pos] != ("punct", "]"):
                k, t = tokens[pos]
                if k == "punct" and t in "{<":
                    sub, pos = _message(tokens, pos + 1, repeated, "}" if t == "{" else ">")
                    items.append(sub)
                    continue
                if k == "punct":
                    pos += 1 if t == "," else 0
                    if t != ",":
                        raise UsageError(f"config.pbtxt: unexpected {t!r} in the list {key}.")
                    continue
                items.append(_value(k, t))
                pos += 1
            pos += 1
            old = message.get(key, [])
            message[key] = [*(old if isinstance(old, list) else [old]), *items]
        elif kind == "punct":
            raise UsageError(f"config.pbtxt: {key} has no value.")
        elif not colon:
            raise UsageError(f"config.pbtxt: expected ':' after {key}.")
        else:
            _add(message, key, _value(kind, text), repeated)
            pos += 1
    if close is not None:
        raise UsageError("config.pbtxt: a message is not closed.")
    return message, pos
