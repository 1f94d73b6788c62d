"""The Open Inference Protocol v2 wire format itself, the part the server and the client share.

Both ends must agree byte for byte with tritonclient and KServe clients, including Triton's
binary tensor extension, so the datatypes table, the reading and writing of tensor values (JSON
``data`` and binary data), the JSON header and its Inference-Header-Content-Length, and the
shape and size checks live here once, for ``server_wire`` (what the server reads and answers)
and ``client_wire`` (what the client sends and reads back) alike. Every malformed body must
come back as a :class:`ProtocolError` that says what to fix rather than a traceback. Keeping
this pure (bytes in, numpy out, no HTTP) lets the tests check it against tritonclient without a
server. It sits on the hot path, so numeric tensors never go through per-element Python: binary
data is read with ``np.frombuffer`` (a view of the body when aligned, so arrays may be
read-only) and JSON lists are converted in one numpy call.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "str": "BYTES",
    "object": "BYTES",
    "bytes": "BYTES",
}

NUMPY_DTYPES: dict[str, np.dtype] = {
    oip: np.dtype(name) for name, oip in DATATYPES.items() if oip != "BYTES"
} | {"BYTES": np.dtype(object)}
# What the binary extension puts on the wire: little-endian, whatever this machine is.
_WIRE: dict[str, np.dtype] = {
    oip: dt.newbyteorder("<") for oip, dt in NUMPY_DTYPES.items() if oip != "BYTES"
}

# The protocol extensions both doors answer (REST's server metadata, gRPC's ServerMetadata).
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]
_VALID = ", ".join(NUMPY_DTYPES)
_LEN = struct.Struct("<I")
# Past these a shape is an attack or a bug, never a tensor: numpy takes at most 64 dimensions
# and int64 element counts, and a body of at most a few GiB holds far fewer values.
MAX_DIMS = 32
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**40

# The JSON value types each datatype accepts; anything else is refused, never coerced.
_ALLOWED: dict[str, frozenset[type]] = {"BOOL": frozenset({bool}), "BYTES": frozenset({str})}
_ALLOWED |= {k: frozenset({int}) for k in NUMPY_DTYPES if k.startswith(("INT", "UINT"))}
_ALLOWED |= {k: frozenset({int, float}) for k in NUMPY_DTYPES if k.startswith("FP")}
_EXPECTED = {"BOOL": "true or false", "BYTES": "strings"}
_KIND_NAMES = {
    bool: "true/false values",
    int: "whole numbers",
    float: "decimal numbers",
    str: "strings",
    list: "nested lists of uneven lengths",
    dict: "objects",
    type(None): "nulls",
}


class ProtocolError(Exception):
    """A request (or response) the protocol cannot accept; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- datatypes -----------------------------------------------------------------------------


def oip_datatype(dtype_name: str) -> str:
    """The protocol datatype for a numpy dtype name (``"float32"`` -> ``"FP32"``)."""
    name = str(dtype_name)
    found = DATATYPES.get(name)
    if found is None:
        try:
            dt = np.dtype(name)
        except (TypeError, ValueError):
            dt = None
        if dt is not None:
            found = "BYTES" if dt.kind in "OUS" else DATATYPES.get(dt.name)
    if found is None:
        raise ProtocolError(
            f"dtype {name} has no Open Inference Protocol datatype; the protocol carries "
            "bool, (u)int8-64, float16/32/64 and str.",
            status=500,
        )
    return found


def triton_datatype(dtype_name: str) -> str:
    """The type as Triton's model configuration spells it (``config.pbtxt``, the
    ``/config`` route): the protocol datatype with ``BYTES`` spelt ``STRING``, without the
    ``TYPE_`` prefix."""
    oip = oip_datatype(dtype_name)
    return "STRING" if oip == "BYTES" else oip


def oip_dims(shape: list) -> list[int]:
    """A signature's shape as the protocol and Triton write it: a named (dynamic) dim is -1."""
    return [d if isinstance(d, int) else -1 for d in shape]


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype a protocol datatype is held in (BYTES: object)."""
    found = NUMPY_DTYPES.get(datatype)
    if found is None:
        raise ProtocolError(unknown_datatype(datatype))
    return found


def unknown_datatype(datatype: Any, where: str = "") -> str:
    """An error message for a datatype the protocol does not have."""
    if datatype == "BF16":
        return (
            f"{where}BF16 tensors are not supported by this server; send them as FP32 "
            "(or FP16) instead."
        )
    return f"{where}unknown datatype {_show(datatype)}; valid datatypes: {_VALID}."


def array_datatype(arr: np.ndarray) -> str | None:
    """The protocol datatype an array goes out as; None if it has none."""
    if arr.dtype.kind in "OUS":
        return "BYTES"
    return DATATYPES.get(arr.dtype.name)


# --- reading a body ------------------------------------------------------------------------


def check_header_length(header_length: int | str | None, size: int) -> int | None:
    """Inference-Header-Content-Length as an int (None when absent), checked against the body."""
    if header_length is None:
        return None
    try:
        hl = int(header_length)
    except (TypeError, ValueError):
        hl = -1
    if hl < 0:
        raise ProtocolError(
            "Inference-Header-Content-Length must be a whole number >= 0: the length in bytes "
            "of the JSON header at the start of the body."
        )
    if hl > size:
        raise ProtocolError(
            f"Inference-Header-Content-Length is {hl} but the body is only {size} bytes; it "
            "must be the length of the JSON header at the start of the body."
        )
    return hl


def load_header(text: bytes, header_length: int | None, whole: str = "the request body") -> dict:
    """The body's JSON header (its first ``header_length`` bytes), which must be an object."""
    what = (
        whole
        if header_length is None
        else f"the first {header_length} bytes of the body (Inference-Header-Content-Length)"
    )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
            'Send a JSON object like {"inputs": [...]}.'
        ) from None
    except (ValueError, RecursionError):
        raise ProtocolError(f"{what} is not valid UTF-8 JSON.") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f'{what} must be a JSON object like {{"inputs": [...]}}.')
    return doc


def check_parameters(value: Any, whose: str) -> dict:
    """A ``"parameters"`` value as a dict: {} when absent, refused unless an object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f'{whose} "parameters" must be a JSON object.')
    return value


def parse_shape(what: str, shape: Any) -> list[int]:
    """A tensor's shape, refused unless it is a list of whole numbers of sane size."""
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(
            f"{what} has shape {_show(shape)}; a shape must be a list of whole numbers "
            ">= 0, like [1, 3]."
        )
    if len(shape) > MAX_DIMS:
        raise ProtocolError(
            f"{what} has {len(shape)} dimensions; this server takes at most {MAX_DIMS}."
        )
    if any(d > MAX_DIM for d in shape) or math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise ProtocolError(
            f"{what} has shape {_show(shape)}, which is far larger than any request can hold; "
            f"each dimension must be at most {MAX_DIM}."
        )
    return shape


def check_binary_size(what: str, datatype: str, shape: list, count: int, nbytes: int) -> None:
    """Refuse binary data whose size does not match the shape and datatype."""
    itemsize = _WIRE[datatype].itemsize
    if nbytes != count * itemsize:
        raise ProtocolError(
            f"{what} has shape {_show(shape)}, i.e. {count} {datatype} values of "
            f"{itemsize} bytes ({count * itemsize} bytes), but its binary_data_size is {nbytes}."
        )


def from_binary(
    what: str,
    datatype: str,
    shape: list[int],
    count: int,
    view: memoryview,
    offset: int,
    nbytes: int,
) -> np.ndarray:
    """A flat array of ``count`` values from ``nbytes`` of binary data at ``offset``."""
    if datatype == "BYTES":
        return _unpack_bytes(view[offset : offset + nbytes], count, what)
    wire = _WIRE[datatype]
    check_binary_size(what, datatype, shape, count, nbytes)
    if count == 0:
        return np.empty(0, dtype=NUMPY_DTYPES[datatype])
    array = np.frombuffer(view, dtype=wire, count=count, offset=offset)
    if not array.flags.aligned or not array.dtype.isnative:
        array = array.astype(NUMPY_DTYPES[datatype])
    if datatype == "BOOL" and array.view(np.uint8).max() > 1:
        raise ProtocolError(
            f"{what} is BOOL, so each binary byte must be 0 or 1; got other values."
        )
    return array


def from_json(what: str, datatype: str, data: Any, shape: list[int], count: int) -> np.ndarray:
    """A flat array of ``count`` values from a tensor's JSON ``data``, refused unless exact."""
    if not isinstance(data, list):
        data = [data]
    flat = data
    if data and type(data[0]) is list:
        try:
            flat = np.array(data, dtype=object).ravel().tolist()
        except (ValueError, RecursionError):
            raise ProtocolError(
                f"{what}: data must be a flat list, or nested lists of even lengths."
            ) from None
    allowed = _ALLOWED[datatype]
    if not allowed.issuperset(map(type, flat)):
        raise ProtocolError(_wrong_values(what, datatype, flat, allowed))
    if len(flat) != count:
        raise ProtocolError(
            f"{what} has shape {_show(shape)}, i.e. {count} values, but {len(flat)} were sent."
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        try:
            out[:] = [s.encode("utf-8") for s in flat]
        except UnicodeEncodeError:
            raise ProtocolError(f"{what} holds text that is not valid Unicode.") from None
        return out
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind in "iu" and flat:
        info = np.iinfo(dtype)
        low, high = min(flat), max(flat)
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise ProtocolError(
                f"{what} is {datatype}; the value {bad} is outside its range "
                f"[{info.min}, {info.max}]."
            )
    try:
        with np.errstate(over="ignore"):
            array = np.array(flat, dtype=dtype)
    except OverflowError:
        raise ProtocolError(
            f"{what} is {datatype}; one of its values is too large for it."
        ) from None
    if dtype.kind == "f" and dtype.itemsize < 8 and not np.isfinite(array).all():
        _check_float_range(what, datatype, flat)
    return array


def _check_float_range(what: str, datatype: str, flat: list) -> None:
    limit = float(np.finfo(NUMPY_DTYPES[datatype]).max)
    for value in flat:
        if math.isfinite(value) and abs(value) > limit:
            raise ProtocolError(
                f"{what} is {datatype}; the value {value} is too large for it "
                f"(the largest is {limit:g})."
            )


def _wrong_values(what: str, datatype: str, flat: list, allowed: frozenset[type]) -> str:
    bad = next(v for v in flat if type(v) not in allowed)
    found = _KIND_NAMES.get(type(bad), "other values")
    expected = _EXPECTED.get(datatype) or (
        "whole numbers" if allowed == {int} else "numbers (not true/false)"
    )
    example = "" if isinstance(bad, (list, dict)) else f" such as {_show(bad)}"
    return f"{what} is {datatype}, so its data must be {expected}; got {found}{example}."


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = "a value that is not JSON"
    return text if len(text) <= 80 else text[:77] + "..."


# --- writing a body ------------------------------------------------------------------------


def with_values(
    entry: dict, array: np.ndarray, binary: bool, blobs: list, role: str, error: type[Exception]
) -> dict:
    """A tensor's values, in the header as JSON ``data`` or appended to ``blobs`` as binary."""
    datatype = entry["datatype"]
    if binary:
        blob = _to_wire(array, datatype)
        entry["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    else:
        entry["data"] = _json_values(array, datatype, f"{role} {entry['name']!r}", error)
    return entry


def assemble(doc: dict, blobs: list[bytes], lower: bool) -> tuple[bytes, dict[str, str]]:
    """A body (JSON header, then any binary blobs) and its headers, in either case."""
    header = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    content_type, length = (
        ("content-type", "inference-header-content-length")
        if lower
        else ("Content-Type", "Inference-Header-Content-Length")
    )
    if not blobs:
        return header, {content_type: "application/json"}
    body = b"".join([header, *blobs])
    return body, {content_type: "application/octet-stream", length: str(len(header))}


def _to_wire(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return bytes_to_wire(array)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _json_values(array: np.ndarray, datatype: str, what: str, error: type[Exception]) -> list:
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        # JSON has no NaN or Infinity (json.dumps would write bare NaN, which no JSON parser
        # reads); binary data carries them exactly.
        ask = (
            "ask for it as binary data instead (parameters.binary_data: true)"
            if what.startswith("output")
            else "send it as binary data instead"
        )
        raise error(f"{what} holds NaN or infinite values, which JSON cannot carry; {ask}.")
    flat = array.ravel().tolist()
    if datatype != "BYTES":
        return flat
    try:
        return [
            v.decode("utf-8") if isinstance(v, bytes) else v if type(v) is str else str(v)
            for v in flat
        ]
    except UnicodeDecodeError:
        raise error(
            f"{what} holds bytes that are not valid UTF-8, which JSON cannot carry; ask for "
            "it as binary data instead (parameters.binary_data: true)."
        ) from None


# --- the BYTES binary encoding -------------------------------------------------------------


def bytes_to_wire(array: Any) -> bytes:
    """Each element as a 4-byte little-endian length and its bytes (str: UTF-8), row-major."""
    flat = np.asarray(array, dtype=object).ravel().tolist()
    items = [v if type(v) is bytes else _as_bytes(v) for v in flat]
    parts: list[bytes] = [b""] * (2 * len(items))
    try:
        parts[0::2] = map(_LEN.pack, map(len, items))
    except struct.error:
        raise ProtocolError(
            "a BYTES element is larger than 4 GiB, which the protocol cannot carry."
        ) from None
    parts[1::2] = items
    return b"".join(parts)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")


def wire_to_bytes(buf: bytes | memoryview, count: int | None) -> np.ndarray:
    """Decode the BYTES binary encoding into a flat object array of ``count`` ``bytes``."""
    return _unpack_bytes(buf, count, "the BYTES tensor")


def _unpack_bytes(buf: bytes | memoryview, count: int | None, what: str) -> np.ndarray:
    view = memoryview(buf)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    size, pos, items = len(view), 0, []
    unpack = _LEN.unpack_from
    while pos < size and (count is None or len(items) < count):
        if pos + 4 > size:
            raise ProtocolError(
                f"the binary data of {what} ends inside an element's 4-byte length prefix."
            )
        (length,) = unpack(view, pos)
        pos += 4
        if pos + length > size:
            raise ProtocolError(
                f"element {len(items)} of {what} says it is {length} bytes long, but only "
                f"{size - pos} bytes are left; each element is a 4-byte little-endian length "
                "followed by that many bytes."
            )
        items.append(bytes(view[pos : pos + length]))
        pos += length
    if count is not None and len(items) != count:
        raise ProtocolError(
            f"the binary data of {what} holds {len(items)} elements, but its shape needs {count}."
        )
    if pos != size:
        raise ProtocolError(
            f"the binary data of {what} has {size - pos} bytes left after its {len(items)} "
            "elements."
        )
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
