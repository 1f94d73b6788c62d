"""Read-only views of the registry: the model list, one version in full, a model's history."""

from __future__ import annotations

import json

from .registry import Registry


def list_models(reg: Registry) -> list[dict]:
    """One row per model, newest activity first: a single grouped query (fast at 1,000s)."""
    return list(
        reg.db.query(
            """
            select m.name, m.task, count(v.id) as versions, max(v.number) as latest,
                   (select size_bytes from versions where model_id = m.id
                     order by number desc limit 1) as size_bytes,
                   (select group_concat(a.alias || '->' || av.number, ', ')
                      from aliases a join versions av on av.id = a.version_id
                     where a.model_id = m.id) as aliases,
                   coalesce(max(v.created_at), m.created_at) as updated_at
              from models m left join versions v on v.model_id = m.id
             group by m.id
             order by updated_at desc, m.name
            """
        )
    )


def describe(reg: Registry, ref: str) -> dict:
    """Everything about one version: metadata, files, metrics, tags, aliases, lineage, card."""
    row = reg.resolve(ref)
    vid = row["id"]
    model = reg.model_row(row["name"])
    q = reg.db.query
    return {
        "ref": row["ref"],
        "name": row["name"],
        "number": row["number"],
        "task": row["task"],
        "description": row["description"] or model["description"],
        "owner": model["owner"],
        "format": row["format"],
        "config": row["config"],
        "signature": row["signature"],
        "size_bytes": row["size_bytes"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "card": row["card"],
        "files": reg.files(vid),
        "metrics": {
            r["name"]: r["value"]
            for r in q("select name, value from metrics where version_id = ? order by name", [vid])
        },
        "tags": {
            r["key"]: r["value"]
            for r in q("select key, value from tags where version_id = ? order by key", [vid])
        },
        "aliases": [
            r["alias"]
            for r in q("select alias from aliases where version_id = ? order by alias", [vid])
        ],
        "parents": [
            dict(r, params=json.loads(r["params"]))
            for r in q(
                """select m.name || '@' || v.number as ref, l.operation, l.plugin,
                          l.plugin_version, l.plugin_distribution, l.params
                     from lineage l left join versions v on v.id = l.parent_id
                     left join models m on m.id = v.model_id
                    where l.child_id = ? order by l.id""",
                [vid],
            )
        ],
        "children": [
            r
            for r in q(
                """select m.name || '@' || v.number as ref, l.operation, l.plugin
                     from lineage l join versions v on v.id = l.child_id
                     join models m on m.id = v.model_id
                    where l.parent_id = ? order by l.id""",
                [vid],
            )
        ],
    }


def history(reg: Registry, name: str) -> dict:
    """A model's versions (oldest first) and every alias move."""
    model = reg.model_row(name)
    versions = list(
        reg.db.query(
            """
            select v.number, v.format, v.size_bytes, v.created_at, v.created_by,
                   (select group_concat(alias, ', ') from aliases where version_id = v.id)
                       as aliases,
                   (select group_concat(key || case when value = '' then '' else '=' || value end,
                                        ', ') from tags where version_id = v.id) as tags,
                   (select group_concat(l.operation || ' from ' || pm.name || '@' || pv.number,
                                        ', ')
                      from lineage l join versions pv on pv.id = l.parent_id
                      join models pm on pm.id = pv.model_id where l.child_id = v.id) as derived
              from versions v where v.model_id = ? order by v.number
            """,
            [model["id"]],
        )
    )
    moves = list(
        reg.db.query(
            """
            select h.moved_at, h.alias, pv.number as previous, nv.number as version, h.moved_by
              from alias_history h
              left join versions pv on pv.id = h.previous_version_id
              left join versions nv on nv.id = h.version_id
             where h.model_id = ? order by h.id
            """,
            [model["id"]],
        )
    )
    return {"name": name, "task": model["task"], "versions": versions, "alias_moves": moves}


def tasks(reg) -> set[str]:
    """The tasks models in the registry declare (those with none left out)."""
    return {r["task"] for r in reg.db.query("select task from models") if r["task"]}


# Metrics a person compares versions by, in the order a table shows them.
KEY_METRICS = ("accuracy", "cosine_mean", "parity_min_cosine", "latency_ms", "throughput")


def versions(reg, names: list[str] | None = None, limit: int = 500) -> list[dict]:
    """Versions newest first (of ``names`` only, in that order, when given), each with its
    aliases, tags and key metrics: one query, so a panel's first paint stays fast at 10,000s.
    """
    where, args, first = "", [], ""
    if names is not None:
        if not names:
            return []
        where = f"where m.name in ({', '.join('?' * len(names))})"
        # the best match's versions first, so a limit cuts the worst matches, not the best
        first = "case m.name " + " ".join(f"when ? then {i}" for i in range(len(names)))
        first += f" else {len(names)} end, "
        args = [*names, *names]
    metric_names = ", ".join(f"'{k}'" for k in KEY_METRICS)
    # The newest ids first, then the subqueries for those rows only: at 10,000 versions,
    # running them for every version before the limit took a second, this takes ~30 ms.
    rows = list(
        reg.db.query(
            f"""
            with top as (
                select v.id from versions v join models m on m.id = v.model_id {where}
                 order by {first}v.created_at desc, v.id desc limit ?)
            select m.name, v.number, m.task, v.format, v.size_bytes, v.created_at,
                   (select group_concat(alias, ', ') from aliases where version_id = v.id)
                       as aliases,
                   (select group_concat(key || case when value = '' then '' else '=' || value
                                        end, ', ') from tags where version_id = v.id) as tags,
                   (select json_group_object(name, value) from metrics
                     where version_id = v.id and name in ({metric_names})) as metrics
              from top join versions v on v.id = top.id join models m on m.id = v.model_id
             order by v.created_at desc, v.id desc
            """,
            [*args, limit],
        )
    )
    for r in rows:
        r["ref"] = f"{r['name']}@{r['number']}"
        r["metrics"] = json.loads(r["metrics"] or "{}")
    if names is not None:
        order = {n: i for i, n in enumerate(names)}
        rows.sort(key=lambda r: (order[r["name"]], -r["number"]))
    return rows


def count(reg) -> dict:
    """How many models and versions the registry holds."""
    return dict(
        next(
            iter(
                reg.db.query(
                    "select (select count(*) from models) as models, "
                    "(select count(*) from versions) as versions"
                )
            )
        )
    )


def revision(reg) -> str:
    """A token that changes whenever the registry does: every write adds an event, and the
    version count catches rows removed by hand with a database tool."""
    row = next(
        iter(
            reg.db.query(
                "select (select coalesce(max(id), 0) from events) as e, "
                "(select count(*) from versions) as v, (select count(*) from aliases) as a"
            )
        )
    )
    return f"{row['e']}.{row['v']}.{row['a']}"


def lineage(reg, ref: str, limit: int = 60) -> dict:
    """The family of one version: its ancestors (what it was made from, and so on up) and
    its descendants (what was made from it, and so on down), through lineage edges, up to
    ``limit`` versions (``truncated`` says when there were more), as nodes and labelled
    edges for drawing."""
    start = reg.resolve(ref)
    q = reg.db.query
    seen = {start["id"]}
    edges: dict[int, dict] = {}
    truncated = False
    for near, far in (("child_id", "parent_id"), ("parent_id", "child_id")):  # up, then down
        frontier = [start["id"]]
        while frontier:
            marks = ", ".join("?" * len(frontier))
            found = list(
                q(
                    f"""select id, child_id, parent_id, operation, plugin, params from lineage
                         where parent_id is not null and {near} in ({marks})""",
                    frontier,
                )
            )
            frontier = []
            for e in found:
                if e[far] not in seen:
                    if len(seen) >= limit:
                        truncated = True
                        continue
                    seen.add(e[far])
                    frontier.append(e[far])
                edges[e["id"]] = e
    marks = ", ".join("?" * len(seen))
    nodes = {
        r["id"]: r
        for r in q(
            f"""select v.id, m.name || '@' || v.number as ref, v.format, v.size_bytes,
                       (select group_concat(alias, ', ') from aliases where version_id = v.id)
                           as aliases
                  from versions v join models m on m.id = v.model_id
                 where v.id in ({marks})""",
            list(seen),
        )
    }
    child_metrics = _metrics(reg, [e["child_id"] for e in edges.values()])
    out_edges = []
    for e in sorted(edges.values(), key=lambda e: e["id"]):
        if e["child_id"] not in nodes or e["parent_id"] not in nodes:
            continue
        parent, child = nodes[e["parent_id"]], nodes[e["child_id"]]
        params = json.loads(e["params"] or "{}")
        out_edges.append(
            {
                "parent": parent["ref"],
                "child": child["ref"],
                "operation": e["operation"],
                "plugin": e["plugin"],
                "label": _edge_label(e, params, parent, child, child_metrics.get(e["child_id"])),
            }
        )
    ordered = sorted(nodes.values(), key=lambda n: n["id"])
    return {
        "ref": start["ref"],
        "nodes": [
            {
                "ref": n["ref"],
                "format": n["format"],
                "size_bytes": n["size_bytes"],
                "aliases": n["aliases"] or "",
            }
            for n in ordered
        ],
        "edges": out_edges,
        "truncated": truncated,
    }


def _metrics(reg, version_ids: list[int]) -> dict[int, dict]:
    if not version_ids:
        return {}
    out: dict[int, dict] = {}
    marks = ", ".join("?" * len(version_ids))
    for r in reg.db.query(
        f"select version_id, name, value from metrics where version_id in ({marks})",
        version_ids,
    ):
        out.setdefault(r["version_id"], {})[r["name"]] = r["value"]
    return out


def _edge_label(edge: dict, params: dict, parent: dict, child: dict, metrics) -> str:
    """What a derivation did and what it cost, in a few words: the operation (and which
    compressor or exporter), the size ratio, and the fidelity measured when it was made."""
    metrics = metrics or {}
    what = params.get("compressor") or params.get("exporter") or edge["plugin"] or ""
    words = [edge["operation"] + (f" {what}" if what and what != edge["operation"] else "")]
    if parent["size_bytes"]:
        words.append(f"size {child['size_bytes'] / parent['size_bytes']:.2f}x")
    before = params.get("parent_metrics") or {}
    if "accuracy" in metrics and "accuracy" in before:
        words.append(f"accuracy {metrics['accuracy'] - before['accuracy']:+.3f}")
    elif "cosine_mean" in metrics:
        words.append(f"cosine {metrics['cosine_mean']:.4f}")
    elif "parity_min_cosine" in metrics:
        words.append(f"parity cosine {metrics['parity_min_cosine']:.4f}")
    return ", ".join(words)
