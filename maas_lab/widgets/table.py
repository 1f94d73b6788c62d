"""A sortable, clickable table: one anywidget instead of hundreds of ipywidgets.

ipywidgets has no table. A grid of Button widgets costs one widget model (and one comm
message) per cell, so 500 versions would take seconds to appear; this view gets the rows
as one JSON list, sorts them in the page when a header is clicked, and sends back only the
key of the row clicked. Cells are set with ``textContent``, never as HTML, so a model name
or tag from anyone cannot run script in the page.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

STATIC = Path(__file__).parent / "static"


class RowTable(anywidget.AnyWidget):
    """Rows shown with chosen columns; ``selected`` is the key of the row last clicked.

    ``rows`` are ``{"key", "cells": {column: text}, "sort": {column: value}}``: what is
    shown and what it sorts by (sizes sort as bytes, not as "1.2 MB")."""

    _esm = STATIC / "table.js"
    _css = STATIC / "table.css"
    columns = traitlets.List().tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    sort_by = traitlets.Unicode("").tag(sync=True)
    descending = traitlets.Bool(False).tag(sync=True)
    empty = traitlets.Unicode("(none)").tag(sync=True)

    def show(self, columns: list[tuple[str, str]], rows: list[dict]) -> None:
        """Replace what is shown: ``columns`` as (key, label), ``rows`` as described above.

        Each column's sort values are turned into whole-number ranks here, so the page
        sorts numbers and only numbers: JavaScript compares ``[name, 10]`` and
        ``[name, 2]`` as text, and a column mixing numbers with blanks in no stable order.
        """
        ranked = [{**r, "sort": {}} for r in rows]
        for key, _ in columns:
            values = sorted({_key(r["sort"].get(key)) for r in rows})
            rank = {v: i for i, v in enumerate(values)}
            for r, out in zip(rows, ranked, strict=True):
                out["sort"][key] = rank[_key(r["sort"].get(key))]
        with self.hold_sync():
            self.columns = [{"key": k, "label": label} for k, label in columns]
            self.rows = ranked

    def order(self) -> list[str]:
        """The rows' keys in the order the page shows them (sorted as the user asked: by
        the same ranks, ties in the given order)."""
        rows = self.rows
        if self.sort_by:
            rows = sorted(rows, key=lambda r: r["sort"][self.sort_by], reverse=self.descending)
        return [r["key"] for r in rows]


def _key(value):
    """A sort key any two values compare by: blanks last, then numbers, then text; a
    tuple or list (``(name, number)``) element by element."""
    if value is None or value == "":
        return (2, "")
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, (list, tuple)):
        return (1, tuple(_key(v) for v in value))
    return (1, ((1, str(value)),))
