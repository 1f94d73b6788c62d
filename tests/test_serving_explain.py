"""``POST /v2/models/{name}/explain`` on a real server on 127.0.0.1: the same attributions as
in process, its budget refused with a clear status, the infer scope required, and inference
answered while an explanation runs (explanations have their own thread and queue)."""

from __future__ import annotations

import http.client
import json
import re
import threading

import numpy as np
import pytest
from serving_home import serving_home

from maas_lab import api, datasets
from maas_lab.explaining import explain

torch = pytest.importorskip("torch")
pytest.importorskip("captum")
pytestmark = pytest.mark.slow  # a server process of its own
SECRET = "explain-tests-server-token-0123456789"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from safetensors.torch import save_file

    from maas_lab.testing import trained_digits_mlp

    root = tmp_path_factory.mktemp("explain") / "registry"
    with serving_home(root):
        model, config = trained_digits_mlp()
        weights = root.parent / "digits.safetensors"
        save_file(model.eval().state_dict(), str(weights))
        api.register(
            "digits",
            from_torch="maas_lab.zoo:mlp",
            config=config,
            weights=weights,
            task="classification",
            inputs=["input:float32:batch,64"],
        )
        yield root


@pytest.fixture(scope="module")
def server(home):
    tokens = {
        "infer": api.token_create("caller", "infer", ["digits"]).token,
        "read": api.token_create("reader", ["read"]).token,
    }
    handle = api.serve("digits@1", port=0, token=SECRET, max_delay_ms=5)
    try:
        yield handle.url, tokens
    finally:
        api.stop(handle.name)


def _post(url, path, body, token):
    conn = http.client.HTTPConnection(url.split("//", 1)[1], timeout=120)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request("POST" if body is not None else "GET", path, json.dumps(body), headers)
        resp = conn.getresponse()
        data = resp.read().decode()
        return resp.status, json.loads(data) if data.startswith(("{", "[")) else data
    finally:
        conn.close()


def _body(x, **parameters):
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": x.ravel().tolist()}], "parameters": parameters}


def _digits(rows):
    return datasets.load("sklearn:digits").x[:rows]


def test_explain_over_http_gives_the_in_process_attributions(home, server):
    url, tokens = server
    status, meta = _post(url, "/v2", None, tokens["read"])
    assert status == 200 and "explain" in meta["extensions"]
    status, answer = _post(url, "/v2/models/digits/explain", _body(_digits(4)), tokens["infer"])
    assert status == 200, answer
    assert answer["model_name"] == "digits" and answer["model_version"] == "1"
    assert answer["explainer"] == "integrated-gradients" and answer["forward_passes"] == 4 * 52
    local = explain(api.registry(), "digits@1", _digits(4))
    for row, i in zip(answer["rows"], range(4), strict=True):
        assert row["label"] == local.labels[i] and row["delta"] < 0.1
        np.testing.assert_allclose(row["attributions"], local.values[i], rtol=1e-3, atol=1e-4)
    # The explainer and its options travel as parameters, as an infer request's do.
    body = _body(_digits(1), explainer="occlusion", label=7)
    status, answer = _post(url, "/v2/models/digits/versions/1/explain", body, tokens["infer"])
    assert status == 200 and answer["explainer"] == "occlusion"
    assert answer["rows"][0]["label"] == 7 and answer["forward_passes"] == 65


def test_over_budget_and_out_of_scope_requests_are_refused(server):
    url, tokens = server
    body = _body(_digits(16), steps=1000)
    status, answer = _post(url, "/v2/models/digits/explain", body, tokens["infer"])
    assert status == 413
    assert "16032 rows, over this server's limit of 10000" in answer["error"]
    assert "explain_max_passes" in answer["error"] and "fewer rows" in answer["error"]
    status, answer = _post(url, "/v2/models/digits/explain", _body(_digits(1)), tokens["read"])
    assert status == 403, answer
    body = _body(_digits(1), explainer="lime")
    status, answer = _post(url, "/v2/models/digits/explain", body, tokens["infer"])
    assert status == 400 and "occlusion" in answer["error"]
    body = _body(_digits(1), target="Someone has a meal.")
    status, answer = _post(url, "/v2/models/digits/explain", body, tokens["infer"])
    assert status == 400 and "takes no sentences" in answer["error"]


def _in_flight(url, token) -> int:
    status, text = _post(url, "/metrics", None, token)
    return int(re.search(r"^maas_explanations_in_flight (\d+)$", text, re.MULTILINE)[1])


def test_infer_is_answered_while_an_explanation_runs(server):
    url, tokens = server
    finished = []
    explained = {}

    def long_explanation():  # 3 rows x 401 coalitions, a few seconds of Kernel SHAP
        body = _body(_digits(3), explainer="kernel-shap", samples=400)
        explained["status"], _ = _post(url, "/v2/models/digits/explain", body, tokens["infer"])
        finished.append("explain")

    thread = threading.Thread(target=long_explanation)
    thread.start()
    try:
        while _in_flight(url, tokens["read"]) == 0 and thread.is_alive():
            threading.Event().wait(0.02)
        for _ in range(3):
            status, answer = _post(url, "/v2/models/digits/infer", _body(_digits(2)), SECRET)
            assert status == 200 and answer["outputs"][0]["shape"] == [2, 10]
            finished.append("infer")
    finally:
        thread.join(120)
    assert explained["status"] == 200
    assert finished == ["infer", "infer", "infer", "explain"]
