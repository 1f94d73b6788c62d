"""Hand a registered version to model servers clusters already run: a Triton model
repository (:mod:`.triton`) or a KServe InferenceService with its storage (:mod:`.kserve`).

The output folder is the person's own: it is written whole in a temporary sibling, checked
(every ``config.pbtxt`` parsed back and compared with what was meant), and only then moved
into place, so a failed export leaves nothing behind and ``force`` replaces the old folder
only once the new one is complete. Names written into it are validated model names.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ConflictError, UsageError
from ..hints import option
from ..registry.queries import versions
from . import kserve, triton
from .pbtxt import loads

FORMATS = ("triton", "kserve")
REPEATED = (
    "input",
    "output",
    "dims",
    "step",
    "input_map",
    "output_map",
    "parameters",
    "versions",
    "instance_group",
)


def export_repo(
    reg, ref: str, out, fmt: str = "triton", *, force: bool = False, storage_uri: str | None = None
) -> dict:
    """Write version ``ref`` of ``reg`` as ``fmt`` into the folder ``out``; returns
    ``{"ref", "format", "out", "files", "notes", "next"}``. Raises ``UsageError`` for a
    format, version or signature the target cannot take and ``ConflictError`` for an ``out``
    that holds files (unless ``force``)."""
    if fmt not in FORMATS:
        raise UsageError(
            f"{option('format', fmt)}: unknown export format; choose one of {', '.join(FORMATS)}."
        )
    if storage_uri is not None and fmt != "kserve":
        raise UsageError(
            f"{option('storage_uri', storage_uri)} says where KServe reads the repository; "
            f"it goes with {option('format', 'kserve')}."
        )
    if storage_uri is not None and (
        not storage_uri.strip() or any(c.isspace() for c in storage_uri)
    ):
        raise UsageError(f"{option('storage_uri', storage_uri)}: give a URI without spaces.")
    out = Path(out).expanduser().absolute()
    _check_out(reg, out, force)
    checkout = reg.checkout(ref)
    row = reg.resolve(checkout.ref)
    name, number = row["name"], row["number"]
    rows = versions(reg, [name])
    target = "Triton" if fmt == "triton" else "KServe's Triton runtime"
    triton.refuse_format(checkout, rows, target)
    made = next((p for p in reversed(out.parents) if not p.exists()), None)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        repo = work if fmt == "triton" else work / kserve.STORAGE_FOLDER
        repo.mkdir(exist_ok=True)
        meant: dict[Path, dict] = {}
        notes = triton.write(checkout, number, name, repo, meant)
        check_configs(meant)
        uri = None
        if fmt == "kserve":
            kind = "ensemble" if triton.is_text(checkout) else checkout.format
            uri = storage_uri or kserve.default_storage_uri(name)
            doc = kserve.manifest(name, kind, uri)
            (work / kserve.MANIFEST).write_text(kserve.to_yaml(doc))
        (work / MARKER).write_text(json.dumps({"ref": checkout.ref, "format": fmt}) + "\n")
        files = sorted(
            p.relative_to(work).as_posix()
            for p in work.rglob("*")
            if p.is_file() and p.name != MARKER
        )
        try:
            _replace(work, out)
        except OSError as exc:
            raise UsageError(f"Cannot write {out}: {exc.strerror or exc}.") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if made is not None:  # folders made for it: a failed export leaves nothing behind
            shutil.rmtree(made, ignore_errors=True)
        raise
    return {
        "ref": checkout.ref,
        "format": fmt,
        "out": str(out),
        "files": [{"file": f, "bytes": (out / f).stat().st_size} for f in files],
        "notes": notes,
        "next": _next_steps(fmt, out, name, uri),
    }


# Written into every export: what --force may replace (an earlier export, nothing else).
MARKER = ".maas-export-repo.json"


def _check_out(reg, out: Path, force: bool) -> None:
    root = Path(reg.root).resolve()
    real = out.resolve()
    if real == root or real.is_relative_to(root) or root.is_relative_to(real):
        raise UsageError(
            f"{out} is, or holds, the registry at {root}; give an output folder outside it."
        )
    if out.is_symlink():
        raise UsageError(f"{out} is a link; give the folder itself to write the repository in.")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a folder to write the repository in.")
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not force:
        raise ConflictError(
            f"{out} already holds files; give another folder, or {option('force', True)} to "
            "replace an earlier export there."
        )
    # --force replaces a folder whole: only one this command wrote, never a person's own.
    here = Path.cwd().resolve()
    if real == Path.home().resolve() or here == real or here.is_relative_to(real):
        raise UsageError(
            f"{out} is your home or working folder (or holds it); {option('force', True)} "
            "replaces only an earlier export: give a folder of its own."
        )
    if not (out / MARKER).is_file():
        raise ConflictError(
            f"{out} holds files that export-repo did not write (it has no {MARKER}); "
            f"{option('force', True)} replaces only an earlier export: give a new or empty "
            "folder."
        )


def _replace(work: Path, out: Path) -> None:
    """Move the finished ``work`` to ``out``; an old ``out`` is removed only after."""
    os.chmod(work, 0o755)  # mkdtemp makes it private; the folder is the person's to share
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_configs(meant: dict[Path, dict]) -> None:
    """Parse every written ``config.pbtxt`` back and compare it with what was meant: a
    config that does not read back as meant is a bug here, never a file to hand to Triton."""
    for path, config in meant.items():
        parsed = loads(path.read_text(), REPEATED)
        if parsed != config:
            raise AssertionError(f"{path} reads back as {parsed}, not {config}")


def _next_steps(fmt: str, out: Path, name: str, uri: str | None) -> list[str]:
    if fmt == "triton":
        return [
            f"start tritonserver with {out} as its model repository (docs/deploy.md, Triton,"
            " has the docker line)",
            f"curl localhost:8000/v2/models/{name}/config",
            "(docs/deploy.md: Triton)",
        ]
    return [
        f"copy {out / kserve.STORAGE_FOLDER}/ to {uri} (its contents, not the folder)",
        f"kubectl apply -f {out / kserve.MANIFEST}",
        f"kubectl get inferenceservice {kserve.service_name(name)}",
        "(docs/deploy.md: KServe)",
    ]
