"""``%maas`` and ``%%maas``: the ``maas`` command inside a notebook.

Both run the same click group as the shell command and return its result object, so
``rows = %maas list`` works and the result renders as a table. In ``%%maas`` the cell body
continues the command line: one option per line reads well for long parameters, and
``#`` starts a comment. Mistakes raise ``MaasError``: a short red message, and the cell fails.
"""

from __future__ import annotations

import shlex

from IPython.core.magic import Magics, line_cell_magic, magics_class


@magics_class
class MaasMagics(Magics):
    @line_cell_magic
    def maas(self, line: str, cell: str | None = None):
        """Run a maas_lab command: `%maas list`, `%maas show minilm@prod`, `%maas --help`.

        Subcommands: register, list, search, show, history, alias, tag, metric, recommend,
        export, export-repo, compress, distill, compare, tune, studies, study, explain, serve,
        predict, status, logs, scale, stop, launch, jobs, wait, cancel, plugins, plugin new,
        fsck, bundle, trust, token, and
        (in a notebook only) panel:
        `%maas panel [models|compress|serve|jobs]`. Each has --help. As a cell
        magic, the cell body holds more arguments (one per line if you like; {python_vars}
        are expanded), except in `%%maas launch`, where the cell is Python code that
        defines train(accelerator, registry), run on every process of the job, and in
        `%%maas tune`, where it defines space(trial) and train(params, report).
        `--data NAME` may name a variable of this notebook holding (x, y), an array or a
        list of sentences.
        """
        from .cli import run
        from .errors import UsageError

        try:
            # IPython has already expanded {vars} in the line; `#` starts a comment, as in
            # the cell body and a shell (inside a word or quotes it is a character)
            args = shlex.split(without_comment(line))
            if cell is not None and args[:1] in (["launch"], ["tune"]):
                args[1:1] = ["--code", cell]  # the cell is code (train; space and train)
            elif cell is not None:
                body = self._expand(cell).splitlines()
                args += shlex.split("\n".join(without_comment(x) for x in body))
        except ValueError as exc:
            raise UsageError(f"Cannot parse the command line: {exc}.") from None
        if args[:1] == ["panel"]:
            return panel(args[1:])
        from . import datasets

        # The notebook's variables reach --data/--array for this command only: a later
        # plain call (maas_lab.api.compress(..., data="x")) does not see them.
        with datasets.notebook_scope(self.shell.user_ns if self.shell is not None else {}):
            return run(args or ["--help"], prog_name="%maas")

    def _expand(self, cell: str) -> str:
        """Expand {vars} in a cell body from the user's namespace only (never this method's
        locals), leaving the text as it is if it does not expand, as IPython does for lines."""
        if self.shell is None:
            return cell
        from IPython.utils.text import DollarFormatter

        try:
            return DollarFormatter().vformat(cell, args=[], kwargs=self.shell.user_ns)
        except Exception:
            return cell


def without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a word outside quotes, as a shell reads it:
    ``note=#1``, ``"#1"`` and ``/data/#1/reg`` keep theirs (shlex's comments=True would cut
    ``note=#1`` at the ``#``)."""
    quote, escaped, previous = None, False, " "
    for i, char in enumerate(line):
        if escaped:
            escaped, char = False, "x"  # an escaped space is part of the word
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and previous.isspace():
            return line[:i]
        previous = char
    return line


PANEL_HELP = """Usage: %maas panel [TAB] [--root DIR]

  The registry, compression, serving and jobs as widget panels: one set of tabs (Models,
  Compress, Serve, Jobs), or with TAB (models, compress, serve or jobs) that panel alone.
  The same as maas_lab.widgets.Panel() or ModelsPanel(), ... in Python.

Options:
  --root DIR  Registry folder (default: $MAAS_LAB_HOME or ~/.maas_lab).
  -h, --help  Show this message.
"""


class Help(str):
    """Help text that shows as itself (not as a quoted string) when a cell returns it."""

    def __repr__(self) -> str:
        return str(self)


def panel(words: list[str]):
    """``%maas panel [TAB] [--root DIR]``: a front end of its own, since only a notebook
    can show widgets (the ``maas`` command has no panel)."""
    from .errors import UsageError

    root, tab, rest = None, None, list(words)
    while rest:
        word = rest.pop(0)
        if word in ("-h", "--help"):
            return Help(PANEL_HELP)
        if word == "--root" or word.startswith("--root="):
            root = word.split("=", 1)[1] if "=" in word else (rest.pop(0) if rest else None)
            if not root:
                raise UsageError("--root needs a folder: %maas panel --root DIR.")
        elif word.startswith("-"):
            raise UsageError(f"%maas panel has no option {word}; see %maas panel --help.")
        elif tab is None:
            tab = word
        else:
            raise UsageError(f"%maas panel takes one tab, got {tab!r} and {word!r}.")
    from .widgets import panel as make

    return make(tab, root=root)
