"""The local model registry: one SQLite file and a blob folder under one root.

Plugin-agnostic storage: this module knows nothing of torch or formats beyond their names;
``maas_lab.api`` checks with the loader plugins before anything reaches ``register``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import ConflictError, NoSuchVersion, NotFoundError, RegistryError, UsageError
from ..hints import option
from . import trust as trust_rows
from .checkouts import lay_out, layout_matches
from .db import INDEX_MODELS, connect, now, write
from .refs import (
    Ref,
    check_alias,
    check_key,
    check_model_name,
    check_relative_file_name,
    is_digits,
    parse_ref,
)
from .store import BlobStore

DEFAULT_HOME = "~/.maas_lab"


def default_root() -> Path:
    return Path(os.environ.get("MAAS_LAB_HOME") or DEFAULT_HOME).expanduser()


@dataclass
class FileSpec:
    """A file offered for a new version: where it is now, its name and role inside the model."""

    source: Path | None
    name: str
    role: str = "file"
    # Set instead of ``source`` for content already in the blob store (bundle import).
    sha256: str | None = None
    size: int | None = None


@dataclass
class Checkout:
    """A version's files, verified against their digests and laid out under their names."""

    ref: str
    format: str
    config: dict[str, Any]
    task: str | None
    dir: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    signature: dict | None = None

    def path(self, name: str) -> Path:
        return self.dir / check_relative_file_name(name)

    def by_role(self, role: str) -> list[Path]:
        return [self.dir / f["name"] for f in self.files if f["role"] == role]


# Registries this process has opened: whose trust decisions a factory may be checked against
# when it is built from a stored config (see maas_lab.trust).
_OPENED: weakref.WeakSet = weakref.WeakSet()


def opened() -> list[Registry]:
    return list(_OPENED)


def actor() -> str:
    """Who is acting, as recorded in events, versions and trust grants."""
    return _actor()


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return str(os.getuid())


class Registry:
    """Open with ``Registry(root)``; the root defaults to ``$MAAS_LAB_HOME`` or ``~/.maas_lab``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.store = BlobStore(self.root)
        self._local = threading.local()
        self._connections: weakref.WeakSet = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection, opened on first use.

        One per thread, not one shared: on a shared connection a read in one thread runs
        inside another thread's open write transaction, so it sees rows not yet committed,
        and that writer's ROLLBACK aborts the read (SQLITE_ABORT). The panels' and the lab
        server extension's worker threads read while others write. A thread's connection
        closes when the thread ends (it is only weakly held here)."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                for folder in (self.root, self.store.base, self.store.tmp):
                    folder.mkdir(parents=True, exist_ok=True)
                db = connect(self.root / "registry.db")
            except (OSError, sqlite3.Error) as exc:
                raise RegistryError(
                    f"Cannot open the registry at {self.root}: {exc}. Point MAAS_LAB_HOME (or "
                    "the root argument) at a folder you can write."
                ) from None
            self._local.db = db
            self._connections.add(db)
            _OPENED.add(self)
        return db

    def close(self) -> None:
        """Close every thread's connection (before the folder is deleted or moved)."""
        for db in list(self._connections):
            db.conn.close()
        self._connections = weakref.WeakSet()
        self._local = threading.local()

    # ------------------------------------------------------------------ resolving references

    def model_row(self, name: str) -> dict:
        check_model_name(name)
        rows = list(self.db["models"].rows_where("name = ?", [name]))
        if not rows:
            names = [r["name"] for r in self.db.query("select name from models")]
            raise NotFoundError("model", name, names)
        return rows[0]

    def resolve(self, ref: str | Ref) -> dict:
        """The version row a reference points at, with ``name``, ``task`` and ``ref`` added."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        model = self.model_row(ref.name)
        if ref.alias is not None:
            rows = list(
                self.db.query(
                    "select version_id from aliases where model_id = ? and alias = ?",
                    [model["id"], ref.alias],
                )
            )
            if not rows:
                known = [
                    r["alias"]
                    for r in self.db.query(
                        "select alias from aliases where model_id = ?", [model["id"]]
                    )
                ]
                raise NotFoundError(f"alias of {ref.name!r}", ref.alias, known)
            where, args = "id = ?", [rows[0]["version_id"]]
        elif ref.version is not None:
            where, args = "model_id = ? and number = ?", [model["id"], ref.version]
        else:
            where = (
                "model_id = ? and number = (select max(number) from versions where model_id = ?)"
            )
            args = [model["id"], model["id"]]
        rows = list(self.db["versions"].rows_where(where, args))
        if not rows:
            numbers = [
                r["number"]
                for r in self.db.query(
                    "select number from versions where model_id = ? order by number", [model["id"]]
                )
            ]
            if not numbers:
                raise NoSuchVersion(f"{ref.name!r} has no versions.", str(ref))
            raise NoSuchVersion(
                f"{ref.name!r} has no version {ref.version}; its versions are "
                f"{numbers[0]}..{numbers[-1]}. Use {ref.name}@{numbers[-1]} for the latest.",
                f"{ref.name}@{ref.version}",
            )
        row = rows[0]
        row.update(name=model["name"], task=model["task"], ref=f"{model['name']}@{row['number']}")
        row["config"] = json.loads(row["config"] or "{}")
        row["signature"] = json.loads(row["signature"]) if row.get("signature") else None
        return row

    # ------------------------------------------------------------------ writing

    def register(
        self,
        name: str,
        files: list[FileSpec],
        format: str,
        *,
        config: dict | None = None,
        task: str | None = None,
        description: str | None = None,
        owner: str | None = None,
        card: str | None = None,
        signature: dict | None = None,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        lineage: Iterable[dict] = (),
        progress: Callable[[int], None] | None = None,
        trusted_code: dict[str, str] | None = None,
    ) -> dict:
        """Store the files and record a new version; return its resolved row.

        Nothing changes on disk unless the whole version is recorded: blobs this call wrote
        are removed again if the database transaction fails. ``trusted_code`` maps the code
        references the version needs to how they came to be trusted; they are recorded in
        the same transaction (see :mod:`maas_lab.trust`), so a refused version grants nothing.
        """
        check_model_name(name)
        if not files:
            raise UsageError("A version needs at least one file.")
        names = [check_relative_file_name(f.name) for f in files]
        if len(set(names)) != len(names):
            raise UsageError("Two files in the version have the same name.")
        _check_no_file_is_a_folder(names)
        tags = {check_key("tag key", k): str(v) for k, v in (tags or {}).items()}
        metrics = _check_metrics(metrics)
        config_json = json.dumps(config or {}, sort_keys=True)
        lineage = list(lineage)
        parents = {
            i: self.resolve(edge["parent"])["id"]
            for i, edge in enumerate(lineage)
            if edge.get("parent")
        }

        created: list[str] = []
        stored = []
        try:
            for spec, fname in zip(files, names, strict=True):
                if spec.sha256 is not None:
                    self.store.verify(spec.sha256, spec.size, fname)
                    digest, size = spec.sha256, spec.size
                else:
                    digest, size, was_created = self.store.put_file(spec.source, progress)
                    if was_created:
                        created.append(digest)
                stored.append({"name": fname, "role": spec.role, "sha256": digest, "size": size})
            with write(self.db):
                model_id, version_id, number = self._insert_version(
                    name, format, stored, config_json, task, description, owner, card
                )
                if signature:
                    self.db["versions"].update(
                        version_id, {"signature": json.dumps(signature, sort_keys=True)}
                    )
                self._set_tags(version_id, tags)
                self._set_metrics(version_id, metrics)
                for i, edge in enumerate(lineage):
                    self.db["lineage"].insert(
                        {
                            "child_id": version_id,
                            "parent_id": parents.get(i),
                            "operation": edge["operation"],
                            "plugin": edge.get("plugin"),
                            "plugin_version": edge.get("plugin_version"),
                            "plugin_distribution": edge.get("plugin_distribution"),
                            "params": json.dumps(edge.get("params") or {}, sort_keys=True),
                            "created_at": now(),
                        }
                    )
                for ref, how in (trusted_code or {}).items():
                    trust_rows.record(self, [ref], _actor(), how)
                self._index(model_id)
                self._event("register", name, number, {"format": format, "files": len(stored)})
        except BaseException:
            self.discard_unreferenced(created)
            raise
        return self.resolve(Ref(name, version=number))

    def _insert_version(self, name, format, stored, config_json, task, description, owner, card):
        models = self.db["models"]
        existing = list(models.rows_where("name = ?", [name]))
        if existing:
            model_id = existing[0]["id"]
            updates = {k: v for k, v in (("task", task), ("description", description)) if v}
            if updates:
                models.update(model_id, updates)
        else:
            model_id = models.insert(
                {
                    "name": name,
                    "task": task,
                    "description": description,
                    "owner": owner or _actor(),
                    "created_at": now(),
                }
            ).last_pk
        # Allocated inside the write transaction: concurrent registrations cannot collide.
        number = self.db.execute(
            "select coalesce(max(number), 0) + 1 from versions where model_id = ?", [model_id]
        ).fetchone()[0]
        version_id = (
            self.db["versions"]
            .insert(
                {
                    "model_id": model_id,
                    "number": number,
                    "format": format,
                    "description": description,
                    "card": card,
                    "config": config_json,
                    "size_bytes": sum(f["size"] for f in stored),
                    "created_at": now(),
                    "created_by": _actor(),
                }
            )
            .last_pk
        )
        self.db["files"].insert_all({"version_id": version_id, **f} for f in stored)
        return model_id, version_id, number

    def discard_unreferenced(self, digests: list[str]) -> None:
        for digest in digests:
            try:
                used = self.db.execute(
                    "select 1 from files where sha256 = ? limit 1", [digest]
                ).fetchone()
                if not used:
                    self.store.remove(digest)
            except Exception:  # fsck will find it; the original error matters more
                pass

    def _set_tags(self, version_id: int, tags: dict[str, str]) -> None:
        if tags:
            self.db["tags"].upsert_all(
                [{"version_id": version_id, "key": k, "value": v} for k, v in tags.items()],
                pk=("version_id", "key"),
            )

    def _set_metrics(self, version_id: int, metrics: dict[str, float]) -> None:
        if metrics:
            at = now()
            self.db["metrics"].upsert_all(
                [
                    {"version_id": version_id, "name": k, "value": v, "recorded_at": at}
                    for k, v in metrics.items()
                ],
                pk=("version_id", "name"),
            )

    def _index(self, model_id: int) -> None:
        """Rebuild the model's search document from all its versions."""
        self.db.execute("delete from search_docs where model_id = ?", [model_id])
        self.db.execute(INDEX_MODELS.format(where="where m.id = ?"), [model_id])

    def _event(self, action: str, model: str | None, version: int | None, detail: dict) -> None:
        self.db["events"].insert(
            {
                "at": now(),
                "actor": _actor(),
                "action": action,
                "model": model,
                "version": version,
                "detail": json.dumps(detail, sort_keys=True),
            }
        )

    def set_alias(self, name: str, alias: str, ref: str | int) -> dict:
        """Point ``name@alias`` at a version, creating or moving it; history is kept."""
        check_alias(alias)
        target = self.resolve(
            f"{name}@{ref}" if isinstance(ref, int) or is_digits(str(ref)) else ref
        )
        if target["name"] != name:
            raise UsageError(f"Alias {alias!r} of {name!r} cannot point at {target['ref']}.")
        with write(self.db):
            current = self.db.execute(
                "select version_id from aliases where model_id = ? and alias = ?",
                [target["model_id"], alias],
            ).fetchone()
            if current and current[0] == target["id"]:
                raise ConflictError(
                    f"{name}@{alias} already points at {target['ref']}; nothing changed. "
                    f"Give another version to move it, or {option('delete', True)} to remove it."
                )
            self.db["aliases"].upsert(
                {
                    "model_id": target["model_id"],
                    "alias": alias,
                    "version_id": target["id"],
                    "updated_at": now(),
                },
                pk=("model_id", "alias"),
            )
            self.db["alias_history"].insert(
                {
                    "model_id": target["model_id"],
                    "alias": alias,
                    "version_id": target["id"],
                    "previous_version_id": current[0] if current else None,
                    "moved_at": now(),
                    "moved_by": _actor(),
                }
            )
            self._event(
                "alias", name, target["number"], {"alias": alias, "moved": current is not None}
            )
        return target

    def delete_alias(self, name: str, alias: str) -> None:
        check_alias(alias)
        target = self.resolve(f"{name}@{alias}")
        with write(self.db):
            self.db.execute(
                "delete from aliases where model_id = ? and alias = ?", [target["model_id"], alias]
            )
            self.db["alias_history"].insert(
                {
                    "model_id": target["model_id"],
                    "alias": alias,
                    "version_id": None,
                    "previous_version_id": target["id"],
                    "moved_at": now(),
                    "moved_by": _actor(),
                }
            )
            self._event("alias-delete", name, target["number"], {"alias": alias})

    def set_tags(self, ref: str, tags: dict[str, str], remove: Iterable[str] = ()) -> dict:
        target = self.resolve(ref)
        tags = {check_key("tag key", k): str(v) for k, v in tags.items()}
        remove = [check_key("tag key", k) for k in remove]
        with write(self.db):
            self._set_tags(target["id"], tags)
            for key in remove:
                self.db.execute(
                    "delete from tags where version_id = ? and key = ?", [target["id"], key]
                )
            self._index(target["model_id"])
            self._event("tag", target["name"], target["number"], {"set": tags, "removed": remove})
        return target

    def log_metrics(self, ref: str, metrics: dict[str, float]) -> dict:
        target = self.resolve(ref)
        metrics = _check_metrics(metrics)
        with write(self.db):
            self._set_metrics(target["id"], metrics)
            self._event("metrics", target["name"], target["number"], metrics)
        return target

    # ------------------------------------------------------------------ reading

    def files(self, version_id: int) -> list[dict]:
        return list(
            self.db.query(
                "select name, role, sha256, size from files where version_id = ? order by name",
                [version_id],
            )
        )

    def checkout(self, ref: str) -> Checkout:
        """Verify every file of a version and lay them out under their names.

        The layout is hard links to the verified blobs: no copy, and the files really sit
        together in one folder (onnxruntime, for one, resolves symlinks and refuses external
        data that then lands elsewhere). Checked on every call: a file edited or replaced by
        hand is no longer the blob's inode, and the layout is rebuilt, never trusted.
        """
        row = self.resolve(ref)
        files = self.files(row["id"])
        manifest = hashlib.sha256(
            json.dumps([(f["name"], f["sha256"]) for f in files]).encode()
        ).hexdigest()[:16]
        target = self.root / "checkouts" / row["name"] / f"{row['number']}-{manifest}"
        blobs = {
            check_relative_file_name(f["name"]): self.store.verify(
                f["sha256"], f["size"], f["name"]
            )
            for f in files
        }
        if not layout_matches(target, blobs):
            lay_out(target, blobs)
        return Checkout(
            ref=row["ref"],
            format=row["format"],
            config=row["config"],
            task=row["task"],
            dir=target,
            files=files,
            signature=row["signature"],
        )


def _check_no_file_is_a_folder(names: list[str]) -> None:
    """``x`` and ``x/y`` cannot both be laid out in one folder: refuse them at register."""
    folders = {}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            folders.setdefault("/".join(parts[:i]), name)
    for name in names:
        if name in folders:
            raise UsageError(
                f"File name {name!r} is both a file and the folder of {folders[name]!r} in one "
                "version; rename one of them."
            )


def _check_metrics(metrics: dict | None) -> dict[str, float]:
    out = {}
    for key, value in (metrics or {}).items():
        check_key("metric name", key)
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"Metric {key!r} must be a number; got {value!r}.") from None
        if out[key] != out[key]:
            raise UsageError(f"Metric {key!r} is NaN; record a number.")
    return out
