"""The client's half of the Open Inference Protocol: a request body out, a response read back.

:class:`~.client.Client` sends what this builds and hands back what it reads. A request is laid
out exactly as tritonclient lays one out, so the tests can pin its bytes against tritonclient's
own builder without a server; the bytes themselves (tensor values, the JSON header, the binary
extension) are written and read by :mod:`.wire`, which the server shares. A bad input is the
caller's mistake (:class:`~maas_lab.errors.UsageError`); a bad response is the server's (a
:class:`~.wire.ProtocolError` with status 502).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UsageError
from .wire import (
    NUMPY_DTYPES,
    ProtocolError,
    array_datatype,
    assemble,
    check_header_length,
    check_parameters,
    from_binary,
    from_json,
    load_header,
    parse_shape,
    unknown_datatype,
    with_values,
)


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
        datatype = array_datatype(array)
        if datatype is None:
            raise UsageError(
                f"input {name!r} is {array.dtype.name}, which the protocol cannot carry; "
                "use bool, (u)int8-64, float16/32/64 or strings."
            )
        spec: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        specs.append(with_values(spec, array, binary, blobs, "input", UsageError))
    doc: dict[str, Any] = {}
    if request_id:
        doc["id"] = request_id
    doc["inputs"] = specs
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    else:
        doc["parameters"] = {"binary_data_output": binary}
    return assemble(doc, blobs, lower=False)


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
    hl = check_header_length(header_length, size)
    doc = load_header(body if hl is None else body[:hl], hl, "the body")
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
        if datatype not in NUMPY_DTYPES:
            raise ProtocolError(unknown_datatype(datatype, f"output {name!r}: "))
        what = f"output {name!r}"
        shape = parse_shape(what, spec.get("shape"))
        count = math.prod(shape)
        nbytes = check_parameters(spec.get("parameters"), f"{what}:").get("binary_data_size")
        if nbytes is None:
            array = from_json(what, datatype, spec.get("data"), shape, count)
        else:
            if type(nbytes) is not int or nbytes < 0 or offset + nbytes > size:
                raise ProtocolError(f"{what}'s binary_data_size runs past the body.")
            array = from_binary(what, datatype, shape, count, view, offset, nbytes)
            offset += nbytes
        outputs[name] = array.reshape(shape)
    return {
        "model_name": doc.get("model_name"),
        "model_version": doc.get("model_version"),
        "id": doc.get("id"),
        "outputs": outputs,
    }
