"""The command lines that messages tell a person to type, generated from the command.

A hint written by hand ("Run `maas fsck`", "see `maas logs NAME`") drifts when a command or
an option is renamed, and then tells the user to type something that fails. Every hint is
built by :func:`command` instead, and ``tests/test_hints.py`` checks each call in the source
against the real click commands: the name must be a command, every keyword one of its
options, and the line it makes must parse. Hints read as the user types: ``maas ...`` in a
shell, ``%maas ...`` in a notebook (the magic runs its command inside ``prog_scope``).

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

# A metavar-style placeholder (FILE, NAME[@VERSION|@ALIAS], KEY=VALUE...) is read, not
# pasted: it stays as written instead of being shell-quoted.
_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(=[A-Z0-9_]+)?(\[[A-Z0-9_@|=.:]*\])*(\.\.\.)?")


@contextmanager
def prog_scope(prog: str) -> Iterator[None]:
    """Hints name ``prog`` (``"%maas"`` in the magic) inside this block."""
    token = PROG.set(prog)
    try:
        yield
    finally:
        PROG.reset(token)


def typed() -> str | None:
    """The prog of the command line being run (set by :func:`prog_scope`), or None when no
    command is running: a plain Python call."""
    return PROG.get() if PROG in copy_context() else None


def _word(value) -> str:
    text = str(value)
    return text if _PLACEHOLDER.fullmatch(text) else shlex.quote(text)


def command(name: str, *args, **options) -> str:
    """The command line ``PROG name args --options``, as plain text (callers add backticks).

    ``name`` may hold subcommand words (``"bundle import"``). A keyword is an option
    (``max_batch`` is ``--max-batch``; a trailing ``_`` is dropped, so ``with_`` is
    ``--with``): True is a bare flag, False or None leaves it out, a list or tuple repeats it.
    Values are shell-quoted where they need it.
    """
    words = [PROG.get(), *name.split(), *(_word(a) for a in args)]
    for key, value in options.items():
        flag = "--" + key.rstrip("_").replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not None and value is not False:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                words += [flag, _word(item)]
    return " ".join(words)
