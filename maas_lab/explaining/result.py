"""An explanation as a person reads it: tokens highlighted, pixels as heat maps, tables.

The HTML is plain markup with inline colours (no scripts, no images to fetch), so a saved
notebook shows it as it was when reopened, and nbval compares stable text. Red is a
feature that raised the score, blue one that lowered it; the stronger the colour, the
larger its share of the row's largest attribution.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from ..results import printable

TOP = 8  # features listed per row in the plain table


@dataclass
class Explanation:
    ref: str
    explainer: str
    options: dict
    kind: str  # "tokens" or "features"
    values: np.ndarray  # [rows, features]
    scores: np.ndarray  # [rows]: the score at the input
    baseline_scores: np.ndarray  # [rows]: at the baseline (all features absent)
    delta: np.ndarray | None = None
    labels: list[int] | None = None
    tokens: list[list[str]] | None = None
    inputs: np.ndarray | None = None  # feature rows, to draw beside their heat map
    passes: int = 0
    notes: list[str] = field(default_factory=list)
    data: str | None = None
    rows: list[int] | None = None
    target: str | None = None
    grid: tuple[int, int] | None = None

    # ------------------------------------------------------------------ as data

    def __len__(self) -> int:
        return len(self.values)

    def row_values(self, i: int) -> np.ndarray:
        """Row ``i``'s attributions: per token (padding left out) or per feature."""
        if self.kind == "tokens" and self.tokens is not None:
            return self.values[i][: len(self.tokens[i])]
        return self.values[i]

    def what(self, i: int) -> str:
        if self.target is not None:
            return f"similarity to {self.target!r}"
        return f"class {self.labels[i]}" if self.labels is not None else "output"

    def to_dict(self) -> dict:
        """Plain JSON: what the server's explain answers, and what a test compares."""
        out = {
            "model": self.ref,
            "explainer": self.explainer,
            "options": self.options,
            "forward_passes": self.passes,
            "rows": [],
        }
        for i in range(len(self)):
            row = {
                "explains": self.what(i),
                "score": float(self.scores[i]),
                "baseline_score": float(self.baseline_scores[i]),
                "attributions": [float(v) for v in self.row_values(i)],
            }
            if self.labels is not None:
                row["label"] = int(self.labels[i])
            if self.delta is not None:
                row["delta"] = float(self.delta[i])
            if self.tokens is not None:
                row["tokens"] = list(self.tokens[i])
            if self.rows is not None:
                row["row"] = int(self.rows[i])
            out["rows"].append(row)
        return out

    def ranked(self, i: int) -> list[tuple[str, float]]:
        """Row ``i``'s features by the size of their attribution, largest first."""
        values = self.row_values(i)
        names = self._names(i)
        order = np.argsort(-np.abs(values), kind="stable")
        return [(names[j], float(values[j])) for j in order]

    def _names(self, i: int) -> list[str]:
        if self.kind == "tokens" and self.tokens is not None:
            return list(self.tokens[i])
        if self.grid is not None:
            w = self.grid[1]
            return [f"({j // w},{j % w})" for j in range(len(self.values[i]))]
        return [f"x[{j}]" for j in range(len(self.values[i]))]

    # ------------------------------------------------------------------ as text

    def _heading(self, i: int) -> str:
        row = f"row {self.rows[i]}" if self.rows is not None and self.data else f"#{i}"
        text = (
            f"{row}: {self.what(i)}  score {self.scores[i]:.4g}"
            f" (baseline {self.baseline_scores[i]:.4g})"
        )
        if self.delta is not None:
            text += f"  delta {self.delta[i]:.2g}"
        return text

    def _title(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in self.options.items())
        return f"Explanation of {self.ref} by {self.explainer}{opts} ({self.passes} forward rows)"

    def __str__(self) -> str:
        lines = [self._title()]
        for i in range(len(self)):
            lines.append(self._heading(i))
            if self.kind == "features" and self.grid is not None:
                lines += self._text_grid(i)
            for name, value in self.ranked(i)[:TOP]:
                lines.append(f"  {name:<14} {value:+.4f}")
        lines += self.notes
        return printable("\n".join(lines))

    __repr__ = __str__

    def _text_grid(self, i: int) -> list[str]:
        h, w = self.grid
        values = self.values[i].reshape(h, w)
        top = float(np.abs(values).max()) or 1.0
        return ["  " + " ".join(f"{v / top:+.1f}".rjust(4) for v in line) for line in values]

    # ------------------------------------------------------------------ as HTML

    def _repr_html_(self) -> str:
        e = html.escape
        out = [f"<h4>{e(self._title())}</h4>"]
        for i in range(len(self)):
            out.append(f"<p><b>{e(self._heading(i))}</b></p>")
            if self.kind == "tokens" and self.tokens is not None:
                out.append(self._html_tokens(i))
            elif self.grid is not None:
                out.append(self._html_grids(i))
            else:
                out.append(self._html_bars(i))
        out += [f"<p>{e(n)}</p>" for n in self.notes]
        out.append("<p><small>red raised the score, blue lowered it; darker is larger.</small></p>")
        return "".join(out)

    def _html_tokens(self, i: int) -> str:
        values = self.row_values(i)
        top = float(np.abs(values).max()) or 1.0
        spans = []
        for token, v in zip(self.tokens[i], values, strict=True):
            spans.append(
                f'<span title="{v:+.4f}" style="background:{_colour(v / top)};'
                f'padding:1px 3px;margin:1px;border-radius:3px">{html.escape(token)}</span>'
            )
        return '<p style="line-height:2">' + " ".join(spans) + "</p>"

    def _html_grids(self, i: int) -> str:
        h, w = self.grid
        values = self.values[i].reshape(h, w)
        top = float(np.abs(values).max()) or 1.0
        parts = []
        if self.inputs is not None:
            pixels = self.inputs[i].reshape(h, w)
            lo, hi = float(pixels.min()), float(pixels.max())
            span = (hi - lo) or 1.0
            parts.append(_grid(h, w, lambda r, c: _grey(1 - (pixels[r, c] - lo) / span), "input"))
        parts.append(
            _grid(
                h,
                w,
                lambda r, c: _colour(values[r, c] / top),
                "attribution",
                lambda r, c: f"{values[r, c]:+.4f}",
            )
        )
        return '<div style="display:flex;gap:16px">' + "".join(parts) + "</div>"

    def _html_bars(self, i: int) -> str:
        ranked = self.ranked(i)[:TOP]
        top = abs(ranked[0][1]) if ranked else 0.0
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{value:+.4f}</td>"
            f'<td><div style="width:{int(60 * abs(value) / (top or 1.0))}px;height:8px;'
            f'background:{_colour(1 if value > 0 else -1)}"></div></td></tr>'
            for name, value in ranked
        )
        return f"<table>{rows}</table>"


def _colour(v: float) -> str:
    """Signed share in [-1, 1] as a translucent red (positive) or blue (negative)."""
    v = max(-1.0, min(1.0, float(v)))
    rgb = "214,39,40" if v >= 0 else "31,119,180"
    return f"rgba({rgb},{abs(v):.2f})"


def _grey(level: float) -> str:
    g = int(round(255 * max(0.0, min(1.0, float(level)))))
    return f"rgb({g},{g},{g})"


def _grid(h: int, w: int, colour, caption: str, title=None) -> str:
    cells = []
    for r in range(h):
        row = "".join(
            f'<td style="width:14px;height:14px;padding:0;background:{colour(r, c)}"'
            + (f' title="{title(r, c)}"' if title else "")
            + "></td>"
            for c in range(w)
        )
        cells.append(f"<tr>{row}</tr>")
    return (
        f'<figure style="margin:0"><table style="border-collapse:collapse">{"".join(cells)}'
        f"</table><figcaption><small>{html.escape(caption)}</small></figcaption></figure>"
    )
