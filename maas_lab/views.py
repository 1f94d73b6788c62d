"""How registry reads look: a version, a model's history, the plugins, as reports and
tables that print as text and render as HTML. Built here, so the API stays a facade and a
panel can reuse the same views."""

from __future__ import annotations

import json

from .figures import cpu_text
from .hookspecs import CONTRACT
from .results import Collapsible, Report, Table, human_size, kv_table


def version_report(info: dict) -> Report:
    """One version in full, from ``registry.queries.describe``."""
    summary = {
        "task": info["task"],
        "format": info["format"],
        "size": human_size(info["size_bytes"]),
        "description": info["description"],
        "owner": info["owner"],
        "created": f"{info['created_at'][:19]} by {info['created_by']}",
        "aliases": ", ".join(info["aliases"]),
        "tags": ", ".join(f"{k}={v}" if v else k for k, v in info["tags"].items()),
    }
    if info["config"]:
        summary["config"] = json.dumps(info["config"], sort_keys=True)
    measured = [
        p["params"]["measured_on"] for p in info["parents"] if p["params"].get("measured_on")
    ]
    if measured:  # int8 figures depend on the instruction set: say which one measured them
        summary["measured on"] = cpu_text(measured[0])
    files = Table(
        info["files"], ["name", "role", "size", "sha256"], formatters={"size": human_size}
    )
    metrics = Table(
        [{"metric": k, "value": v} for k, v in info["metrics"].items()], ["metric", "value"]
    )
    for p in info["parents"]:
        if p["ref"] is None and p["params"].get("source_ref"):
            p["ref"] = f"{p['params']['source_ref']} (elsewhere)"
        elif p["ref"] is None and p["operation"] == "tune" and p["params"].get("study"):
            # a tuned function's model has no parent version: its origin is the study's trial
            p["ref"] = f"study {p['params']['study']}, trial {p['params'].get('trial')}"
    lineage = Table(
        [{"relation": "derived from", **p} for p in info["parents"]]
        + [{"relation": "parent of", **c} for c in info["children"]],
        ["relation", "ref", "operation", "plugin"],
    )
    sig = info["signature"] or {}
    signature = Table(
        [
            {"io": io[:-1], "name": t["name"], "dtype": t["dtype"], "shape": t["shape"]}
            for io in ("inputs", "outputs")
            for t in sig.get(io, [])
        ],
        ["io", "name", "dtype", "shape"],
    )
    parts = [
        ("", kv_table({k: v for k, v in summary.items() if v})),
        ("Signature", signature),
        ("Files", files),
        ("Metrics", metrics),
        ("Lineage", lineage),
        ("Model card", Collapsible("show the model card", info["card"] or "")),
    ]
    return Report(info["ref"], parts, data=info)


def history_report(name: str, info: dict) -> Report:
    """Every version of a model and every alias move, from ``registry.queries.history``."""
    versions = Table(
        info["versions"],
        ["number", "format", "size_bytes", "created_at", "aliases", "tags", "derived"],
        formatters={"size_bytes": human_size, "created_at": lambda v: (v or "")[:19]},
    )
    moves = Table(
        info["alias_moves"],
        ["moved_at", "alias", "previous", "version", "moved_by"],
        formatters={"moved_at": lambda v: (v or "")[:19]},
    )
    return Report(
        f"{name} ({info['task'] or 'no task'}): {len(info['versions'])} version(s)",
        [("Versions", versions), ("Alias history", moves)],
        data=info,
    )


def alias_report(name: str, alias: str, info: dict, servers: list[str]) -> Report:
    """An alias after a move or a delete: where it points, its moves, the servers that
    followed it. ``info`` is ``registry.queries.history`` of the model."""
    moves = [m for m in info["alias_moves"] if m["alias"] == alias]
    last = moves[-1] if moves else {}
    ref = f"{name}@{last['version']}" if last.get("version") is not None else None
    previous = f"{name}@{last['previous']}" if last.get("previous") is not None else None
    title = f"{name}@{alias} -> {ref}" if ref else f"{name}@{alias} deleted (was {previous})"
    table = Table(
        moves,
        ["moved_at", "previous", "version", "moved_by"],
        formatters={"moved_at": lambda v: (v or "")[:19]},
    )
    parts = [(f"Servers following {name}@{alias}", "\n".join(servers))] if servers else []
    data = {
        "model": name,
        "alias": alias,
        "ref": ref,
        "previous": previous,
        "moves": moves,
        "servers": servers,
    }
    return Report(title, [*parts, (f"Moves of {name}@{alias}", table)], data=data)


def plugins_table(pl) -> Table:
    """The loaded plugins (a ``Plugins``), what each provides, failures and conflicts: one
    row per plugin, whose status says what went wrong with it, if anything."""
    components = pl.components  # collecting runs every hook, and records what failed
    problems: dict[str, list] = {}
    for f in pl.failures:
        problems.setdefault(f.plugin, []).append(f)

    def status(failures) -> str:
        if not failures:
            return "ok"
        return "; ".join(
            f"REFUSED: {f.error}" if f.hook == "contract" else f"FAILED in {f.hook}: {f.error}"
            for f in failures
        )

    rows = []
    for info in pl.info.values():
        provided = [
            f"{c.kind}:{c.name}"
            for kind in components.values()
            for c in kind.values()
            if c.plugin == info.name
        ]
        rows.append(
            {
                "plugin": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "contract": info.contract,
                "hooks": ", ".join(info.hooks),
                "provides": ", ".join(provided),
                "status": status(problems.pop(info.name, [])),
            }
        )
    for failures in problems.values():  # never loaded: failed to import, or refused
        f = failures[0]
        rows.append(
            {
                "plugin": f.plugin,
                "distribution": f.distribution,
                "version": f.version,
                "contract": "",
                "hooks": "",
                "provides": "",
                "status": status(failures),
            }
        )
    working = sum(r["status"] == "ok" for r in rows)
    failed = len(rows) - working
    return Table(
        rows,
        ["plugin", "distribution", "version", "contract", "provides", "status"],
        title=f"{working} plugin(s) working (this core: contract {CONTRACT})"
        + (f", {failed} with problems" if failed else ""),
        note="\n".join(pl.conflicts + _unknown_preferences(pl)),
    )


def _unknown_preferences(pl) -> list[str]:
    """A MAAS_LAB_PREFER naming no loaded plugin chooses nothing: say so, not stay quiet."""
    from .plugins import PREFER, preferred

    unknown = [p for p in preferred() if p not in pl.info]
    if not unknown:
        return []
    return [f"{PREFER} names {', '.join(unknown)}, which no loaded plugin is called."]
