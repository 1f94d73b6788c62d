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
                          l.plugin_version, l.params
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
