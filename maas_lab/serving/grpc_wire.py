"""Tensors in and out of gRPC messages: a ``ModelInferRequest`` into the same
:class:`~.server_wire.InferRequest` a REST body becomes, and outputs into a
``ModelInferResponse``.

Values come either as ``raw_input_contents`` (one little-endian buffer per input, BYTES as
4-byte-length-prefixed elements: what tritonclient.grpc sends by default) or as the typed
``contents`` lists; answers always go back as ``raw_output_contents`` (no per-element work,
and what Triton itself answers). Every check that REST makes is made here with gRPC's words
(``raw_input_contents`` where REST says ``binary_data_size``), before any value is read.
"""

from __future__ import annotations

import math

import numpy as np

from .refusals import HTTPError
from .server_wire import (
    SHARED_MEMORY,
    InferInput,
    InferRequest,
    RequestedOutput,
    check_requested_outputs,
    refuse_unsupported_output,
)
from .wire import (
    NUMPY_DTYPES,
    ProtocolError,
    array_datatype,
    bytes_to_wire,
    from_binary,
    from_json,
    parse_shape,
    unknown_datatype,
)

# Which typed list of InferTensorContents carries each datatype (FP16 has none: raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters(entries) -> dict:
    """A protobuf ``map<string, InferParameter>`` as plain Python values."""
    out = {}
    for key, value in entries.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def parse_request(msg, check=None) -> InferRequest:
    """A ``ModelInferRequest`` as an :class:`InferRequest`; :class:`ProtocolError` (400)
    saying what to fix. ``check(inputs)`` runs before any tensor value is read."""
    raw = msg.raw_input_contents
    if not msg.inputs:
        raise ProtocolError(
            "the request has no inputs; add each tensor to `inputs` (name, datatype, shape) "
            "with its values in raw_input_contents or in its contents."
        )
    if raw and len(raw) != len(msg.inputs):
        raise ProtocolError(
            f"the request has {len(msg.inputs)} inputs but {len(raw)} raw_input_contents; "
            "send one raw_input_contents entry per input, in the order of the inputs."
        )
    inputs: list[InferInput] = []
    seen: set[str] = set()
    for index, tensor in enumerate(msg.inputs):
        name = tensor.name
        if not name:
            raise ProtocolError(f"inputs[{index}] has no name; give each input a name.")
        if name in seen:
            raise ProtocolError(f"input {name!r} is sent twice; send each input once.")
        seen.add(name)
        what = f"input {name!r}"
        datatype = tensor.datatype
        if datatype not in NUMPY_DTYPES:
            raise ProtocolError(unknown_datatype(datatype, f"{what}: "))
        shape = parse_shape(what, [int(d) for d in tensor.shape])
        if any(key in tensor.parameters for key in SHARED_MEMORY):
            raise ProtocolError(
                f"{what} uses shared memory, which this server does not support; send its "
                "values in raw_input_contents or in its contents."
            )
        has_contents = tensor.HasField("contents")
        if raw:
            if has_contents:
                raise ProtocolError(
                    f"{what} has contents while the request has raw_input_contents; send "
                    "the values of every input one way."
                )
            _check_raw_size(what, datatype, shape, len(raw[index]))
            source = index
        else:
            field = CONTENTS.get(datatype)
            if field is None:
                raise ProtocolError(
                    f"{what} is {datatype}, which has no typed contents; send it in "
                    "raw_input_contents."
                )
            source = getattr(tensor.contents, field)
        inputs.append(InferInput(name, datatype, shape, None, source))
    outputs = _outputs(msg.outputs)
    if check is not None:
        check(inputs)
    for tensor in inputs:
        what, count = f"input {tensor.name!r}", math.prod(tensor.shape)
        if isinstance(tensor.source, int):
            buffer = memoryview(raw[tensor.source])
            array = from_binary(what, tensor.datatype, tensor.shape, count, buffer, 0, len(buffer))
        else:
            array = _from_contents(what, tensor.datatype, tensor.source, tensor.shape, count)
        tensor.array, tensor.source = array.reshape(tensor.shape), None
    return InferRequest(msg.id or None, inputs, outputs, True, parameters(msg.parameters))


def _check_raw_size(what: str, datatype: str, shape: list[int], nbytes: int) -> None:
    if datatype == "BYTES":
        return  # length-prefixed elements: counted when read
    count = math.prod(shape)
    itemsize = NUMPY_DTYPES[datatype].itemsize
    if nbytes != count * itemsize:
        raise ProtocolError(
            f"{what} has shape {list(shape)}, i.e. {count} {datatype} values of {itemsize} "
            f"bytes ({count * itemsize} bytes), but its raw_input_contents holds {nbytes} bytes."
        )


def _from_contents(what: str, datatype: str, values, shape: list[int], count: int) -> np.ndarray:
    if len(values) != count:
        raise ProtocolError(
            f"{what} has shape {list(shape)}, i.e. {count} values, but its contents hold "
            f"{len(values)}."
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out
    return from_json(what, datatype, list(values), shape, count)  # ranges checked there


def _outputs(requested) -> list[RequestedOutput] | None:
    out: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, spec in enumerate(requested):
        if not spec.name:
            raise ProtocolError(f"outputs[{index}] has no name.")
        if spec.name in seen:
            raise ProtocolError(f"output {spec.name!r} is requested twice; list each once.")
        seen.add(spec.name)
        refuse_unsupported_output(spec.name, parameters(spec.parameters))
        out.append(RequestedOutput(spec.name))
    return out or None


def encode_response(p, name: str, version: str, request: InferRequest, outputs: dict) -> bytes:
    """The serialized ``ModelInferResponse``: every output (or those asked for) as raw bytes."""
    if request.outputs is None:
        chosen = list(outputs)
    else:
        check_requested_outputs(request, list(outputs))
        chosen = [o.name for o in request.outputs]
    response = p.ModelInferResponse(model_name=name, model_version=version, id=request.id or "")
    for output in chosen:
        array = np.asarray(outputs[output])
        datatype = array_datatype(array)
        if datatype is None:
            raise ProtocolError(
                f"model output {output!r} has dtype {array.dtype.name}, which the Open "
                "Inference Protocol cannot carry.",
                status=500,
            )
        response.outputs.add(name=output, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            blob = bytes_to_wire(array)
        else:
            blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        response.raw_output_contents.append(blob)
    return response.SerializeToString()


def repository_version(entries) -> str | None:
    """The version a RepositoryModelLoad names in its parameters (``"version"``: a number or
    an alias); other parameters (Triton's config and files) are refused, not ignored."""
    params = parameters(entries)
    other = sorted(k for k in params if k != "version")
    if other:
        raise HTTPError(
            400,
            f"parameters {', '.join(repr(k) for k in other)} are not supported here; this "
            'server loads registered versions: pass only "version" (a number or alias).',
        )
    version = params.get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise HTTPError(400, 'parameters "version" must be a version number or an alias.')
    return str(version)
