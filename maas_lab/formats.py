"""Format checks the core does itself, before any plugin or framework is imported.

Safetensors weights are checked by parsing their header in plain Python: no torch import, and
no way for a pickle to run, since nothing here ever unpickles.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from .errors import UsageError

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_FIX = (
    "Save weights with safetensors, e.g. "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`."
)


def sniff(path: Path) -> str:
    """Name what a file looks like, for error messages."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK":
        return "a zip archive (torch.save output, which holds a pickle)"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"c", b"}", b"]"):
        return "a Python pickle"
    if head[:4] == b"\x08\x00\x12\x00" or path.suffix == ".onnx":
        return "an ONNX model"
    return "something else"


def pickle_kind(path: Path) -> str | None:
    """Say why a file holds a pickle, judged by its content, not its name; None if not.

    A pickle of protocol 2 or later starts with 0x80 and the protocol byte; ``torch.save``
    writes a zip archive holding ``data.pkl``. Older protocols have no magic to test.
    """
    from .registry.store import open_source_file

    with open_source_file(path) as f:
        head = f.read(4)
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return "a Python pickle"
        if head == b"PK\x03\x04":
            try:
                f.seek(0)
                names = zipfile.ZipFile(f).namelist()
            except (zipfile.BadZipFile, OSError, ValueError):
                return None
            if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                return "a torch.save zip archive holding data.pkl"
    return None


def safetensors_header(path: Path) -> dict[str, dict]:
    """Parse and check a safetensors header; return ``{tensor name: {dtype, shape}}``.

    Raises UsageError, naming the file and what it looks like instead, if anything is off.
    """
    path = Path(path)
    size = path.stat().st_size
    problem = None
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("too short")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100 * 1024 * 1024):
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        data_len = size - 8 - n
        out = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = 1
            for d in shape:
                count *= int(d)
            if not (0 <= start <= end <= data_len) or end - start != count * _DTYPE_BYTES[dtype]:
                raise ValueError(f"tensor {name!r} has inconsistent offsets")
            out[name] = {"dtype": dtype, "shape": list(shape)}
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        problem = str(exc)
    if problem is not None:
        raise UsageError(
            f"{path.name} is not valid safetensors: it looks like {sniff(path)} ({problem}). "
            f"maas_lab stores weights only as safetensors and never unpickles. {_FIX}"
        )
    return out
