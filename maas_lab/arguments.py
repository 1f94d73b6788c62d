"""Typed words to plugin options: the one parser for options click cannot know in advance.

An exporter's, compressor's or launcher's options come from its schema at run time, so the
commands that take them (``export``, ``compress``, ``distill``, ``launch``) read them here,
by the schema's types: a ``bool`` option is a flag (``--structured``, ``--structured false``,
``--no-structured``), any other takes one value (``--sparsity 0.5`` or ``--sparsity=0.5``).
Words after ``--`` are never options (``launch`` hands them to the script).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import UsageError
from .hints import option

_BOOLS = {"1", "0", "true", "false", "yes", "no", "on", "off"}
_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_words(
    words: list[str],
    types: dict[str, str] | None,
    *,
    positionals: int = 0,
    after_dashes: bool = False,
    unknown: Callable[[str, str | None, list[str]], str] | None = None,
    unexpected: Callable[[str, list[str]], str] | None = None,
) -> tuple[dict[str, str], list[str], list[str]]:
    """``(options, positional words, words after --)``; option values stay strings (the
    schema converts them, so the CLI and the API refuse a value in the same words).

    ``types`` maps option names (``max_drop``) to their types; ``None`` when the schema is
    not known here (an unknown compressor: the API then says which exist), and every option
    takes the next word as its value unless it is another option. A yes/no option is also
    turned off as ``--no-name``. ``positionals`` is how many bare words may stand among the
    options; ``after_dashes`` whether ``--`` may end them. ``unknown(name, next word, bare
    words so far)`` and ``unexpected(word, bare words so far)`` word the errors for an option
    not in ``types`` and a bare word too many. An option given twice is refused: which one
    was meant is not ours to guess."""
    options: dict[str, str] = {}
    found: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if word == "--":
            if not after_dashes:
                raise UsageError("Unexpected `--`: this command takes no words after it.")
            return options, found, words[i + 1 :]
        if word.startswith("-") and not word.startswith("--") and not _NUMBER.fullmatch(word):
            raise UsageError(f"Unknown option {word!r}: options are spelled {option('name')}.")
        if not word.startswith("--"):
            if len(found) >= positionals:
                raise UsageError(
                    unexpected(word, found)
                    if unexpected
                    else f"Unexpected argument {word!r}: options look like "
                    f"{option('name', 'value')}."
                )
            found.append(word)
            i += 1
            continue
        name, eq, value = word[2:].partition("=")
        key = name.replace("-", "_")
        if not key:
            raise UsageError(
                f"Unexpected argument {word!r}: options look like {option('name', 'value')}."
            )
        kind = "str" if types is None else types.get(key)
        if kind is None and key.startswith("no_") and (types or {}).get(key[3:]) == "bool":
            if eq:
                raise UsageError(f"{option(key[3:])} is turned off as {option(key)} alone.")
            key, kind, eq, value = key[3:], "bool", "=", "false"
        if kind is None:
            raise UsageError(
                unknown(name, nxt, found)
                if unknown
                else f"No option {option(key)}. Options: "
                + (", ".join(option(k) for k in sorted(types)) or "none")
                + "."
            )
        if not eq:
            if kind == "bool":
                value = "true"
                if nxt is not None and nxt.lower() in _BOOLS:
                    value, i = nxt, i + 1
                elif nxt is not None and not nxt.startswith("-") and len(found) >= positionals:
                    raise UsageError(f"{option(key)} expects true or false, got {nxt!r}.")
            elif types is None and (nxt is None or nxt.startswith("--")):
                value = "true"  # no schema to tell: a bare option reads as a flag
            elif nxt is None or nxt.startswith("--"):
                raise UsageError(
                    f"{option(key)} needs a value (one that starts with two dashes goes after "
                    "an equals sign)."
                )
            else:
                value, i = nxt, i + 1
        if key in options:
            raise UsageError(f"{option(key)} is given twice: give it once.")
        options[key] = value
        i += 1
    return options, found, []
