"""The command lines and options that messages tell a person to type, generated.

A hint written by hand ("Run `maas fsck`", "see `maas logs NAME`") drifts when a command or
an option is renamed, and then tells the user to type something that fails. Every hint is
built by :func:`command` instead, and ``tests/test_hints.py`` checks each call in the source
against the real click commands: the name must be a command, every keyword one of its
options, and the line it makes must parse. Hints read as the user types: ``maas ...`` in a
shell, ``%maas ...`` in a notebook (the magic runs its command inside ``prog_scope``).

An option a message names is spelled by :func:`option`, as the person gave it: ``--max-drop
0.5`` under a command line (``maas`` or ``%maas``), ``max_drop=0.5`` in a Python call. The
layers under the API raise the same errors for both, so they never spell a flag by hand
(``tests/test_hints.py`` walks the source for one).

Imported by the lowest layers (registry, serving, launching), so it imports nothing of
maas_lab.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, copy_context

PROG: ContextVar[str] = ContextVar("maas_lab_prog", default="maas")
_UNSET = object()

# A metavar-style placeholder (FILE, FILE.safetensors, NAME[@VERSION|@ALIAS], KEY=VALUE...)
# is read, not pasted: it stays as written instead of being shell-quoted (or, in a Python
# spelling, repr'd).
_PLACEHOLDER = re.compile(
    r"[A-Z][A-Z0-9_]*(\.[a-z0-9]+)?(=[A-Z0-9_]+)?(\[[A-Z0-9_@|=.:]*\])*(\.\.\.)?"
)


@contextmanager
def prog_scope(prog: str | None) -> Iterator[None]:
    """Hints name ``prog`` (``"%maas"`` in the magic) inside this block. ``None`` (what
    :func:`typed` recorded for a plain Python call) changes nothing: a process that works
    for a command (a job's monitor, a server) spells options as that command was given."""
    if prog is None:
        yield
        return
    token = PROG.set(prog)
    try:
        yield
    finally:
        PROG.reset(token)


def typed() -> str | None:
    """The prog of the command line being run (set by :func:`prog_scope`), or None when no
    command is running: a plain Python call."""
    return PROG.get() if PROG in copy_context() else None


def flag_for(name: str) -> str:
    """The flag a keyword is typed as: ``max_batch`` is ``--max-batch``, ``with_`` ``--with``."""
    return "--" + name.rstrip("_").replace("_", "-")


def _word(value) -> str:
    text = str(value)
    return text if _PLACEHOLDER.fullmatch(text) else shlex.quote(text)


def command(name: str, /, *args, **options) -> str:
    """The command line ``PROG name args --options``, as plain text (callers add backticks).

    ``name`` may hold subcommand words (``"bundle import"``). A keyword is an option
    (``max_batch`` is ``--max-batch``; a trailing ``_`` is dropped, so ``with_`` is
    ``--with``): True is a bare flag, False or None leaves it out, a list or tuple repeats it.
    Values are shell-quoted where they need it.
    """
    words = [PROG.get(), *name.split(), *(_word(a) for a in args)]
    for key, value in options.items():
        flag = flag_for(key)
        if value is True:
            words.append(flag)
        elif value is not None and value is not False:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                words += [flag, _word(item)]
    return " ".join(words)


def command_with(name: str, args=(), options: dict | None = None) -> str:
    """``command(name, *args, **options)`` for a line whose words are only known at run
    time: what a panel's form (built from a schema) or a list of tags makes. The static
    check of tests/test_hints.py cannot read these calls, so tests/test_widgets.py builds
    every such line with sample values for every schema and parses it with the command."""
    return command(name, *args, **(options or {}))


def option(name: str, value=_UNSET, *, flag: str | None = None) -> str:
    """Option ``name`` (its Python name), with ``value`` if given, spelled as the person gave
    it: under a command line (:func:`typed` is not None) the flag, ``--max-drop`` /
    ``--max-drop 0.5`` (a value shell-quoted where it needs it; True alone is the bare flag,
    ``--allow-mismatch``; False its negation, ``--no-fuse``, for flags on by default); in
    Python the keyword, ``max_drop`` / ``max_drop=0.5`` (a string value as its repr, anything
    else as str()). ``flag`` is the CLI spelling when it is not the name's
    (``option("allow_hosts", flag="--allow-host")``; a Param passes its own, see
    ``Param.option``). A metavar-style placeholder value (``NAME``, ``FILE``, ``...``) is
    written as is in both.
    """
    if typed() is not None:
        text = flag or flag_for(name)
        if value is _UNSET or value is True:
            return text
        if value is False and text.startswith("--"):  # a flag that is on by default
            return f"--no-{text[2:]}"
        return f"{text} {_word(value)}"
    if value is _UNSET:
        return name
    if isinstance(value, str) and not _PLACEHOLDER.fullmatch(value) and value != "...":
        return f"{name}={value!r}"
    return f"{name}={value}"
