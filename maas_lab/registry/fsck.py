"""Consistency check: what a crash or a hand edit can leave behind, and the safe repairs.

A crash between storing a blob and committing its version leaves an unreferenced blob or a
temp file; both are only removed after ``grace_seconds`` so that a registration running at
the same moment in another process is never robbed of its blob.
"""

from __future__ import annotations

import shutil

from .registry import Registry
from .store import age_seconds, sha256_file


def fsck(
    reg: Registry, repair: bool = False, verify: bool = False, grace_seconds: float = 3600
) -> dict:
    db = reg.db
    problems: list[dict] = []
    integrity = db.execute("pragma integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append({"kind": "database", "item": "registry.db", "detail": integrity})
    referenced = {
        r["sha256"]: r
        for r in db.query("select sha256, size, min(name) as name from files group by sha256")
    }
    on_disk = reg.store.digests()
    for digest, row in referenced.items():
        if digest not in on_disk:
            problems.append(
                {"kind": "missing", "item": digest, "detail": f"blob of {row['name']} is gone"}
            )
        elif verify:
            path = reg.store.path(digest)
            if path.stat().st_size != row["size"] or sha256_file(path) != digest:
                problems.append(
                    {"kind": "corrupt", "item": digest, "detail": f"{row['name']}: digest mismatch"}
                )
    removed = 0
    for digest, mtime in sorted(on_disk.items()):
        if digest in referenced:
            continue
        old = age_seconds(mtime) >= grace_seconds
        problems.append(
            {
                "kind": "orphan blob",
                "item": digest,
                "detail": "no version uses it" + ("" if old else " (recent: kept)"),
            }
        )
        if repair and old:
            reg.store.remove(digest)
            removed += 1
    for tmp in reg.store.temp_files():
        old = age_seconds(tmp.stat().st_mtime) >= grace_seconds
        problems.append(
            {
                "kind": "temp file",
                "item": tmp.name,
                "detail": "interrupted write" + ("" if old else " (recent: kept)"),
            }
        )
        if repair and old:
            tmp.unlink(missing_ok=True)
            removed += 1
    checkouts = reg.root / "checkouts"
    for staging in checkouts.glob("*/*.tmp-*") if checkouts.is_dir() else []:
        problems.append(
            {"kind": "temp file", "item": staging.name, "detail": "interrupted checkout"}
        )
        if repair:
            shutil.rmtree(staging, ignore_errors=True)
            removed += 1
    return {
        "problems": problems,
        "removed": removed,
        "blobs": len(on_disk),
        "versions": db.execute("select count(*) from versions").fetchone()[0],
    }
