"""The server's half of the Open Inference Protocol: an infer request in, a response out.

A request body is parsed here and checked against the model's signature (names, datatypes,
shapes, rows) before any tensor data is converted, so a request the model cannot take is
refused with a 400 that says what to fix, alone, before it costs anything or reaches a batch.
The bytes themselves (tensor values, the JSON header, the binary extension) are read and
written by :mod:`.wire`, which the client shares; this module holds only what a server does
with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..hints import option
from .wire import (
    NUMPY_DTYPES,
    ProtocolError,
    array_datatype,
    assemble,
    check_binary_size,
    check_header_length,
    check_parameters,
    from_binary,
    from_json,
    load_header,
    oip_datatype,
    parse_shape,
    unknown_datatype,
    with_values,
)

SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def refuse_unsupported_output(name: str, params: dict) -> None:
    """What a requested output may ask that this server does not do, refused the same way
    whichever door (REST or gRPC) the request came through."""
    if params.get("classification"):
        raise ProtocolError(
            f"output {name!r} asks for classification, which this server does not "
            "support; request the output itself and take the top classes on the client."
        )
    if any(key in params for key in SHARED_MEMORY):
        raise ProtocolError(
            f"output {name!r} asks for shared memory, which this server does not support."
        )


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


# --- parsing a request ---------------------------------------------------------------------


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
    hl = check_header_length(header_length, size)
    header = load_header(body if hl is None or hl == size else body[:hl], hl)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError('"id" must be a string, like "id": "42".')
    parameters = check_parameters(header.get("parameters"), "the request's")
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
        return from_binary(what, tensor.datatype, tensor.shape, count, view, offset, nbytes)
    array = from_json(what, tensor.datatype, tensor.source, tensor.shape, count)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ProtocolError(
            f"{what} holds NaN or an infinite value (or a number past float64's range, such "
            "as 1e400); JSON has no such numbers. Send finite numbers, or send the tensor as "
            "binary data, which carries any IEEE value."
        )
    return array


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
    if datatype not in NUMPY_DTYPES:
        raise ProtocolError(unknown_datatype(datatype, f"input {name!r}: "))
    what = f"input {name!r}"
    shape = parse_shape(what, spec["shape"])
    count = math.prod(shape)
    params = check_parameters(spec.get("parameters"), f"{what}:")
    if any(key in params for key in SHARED_MEMORY):
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
        check_binary_size(what, datatype, shape, count, nbytes)
    return InferInput(name, datatype, shape, None, (offset, nbytes)), end


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
        params = check_parameters(spec.get("parameters"), f"output {name!r}:")
        refuse_unsupported_output(name, params)
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError(f"output {name!r}: parameters.binary_data must be true or false.")
        outputs.append(RequestedOutput(name, binary))
    return outputs or None


# --- checking against a model --------------------------------------------------------------


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
            f"{option('max_rows')}.",
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


# --- encoding a response -------------------------------------------------------------------


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
        datatype = array_datatype(array)
        if datatype is None:
            raise ProtocolError(
                f"model output {name!r} has dtype {array.dtype.name}, which the Open Inference "
                "Protocol cannot carry.",
                status=500,
            )
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        entries.append(with_values(entry, array, binary, blobs, "output", ProtocolError))
    doc: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = entries
    return assemble(doc, blobs, lower=True)
