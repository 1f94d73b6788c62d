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
        """Replace what is shown: ``columns`` as (key, label), ``rows`` as described above."""
        with self.hold_sync():
            self.columns = [{"key": k, "label": label} for k, label in columns]
            self.rows = rows

    def order(self) -> list[str]:
        """The rows' keys in the order the page shows them (sorted as the user asked)."""

        def value(row):
            v = row["sort"].get(self.sort_by)
            return (v is None, v if v is not None else 0)

        rows = self.rows
        if self.sort_by:
            present = [r for r in rows if r["sort"].get(self.sort_by) is not None]
            missing = [r for r in rows if r["sort"].get(self.sort_by) is None]
            present = sorted(present, key=value, reverse=self.descending)
            rows = present + missing
        return [r["key"] for r in rows]
