"""Finding models: ranked full-text search, and ``recommend`` (filter and rank by need)."""

from __future__ import annotations

import re

from ..errors import UsageError
from ..hints import command
from .registry import Registry

_TOKEN = re.compile(r"[\w]+", re.UNICODE)


FIELDS = ("name", "task", "description", "tags", "cards")


def _words(text: str) -> list[str]:
    words = _TOKEN.findall(text or "")
    if not words:
        raise UsageError(
            f"Give at least one word to search for, e.g. `{command('search', 'embedding')}`."
        )
    return [w.lower() for w in words[:32]]


def fts_query(words: list[str], op: str) -> str:
    """Words as a safe FTS5 query: each quoted (user text never breaks FTS syntax) and
    prefix-matched (``digit`` finds ``digits``), joined by AND or OR."""
    return f" {op} ".join(f'"{w}"*' for w in words)


def search(reg: Registry, text: str, limit: int = 20) -> list[dict]:
    """Models whose name, task, descriptions, tags or cards match, best first.

    Models that match every word come first (AND); if there are fewer than ``limit``, models
    matching some of the words follow (OR), each group ranked by bm25 with column weights.
    One row per model, pointing at its latest version, or at the newest version whose tags
    matched when only tags did. What matched is read back from FTS5 itself (``highlight``,
    for the returned rows only), so it agrees with the ranking, stemming included.
    ``score`` is bm25 relative to the best hit (1.0).
    """
    words = _words(text)
    hits: dict[int, dict] = {}
    for op in ("AND", "OR") if len(words) > 1 else ("AND",):
        if len(hits) >= limit:
            break
        cursor = reg.db.execute(_SEARCH, [fts_query(words, op), limit + len(hits)])
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            if row["model_id"] not in hits and len(hits) < limit:
                hits[row["model_id"]] = row
    # bm25 is near zero when a word is in most documents (its idf floors at 1e-6), so raw
    # scores all printed as 0. Relative to the best hit they keep bm25's ratios: 1 is the
    # best match, 0.5 half as good.
    best = max((-h["rank"] for h in hits.values()), default=0.0) or 1.0
    out = []
    for model_id, hit in hits.items():
        fields = [f for f in FIELDS if "\x02" in (hit[f"marked_{f}"] or "")]
        tags = _tag_hits(reg, model_id, hit["marked_tags"]) if "tags" in fields else []
        number = tags[0][0] if fields == ["tags"] else hit["number"]
        snippet = next(
            (_excerpt(hit[f"marked_{f}"]) for f in ("description", "cards") if f in fields), ""
        )
        out.append(
            {
                "ref": f"{_plain(hit['marked_name'])}@{number}",
                "task": hit["task"],
                "versions": hit["versions"],
                "format": hit["format"],
                "size_bytes": hit["size_bytes"],
                "score": round(-hit["rank"] / best, 3),
                "matched": ", ".join(fields),
                "snippet": snippet or ", ".join(f"{tag} @{n}" for n, tag in tags[:4]),
            }
        )
    return out


# One statement per phase. FTS5 consumes "order by rank" itself, so highlight() runs only for
# the rows pulled past the limit, and the join finds each hit's latest version by its index.
_SEARCH = """
with hits as (
    select rowid as model_id, rank, {highlights}
      from search_docs_fts where search_docs_fts match ? order by rank limit ?)
select hits.*, m.task, v.number, v.format, v.size_bytes,
       (select count(*) from versions c where c.model_id = m.id) as versions
  from hits join models m on m.id = hits.model_id
  join versions v on v.model_id = m.id
   and v.number = (select max(number) from versions x where x.model_id = m.id)
 order by hits.rank
""".format(
    highlights=", ".join(
        f"highlight(search_docs_fts, {i}, char(2), char(3)) as marked_{f}"
        for i, f in enumerate(FIELDS)
    )
)


def _plain(text: str | None) -> str:
    return (text or "").replace("\x02", "").replace("\x03", "")


def _tag_hits(reg: Registry, model_id: int, marked_tags: str) -> list[tuple[int, str]]:
    """(version, tag) for the tags FTS marked as matching, newest version first."""
    hits = []
    for line in marked_tags.splitlines():
        if "\x02" not in line:
            continue
        key, _, value = _plain(line).partition(" ")
        for (number,) in reg.db.execute(
            "select v.number from tags t join versions v on v.id = t.version_id "
            "where v.model_id = ? and t.key = ? and t.value = ?",
            [model_id, key, value],
        ):
            hits.append((number, f"{key}={value}" if value else key))
    return sorted(hits, reverse=True)


def _excerpt(marked: str, width: int = 60) -> str:
    """A short excerpt around the first match, the matched word in [brackets]."""
    text = " ".join(marked.split())
    at = text.index("\x02")
    start, end = max(0, at - width // 2), min(len(text), text.index("\x03") + width // 2)
    if text.count("\x02", start, end) > text.count("\x03", start, end):
        end = text.index("\x03", end) + 1  # never cut a highlighted word in half
    body = text[start:end].replace("\x02", "[").replace("\x03", "]")
    return ("..." if start else "") + _plain(body) + ("..." if end < len(text) else "")


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
