"""Finding models: ranked full-text search, and ``recommend`` (filter and rank by need)."""

from __future__ import annotations

import re

from ..errors import UsageError
from .registry import Registry

_TOKEN = re.compile(r"[\w]+", re.UNICODE)


def fts_query(text: str) -> str:
    """Any typed text as a safe FTS5 query: each word quoted, prefix-matched, OR-ed.

    OR with bm25 ranking puts versions matching more of the words first, while a query
    with one unknown word still finds the rest. Quoting means user text never breaks FTS
    syntax.
    """
    words = _TOKEN.findall(text or "")
    if not words:
        raise UsageError("Give at least one word to search for, e.g. `maas search embedding`.")
    return " OR ".join(f'"{w}"*' for w in words[:32])


def search(reg: Registry, text: str, limit: int = 20) -> list[dict]:
    """Versions whose name, task, description, tags or card match, best first."""
    query = fts_query(text)
    return list(
        reg.db.query(
            """
            select m.name || '@' || v.number as ref, m.task, v.format, v.size_bytes,
                   -bm25(search_docs_fts, 10.0, 4.0, 2.0, 3.0, 1.0) as score,
                   snippet(search_docs_fts, -1, '[', ']', '...', 8) as snippet
              from search_docs_fts
              join versions v on v.id = search_docs_fts.rowid
              join models m on m.id = v.model_id
             where search_docs_fts match ?
             order by bm25(search_docs_fts, 10.0, 4.0, 2.0, 3.0, 1.0), v.number desc
             limit ?
            """,
            [query, limit],
        )
    )


SORTS = {
    "size": ("size_bytes", False),
    "latency": ("latency_ms", False),
    "accuracy": ("accuracy", True),
}


def recommend(
    reg: Registry,
    task: str | None = None,
    max_size: int | None = None,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    sort: str = "size",
    limit: int = 10,
) -> dict:
    """Versions that meet every constraint, ranked by ``sort``, each with why it ranked there.

    ``sort`` is ``size``, ``latency`` or ``accuracy``, or any recorded metric name (lower is
    better unless it is ``accuracy`` or ends in ``accuracy``/``f1``/``score``). Versions
    without the sort metric rank after those with it. Also returns how many were excluded
    by each constraint, so an empty answer explains itself.
    """
    metric, higher_better = SORTS.get(sort, (sort, sort.endswith(("accuracy", "f1", "score"))))
    rows = list(
        reg.db.query(
            """select v.id, m.name || '@' || v.number as ref, m.task, v.format, v.size_bytes
                 from versions v join models m on m.id = v.model_id"""
        )
    )
    metrics: dict[int, dict[str, float]] = {}
    for r in reg.db.query("select version_id, name, value from metrics"):
        metrics.setdefault(r["version_id"], {})[r["name"]] = r["value"]
    excluded = {"task": 0, "size": 0, "latency": 0, "accuracy": 0}
    kept = []
    for row in rows:
        m = metrics.get(row["id"], {})
        why = []
        if task is not None:
            if row["task"] != task:
                excluded["task"] += 1
                continue
            why.append(f"task {task}")
        if max_size is not None:
            if row["size_bytes"] > max_size:
                excluded["size"] += 1
                continue
            why.append(f"size {_mb(row['size_bytes'])} <= {_mb(max_size)}")
        if max_latency_ms is not None:
            lat = m.get("latency_ms")
            if lat is None or lat > max_latency_ms:
                excluded["latency"] += 1
                continue
            why.append(f"latency {lat:.3g} ms <= {max_latency_ms:g} ms")
        if min_accuracy is not None:
            acc = m.get("accuracy")
            if acc is None or acc < min_accuracy:
                excluded["accuracy"] += 1
                continue
            why.append(f"accuracy {acc:.4g} >= {min_accuracy:g}")
        value = row["size_bytes"] if metric == "size_bytes" else m.get(metric)
        kept.append({**row, "value": value, "metrics": m, "why": why})
    kept.sort(
        key=lambda r: (
            r["value"] is None,
            0 if r["value"] is None else (-r["value"] if higher_better else r["value"]),
            r["size_bytes"],
        )
    )
    label = "size" if metric == "size_bytes" else metric
    direction = "highest" if higher_better else "lowest"
    out = []
    for rank, r in enumerate(kept[:limit], 1):
        if r["value"] is None:
            reason = f"no {label} recorded, ranked last"
        else:
            shown = _mb(r["value"]) if metric == "size_bytes" else f"{r['value']:.4g}"
            reason = f"{label} {shown} (#{rank}, {direction} first)"
        out.append(
            {
                "rank": rank,
                "ref": r["ref"],
                "task": r["task"],
                "format": r["format"],
                "size_bytes": r["size_bytes"],
                "latency_ms": r["metrics"].get("latency_ms"),
                "accuracy": r["metrics"].get("accuracy"),
                "why": "; ".join([reason, *r["why"]]),
            }
        )
    return {"rows": out, "considered": len(rows), "excluded": excluded, "sort": label}


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
