"""Laying out a version's files in one folder, safely for concurrent readers.

Several processes (three replicas starting together) may check out one version at the same
moment. A folder another process may already have returned is therefore never removed or
rebuilt in place: a layout is built in a unique staging folder and renamed into place; a
complete layout whose files are the verified blobs is used as it is; a stale one (a file
edited by hand) is renamed aside first and removed after. A lock file beside the layout
serialises the writers of one layout, so that two of them cannot swap each other's good
layout away; readers of a good layout never wait.
"""

from __future__ import annotations

import filecmp
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import IntegrityError


def layout_matches(target: Path, blobs: dict[str, Path]) -> bool:
    """Whether every file under ``target`` is its verified blob (a hard link, or an equal
    copy where the file system has no hard links)."""
    try:
        for name, blob in blobs.items():
            path = target / name
            if path.is_symlink() or not path.is_file():
                return False
            if not os.path.samefile(path, blob) and not filecmp.cmp(path, blob, shallow=False):
                return False
    except OSError:
        return False
    return True


@contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): renames alone keep readers safe
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _stage(staging: Path, blobs: dict[str, Path]) -> None:
    for name, blob in blobs.items():
        staged = staging / name
        try:
            staged.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blob, staged)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: a copy of the verified blob
                shutil.copyfile(blob, staged)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise IntegrityError(
                f"File {name!r} of this version is also the folder of another of its files, so "
                "the version cannot be laid out. Re-register it with distinct file names."
            ) from None


def lay_out(target: Path, blobs: dict[str, Path]) -> None:
    """Make ``target`` hold ``blobs`` under their names, atomically for readers."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        if layout_matches(target, blobs):
            return  # another process laid it out while this one waited
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        staging = target.with_name(f".{target.name}.tmp-{tag}")
        aside = target.with_name(f".{target.name}.stale-{tag}")
        staging.mkdir()
        try:
            _stage(staging, blobs)
            if os.path.lexists(target):
                os.rename(target, aside)
            try:
                os.rename(staging, target)
            except OSError:  # without a lock, another process may have won the rename
                if not layout_matches(target, blobs):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)
