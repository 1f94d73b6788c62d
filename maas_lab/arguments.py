"""Typed words to plugin options: the one parser for options click cannot know in advance.

An exporter's, compressor's or launcher's options come from its schema at run time, so the
commands that take them (``export``, ``compress``, ``distill``, ``launch``) read them here,
by the schema's types: a ``bool`` option is a flag (``--structured``, or ``--structured
false``), any other takes one value (``--sparsity 0.5`` or ``--sparsity=0.5``). Words after
``--`` are never options (``launch`` hands them to the script).
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import UsageError
from .hints import option

_BOOLS = {"1", "0", "true", "false", "yes", "no", "on", "off"}


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
    takes the next word as its value unless it is another option. ``positionals`` is how
    many bare words may stand among the options; ``after_dashes`` whether ``--`` may end
    them. ``unknown(name, next word, bare words so far)`` and ``unexpected(word, bare words
    so far)`` word the errors for an option not in ``types`` and a bare word too many."""
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
        if not word.startswith("--") or len(word) < 3:
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
        kind = "str" if types is None else types.get(key)
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
            elif types is None and (nxt is None or nxt.startswith("--")):
                value = "true"  # no schema to tell: a bare option reads as a flag
            elif nxt is None or nxt.startswith("--"):
                raise UsageError(f"{option(key)} needs a value.")
            else:
                value, i = nxt, i + 1
        options[key] = value
        i += 1
    return options, found, []
