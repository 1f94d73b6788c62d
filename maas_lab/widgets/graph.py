"""The lineage graph: versions as boxes, derivations as labelled arrows, drawn as SVG.

ipywidgets cannot draw shapes, and an HTML widget's SVG cannot be clicked back into
Python; this anywidget can (a click on a version selects it). The layout is computed here,
in layers from the oldest ancestor, so the page only draws what it is given, and labels go
through ``textContent`` (no markup from a model's name or a plugin's words).
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

STATIC = Path(__file__).parent / "static"


NODE_W, NODE_H, GAP_X, GAP_Y = 150, 40, 130, 22


class LineageGraph(anywidget.AnyWidget):
    """Draws :func:`maas_lab.api.lineage`'s nodes and edges; ``clicked`` is the ref of the
    version last clicked."""

    _esm = STATIC / "graph.js"
    _css = STATIC / "graph.css"
    nodes = traitlets.List().tag(sync=True)
    edges = traitlets.List().tag(sync=True)
    current = traitlets.Unicode("").tag(sync=True)
    clicked = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    width = traitlets.Int(0).tag(sync=True)
    height = traitlets.Int(0).tag(sync=True)

    def draw(self, graph: dict, sizes=str) -> None:
        """Lay out ``graph`` (``{"ref", "nodes", "edges"}``) left to right, ancestors first;
        ``sizes`` formats a node's bytes."""
        placed, width, height = layout(graph["nodes"], graph["edges"])
        for n in placed:
            n["sub"] = " · ".join(
                x for x in (n["format"], sizes(n["size_bytes"]), n["aliases"]) if x
            )
        with self.hold_sync():
            self.title = f"Lineage of {graph['ref']}"
            self.current = graph["ref"]
            self.width, self.height = width, height
            self.edges = graph["edges"]
            self.nodes = placed


def layout(nodes: list[dict], edges: list[dict]) -> tuple[list[dict], int, int]:
    """Columns by longest path from a root (a version with no parent in the graph), rows in
    the order versions were made; returns positioned copies and the drawing's size."""
    parents: dict[str, list[str]] = {n["ref"]: [] for n in nodes}
    for e in edges:
        if e["child"] in parents and e["parent"] in parents:
            parents[e["child"]].append(e["parent"])
    depth: dict[str, int] = {}

    def depth_of(ref: str, seen=()) -> int:
        if ref not in depth:
            if ref in seen:  # a cycle cannot be recorded, but never loop on one
                return 0
            depth[ref] = 1 + max((depth_of(p, (*seen, ref)) for p in parents[ref]), default=-1)
        return depth[ref]

    rows_in: dict[int, int] = {}
    placed = []
    for n in nodes:
        d = depth_of(n["ref"])
        row = rows_in.get(d, 0)
        rows_in[d] = row + 1
        placed.append(
            {
                **n,
                "x": d * (NODE_W + GAP_X),
                "y": 40 + row * (NODE_H + GAP_Y),
                "w": NODE_W,
                "h": NODE_H,
            }
        )
    columns = max(depth.values(), default=0) + 1
    rows = max(rows_in.values(), default=1)
    width = columns * NODE_W + (columns - 1) * GAP_X + 4
    height = 40 + rows * (NODE_H + GAP_Y)
    return placed, width, height
