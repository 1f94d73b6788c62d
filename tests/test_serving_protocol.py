"""The OIP v2 wire format, checked against tritonclient itself and without a server.

tritonclient is the reference: if it cannot talk to us, nothing will. Its own request
builder and response reader are called directly, so these tests pin the exact bytes.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from maas_lab.components import tensor
from maas_lab.errors import ServerError, UsageError
from maas_lab.serving.client import Client
from maas_lab.serving.client_wire import encode_infer_request, parse_infer_response
from maas_lab.serving.server_wire import (
    InferInput,
    InferRequest,
    RequestedOutput,
    check_requested_outputs,
    encode_infer_response,
    parse_infer_request,
    validate_inputs,
)
from maas_lab.serving.wire import (
    DATATYPES,
    ProtocolError,
    bytes_to_wire,
    numpy_dtype,
    oip_datatype,
    wire_to_bytes,
)

ARRAYS = {
    "FP32": (np.arange(6, dtype=np.float32).reshape(2, 3) / 7).astype(np.float32),
    "INT64": np.array([[1, -(2**40), 3]], dtype=np.int64),
    "BOOL": np.array([True, False, True]),
    "FP16": np.array([[0.5, -1.25], [65504, 1e-3]], dtype=np.float16),
    "UINT8": np.arange(10, dtype=np.uint8).reshape(2, 5),
    "BYTES": np.array([[b"hello", "w\u00f6rld".encode(), b""]], dtype=object),
}


@pytest.fixture
def tc():
    return pytest.importorskip("tritonclient.http")


def triton_input(tc, name, array, binary):
    datatype = "BYTES" if array.dtype == object else oip_datatype(array.dtype.name)
    inp = tc.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array, binary_data=binary)
    return inp


def request_json(doc, *blobs):
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), (len(header) if blobs else None)


def refused(body, header_length=None, status=400):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(body, header_length)
    assert info.value.status == status
    return str(info.value)


def one(datatype="FP32", shape=(3,), **fields):
    spec = {"name": "x", "datatype": datatype, "shape": list(shape)}
    spec.update(fields)
    return {"inputs": [spec]}


# --- tritonclient's requests ----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(ARRAYS))
def test_tritonclient_request_parses(tc, datatype, binary):
    array = ARRAYS[datatype]
    body, hl = tc.InferenceServerClient.generate_request_body(
        [triton_input(tc, "x", array, binary)], request_id="r1"
    )
    request = parse_infer_request(body, hl)
    assert request.id == "r1"
    assert request.outputs is None and request.binary_output is True  # tritonclient's default
    (got,) = request.inputs
    assert (got.name, got.datatype, got.shape) == ("x", datatype, list(array.shape))
    assert got.array.dtype == array.dtype and got.array.shape == array.shape
    np.testing.assert_array_equal(got.array, array)


@pytest.mark.parametrize("outputs", [None, (True, True), (False, False), (True, False)])
def test_tritonclient_mixed_inputs_and_requested_outputs(tc, outputs):
    arrays = {k: ARRAYS[k] for k in ("FP32", "BYTES", "BOOL", "INT64")}
    inputs = [triton_input(tc, k, a, binary=k != "BOOL") for k, a in arrays.items()]
    requested = None
    if outputs:
        requested = [
            tc.InferRequestedOutput("a", binary_data=outputs[0]),
            tc.InferRequestedOutput("b", binary_data=outputs[1]),
        ]
    body, hl = tc.InferenceServerClient.generate_request_body(inputs, outputs=requested)
    request = parse_infer_request(body, hl)
    assert request.id is None
    assert [i.name for i in request.inputs] == list(arrays)
    for got, array in zip(request.inputs, arrays.values(), strict=True):
        np.testing.assert_array_equal(got.array, array)
    if outputs is None:
        assert request.outputs is None and request.binary_output
    else:
        assert request.outputs == [
            RequestedOutput("a", outputs[0]),
            RequestedOutput("b", outputs[1]),
        ]
        assert request.binary_output is False


def test_tritonclient_json_only_request_has_no_header_length(tc):
    body, hl = tc.InferenceServerClient.generate_request_body(
        [triton_input(tc, "x", ARRAYS["FP32"], binary=False)]
    )
    assert hl is None
    np.testing.assert_array_equal(parse_infer_request(body, None).inputs[0].array, ARRAYS["FP32"])


@pytest.mark.parametrize("with_outputs", [False, True])
def test_our_binary_request_is_byte_identical_to_tritonclients(tc, with_outputs):
    arrays = {k: ARRAYS[k] for k in ("FP32", "BYTES", "FP16")}
    outputs = ["y", "z"] if with_outputs else None
    requested = [tc.InferRequestedOutput(n) for n in outputs] if outputs else None
    theirs, hl = tc.InferenceServerClient.generate_request_body(
        [triton_input(tc, k, a, True) for k, a in arrays.items()],
        outputs=requested,
        request_id="7",
    )
    ours, headers = encode_infer_request(arrays, outputs=outputs, request_id="7")
    assert ours == theirs
    assert headers["Inference-Header-Content-Length"] == str(hl)


# --- responses read by tritonclient ---------------------------------------------------------


def _result(tc, body, headers):
    length = headers.get("inference-header-content-length")
    return tc.InferResult.from_response_body(
        body, verbose=False, header_length=int(length) if length else None
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(ARRAYS))
def test_tritonclient_reads_our_response(tc, datatype, binary):
    array = ARRAYS[datatype]
    request = InferRequest("abc", [], binary_output=binary)
    body, headers = encode_infer_response("m", "3", request, {"y": array})
    if binary:
        assert headers["content-type"] == "application/octet-stream"
        assert int(headers["inference-header-content-length"]) < len(body)
    else:
        assert headers == {"content-type": "application/json"}
    result = _result(tc, body, headers)
    got = result.as_numpy("y")
    expected = array
    if datatype == "BYTES" and not binary:  # JSON carries text: tritonclient gives str
        expected = np.vectorize(lambda b: b.decode(), otypes=[object])(array)
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, expected)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "3", "abc")


def test_tritonclient_reads_requested_outputs_in_request_order(tc):
    request = InferRequest(
        None, [], [RequestedOutput("b", False), RequestedOutput("a", None)], binary_output=True
    )
    outputs = {
        "a": np.array([1.5, 2.5], np.float32),
        "b": np.array([["x", "\u00fc"]], dtype=object),  # str elements go out as UTF-8
        "c": np.zeros(2),
    }
    body, headers = encode_infer_response("m", "1", request, outputs)
    result = _result(tc, body, headers)
    doc = result.get_response()
    assert "id" not in doc
    assert [o["name"] for o in doc["outputs"]] == ["b", "a"]  # c was not asked for
    assert doc["outputs"][0]["data"] == ["x", "\u00fc"]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(result.as_numpy("a"), outputs["a"])


def test_float32_json_values_round_trip():
    values = np.array([0.1, 1 / 3, 3.4e38, -1e-30], dtype=np.float32)
    body, _ = encode_infer_response("m", "1", InferRequest(None, []), {"y": values})
    data = json.loads(body)["outputs"][0]["data"]
    np.testing.assert_array_equal(np.array(data, dtype=np.float32), values)


def test_response_refusals():
    request = InferRequest(None, [], [RequestedOutput("nope")])
    with pytest.raises(ProtocolError, match="no output 'nope'; its outputs are: y") as info:
        encode_infer_response("m", "1", request, {"y": np.zeros(1)})
    assert info.value.status == 400
    with pytest.raises(ProtocolError, match="complex128") as info:
        encode_infer_response("m", "1", InferRequest(None, []), {"y": np.zeros(1, complex)})
    assert info.value.status == 500
    raw = np.array([b"\xff\xfe"], dtype=object)
    with pytest.raises(ProtocolError, match="not valid UTF-8.*binary_data"):
        encode_infer_response("m", "1", InferRequest(None, []), {"y": raw})
    body, _ = encode_infer_response(
        "m", "1", InferRequest(None, [], binary_output=True), {"y": raw}
    )
    assert body.endswith(b"\x02\x00\x00\x00\xff\xfe")


# --- our own client helpers -----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_encode_request_round_trip(binary):
    inputs = {
        "ids": np.array([[1, 2], [3, 4]], dtype=np.int32),
        "text": ["a", "b\u00e9"],
        "one": "solo",
        "f": [0.5, 1.5],
    }
    body, headers = encode_infer_request(inputs, outputs=["y"], binary=binary, request_id="q")
    length = headers.get("Inference-Header-Content-Length")
    assert ("Inference-Header-Content-Length" in headers) is binary
    request = parse_infer_request(body, int(length) if length else None)
    got = {i.name: i for i in request.inputs}
    assert request.id == "q" and request.outputs == [RequestedOutput("y", binary)]
    np.testing.assert_array_equal(got["ids"].array, inputs["ids"])
    assert got["text"].datatype == "BYTES" and got["text"].array.tolist() == [
        b"a",
        "b\u00e9".encode(),
    ]
    assert got["one"].shape == [1] and got["one"].array.tolist() == [b"solo"]
    assert got["f"].datatype == "FP64"


def test_encode_request_without_outputs_asks_for_binary_the_tritonclient_way():
    body, headers = encode_infer_request({"x": np.zeros(2, np.float32)}, binary=False)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body)["parameters"] == {"binary_data_output": False}


def test_encode_request_refusals():
    with pytest.raises(UsageError, match="non-empty dict"):
        encode_infer_request({})
    with pytest.raises(UsageError, match="ragged"):
        encode_infer_request({"x": [[1, 2], [3]]})
    with pytest.raises(UsageError, match="complex128"):
        encode_infer_request({"x": np.zeros(2, complex)})
    with pytest.raises(UsageError, match="not valid UTF-8"):
        encode_infer_request({"x": np.array([b"\xff"], dtype=object)}, binary=False)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_parse_response_round_trip(binary):
    outputs = {"y": ARRAYS["FP16"], "s": ARRAYS["BYTES"], "b": ARRAYS["BOOL"]}
    body, headers = encode_infer_response(
        "m", "2", InferRequest("i", [], binary_output=binary), outputs
    )
    length = headers.get("inference-header-content-length")
    parsed = parse_infer_response(body, int(length) if length else None)
    assert (parsed["model_name"], parsed["model_version"], parsed["id"]) == ("m", "2", "i")
    for name, array in outputs.items():
        assert parsed["outputs"][name].dtype == array.dtype
        np.testing.assert_array_equal(parsed["outputs"][name], array)


def test_parse_response_refuses_a_malformed_one():
    with pytest.raises(ProtocolError, match="server's response is malformed") as info:
        parse_infer_response(b'{"outputs": [{"name": "y"}]}', None)
    assert info.value.status == 502


def test_bytes_wire_format_matches_tritonclient():
    utils = pytest.importorskip("tritonclient.utils")
    array = np.array([[b"ab", b""], ["\u00fc", b"\x00\x01"]], dtype=object)
    wire = bytes_to_wire(array)
    assert wire == utils.serialize_byte_tensor(array).item()
    assert wire_to_bytes(wire, 4).tolist() == [b"ab", b"", "\u00fc".encode(), b"\x00\x01"]
    assert wire_to_bytes(wire, None).size == 4
    assert bytes_to_wire(np.array([], dtype=object)) == b""
    assert wire_to_bytes(b"", 0).shape == (0,)


@pytest.mark.parametrize(
    ("wire", "count", "fragment"),
    [
        (b"\x05\x00\x00\x00ab", 1, "says it is 5 bytes long, but only 2"),
        (b"\x01\x00", 1, "4-byte length prefix"),
        (b"\x01\x00\x00\x00a", 2, "holds 1 elements, but its shape needs 2"),
        (b"\x01\x00\x00\x00ab", 1, "1 bytes left after its 1 elements"),
    ],
)
def test_wire_to_bytes_refusals(wire, count, fragment):
    with pytest.raises(ProtocolError, match=fragment):
        wire_to_bytes(wire, count)


def test_datatype_tables():
    assert oip_datatype("float32") == "FP32" and oip_datatype("str") == "BYTES"
    assert oip_datatype("<U7") == "BYTES" and oip_datatype("int64") == "INT64"
    assert numpy_dtype("BYTES") == np.dtype(object) and numpy_dtype("FP16") == np.float16
    assert all(
        numpy_dtype(oip_datatype(name)) == np.dtype(name)
        for name in DATATYPES
        if DATATYPES[name] != "BYTES"
    )
    with pytest.raises(ProtocolError, match="BF16 tensors are not supported"):
        numpy_dtype("BF16")
    with pytest.raises(ProtocolError, match="valid datatypes: BOOL, UINT8"):
        numpy_dtype("FLOAT")
    with pytest.raises(ProtocolError, match="complex64") as info:
        oip_datatype("complex64")
    assert info.value.status == 500


# --- every refusal of parse_infer_request ---------------------------------------------------

BAD_REQUESTS = {
    "not json": (b"{nope", None, "request body is not valid JSON"),
    "not an object": (b"[1, 2]", None, "must be a JSON object"),
    "bad utf-8": (b'{"inputs": "\xff"}', None, "not valid"),
    "no inputs": ({"id": "1"}, None, 'needs "inputs"'),
    "inputs not a list": ({"inputs": {"x": 1}}, None, 'needs "inputs"'),
    "empty inputs": ({"inputs": []}, None, 'needs "inputs"'),
    "input not an object": ({"inputs": [3]}, None, "inputs[0] must be an object"),
    "no name": ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, None, "no name"),
    "no datatype": (
        {"inputs": [{"name": "x", "shape": [1], "data": [1]}]},
        None,
        "'x' has no \"datatype\"",
    ),  # noqa: E501
    "no shape": (
        {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]},
        None,
        "'x' has no \"shape\"",
    ),  # noqa: E501
    "duplicate": ({"inputs": one(data=[1, 2, 3])["inputs"] * 2}, None, "input 'x' is sent twice"),
    "shape not a list": (
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": 3, "data": [1]}]},
        None,
        "a shape must be a list",
    ),  # noqa: E501
    "negative dim": (one(shape=(2, -1), data=[1]), None, "has shape [2, -1]; a shape must be"),
    "float dim": (one(shape=(1.5,), data=[1]), None, "a shape must be a list of whole numbers"),
    "bool dim": (one(shape=(True,), data=[1]), None, "a shape must be a list of whole numbers"),
    "unknown datatype": (
        one("FLOAT", data=[1, 2, 3]),
        None,
        'unknown datatype "FLOAT"; valid datatypes: BOOL',
    ),  # noqa: E501
    "bf16": (one("BF16", data=[1, 2, 3]), None, "BF16 tensors are not supported"),
    "no data": (one(), None, "input 'x' has no data"),
    "count": (
        one(shape=(2, 3), data=[1, 2, 3, 4, 5]),
        None,
        "input 'x' has shape [2, 3], i.e. 6 values, but 5 were sent.",
    ),
    "nested count": (
        one(shape=(2, 2), data=[[1, 2], [3, 4], [5, 6]]),
        None,
        "i.e. 4 values, but 6",
    ),  # noqa: E501
    "ragged": (one(shape=(2, 2), data=[[1, 2], [3]]), None, "nested lists of uneven lengths"),
    "mixed nesting": (one(shape=(2,), data=[1, [2]]), None, "nested lists of uneven lengths"),
    "strings for FP32": (
        one(data=[1, "2", 3]),
        None,
        'FP32, so its data must be numbers (not true/false); got strings such as "2"',
    ),  # noqa: E501
    "bools for FP32": (one(data=[1.0, True, 3]), None, "got true/false values"),
    "floats for INT64": (
        one("INT64", data=[1, 2.5, 3]),
        None,
        "INT64, so its data must be whole numbers; got decimal numbers such as 2.5",
    ),  # noqa: E501
    "1.0 for INT64": (one("INT64", data=[1, 1.0, 3]), None, "got decimal numbers"),
    "bools for INT32": (one("INT32", data=[1, True, 0]), None, "got true/false values"),
    "ints for BOOL": (
        one("BOOL", data=[1, 0, 1]),
        None,
        "BOOL, so its data must be true or false; got whole numbers",
    ),  # noqa: E501
    "numbers for BYTES": (
        one("BYTES", data=["a", 1, "c"]),
        None,
        "BYTES, so its data must be strings",
    ),  # noqa: E501
    "nulls": (one(data=[1, None, 3]), None, "got nulls"),
    "out of range": (
        one("UINT8", data=[1, 300, 3]),
        None,
        "the value 300 is outside its range [0, 255]",
    ),  # noqa: E501
    "negative unsigned": (one("UINT32", data=[1, -1, 3]), None, "the value -1 is outside"),
    "too large for FP16": (one("FP16", data=[1, 1e6, 3]), None, "too large for it"),
    "too large for FP64": (one("FP64", data=[1, 10**400, 3]), None, "too large for it"),
    "id not a string": (one(data=[1, 2, 3]) | {"id": 5}, None, '"id" must be a string'),
    "parameters not an object": (
        one(data=[1, 2, 3]) | {"parameters": [1]},
        None,
        '"parameters" must be a JSON object',
    ),  # noqa: E501
    "binary_data_output not bool": (
        one(data=[1, 2, 3]) | {"parameters": {"binary_data_output": 1}},
        None,
        "binary_data_output must be true or false",
    ),  # noqa: E501
    "shared memory": (one(parameters={"shared_memory_region": "r"}), None, "shared memory"),
    "outputs not a list": (
        one(data=[1, 2, 3]) | {"outputs": {"name": "y"}},
        None,
        '"outputs" must be a list',
    ),  # noqa: E501
    "output without name": (
        one(data=[1, 2, 3]) | {"outputs": [{"parameters": {}}]},
        None,
        "outputs[0] must be an object with a name",
    ),  # noqa: E501
    "output not an object": (
        one(data=[1, 2, 3]) | {"outputs": ["y"]},
        None,
        "outputs[0] must be an object",
    ),  # noqa: E501
    "duplicate outputs": (
        one(data=[1, 2, 3]) | {"outputs": [{"name": "y"}, {"name": "y"}]},
        None,
        "output 'y' is requested twice",
    ),  # noqa: E501
    "binary_data not bool": (
        one(data=[1, 2, 3]) | {"outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
        None,
        "binary_data must be true or false",
    ),  # noqa: E501
    "classification": (
        one(data=[1, 2, 3]) | {"outputs": [{"name": "y", "parameters": {"classification": 3}}]},
        None,
        "classification",
    ),  # noqa: E501
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_refused_json_requests(case):
    body, header_length, fragment = BAD_REQUESTS[case]
    assert fragment in refused(body, header_length)


def test_refused_header_lengths():
    body, hl = request_json(one(parameters={"binary_data_size": 12}), np.zeros(3, "<f4").tobytes())
    assert parse_infer_request(body, hl).inputs[0].array.tolist() == [0, 0, 0]
    assert parse_infer_request(body, str(hl)).inputs[0].shape == [3]
    message = refused(body, len(body) + 10)
    assert f"Inference-Header-Content-Length is {len(body) + 10} but the body is only" in message
    assert "must be a whole number >= 0" in refused(body, -1)
    assert "must be a whole number >= 0" in refused(body, "twelve")
    assert "first 5 bytes of the body" in refused(body, 5)


def test_refused_binary_sections():
    floats = np.arange(3, dtype="<f4").tobytes()
    body, hl = request_json(one(parameters={"binary_data_size": 16}), floats)
    assert "says its binary data is 16 bytes, but only 12 bytes are left" in refused(body, hl)
    body, hl = request_json(one(parameters={"binary_data_size": 8}), floats[:8])
    message = refused(body, hl)
    assert "i.e. 3 FP32 values of 4 bytes (12 bytes), but its binary_data_size is 8" in message
    body, hl = request_json(one(parameters={"binary_data_size": 12}), floats, b"xy")
    assert "2 bytes left after the inputs' binary data" in refused(body, hl)
    assert "no Inference-Header-Content-Length header" in refused(
        one(parameters={"binary_data_size": 12})
    )
    body, hl = request_json(one(parameters={"binary_data_size": 12}, data=[1, 2, 3]), floats)
    assert 'both "data" and parameters.binary_data_size' in refused(body, hl)
    body, hl = request_json(one(parameters={"binary_data_size": "12"}), floats)
    assert "binary_data_size must be a whole number of bytes" in refused(body, hl)
    body, hl = request_json(one("BOOL", parameters={"binary_data_size": 3}), b"\x01\x02\x00")
    assert "each binary byte must be 0 or 1" in refused(body, hl)
    body, hl = request_json(
        one("BYTES", (2,), parameters={"binary_data_size": 5}), b"\x01\x00\x00\x00a"
    )
    assert "binary data of input 'x' holds 1 elements, but its shape needs 2" in refused(body, hl)


def test_binary_sections_are_read_in_input_order_even_when_unaligned():
    doc = {
        "inputs": [
            {
                "name": "a",
                "datatype": "INT64",
                "shape": [2],
                "parameters": {"binary_data_size": 16},
            },
            {"name": "j", "datatype": "INT32", "shape": [1], "data": [7]},
            {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}},
            {
                "name": "b",
                "datatype": "FP64",
                "shape": [1, 1],
                "parameters": {"binary_data_size": 8},
            },
            {
                "name": "e",
                "datatype": "FP32",
                "shape": [0, 3],
                "parameters": {"binary_data_size": 0},
            },
        ]
    }
    blobs = [np.array([5, -6], "<i8").tobytes(), bytes_to_wire(["abc"]), np.array([2.5]).tobytes()]
    body, hl = request_json(doc, *blobs)
    got = {i.name: i.array for i in parse_infer_request(body, hl).inputs}
    assert all(a.flags.aligned for a in got.values())  # copied where the offset was unaligned
    assert got["a"].tolist() == [5, -6] and got["j"].tolist() == [7]
    assert got["s"].tolist() == [b"abc"] and got["b"].tolist() == [[2.5]]
    assert got["e"].shape == (0, 3) and got["e"].dtype == np.float32


def test_json_data_may_be_nested_or_flat():
    nested = parse_infer_request(
        json.dumps(one(shape=(2, 2), data=[[1, 2.5], [3, 4]])).encode(), None
    )
    flat = parse_infer_request(json.dumps(one(shape=(2, 2), data=[1, 2.5, 3, 4])).encode(), None)
    np.testing.assert_array_equal(nested.inputs[0].array, flat.inputs[0].array)
    assert nested.inputs[0].array.dtype == np.float32
    request = parse_infer_request(json.dumps(one("UINT64", (1,), data=[2**64 - 1])).encode(), None)
    assert request.inputs[0].array.tolist() == [2**64 - 1]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_json_has_no_nan_or_infinity_so_requests_holding_them_are_refused(value, datatype):
    body = '{"inputs":[{"name":"pixels","datatype":"%s","shape":[2],"data":[%s,1]}]}'
    message = refused((body % (datatype, value)).encode())
    assert "'pixels'" in message and "NaN or an infinite value" in message
    assert "binary data" in message


def test_binary_data_carries_nan_and_infinity():
    values = np.array([np.nan, np.inf, -np.inf, 1], dtype=np.float32)
    body, headers = encode_infer_request({"x": values}, binary=True)
    got = parse_infer_request(body, headers["Inference-Header-Content-Length"])
    np.testing.assert_array_equal(got.inputs[0].array, values)


def test_responses_are_always_json_and_nan_outputs_go_binary():
    request = parse_infer_request(json.dumps(one(data=[1, 2, 3])).encode(), None)
    outputs = {"y": np.array([1.0, np.nan], dtype=np.float32)}
    with pytest.raises(ProtocolError, match="'y' holds NaN or infinite values.*binary_data"):
        encode_infer_response("m", "1", request, outputs)
    request.binary_output = True
    body, headers = encode_infer_response("m", "1", request, outputs)
    got = parse_infer_response(body, int(headers["inference-header-content-length"]))
    np.testing.assert_array_equal(got["outputs"]["y"], outputs["y"])
    with pytest.raises(UsageError, match="'x' holds NaN"):
        encode_infer_request({"x": np.array([np.inf])}, binary=False)


@pytest.mark.parametrize(
    "shape, fragment",
    [([0, 2**70], "far larger"), ([1] * 65, "65 dimensions"), ([2**40, 2**40], "far larger")],
    ids=["huge-dim", "65-dims", "huge-product"],
)
def test_absurd_shapes_are_refused_with_400(shape, fragment):
    as_json = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]}
    assert fragment in refused(as_json)
    binary = one(shape=shape, parameters={"binary_data_size": 0})
    header = json.dumps(binary).encode()
    assert fragment in refused(header, len(header))


def test_the_header_is_checked_before_any_data_is_read():
    """A check (the server's: against the model's signature) sees names, datatypes and shapes
    and refuses before the data is converted: malformed data is never looked at."""
    seen = []

    def check(inputs):
        seen.append([(i.name, i.datatype, i.shape, i.array) for i in inputs])
        raise ProtocolError("input 'x' is FP32 in this model; got BYTES.")

    wire = b"\xff" * 64  # not a valid BYTES encoding: converting it would fail differently
    body, hl = request_json(one("BYTES", (4,), parameters={"binary_data_size": 64}), wire)
    with pytest.raises(ProtocolError, match="FP32 in this model"):
        parse_infer_request(body, hl, check)
    assert seen == [[("x", "BYTES", [4], None)]]


def test_check_inputs_limits_rows_on_the_batch_axis_only():
    from maas_lab.serving.server_wire import check_inputs

    sig = [tensor("x", "float32", ["batch", 4])]
    fixed = [tensor("x", "float32", [100, 4])]
    header = [InferInput("x", "FP32", [100, 4], None)]
    with pytest.raises(ProtocolError) as info:
        check_inputs(sig, header, max_rows=64)
    assert info.value.status == 413 and "a larger max_rows." in str(info.value)
    assert "100 rows" in str(info.value)
    check_inputs(sig, header, max_rows=100)
    check_inputs(fixed, header, max_rows=64)  # a fixed first dimension is not a batch


def test_request_parameters_and_output_flags_are_kept():
    doc = one(data=[1, 2, 3]) | {
        "parameters": {"binary_data_output": True, "priority": 2},
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    request = parse_infer_request(json.dumps(doc).encode(), None)
    assert request.parameters["priority"] == 2
    assert [request.binary_for(o) for o in request.outputs] == [False, True]
    assert (
        parse_infer_request(
            json.dumps(one(data=[1, 2, 3]) | {"outputs": []}).encode(), None
        ).outputs
        is None
    )


# --- checking a request against a model -----------------------------------------------------

SIGNATURE = [
    tensor("input_ids", "int64", ["batch", "sequence"]),
    tensor("attention_mask", "int64", ["batch", "sequence"]),
    tensor("pixels", "float32", ["batch", 3]),
]


def inputs(**arrays):
    return [
        InferInput(
            n, "BYTES" if a.dtype == object else oip_datatype(a.dtype.name), list(a.shape), a
        )
        for n, a in arrays.items()
    ]


def good(**changes):
    arrays = {
        "input_ids": np.ones((2, 5), np.int64),
        "attention_mask": np.ones((2, 5), np.int64),
        "pixels": np.zeros((2, 3), np.float32),
    }
    arrays.update(changes)
    return inputs(**{k: v for k, v in arrays.items() if v is not None})


def invalid(signature, given):
    with pytest.raises(ProtocolError) as info:
        validate_inputs(signature, given)
    assert info.value.status == 400
    return str(info.value)


def test_validate_inputs_accepts_and_returns_feeds():
    feeds = validate_inputs(SIGNATURE, good())
    assert list(feeds) == ["input_ids", "attention_mask", "pixels"]
    assert feeds["pixels"].dtype == np.float32


def test_validate_inputs_refusals():
    extra = good() + inputs(bogus=np.zeros(1, np.float32))
    message = invalid(SIGNATURE, extra)
    assert "no input 'bogus'; its inputs are: input_ids (INT64 [batch, sequence])" in message
    message = invalid(SIGNATURE, good(attention_mask=None))
    assert "missing input 'attention_mask'; this model needs: input_ids" in message
    message = invalid(SIGNATURE, good(input_ids=np.ones((2, 5), np.int32)))
    assert message == "input 'input_ids' is INT64 in this model; got INT32."
    message = invalid(SIGNATURE, good(pixels=np.zeros(3, np.float32)))
    assert "input 'pixels' has 2 dimensions in this model ([batch, 3]); got 1 ([3])" in message
    message = invalid(SIGNATURE, good(pixels=np.zeros((2, 4), np.float32)))
    assert (
        "input 'pixels' must have size 3 in dimension 1 (shape [batch, 3]); got shape [2, 4]"
        in message
    )
    message = invalid(SIGNATURE, good(attention_mask=np.ones((2, 4), np.int64)))
    assert "inputs 'input_ids' and 'attention_mask' disagree on dimension 'sequence': 5" in message
    message = invalid(SIGNATURE, good(pixels=np.zeros((3, 3), np.float32)))
    assert "disagree on dimension 'batch'" in message
    message = invalid(
        SIGNATURE,
        good(
            input_ids=np.ones((0, 5), np.int64),
            attention_mask=np.ones((0, 5), np.int64),
            pixels=np.zeros((0, 3), np.float32),
        ),
    )
    assert "input 'input_ids' has shape [0, 5], which holds no values" in message


def test_validate_inputs_decodes_text_for_str_signatures():
    text = np.array([["h\u00e9".encode(), b"x"]], dtype=object)
    feeds = validate_inputs([tensor("text", "str", ["batch", 2])], inputs(text=text))
    assert feeds["text"].tolist() == [["h\u00e9", "x"]] and feeds["text"].dtype == object
    feeds = validate_inputs([tensor("raw", "bytes", [-1])], inputs(raw=np.array([b"\xff"], object)))
    assert feeds["raw"].tolist() == [b"\xff"]
    message = invalid([tensor("text", "str", [None])], inputs(text=np.array([b"\xff"], object)))
    assert "input 'text' holds bytes that are not valid UTF-8; this model takes text." == message


def test_check_requested_outputs():
    request = InferRequest(None, [], [RequestedOutput("logits"), RequestedOutput("probs")])
    check_requested_outputs(request, ["logits", "probs", "hidden"])
    check_requested_outputs(InferRequest(None, []), ["logits"])
    with pytest.raises(ProtocolError, match="no output 'probs'; its outputs are: logits, hidden"):
        check_requested_outputs(request, ["logits", "hidden"])


# --- the client, with no real server --------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_says_nothing_answers_on_a_closed_port():
    client = Client(f"http://127.0.0.1:{closed_port()}", timeout=5)
    with pytest.raises(ServerError, match="Nothing answers at http://127.0.0.1:.*maas status") as e:
        client.ready()
    assert e.value.status is None and e.value.label == "Server error"


def test_client_repr_hides_the_token():
    client = Client("127.0.0.1:8000/", token="s3cret")
    assert repr(client) == "Client('http://127.0.0.1:8000', token=***)"
    assert "s3cret" not in repr(client) and "s3cret" not in str(vars(client).get("url"))
    with pytest.raises(UsageError, match="not a server url"):
        Client("ftp://host")


class _Stub(BaseHTTPRequestHandler):
    """A stand-in server: an echo model with one BYTES input "text" and one FP32 input "x"."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    seen: list[dict] = []

    def log_message(self, *args):
        pass

    def _send(self, status, body, headers=None):
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        if self.path == "/v2/health/ready":
            self._send(503, b"")
        elif self.path.startswith("/v2/models/echo"):
            meta = {
                "name": "echo",
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [-1]},
                    {"name": "x", "datatype": "FP32", "shape": [-1]},
                ],
            }
            self._send(200, json.dumps(meta).encode())
        elif self.path == "/metrics":
            self._send(500, b"<html>" + b"x" * 1000)
        else:
            self._send(404, b'{"error": "no model \'nope\'; models: echo."}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        length = self.headers.get("Inference-Header-Content-Length")
        try:
            request = parse_infer_request(body, int(length) if length else None)
        except ProtocolError as exc:
            self._send(exc.status, json.dumps({"error": str(exc)}).encode())
            return
        outputs = {i.name: i.array for i in request.inputs}
        self._send(200, *encode_infer_response("echo", "1", request, outputs))
        if self.path.startswith("/v2/models/drop/"):
            self.close_connection = True  # drop the keep-alive connection without saying so


@pytest.fixture
def stub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True  # a client's idle keep-alive connection must not block close
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_against_a_stub_server(stub_url):
    client = Client(stub_url, token="tok")
    assert client.ready() is False  # 503 is an answer, not an error
    got = client.infer("echo", {"text": ["a", "b"], "x": [1, 2]})
    assert got["text"].tolist() == [b"a", b"b"]
    assert got["x"].dtype == np.float32  # the list was cast to the model's FP32
    got = client.infer("echo", "hi", binary=False)  # one str: a batch of one, for input "text"
    assert got["text"].tolist() == [b"hi"]
    assert all(s["auth"] == "Bearer tok" for s in _Stub.seen)
    with pytest.raises(ServerError, match="^The server answered 404: no model 'nope'; models"):
        client.model_metadata("nope")
    with pytest.raises(ServerError) as info:
        client.metrics()
    assert info.value.status == 500 and len(str(info.value)) < 340
    with pytest.raises(ServerError, match="answered 400: input 'x' has shape \\[3\\], i.e. 3"):
        client._checked("POST", "/v2/models/echo/infer", json.dumps(one(data=[1])).encode())


def test_client_names_the_inputs_when_it_cannot_guess(stub_url, monkeypatch):
    client = Client(stub_url)
    monkeypatch.setitem(
        client._metadata,
        ("two", ""),
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1]}, {"name": "b"}]},
    )
    with pytest.raises(UsageError, match="takes several inputs.*needs: a \\(FP32 \\[-1\\]\\), b"):
        client.infer("two", [1.0])


def test_client_reopens_a_dropped_keep_alive_connection(stub_url):
    client = Client(stub_url)
    client.infer("drop", {"x": np.ones(2, np.float32)})
    first = client._conn
    assert first is not None  # the response did not say it would close
    got = client.infer("drop", {"x": np.ones(2, np.float32)})
    assert got["x"].tolist() == [1.0, 1.0] and client._conn is not first


def test_predict_inputs_name_the_mistake(tmp_path):
    from maas_lab.errors import UsageError
    from maas_lab.serving.inputs import fit_to_model, predict_inputs

    assert predict_inputs(("a", "b"), None, None) == ["a", "b"]
    assert predict_inputs((), "[1, 2]", None).tolist() == [1, 2]
    with pytest.raises(UsageError, match="one way"):
        predict_inputs(("a",), "[1]", None)
    with pytest.raises(UsageError, match="not valid JSON"):
        predict_inputs((), "[1,", None)
    with pytest.raises(UsageError, match="neither a notebook variable"):
        predict_inputs((), None, "nothing_here")
    with pytest.raises(UsageError, match=r"--json is not rectangular"):
        predict_inputs((), "[[1, 2], [3]]", None)
    from maas_lab import datasets

    with datasets.notebook_scope({"ragged": [[1.0, 2.0], [3.0]]}):
        with pytest.raises(UsageError, match=r"--array ragged is not rectangular"):
            predict_inputs((), None, "ragged")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    assert predict_inputs((), None, str(tmp_path / "x.npy")).shape == (2, 3)
    one = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]}
    fitted = fit_to_model(one, np.ones(3))
    assert fitted["x"].shape == (1, 3) and fitted["x"].dtype == np.float32
    two = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1]},
            {"name": "b", "datatype": "FP32", "shape": [-1]},
        ]
    }
    with pytest.raises(UsageError, match="several inputs"):
        fit_to_model(two, np.ones(3))
