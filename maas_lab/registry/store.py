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
from ..hints import command

CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")


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
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
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
        with open_source_file(src) as f:  # the checked file itself, never a swapped-in link
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
                f"Blob {digest}{what} is missing from the registry. "
                f"Run `{command('fsck')}` to list damage."
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
                if _DIGEST.fullmatch(path.name):
                    out[path.name] = path.stat().st_mtime
        return out

    def temp_files(self) -> list[Path]:
        return sorted(self.tmp.glob("incoming-*")) if self.tmp.is_dir() else []


MAX_CARD_BYTES = 1 << 20


def _pseudo_file_systems() -> set[int]:
    """Devices of /proc and /sys: their "regular" files are views of the machine's state."""
    out = set()
    for folder in ("/proc", "/sys"):
        try:
            out.add(os.stat(folder).st_dev)
        except OSError:
            pass
    return out


def _check_regular(st: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(st.st_mode) or st.st_dev in _pseudo_file_systems():
        raise UsageError(
            f"{shown} is not a regular file (a device, pipe, socket or /proc file); "
            "only regular files can be registered. Copy its content into a file first."
        )


def allowed_roots(folder: Path) -> list[Path]:
    """Where a file offered from ``folder`` may really live: inside the folder, or, for a
    Hugging Face cache snapshot (``snapshots/<rev>/x -> ../../blobs/<sha>``), in that
    model's own blob folder."""
    real = Path(os.path.realpath(folder))
    roots = [real]
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        roots.append(real.parent.parent / "blobs")
    return roots


def check_source_file(
    path: Path, what: str, folder: Path | None = None, label: str | None = None
) -> Path:
    """The real path of a file a user offers for registration, after the one check every
    source goes through: it exists, its real path stays inside ``folder`` (by default the
    folder it is named in), so a link cannot bring in ``/etc/passwd``, and it is a regular
    file, not a device, pipe, socket or /proc file. ``what`` names the file as the user gave
    it (``label`` replaces "what 'path'" in messages); messages never show the file's
    content or where a link points."""
    given = Path(path).expanduser()
    shown = label or f"{what} {str(given)!r}"
    base = Path(folder).expanduser() if folder is not None else given.absolute().parent
    if not os.path.lexists(given):
        raise UsageError(f"{shown} does not exist.")
    real = Path(os.path.realpath(given))
    if not any(real.is_relative_to(root) for root in allowed_roots(base)):
        raise UsageError(
            f"{shown} is a link to a file outside {str(base)!r}; refusing it (a link "
            "could bring in any file on this machine). Copy the file itself into the folder."
        )
    try:
        st = os.stat(real)
    except OSError:
        raise UsageError(f"{shown} does not exist (a broken link).") from None
    _check_regular(st, shown)
    return real


def open_source_file(path: Path, what: str = "File"):
    """Open a checked source file for reading, re-checking the opened descriptor itself.

    The real path is opened with ``O_NOFOLLOW`` (a link swapped in after the check fails)
    and ``O_NONBLOCK`` (a pipe swapped in cannot hang us); ``fstat`` confirms a regular file
    and, on Linux, the descriptor's own path confirms it is the file that was checked.
    """
    real = os.path.realpath(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(
            f"{what} {str(path)!r} cannot be read ({exc.strerror}); it changed while being "
            "registered, or you lack permission to read it."
        ) from None
    try:
        _check_regular(os.fstat(fd), f"{what} {str(path)!r}")
        proc = f"/proc/self/fd/{fd}"
        if os.path.exists(proc) and os.readlink(proc) != real:
            raise UsageError(f"{what} {str(path)!r} changed while being registered; try again.")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_card(path: Path, shown: str, folder: Path | None = None) -> str:
    """A model card's text: UTF-8, at most ``MAX_CARD_BYTES``, read from the checked file."""
    real = check_source_file(path, "Model card", folder, f"Model card {shown}")
    with open_source_file(real, "Model card") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(MAX_CARD_BYTES + 1)
    if max(size, len(data)) > MAX_CARD_BYTES:
        raise UsageError(
            f"Model card {shown} is {max(size, len(data)) / (1 << 20):.1f} MiB; a model card "
            f"may be at most {MAX_CARD_BYTES >> 20} MiB. Shorten it (link to longer documents)."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"Model card {shown} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}). Save the card as UTF-8 markdown."
        ) from None


def age_seconds(mtime: float) -> float:
    return time.time() - mtime
