"""The Open Inference Protocol v2 wire format, shared by the server and the client.

Both ends must agree byte for byte with tritonclient and KServe clients, including Triton's
binary tensor extension, and every malformed request must come back as a 400 that says what
to fix rather than a traceback. Keeping this pure (bytes in, numpy out, no HTTP) lets the tests
check it against tritonclient without a server. It sits on the hot path, so numeric tensors
never go through per-element Python: binary data is read with ``np.frombuffer`` (a view of the
body when aligned, so arrays may be read-only) and JSON lists are converted in one numpy call.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError

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

_NUMPY: dict[str, np.dtype] = {
    oip: np.dtype(name) for name, oip in DATATYPES.items() if oip != "BYTES"
} | {"BYTES": np.dtype(object)}
# What the binary extension puts on the wire: little-endian, whatever this machine is.
_WIRE: dict[str, np.dtype] = {
    oip: dt.newbyteorder("<") for oip, dt in _NUMPY.items() if oip != "BYTES"
}
_VALID = ", ".join(_NUMPY)
_LEN = struct.Struct("<I")
# Past these a shape is an attack or a bug, never a tensor: numpy takes at most 64 dimensions
# and int64 element counts, and a body of at most a few GiB holds far fewer values.
MAX_DIMS = 32
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**40
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")

# The JSON value types each datatype accepts; anything else is refused, never coerced.
_ALLOWED: dict[str, frozenset[type]] = {"BOOL": frozenset({bool}), "BYTES": frozenset({str})}
_ALLOWED |= {k: frozenset({int}) for k in _NUMPY if k.startswith(("INT", "UINT"))}
_ALLOWED |= {k: frozenset({int, float}) for k in _NUMPY if k.startswith("FP")}
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


@dataclass
class InferInput:
    """One input tensor of a request, already reshaped (BYTES: an object array of ``bytes``).

    While a request's header is checked (before its data is read) ``array`` is None and
    ``source`` says where the values are: JSON ``data``, or ``(offset, nbytes)`` in the body.
    """

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray | None
    source: Any = field(default=None, repr=False, compare=False)


@dataclass
class RequestedOutput:
    """An output the client asked for; ``binary`` None means "as the request says"."""

    name: str
    binary: bool | None = None


@dataclass
class InferRequest:
    """A parsed inference request. ``outputs`` None means "every output the model has"."""

    id: str | None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False
    parameters: dict = field(default_factory=dict)

    def binary_for(self, output: RequestedOutput) -> bool:
        """Whether this output goes back as raw bytes: its own flag, else the request's."""
        return self.binary_output if output.binary is None else output.binary


# --- datatypes ------------------------------------------------------------------------------


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


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype a protocol datatype is held in (BYTES: object)."""
    found = _NUMPY.get(datatype)
    if found is None:
        raise ProtocolError(_unknown_datatype(datatype))
    return found


def _unknown_datatype(datatype: Any, where: str = "") -> str:
    if datatype == "BF16":
        return (
            f"{where}BF16 tensors are not supported by this server; send them as FP32 "
            "(or FP16) instead."
        )
    return f"{where}unknown datatype {_show(datatype)}; valid datatypes: {_VALID}."


def _array_datatype(arr: np.ndarray) -> str | None:
    if arr.dtype.kind in "OUS":
        return "BYTES"
    return DATATYPES.get(arr.dtype.name)


# --- parsing a request ----------------------------------------------------------------------


def parse_infer_request(
    body: bytes, header_length: int | str | None, check: Callable | None = None
) -> InferRequest:
    """Parse an inference request body; raise :class:`ProtocolError` (400) saying what to fix.

    ``header_length`` is the ``Inference-Header-Content-Length`` header, as an int or its raw
    text (None when absent: the whole body is then JSON). ``check``, given, is called with the
    list of inputs (names, datatypes, shapes; ``array`` still None) before any tensor data is
    converted, so a request the model cannot take is refused before its data costs anything.
    Numeric arrays from binary data may be read-only views of ``body``: copy before writing.
    JSON has no NaN or Infinity: a JSON tensor holding one (or a number past float64's range,
    such as 1e400) is refused; binary data carries any IEEE value.
    """
    size = len(body)
    hl = _header_length(header_length, size)
    header = _load_header(body if hl is None or hl == size else body[:hl], hl)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError('"id" must be a string, like "id": "42".')
    parameters = _parameters(header.get("parameters"), "the request's")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false.")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(
            'the request needs "inputs": a non-empty list of tensors like '
            '{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}.'
        )
    offset = size if hl is None else hl
    inputs: list[InferInput] = []
    seen: set[str] = set()
    for index, spec in enumerate(raw_inputs):
        tensor, offset = _parse_input(index, spec, size, offset, hl is not None)
        if tensor.name in seen:
            raise ProtocolError(f"input {tensor.name!r} is sent twice; send each input once.")
        seen.add(tensor.name)
        inputs.append(tensor)
    if offset != size:
        raise ProtocolError(
            f"the body has {size - offset} bytes left after the inputs' binary data; each "
            "input's parameters.binary_data_size must count its bytes, and "
            "Inference-Header-Content-Length must be the length of the JSON header."
        )
    outputs = _parse_outputs(header.get("outputs"))
    if check is not None:
        check(inputs)
    view = memoryview(body)
    for tensor in inputs:
        tensor.array = _read_values(tensor, view).reshape(tensor.shape)
        tensor.source = None
    return InferRequest(request_id, inputs, outputs, binary_output, parameters)


def _read_values(tensor: InferInput, view: memoryview) -> np.ndarray:
    what, count = f"input {tensor.name!r}", math.prod(tensor.shape)
    if isinstance(tensor.source, tuple):
        offset, nbytes = tensor.source
        return _from_binary(what, tensor.datatype, tensor.shape, count, view, offset, nbytes)
    array = _from_json(what, tensor.datatype, tensor.source, tensor.shape, count)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ProtocolError(
            f"{what} holds NaN or an infinite value (or a number past float64's range, such "
            "as 1e400); JSON has no such numbers. Send finite numbers, or send the tensor as "
            "binary data, which carries any IEEE value."
        )
    return array


def _header_length(header_length: int | str | None, size: int) -> int | None:
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


def _load_header(text: bytes, header_length: int | None, whole: str = "the request body") -> dict:
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


def _parameters(value: Any, whose: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f'{whose} "parameters" must be a JSON object.')
    return value


def _parse_input(
    index: int, spec: Any, size: int, offset: int, has_binary: bool
) -> tuple[InferInput, int]:
    """One input's header: name, datatype, shape and where its values are; none read yet."""
    if not isinstance(spec, dict):
        raise ProtocolError(
            f"inputs[{index}] must be an object with name, datatype, shape and data."
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f'inputs[{index}] has no name; give each input a "name".')
    for key in ("datatype", "shape"):
        if key not in spec:
            raise ProtocolError(f'input {name!r} has no "{key}".')
    datatype = spec["datatype"]
    if datatype not in _NUMPY:
        raise ProtocolError(_unknown_datatype(datatype, f"input {name!r}: "))
    what = f"input {name!r}"
    shape = _parse_shape(what, spec["shape"])
    count = math.prod(shape)
    params = _parameters(spec.get("parameters"), f"{what}:")
    if any(key in params for key in _SHARED_MEMORY):
        raise ProtocolError(
            f"input {name!r} uses shared memory, which this server does not support; send "
            'its values in "data" or as binary data.'
        )
    nbytes = params.get("binary_data_size")
    if nbytes is None:
        if "data" not in spec:
            raise ProtocolError(
                f'input {name!r} has no data: send "data" (a list of values) or binary data '
                "with parameters.binary_data_size."
            )
        return InferInput(name, datatype, shape, None, spec["data"]), offset
    if "data" in spec:
        raise ProtocolError(
            f'input {name!r} has both "data" and parameters.binary_data_size; send one.'
        )
    if type(nbytes) is not int or nbytes < 0:
        raise ProtocolError(
            f"input {name!r}: parameters.binary_data_size must be a whole number of bytes."
        )
    if not has_binary:
        raise ProtocolError(
            f"input {name!r} has binary data (binary_data_size) but the request has no "
            "Inference-Header-Content-Length header, so the whole body was read as JSON; "
            "send that header with the JSON header's length."
        )
    end = offset + nbytes
    if end > size:
        raise ProtocolError(
            f"input {name!r} says its binary data is {nbytes} bytes, but only "
            f"{size - offset} bytes are left in the body."
        )
    if datatype != "BYTES":
        _check_binary_size(what, datatype, shape, count, nbytes)
    return InferInput(name, datatype, shape, None, (offset, nbytes)), end


def _parse_shape(what: str, shape: Any) -> list[int]:
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


def _check_binary_size(what: str, datatype: str, shape: list, count: int, nbytes: int) -> None:
    itemsize = _WIRE[datatype].itemsize
    if nbytes != count * itemsize:
        raise ProtocolError(
            f"{what} has shape {_show(shape)}, i.e. {count} {datatype} values of "
            f"{itemsize} bytes ({count * itemsize} bytes), but its binary_data_size is {nbytes}."
        )


def _from_binary(
    what: str, datatype: str, shape: list[int], count: int, view: memoryview, offset: int,
    nbytes: int,
) -> np.ndarray:  # fmt: skip
    if datatype == "BYTES":
        return _unpack_bytes(view[offset : offset + nbytes], count, what)
    wire = _WIRE[datatype]
    _check_binary_size(what, datatype, shape, count, nbytes)
    if count == 0:
        return np.empty(0, dtype=_NUMPY[datatype])
    array = np.frombuffer(view, dtype=wire, count=count, offset=offset)
    if not array.flags.aligned or not array.dtype.isnative:
        array = array.astype(_NUMPY[datatype])
    if datatype == "BOOL" and array.view(np.uint8).max() > 1:
        raise ProtocolError(
            f"{what} is BOOL, so each binary byte must be 0 or 1; got other values."
        )
    return array


def _from_json(what: str, datatype: str, data: Any, shape: list[int], count: int) -> np.ndarray:
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
    dtype = _NUMPY[datatype]
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
    limit = float(np.finfo(_NUMPY[datatype]).max)
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


def _parse_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ProtocolError('"outputs" must be a list of objects like {"name": "logits"}.')
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, spec in enumerate(raw):
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not name:
            raise ProtocolError(
                f'outputs[{index}] must be an object with a name, like {{"name": "logits"}}.'
            )
        if name in seen:
            raise ProtocolError(f"output {name!r} is requested twice; list each output once.")
        seen.add(name)
        params = _parameters(spec.get("parameters"), f"output {name!r}:")
        if params.get("classification"):
            raise ProtocolError(
                f"output {name!r} asks for classification, which this server does not "
                "support; request the output itself and take the top classes on the client."
            )
        if any(key in params for key in _SHARED_MEMORY):
            raise ProtocolError(
                f"output {name!r} asks for shared memory, which this server does not support."
            )
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError(f"output {name!r}: parameters.binary_data must be true or false.")
        outputs.append(RequestedOutput(name, binary))
    return outputs or None


# --- checking against a model ---------------------------------------------------------------


def check_requested_outputs(request: InferRequest, output_names: list[str]) -> None:
    """Refuse (400) a request that asks for an output the model does not have."""
    if request.outputs is None:
        return
    known = set(output_names)
    for output in request.outputs:
        if output.name not in known:
            raise ProtocolError(
                f"this model has no output {output.name!r}; its outputs are: "
                f"{', '.join(output_names) or 'none'}."
            )


def validate_inputs(
    signature_inputs: list[dict],
    inputs: list[InferInput],
    otherwise: str = "",
    max_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """Check a request's inputs against a model signature; return the feeds by name.

    Runs before batching so one bad request is refused alone instead of failing a batch.
    A signature dtype ``"str"`` gets an object array of Python ``str``. ``otherwise`` names
    another way to call the model (e.g. sentences as ``text``) in the errors about names.
    """
    check_inputs(signature_inputs, inputs, otherwise, max_rows)
    given = {tensor.name: tensor for tensor in inputs}
    return {spec["name"]: _feed(spec, given[spec["name"]]) for spec in signature_inputs}


def check_inputs(
    signature_inputs: list[dict],
    inputs: list[InferInput],
    otherwise: str = "",
    max_rows: int | None = None,
) -> None:
    """Names, datatypes and shapes against the signature, and the rows against ``max_rows``.

    Needs only the request's header (``array`` may still be None), so a server calls it
    before converting any tensor data. Rows are the first dimension of inputs whose
    signature's first dimension is variable (a named batch axis).
    """
    expected = {spec["name"]: spec for spec in signature_inputs}
    given = {tensor.name: tensor for tensor in inputs}
    tail = f"; {otherwise}." if otherwise else "."
    for name in given:
        if name not in expected:
            raise ProtocolError(
                f"this model has no input {name!r}; its inputs are: "
                f"{_describe(signature_inputs)}{tail}"
            )
    for name in expected:
        if name not in given:
            raise ProtocolError(
                f"the request is missing input {name!r}; this model needs: "
                f"{_describe(signature_inputs)}{tail}"
            )
    dims: dict[str, tuple[int, str]] = {}
    for spec in signature_inputs:
        tensor = given[spec["name"]]
        _check_input(spec, tensor, dims)
        if max_rows is not None and spec["shape"] and not isinstance(spec["shape"][0], int):
            check_rows(tensor.name, tensor.shape[0], max_rows)


def check_rows(name: str, rows: int, max_rows: int) -> None:
    """Refuse (413) a request with more rows than one request may hold."""
    if rows > max_rows:
        raise ProtocolError(
            f"input {name!r} has {rows} rows; this server takes at most {max_rows} rows per "
            "request. Split it into smaller requests, or start the server with a larger "
            "--max-rows.",
            status=413,
        )


def _check_input(spec: dict, tensor: InferInput, dims: dict[str, tuple[int, str]]) -> None:
    name, want = tensor.name, oip_datatype(spec["dtype"])
    if tensor.datatype != want:
        raise ProtocolError(f"input {name!r} is {want} in this model; got {tensor.datatype}.")
    sig_shape, shape = list(spec["shape"]), tensor.shape
    if len(sig_shape) != len(shape):
        raise ProtocolError(
            f"input {name!r} has {len(sig_shape)} dimensions in this model "
            f"({_fmt_shape(sig_shape)}); got {len(shape)} ({_fmt_shape(shape)})."
        )
    if 0 in shape:
        raise ProtocolError(
            f"input {name!r} has shape {_fmt_shape(shape)}, which holds no values; send at "
            "least one."
        )
    for axis, (dim, got) in enumerate(zip(sig_shape, shape, strict=True)):
        if type(dim) is int and dim >= 0:
            if got != dim:
                raise ProtocolError(
                    f"input {name!r} must have size {dim} in dimension {axis} (shape "
                    f"{_fmt_shape(sig_shape)}); got shape {_fmt_shape(shape)}."
                )
        elif isinstance(dim, str):
            size, first = dims.setdefault(dim, (got, name))
            if size != got:
                raise ProtocolError(
                    f"inputs {first!r} and {name!r} disagree on dimension {dim!r}: {size} in "
                    f"{first!r}, {got} in {name!r}; it must be the same in both."
                )


def _feed(spec: dict, tensor: InferInput) -> np.ndarray:
    array = tensor.array
    if tensor.datatype != "BYTES":
        return array
    if spec["dtype"] != "str":
        return array
    out = np.empty(array.size, dtype=object)
    try:
        out[:] = [b.decode("utf-8") for b in array.ravel().tolist()]
    except UnicodeDecodeError:
        raise ProtocolError(
            f"input {tensor.name!r} holds bytes that are not valid UTF-8; this model takes text."
        ) from None
    return out.reshape(array.shape)


def _describe(signature_inputs: list[dict]) -> str:
    return ", ".join(
        f"{s['name']} ({_safe_datatype(s['dtype'])} {_fmt_shape(s['shape'])})"
        for s in signature_inputs
    )


def _safe_datatype(dtype: str) -> str:
    try:
        return oip_datatype(dtype)
    except ProtocolError:
        return str(dtype)


def _fmt_shape(shape: list) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = "a value that is not JSON"
    return text if len(text) <= 80 else text[:77] + "..."


# --- encoding a response --------------------------------------------------------------------


def _with_values(entry: dict, array: np.ndarray, binary: bool, blobs: list, role: str,
                 error: type[Exception]) -> dict:  # fmt: skip
    """A tensor's values, in the header as JSON ``data`` or appended to ``blobs`` as binary."""
    datatype = entry["datatype"]
    if binary:
        blob = _to_wire(array, datatype)
        entry["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    else:
        entry["data"] = _json_values(array, datatype, f"{role} {entry['name']!r}", error)
    return entry


def encode_infer_response(
    model_name: str, model_version: str, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers for ``outputs``, in the form the request asked for."""
    if request.outputs is None:
        chosen = [(name, request.binary_output) for name in outputs]
    else:
        check_requested_outputs(request, list(outputs))
        chosen = [(o.name, request.binary_for(o)) for o in request.outputs]
    entries = []
    blobs: list[bytes] = []
    for name, binary in chosen:
        array = np.asarray(outputs[name])
        datatype = _array_datatype(array)
        if datatype is None:
            raise ProtocolError(
                f"model output {name!r} has dtype {array.dtype.name}, which the Open Inference "
                "Protocol cannot carry.",
                status=500,
            )
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        entries.append(_with_values(entry, array, binary, blobs, "output", ProtocolError))
    doc: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = entries
    return _assemble(doc, blobs, lower=True)


def _assemble(doc: dict, blobs: list[bytes], lower: bool) -> tuple[bytes, dict[str, str]]:
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


# --- the BYTES binary encoding --------------------------------------------------------------


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


# --- the client's side ----------------------------------------------------------------------


def encode_infer_request(
    inputs: dict[str, Any],
    outputs: list[str] | None = None,
    binary: bool = True,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A request body and its headers, laid out exactly as tritonclient lays one out."""
    if not isinstance(inputs, dict) or not inputs:
        raise UsageError("inputs must be a non-empty dict {name: array}.")
    specs = []
    blobs: list[bytes] = []
    for name, value in inputs.items():
        array = as_input_array(name, value)
        datatype = _array_datatype(array)
        if datatype is None:
            raise UsageError(
                f"input {name!r} is {array.dtype.name}, which the protocol cannot carry; "
                "use bool, (u)int8-64, float16/32/64 or strings."
            )
        spec: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        specs.append(_with_values(spec, array, binary, blobs, "input", UsageError))
    doc: dict[str, Any] = {}
    if request_id:
        doc["id"] = request_id
    doc["inputs"] = specs
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    else:
        doc["parameters"] = {"binary_data_output": binary}
    return _assemble(doc, blobs, lower=False)


def as_input_array(name: str, value: Any) -> np.ndarray:
    """A numpy array for one input: a str is a batch of one, lists of str become BYTES."""
    if isinstance(value, (str, bytes)):
        value = [value]
    if isinstance(value, np.ndarray):
        return value.astype(object) if value.dtype.kind in "US" else value
    try:
        array = np.asarray(value)
    except ValueError:
        raise UsageError(
            f"input {name!r} is a ragged list; every row must have the same length."
        ) from None
    if array.dtype.kind in "US":
        array = np.array(value, dtype=object)  # keeps trailing NULs numpy's 'S' would drop
    return array


def parse_infer_response(body: bytes, header_length: int | None) -> dict:
    """``{"model_name", "model_version", "id", "outputs": {name: array}}`` from a response."""
    try:
        return _parse_response(body, header_length)
    except ProtocolError as exc:
        raise ProtocolError(f"the server's response is malformed: {exc}", status=502) from None


def _parse_response(body: bytes, header_length: int | None) -> dict:
    size = len(body)
    hl = _header_length(header_length, size)
    doc = _load_header(body if hl is None else body[:hl], hl, "the body")
    raw = doc.get("outputs")
    if not isinstance(raw, list):
        raise ProtocolError('it has no "outputs" list.')
    view = memoryview(body)
    offset = size if hl is None else hl
    outputs: dict[str, np.ndarray] = {}
    for spec in raw:
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise ProtocolError("an output has no name.")
        datatype = spec.get("datatype")
        if datatype not in _NUMPY:
            raise ProtocolError(_unknown_datatype(datatype, f"output {name!r}: "))
        what = f"output {name!r}"
        shape = _parse_shape(what, spec.get("shape"))
        count = math.prod(shape)
        nbytes = _parameters(spec.get("parameters"), f"{what}:").get("binary_data_size")
        if nbytes is None:
            array = _from_json(what, datatype, spec.get("data"), shape, count)
        else:
            if type(nbytes) is not int or nbytes < 0 or offset + nbytes > size:
                raise ProtocolError(f"{what}'s binary_data_size runs past the body.")
            array = _from_binary(what, datatype, shape, count, view, offset, nbytes)
            offset += nbytes
        outputs[name] = array.reshape(shape)
    return {
        "model_name": doc.get("model_name"),
        "model_version": doc.get("model_version"),
        "id": doc.get("id"),
        "outputs": outputs,
    }
