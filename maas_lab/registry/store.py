"""Content-addressed blob storage under ``<root>/blobs``.

A blob's path is derived only from its sha256, never from user input. Writes are
crash-safe: copy to a temp file (hashing on the way), fsync it, ``os.replace`` it into place,
fsync the folder. Only then does the caller record it in the database, so a crash leaves at
worst an unreferenced blob, which ``fsck`` finds. Reads verify size and digest.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import IntegrityError, RegistryError, UsageError

CHUNK = 1 << 20
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


class BlobStore:
    def __init__(self, root: Path):
        self.root = root
        self.base = root / "blobs" / "sha256"
        self.tmp = root / "blobs" / "tmp"

    def path(self, digest: str) -> Path:
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise IntegrityError(f"{digest!r} is not a sha256 digest.")
        path = self.base / digest[:2] / digest
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise IntegrityError(f"Blob path for {digest} escapes the registry root.")
        return path

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_file(
        self, src: Path, progress: Callable[[int], None] | None = None
    ) -> tuple[str, int, bool]:
        """Store ``src``; return (sha256, size, created). Identical content is stored once."""
        with open(src, "rb") as f:
            return self._ingest(f.read, None, progress)

    def put_stream(self, read: Callable[[int], bytes], expected: str) -> tuple[str, int, bool]:
        """Store bytes from ``read`` that must hash to ``expected`` (bundle import)."""
        self.path(expected)  # validates the digest before anything is written
        return self._ingest(read, expected, None)

    def _ingest(
        self,
        read: Callable[[int], bytes],
        expected: str | None,
        progress: Callable[[int], None] | None,
    ) -> tuple[str, int, bool]:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="incoming-")
        except OSError as exc:
            raise RegistryError(
                f"Cannot write to the registry at {self.root} ({exc.strerror}). Fix its "
                "permissions, or point MAAS_LAB_HOME at a folder you can write."
            ) from None
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as fout:
                while chunk := read(CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(len(chunk))
                fout.flush()
                os.fsync(fout.fileno())
            digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise IntegrityError(
                    f"Content does not match its manifest: expected sha256 {expected}, "
                    f"got {digest}. The bundle is damaged or was altered."
                )
            dest = self.path(digest)
            if dest.is_file():
                tmp.unlink()
                return digest, size, False
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            return digest, size, True
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise RegistryError(
                    f"No space left on the disk of the registry at {self.root}; nothing was "
                    "registered. Free some space, or point MAAS_LAB_HOME at a larger disk."
                ) from None
            raise

    def verify(self, digest: str, size: int, label: str = "") -> Path:
        """Return the blob's path after checking its size and digest."""
        path = self.path(digest)
        what = f" ({label})" if label else ""
        if not path.is_file():
            raise IntegrityError(
                f"Blob {digest}{what} is missing from {self.base}. Run `maas fsck` to list damage."
            )
        actual_size = path.stat().st_size
        actual = sha256_file(path) if actual_size == size else None
        if actual != digest:
            got = actual or f"a file of {actual_size} bytes instead of {size}"
            raise IntegrityError(
                f"Stored file{what} is corrupt or was tampered with: expected sha256 {digest}, "
                f"got {got}. Re-register the model or restore the registry from a backup."
            )
        return path

    def remove(self, digest: str) -> None:
        path = self.path(digest)
        if path.exists():
            os.chmod(path, stat.S_IWUSR | stat.S_IRUSR)
            path.unlink()
        try:
            path.parent.rmdir()  # only succeeds once the prefix folder is empty
        except OSError:
            pass

    def digests(self) -> dict[str, float]:
        """Every stored blob's digest with its modification time."""
        out = {}
        if self.base.is_dir():
            for path in self.base.glob("??/*"):
                if _DIGEST.match(path.name):
                    out[path.name] = path.stat().st_mtime
        return out

    def temp_files(self) -> list[Path]:
        return sorted(self.tmp.glob("incoming-*")) if self.tmp.is_dir() else []


def check_source_file(path: Path, what: str) -> Path:
    """A file a user offers for registration: it must exist and be a regular file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist.")
    if not path.is_file():
        raise UsageError(f"{what} {str(path)!r} is not a regular file.")
    return path


def age_seconds(mtime: float) -> float:
    return time.time() - mtime
