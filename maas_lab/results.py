"""What commands return: objects that read well as text and render as tables in a notebook.

They compose with Python (``rows = %maas list``; ``rows[0]["name"]``) and have a stable
``repr`` (no memory addresses), so notebook outputs can be compared by nbval.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from .errors import UsageError

# C0/C1 controls (ESC starts terminal escape sequences) and bidi overrides, which reorder
# what a terminal shows. Tabs and newlines are kept only where text spans lines.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_IN_CELL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, multiline: bool = True) -> str:
    """``text`` with control characters written as escapes (``\\x1b``), so that names,
    tags or cards from anyone cannot drive the terminal that shows them."""
    pattern = _CONTROL if multiline else _CONTROL_IN_CELL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def human_size(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Table:
    """Rows of dicts shown with chosen columns; ``rows`` keeps the full rows.

    A sequence of its rows: ``len(table)``, ``table[0]``, ``for row in table``. As
    jupysql's ResultSet, ``dicts()`` gives the shown columns as plain dicts and
    ``to_pandas()`` a DataFrame, both with the values as stored rather than as shown."""

    def __init__(
        self,
        rows: Sequence[dict],
        columns: Sequence[str] | None = None,
        title: str = "",
        note: str = "",
        formatters: dict | None = None,
    ):
        self.rows = list(rows)
        self.columns = list(columns or (self.rows[0].keys() if self.rows else []))
        self.title, self.note = title, note
        self.formatters = formatters or {}

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def dicts(self) -> list[dict]:
        """One plain dict per row, with the table's columns in order (a column a row lacks
        is None) and the values as stored: numbers stay numbers, sizes stay bytes."""
        return [{c: row.get(c) for c in self.columns} for row in self.rows]

    def to_pandas(self):
        """The rows as a ``pandas.DataFrame`` with the table's columns (see ``dicts``)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("Table.to_pandas() needs pandas: pip install pandas.") from None
        return pd.DataFrame(self.dicts(), columns=self.columns)

    def _cells(self) -> list[list[str]]:
        return [
            [self.formatters.get(c, _cell)(row.get(c)) for c in self.columns] for row in self.rows
        ]

    def __str__(self) -> str:
        cells = [[printable(v, multiline=False) for v in r] for r in self._cells()]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = [self.title] if self.title else []
        if self.rows:
            lines.append(
                "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)).rstrip()
            )
            lines.append("  ".join("-" * w for w in widths))
            lines += [
                "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                for r in cells
            ]
        else:
            lines.append("(none)")
        if self.note:
            lines.append(self.note)
        return printable("\n".join(lines))

    __repr__ = __str__

    def _repr_html_(self) -> str:
        e = html.escape
        out = [f"<h4>{e(self.title)}</h4>"] if self.title else []
        if self.rows:
            head = "".join(f"<th>{e(c)}</th>" for c in self.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in self._cells()
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            out.append("<p><i>(none)</i></p>")
        if self.note:
            out.append(f"<p>{e(self.note)}</p>")
        return "".join(out)


class Report:
    """Several titled parts (tables or text) shown together, e.g. ``show`` and ``history``.

    ``data`` is the record behind it (a dict: a model's details, a job's row), and the
    report reads as that record: ``report["status"]`` is ``report.data["status"]``, and
    iterating a report gives the record's keys, as iterating a dict does (``len`` counts
    them; ``"status" in report`` asks for one). A report without a record has no keys, and
    is still true, as every report was before it had a length."""

    def __init__(self, title: str, parts: Sequence[tuple[str, Any]], data: Any = None):
        self.title, self.parts, self.data = title, list(parts), data

    def __getitem__(self, key):
        return self.data[key]

    def __iter__(self):
        return iter(() if self.data is None else self.data)

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data)

    def __contains__(self, key) -> bool:
        return self.data is not None and key in self.data

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        out = [self.title, "=" * len(self.title)]
        for heading, part in self.parts:
            if not part:
                continue
            out.append("")
            if heading:
                out.append(f"{heading}:")
            out.append(str(part))
        return printable("\n".join(out))

    __repr__ = __str__

    def _repr_html_(self) -> str:
        e = html.escape
        out = [f"<h3>{e(self.title)}</h3>"]
        for heading, part in self.parts:
            if not part:
                continue
            if heading:
                out.append(f"<h4>{e(heading)}</h4>")
            if hasattr(part, "_repr_html_"):
                out.append(part._repr_html_())
            else:
                out.append(f"<pre>{e(str(part))}</pre>")
        return "".join(out)


class Collapsible:
    """Long text (a model card): a preview as text, a closed ``<details>`` block in HTML."""

    def __init__(self, summary: str, text: str, preview_lines: int = 8):
        self.summary, self.text, self.preview_lines = summary, text, preview_lines

    def __bool__(self) -> bool:
        return bool(self.text)

    def __str__(self) -> str:
        lines = self.text.splitlines()
        if len(lines) <= self.preview_lines:
            return printable(self.text)
        rest = len(lines) - self.preview_lines
        return printable("\n".join(lines[: self.preview_lines] + [f"... ({rest} more lines)"]))

    def _repr_html_(self) -> str:
        e = html.escape
        return f"<details><summary>{e(self.summary)}</summary><pre>{e(self.text)}</pre></details>"


def kv_table(pairs: dict, title: str = "") -> Table:
    return Table([{"field": k, "value": v} for k, v in pairs.items()], ["field", "value"], title)


class BarChart:
    """One small bar chart per metric, versions side by side: bars as text, a PNG in HTML.

    A person compares sizes and speeds at a glance; the text form keeps terminals and
    saved outputs readable without matplotlib."""

    def __init__(
        self,
        labels: Sequence[str],
        series: dict[str, Sequence[float | None]],
        title: str = "",
        formatters: dict | None = None,
    ):
        self.labels, self.title = list(labels), title
        self.series = {k: list(v) for k, v in series.items() if any(x is not None for x in v)}
        self.formatters = formatters or {}

    def __bool__(self) -> bool:
        return bool(self.series and self.labels)

    def __str__(self) -> str:
        width = max((len(x) for x in self.labels), default=0)
        out = [self.title] if self.title else []
        for metric, values in self.series.items():
            top = max((abs(v) for v in values if v is not None), default=0) or 1
            out.append(f"{metric}:")
            fmt = self.formatters.get(metric, _cell)
            for label, v in zip(self.labels, values, strict=True):
                bar = "" if v is None else "#" * max(1, round(30 * abs(v) / top))
                out.append(f"  {label.ljust(width)}  {bar} {fmt(v) if v is not None else '-'}")
        return "\n".join(out)

    __repr__ = __str__

    def png(self) -> bytes | None:
        """The chart as PNG bytes, or None without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        import io

        n = len(self.series)
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 0.45 * len(self.labels) + 1.2))
        axes = [axes] if n == 1 else list(axes)
        for ax, (metric, values) in zip(axes, self.series.items(), strict=True):
            vals = [v if v is not None else 0 for v in values]
            ax.barh(range(len(vals)), vals, color=[f"C{i}" for i in range(len(vals))])
            ax.set_yticks(range(len(vals)), self.labels if ax is axes[0] else [""] * len(vals))
            ax.invert_yaxis()
            ax.set_title(metric, fontsize=9)
            ax.tick_params(labelsize=8)
        if self.title:
            fig.suptitle(self.title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        return buf.getvalue()

    def save(self, path) -> None:
        data = self.png()
        if data is None:
            raise RuntimeError("saving a chart needs matplotlib: pip install matplotlib")
        with open(path, "wb") as f:
            f.write(data)

    def _repr_html_(self) -> str:
        import base64

        data = self.png()
        if data is None:
            return f"<pre>{html.escape(str(self))}</pre>"
        encoded = base64.b64encode(data).decode()
        return f'<img alt="{html.escape(self.title)}" src="data:image/png;base64,{encoded}"/>'


def tail_text(path, lines: int, start: int = 0) -> str:
    """The last ``lines`` lines of a log file (from byte ``start``), or "(no log)"."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class LogTail:
    """The end of a log: a title and preformatted text."""

    def __init__(self, title: str, text: str):
        self.title, self.text = title, text

    def __str__(self) -> str:
        return f"{self.title}\n{self.text}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<h4>{html.escape(self.title)}</h4><pre>{html.escape(self.text)}</pre>"
