"""Portable bundles: one version as a tar file with a manifest and digests.

Import never trusts member paths: it reads ``manifest.json`` and then only members named
``blobs/<sha256>`` that are plain regular files, each hashed before anything is stored and
then streamed into the blob store. Nothing is extracted, so a hostile tar cannot write
outside the root, and nothing it names as code runs unless the user trusted it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import IntegrityError, UsageError
from ..hints import command
from .db import now
from .queries import describe
from .refs import check_model_name, check_relative_file_name
from .registry import FileSpec, Registry

BUNDLE_VERSION = 1
MAX_MANIFEST = 16 * 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")


def export_bundle(reg: Registry, ref: str, out: str | os.PathLike) -> Path:
    """Write ``ref`` to ``out``: a file, or a folder (one that exists, or a path ending in
    ``/``, made if missing) for ``NAME-N.maas.tar``; returns the file's path."""
    info = describe(reg, ref)
    folder = str(out).endswith(("/", os.sep))
    out = Path(out).expanduser()
    if folder and not out.is_dir():
        try:
            out.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"Cannot make the folder {out}: {exc.strerror}.") from None
    if out.is_dir():
        out = out / f"{info['name']}-{info['number']}.maas.tar"
    if not out.parent.is_dir():
        what = "is not a folder" if out.parent.exists() else "does not exist"
        raise UsageError(
            f"Cannot write {out.name} into {out.parent}: it {what}. Give an existing "
            "folder, or a path ending in / to make one."
        )
    manifest = {
        "bundle_version": BUNDLE_VERSION,
        "exported_at": now(),
        "source_ref": info["ref"],
        "model": {"name": info["name"], "task": info["task"], "description": info["description"]},
        "version": {
            k: info[k] for k in ("format", "config", "card", "tags", "metrics", "signature")
        },
        "lineage": info["parents"],
        "files": info["files"],
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".bundle-", suffix=".tar")
    except OSError as exc:
        raise UsageError(f"Cannot write {out.name} into {out.parent}: {exc.strerror}.") from None
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            member = tarfile.TarInfo("manifest.json")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
            for f in sorted(
                {f["sha256"]: f for f in info["files"]}.values(), key=lambda f: f["sha256"]
            ):
                path = reg.store.verify(f["sha256"], f["size"], f["name"])
                tar.add(path, arcname=f"blobs/{f['sha256']}", recursive=False)
        os.chmod(tmp, 0o644)  # a file to hand on, not a private temp file (mkstemp's 0600)
        os.replace(tmp, out)
    except OSError as exc:  # a full disk, a folder that went away: said, and nothing left
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"Cannot write {out}: {exc.strerror or exc}.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def import_bundle(
    reg: Registry,
    path: Path,
    name: str | None = None,
    *,
    precheck: Callable[[str, dict], None] | None = None,
    check: Callable[[str, dict[str, Path], dict], dict[str, str]] | None = None,
) -> dict:
    """Register the bundle at ``path`` as a new version of ``name`` (default: its own).

    Order matters, so that a hostile bundle costs nothing: the manifest is read and checked
    first (types, sizes, names, one manifest); ``precheck(format, config)`` refuses code
    nobody trusted before a byte is stored; free space is checked against the declared sizes
    of what is new; every member is hashed while being read and refused as soon as it runs
    past its declared size, all before anything is written (so a compressed or sparse bomb
    writes nothing); only then are blobs stored, and ``check(format, {name: path},
    config)`` (the same check every new version passes) sees them laid out under their
    names before the version is recorded. Anything that fails removes the blobs this import wrote.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"Bundle {path.name!r} does not exist.")
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError(f"{path.name!r} is not a maas bundle (tar): {exc}.") from None
    with tar:
        members = _members(tar, path)
        manifest = _read_manifest(tar, members, path)
        name = check_model_name(name or manifest["model"]["name"])
        v = manifest["version"]
        if precheck is not None:
            precheck(v["format"], v["config"])
        files = manifest["files"]
        blobs = {f["sha256"]: f for f in files}
        for digest, f in blobs.items():
            if _member(members, f"blobs/{digest}").size != f["size"]:
                raise IntegrityError(
                    f"{f['name']}: bundle holds {members[f'blobs/{digest}'].size} bytes, "
                    f"manifest says {f['size']}."
                )
        new_bytes = sum(f["size"] for d, f in blobs.items() if not reg.store.exists(d))
        _check_free_space(reg, new_bytes, path)
        for digest, f in blobs.items():
            _hash_member(tar, members[f"blobs/{digest}"], f, path)
        created: list[str] = []
        staging = None
        try:
            for digest, f in blobs.items():
                member = _member(members, f"blobs/{digest}")
                _, _, was_created = reg.store.put_stream(
                    _capped(tar.extractfile(member), f["size"], f["name"]), digest
                )
                if was_created:
                    created.append(digest)
            grants: dict[str, str] = {}
            if check is not None:
                staging = Path(tempfile.mkdtemp(dir=reg.store.tmp, prefix="import-"))
                laid = _lay_out(reg, staging, files)
                grants = check(v["format"], laid, v["config"])
            specs = [FileSpec(None, f["name"], f["role"], f["sha256"], f["size"]) for f in files]
            return reg.register(
                name,
                specs,
                v["format"],
                config=v["config"],
                task=manifest["model"]["task"],
                description=manifest["model"]["description"],
                card=v["card"],
                signature=v["signature"],
                tags=v["tags"],
                metrics=v["metrics"],
                lineage=[
                    {
                        "parent": None,
                        "operation": "import",
                        "params": {"bundle": path.name, "source_ref": manifest.get("source_ref")},
                    }
                ],
                trusted_code=grants,
            )
        except BaseException:
            reg.discard_unreferenced(created)
            raise
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)


MAX_FILES = 10_000
MAX_CARD = 1 << 20


def _members(tar: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    """Every member by name; a name that appears twice makes the tar ambiguous (which copy
    did the exporter mean?), so the whole bundle is refused."""
    out: dict[str, tarfile.TarInfo] = {}
    try:
        for member in tar:
            if member.name in out:
                raise UsageError(
                    f"{path.name} holds {member.name} twice; a bundle names each member once. "
                    "Refusing it: re-export the bundle with "
                    f"`{command('bundle export', 'REF', 'OUT')}`."
                )
            out[member.name] = member
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError(f"{path.name!r} is not a readable maas bundle (tar): {exc}.") from None
    return out


def _member(members: dict[str, tarfile.TarInfo], name: str) -> tarfile.TarInfo:
    member = members.get(name)
    if member is None:
        raise IntegrityError(f"The bundle lacks {name}, which its manifest lists.")
    if not member.isfile() or member.issparse():
        raise IntegrityError(f"Bundle member {name} is not a plain regular file; refusing it.")
    return member


def _capped(stream, limit: int, label: str) -> Callable[[int], bytes]:
    """A ``read`` that fails as soon as more than ``limit`` bytes come out of ``stream``."""
    seen = 0

    def read(n: int) -> bytes:
        nonlocal seen
        chunk = stream.read(n)
        seen += len(chunk)
        if seen > limit:
            raise IntegrityError(
                f"{label}: the bundle holds more than the {limit} bytes its manifest declares; "
                "refusing it."
            )
        return chunk

    return read


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo, f: dict, path: Path) -> None:
    """Check a member's digest by reading it, before anything is written."""
    read = _capped(tar.extractfile(member), f["size"], f["name"])
    h = hashlib.sha256()
    size = 0
    while chunk := read(1 << 20):
        h.update(chunk)
        size += len(chunk)
    if size != f["size"] or h.hexdigest() != f["sha256"]:
        raise IntegrityError(
            f"{f['name']} in {path.name} does not match its manifest: expected sha256 "
            f"{f['sha256']}, got {h.hexdigest()}. The bundle is damaged or was altered; "
            "nothing was imported."
        )


def _check_free_space(reg: Registry, needed: int, path: Path) -> None:
    reg.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(reg.root).free
    margin = 64 << 20
    if needed + margin > free:
        raise UsageError(
            f"{path.name} needs {needed} bytes of new files but the registry's disk has {free} "
            "free; nothing was imported. Free some space, or import into another registry."
        )


def _lay_out(reg: Registry, staging: Path, files: list[dict]) -> dict[str, Path]:
    """The version's files under their names, linked to the verified blobs (as a checkout)."""
    laid = {}
    for f in files:
        target = staging / f["name"]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(reg.store.path(f["sha256"]), target)
            except OSError:
                shutil.copyfile(reg.store.path(f["sha256"]), target)
        except OSError as exc:
            raise UsageError(
                f"The bundle's file names cannot be laid out together ({f['name']!r}: "
                f"{exc.strerror}); a name may be both a file and a folder. Refusing it."
            ) from None
        laid[f["name"]] = target
    return laid


def _read_manifest(tar: tarfile.TarFile, members: dict, path: Path) -> dict:
    member = _member(members, "manifest.json")
    if member.size > MAX_MANIFEST:
        raise UsageError(f"{path.name}: manifest.json is implausibly large ({member.size} bytes).")
    try:
        manifest = json.loads(tar.extractfile(member).read())
    except ValueError as exc:
        raise UsageError(f"{path.name}: manifest.json is not JSON ({exc}).") from None
    if not isinstance(manifest, dict):
        raise UsageError(f"{path.name}: manifest.json must be a JSON object.")
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise UsageError(
            f"{path.name} is bundle version {manifest.get('bundle_version')!r}; this maas_lab "
            f"reads version {BUNDLE_VERSION}. Upgrade maas_lab."
        )
    return _checked_manifest(manifest, path)


def _checked_manifest(m: dict, path: Path) -> dict:
    """The manifest with every field's type checked, so nothing below meets a surprise."""

    def bad(field: str, want: str, got) -> UsageError:
        return UsageError(
            f"{path.name} has a malformed manifest: {field} must be {want}, got {got!r:.80}. "
            f"Re-export the bundle with `{command('bundle export', 'REF', 'OUT')}`."
        )

    def obj(parent: dict, key: str, field: str, optional: bool = False) -> dict:
        value = parent.get(key)
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            raise bad(field, "an object", value)
        return value

    def text(parent: dict, key: str, field: str, optional: bool = True) -> str | None:
        value = parent.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise bad(field, "a string", value)
        return value

    model = obj(m, "model", "model")
    version = obj(m, "version", "version")
    out_model = {
        "name": text(model, "name", "model.name", optional=False),
        "task": text(model, "task", "model.task"),
        "description": text(model, "description", "model.description"),
    }
    card = text(version, "card", "version.card")
    if card is not None and len(card.encode()) > MAX_CARD:
        raise UsageError(f"{path.name}: its model card is over {MAX_CARD} bytes; refusing it.")
    tags = obj(version, "tags", "version.tags", optional=True)
    if not all(isinstance(v, str) for v in tags.values()):
        raise bad("version.tags", "an object of strings", tags)
    metrics = obj(version, "metrics", "version.metrics", optional=True)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()):
        raise bad("version.metrics", "an object of numbers", metrics)
    signature = version.get("signature")
    if signature is not None and not isinstance(signature, dict):
        raise bad("version.signature", "an object or null", signature)
    out_version = {
        "format": text(version, "format", "version.format", optional=False),
        "config": obj(version, "config", "version.config", optional=True),
        "card": card,
        "tags": tags,
        "metrics": metrics,
        "signature": signature,
    }
    files = m.get("files")
    if not isinstance(files, list) or not files:
        raise bad("files", "a non-empty list", files)
    if len(files) > MAX_FILES:
        raise UsageError(f"{path.name} lists {len(files)} files; the limit is {MAX_FILES}.")
    out_files = []
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise bad(f"files[{i}]", "an object", f)
        size = f.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"files[{i}].size", "a whole number of bytes", size)
        digest = text(f, "sha256", f"files[{i}].sha256", optional=False)
        if not _DIGEST.fullmatch(digest):
            raise bad(f"files[{i}].sha256", "a sha256 hex digest", digest)
        fname = check_relative_file_name(text(f, "name", f"files[{i}].name", optional=False))
        role = text(f, "role", f"files[{i}].role") or "file"
        out_files.append({"name": fname, "role": role, "sha256": digest, "size": size})
    return {
        "source_ref": m.get("source_ref") if isinstance(m.get("source_ref"), str) else None,
        "model": out_model,
        "version": out_version,
        "files": out_files,
    }
