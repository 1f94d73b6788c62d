"""Portable bundles: one version as a tar file with a manifest and digests.

Import never trusts member paths: it reads ``manifest.json`` and then only members named
``blobs/<sha256>`` that are regular files, streaming each into the blob store while
checking its digest. Nothing is extracted, so a hostile tar cannot write outside the root.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from ..errors import IntegrityError, UsageError
from .db import now
from .queries import describe
from .refs import check_model_name, check_relative_file_name
from .registry import FileSpec, Registry

BUNDLE_VERSION = 1
MAX_MANIFEST = 16 * 1024 * 1024


def export_bundle(reg: Registry, ref: str, out: Path) -> Path:
    info = describe(reg, ref)
    out = Path(out).expanduser()
    if out.is_dir():
        out = out / f"{info['name']}-{info['number']}.maas.tar"
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
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".bundle-", suffix=".tar")
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
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def import_bundle(reg: Registry, path: Path, name: str | None = None) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"Bundle {str(path)!r} does not exist.")
    try:
        tar = tarfile.open(path, mode="r:*")
    except tarfile.TarError as exc:
        raise UsageError(f"{str(path)!r} is not a maas bundle (tar): {exc}.") from None
    with tar:
        manifest = _read_manifest(tar, path)
        name = check_model_name(name or manifest["model"]["name"])
        files = manifest["files"]
        created: list[str] = []
        try:
            specs = []
            for f in files:
                digest, size = f["sha256"], int(f["size"])
                check_relative_file_name(f["name"])
                member = _member(tar, f"blobs/{digest}")
                if member.size != size:
                    raise IntegrityError(
                        f"{f['name']}: bundle holds {member.size} bytes, manifest says {size}."
                    )
                _, _, was_created = reg.store.put_stream(tar.extractfile(member).read, digest)
                if was_created:
                    created.append(digest)
                specs.append(FileSpec(None, f["name"], f.get("role", "file"), digest, size))
            v = manifest["version"]
            return reg.register(
                name,
                specs,
                v["format"],
                config=v.get("config") or {},
                task=manifest["model"].get("task"),
                description=manifest["model"].get("description"),
                card=v.get("card"),
                signature=v.get("signature"),
                tags=v.get("tags") or {},
                metrics=v.get("metrics") or {},
                lineage=[
                    {
                        "parent": None,
                        "operation": "import",
                        "params": {"bundle": path.name, "source_ref": manifest.get("source_ref")},
                    }
                ],
            )
        except BaseException:
            reg.discard_unreferenced(created)
            raise


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise IntegrityError(f"The bundle lacks {name}, which its manifest lists.") from None
    if not member.isfile():
        raise IntegrityError(f"Bundle member {name} is not a regular file; refusing it.")
    return member


def _read_manifest(tar: tarfile.TarFile, path: Path) -> dict:
    member = _member(tar, "manifest.json")
    if member.size > MAX_MANIFEST:
        raise UsageError(f"{path.name}: manifest.json is implausibly large ({member.size} bytes).")
    try:
        manifest = json.loads(tar.extractfile(member).read())
        if manifest.get("bundle_version") != BUNDLE_VERSION:
            raise UsageError(
                f"{path.name} is bundle version {manifest.get('bundle_version')!r}; this maas_lab "
                f"reads version {BUNDLE_VERSION}. Upgrade maas_lab."
            )
        for f in manifest["files"]:
            f["sha256"], f["size"], f["name"]  # noqa: B018 - presence check
        manifest["version"]["format"], manifest["model"]["name"]  # noqa: B018
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path.name} has a malformed manifest ({exc!r}).") from None
    return manifest
