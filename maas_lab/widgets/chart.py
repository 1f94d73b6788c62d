"""Small live line charts (requests/s, latency, queue; a job's loss), drawn as SVG.

A matplotlib figure re-rendered every second would send a new PNG each time and flicker;
this anywidget gets the points as JSON and redraws its polylines in the page. Points are
kept to a window here, so a chart left open for hours stays small.
"""

from __future__ import annotations

import math
from pathlib import Path

import anywidget
import traitlets

STATIC = Path(__file__).parent / "static"


class LineChart(anywidget.AnyWidget):
    """Side-by-side plots, each with named series of ``(x, y)`` points.

    ``plots`` is ``[{"title", "x_unit", "series": [{"name", "points": [[x, y], ...]}]}]``;
    :meth:`add` appends one point to each series of a plot and keeps the last ``window``."""

    _esm = STATIC / "chart.js"
    _css = STATIC / "chart.css"
    plots = traitlets.List().tag(sync=True)
    waiting = traitlets.Unicode("waiting for data").tag(sync=True)

    def __init__(self, titles: dict[str, list[str]], window: int = 120, x_unit: str = "s"):
        super().__init__()
        self.window = window
        self.plots = [
            {"title": t, "x_unit": x_unit, "series": [{"name": n, "points": []} for n in names]}
            for t, names in titles.items()
        ]

    def add(self, x: float, values: dict[str, dict[str, float | None]]) -> None:
        """``values``: plot title -> series name -> y (None skips that series this time)."""
        plots = []
        for plot in self.plots:
            got = values.get(plot["title"], {})
            series = []
            for s in plot["series"]:
                points = s["points"]
                y = got.get(s["name"])
                if y is not None and math.isfinite(y):  # a NaN loss would break the line
                    points = (points + [[x, float(y)]])[-self.window :]
                series.append({"name": s["name"], "points": points})
            plots.append({**plot, "series": series})
        self.plots = plots

    def set_series(self, title: str, name: str, points: list[list[float]]) -> None:
        """Replace one series' points (e.g. a job's whole loss history)."""
        self.plots = [
            {
                **p,
                "series": [
                    {"name": s["name"], "points": [q for q in points if finite(q)][-self.window :]}
                    if p["title"] == title and s["name"] == name
                    else s
                    for s in p["series"]
                ],
            }
            for p in self.plots
        ]

    def points(self, title: str, name: str) -> list[list[float]]:
        for p in self.plots:
            for s in p["series"]:
                if p["title"] == title and s["name"] == name:
                    return s["points"]
        raise KeyError(f"{title}/{name}")


def finite(point) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in point)
