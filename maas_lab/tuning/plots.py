"""A study's two pictures, as the project shows charts: PNG in HTML (matplotlib, Agg), a few
lines of text in a terminal or a saved notebook without matplotlib.

- history: each complete trial's value and the best so far, against the trial number;
- importance: how much each parameter explains the value (``optuna.importance``, whose
  default evaluator needs a few complete trials: fewer, and the figure says so).
"""

from __future__ import annotations

import base64
import html
import io


class Figure:
    """A titled picture: ``png`` bytes (None without matplotlib), ``text`` for terminals."""

    def __init__(self, title: str, png: bytes | None, text: str):
        self.title, self.png, self.text = title, png, text

    def __bool__(self) -> bool:
        return bool(self.text or self.png)

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def save(self, path) -> None:
        if self.png is None:
            if _pyplot() is not None:
                raise RuntimeError(f"Nothing to draw yet: {self.text}")
            raise RuntimeError("saving a figure needs matplotlib: pip install matplotlib")
        with open(path, "wb") as f:
            f.write(self.png)

    def _repr_html_(self) -> str:
        if self.png is None:
            return f"<pre>{html.escape(self.text)}</pre>"
        data = base64.b64encode(self.png).decode()
        return f'<img alt="{html.escape(self.title)}" src="data:image/png;base64,{data}"/>'


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def best_so_far(values: list[float], maximize: bool) -> list[float]:
    out, best = [], None
    for v in values:
        best = v if best is None else (max(best, v) if maximize else min(best, v))
        out.append(best)
    return out


def history(
    numbers: list[int],
    values: list[float],
    maximize: bool,
    metric: str,
    outside: tuple[list[int], list[float]] = ([], []),
) -> Figure:
    """``numbers``/``values``: complete trials within the constraints (the best-so-far line
    follows them); ``outside``: complete trials outside ``--keep``, drawn as grey crosses."""
    title = f"{metric}: best so far over trials"
    if not values and not outside[1]:
        return Figure(title, None, "(no complete trial yet)")
    best = best_so_far(values, maximize)
    lines = [
        f"  trial {n:>4}  {v:.6g}  best {b:.6g}"
        for n, v, b in zip(numbers, values, best, strict=True)
    ]
    lines += [
        f"  trial {n:>4}  {v:.6g}  (outside the kept range)" for n, v in zip(*outside, strict=True)
    ]
    text = title + "\n" + "\n".join(lines)
    plt = _pyplot()
    if plt is None:
        return Figure(title, None, text)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    if outside[1]:
        ax.plot(*outside, "x", color="0.55", label="infeasible")
    if values:
        ax.plot(numbers, values, "o", color="C0", alpha=0.6, label="trial")
        ax.step(numbers, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return Figure(title, _png(fig, plt), text)


def curves(series: dict[str, list[float]], metric: str, title: str) -> Figure:
    """Best-so-far curves of several searches (a benchmark's samplers), one line each."""
    text = f"{title}\n" + "\n".join(
        f"  {k}: " + " ".join(f"{v:.3g}" for v in vals[:: max(1, len(vals) // 10)])
        for k, vals in series.items()
    )
    plt = _pyplot()
    if plt is None:
        return Figure(title, None, text)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for i, (k, vals) in enumerate(series.items()):
        ax.plot(range(1, len(vals) + 1), vals, color=f"C{i}", label=k)
    ax.set_xlabel("trials")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return Figure(title, _png(fig, plt), text)


def importance(scores: dict[str, float], note: str = "") -> Figure:
    title = "parameter importance"
    if not scores:
        return Figure(title, None, note or "(not enough complete trials to tell)")
    names = list(scores)
    text = f"{title}\n" + "\n".join(
        f"  {n.ljust(max(map(len, names)))}  {'#' * max(1, round(30 * scores[n]))} {scores[n]:.3f}"
        for n in names
    )
    plt = _pyplot()
    if plt is None:
        return Figure(title, None, text)
    fig, ax = plt.subplots(figsize=(5.0, 0.4 * len(names) + 1.2))
    ax.barh(range(len(names)), [scores[n] for n in names], color="C0")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("importance (sums to 1)")
    ax.set_title(title, fontsize=10)
    return Figure(title, _png(fig, plt), text)
