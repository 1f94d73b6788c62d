"""The gRPC side of the server, end to end: a real server process on 127.0.0.1 serving the
same models over REST and OIP v2 gRPC, called by tritonclient.grpc as its users write it, and
by hand-built messages where a client would never send such a thing.

One server (module-scoped) serves a tiny torch MLP (FP32 tensors) and a word table from the
third-party plugin in ``tests/plugin_packages`` (BYTES tensors; "slow" takes 2 s).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from serving_home import serving_home

from maas_lab import api
from maas_lab.errors import MaasError
from maas_lab.serving import state

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

MAX_BODY_MB = 0.05  # so that "over the size limit" is a small message


def grpc_port(handle) -> int:
    """The gRPC port the supervisor reserved (grpc_port=0: any free one) and recorded."""
    row = state.get(api.registry(handle.root).db, handle.name)
    return int(row["options"]["grpc_port"])


@pytest.fixture(scope="module")
def home(tmp_path_factory, hello_plugin_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from maas_lab.zoo import mlp

    root = tmp_path_factory.mktemp("grpc") / "registry"
    with serving_home(root, hello_plugin_path):
        work = root.parent
        torch.manual_seed(0)
        config = {"in_features": 8, "hidden": 16, "out_features": 3}
        save_file(mlp(**config).eval().state_dict(), str(work / "tiny.safetensors"))
        api.register(
            "tiny",
            from_torch="maas_lab.zoo:mlp",
            config=config,
            weights=work / "tiny.safetensors",
            inputs=["input:float32:batch,8"],
        )
        table = work / "words.json"
        table.write_text(json.dumps({"good": 1.0, "bad": -1.0}))
        api.register("words", from_file=table, format="word-table")
        yield root


@pytest.fixture(scope="module")
def server(home):
    handle = api.serve(
        ["tiny@1", "words@1"],
        name="both",
        port=0,
        replicas=1,  # statistics are compared right after the calls: one worker's counters
        grpc_port=0,
        max_body_mb=MAX_BODY_MB,
        root=home,
    )
    try:
        yield handle
    finally:
        try:
            api.stop(handle.name, root=home)
        except MaasError:
            pass


@pytest.fixture(scope="module")
def triton(server):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port(server)}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server):
    """Messages built by hand (typed contents, malformed ones) on a plain grpc channel."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port(server)}")
    yield channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _tiny(triton, x):
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # raw_input_contents, tritonclient.grpc's default
    result = triton.infer("tiny", [tensor])
    return result.as_numpy("output")


def _code(excinfo) -> str:
    return excinfo.value.status()  # "StatusCode.NOT_FOUND"


X = np.random.default_rng(0).random((4, 8), dtype=np.float32)


def test_our_proto_numbers_every_field_as_tritonclients_does():
    """Every message and field of our .proto has the name, number, type and cardinality of
    tritonclient's own (Triton's files), so each side reads what the other writes."""
    from tritonclient.grpc import model_config_pb2

    from maas_lab.serving.grpc_proto import protocol

    ours = protocol()

    def theirs(name):
        return service_pb2.DESCRIPTOR.message_types_by_name.get(
            name
        ) or model_config_pb2.DESCRIPTOR.message_types_by_name.get(name)

    def same(mine, other, where):
        assert other is not None, where
        for field in mine.fields:
            match = other.fields_by_name.get(field.name)
            assert match is not None, f"{where}.{field.name}"
            assert (match.number, match.type, match.is_repeated) == (
                field.number,
                field.type,
                field.is_repeated,
            ), f"{where}.{field.name}"
            if field.message_type is not None:
                same(field.message_type, match.message_type, f"{where}.{field.name}")

    for name in ours._classes:
        same(getattr(ours, name).DESCRIPTOR, theirs(name), name)
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method, (request, response) in ours.methods.items():
        theirs_method = service.methods_by_name[method]
        assert theirs_method.input_type.name == request.DESCRIPTOR.name
        assert theirs_method.output_type.name == response.DESCRIPTOR.name


def test_tritonclient_grpc_answers_as_rest_does(server, triton, stub):
    rest = server.client()
    expected = rest.infer("tiny", {"input": X})["output"]
    np.testing.assert_allclose(_tiny(triton, X), expected, rtol=1e-6, atol=1e-7)

    # BYTES in raw form (4-byte length prefixes), the word table's input
    words = np.array([b"good good", b"bad", b"unknown"], dtype=object)
    tensor = grpcclient.InferInput("words", [3], "BYTES")
    tensor.set_data_from_numpy(words)
    got = triton.infer("words", [tensor]).as_numpy("scores")
    np.testing.assert_array_equal(got, rest.infer("words", {"words": words})["scores"])

    # typed contents instead of raw_input_contents, and asking for one output by name
    _, call = stub
    request = service_pb2.ModelInferRequest(model_name="tiny", model_version="1", id="r1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    tensor.contents.fp32_contents.extend(X.ravel().tolist())
    request.outputs.add(name="output")
    response = call.ModelInfer(request)
    assert (response.model_name, response.model_version, response.id) == ("tiny", "1", "r1")
    assert list(response.outputs[0].shape) == [4, 3]
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_metadata_config_and_statistics_match_rest(server, triton):
    rest = server.client()
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("tiny") and not triton.is_model_ready("nope")
    meta = triton.get_server_metadata(as_json=True)
    assert meta["name"] == rest.server_metadata()["name"]
    assert "model_repository" in meta["extensions"]
    model = triton.get_model_metadata("tiny", as_json=True)
    want = rest.model_metadata("tiny")
    assert model["versions"] == want["versions"] and model["platform"] == want["platform"]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in model["inputs"]] == [
        (t["name"], t["datatype"], t["shape"]) for t in want["inputs"]
    ]
    config = triton.get_model_config("tiny", as_json=True)["config"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert int(config["max_batch_size"]) == rest.model_config("tiny")["max_batch_size"]

    def count(stats):
        return int(stats["model_stats"][0].get("inference_count", 0))

    before = count(rest.stats("tiny"))
    _tiny(triton, X)
    assert count(rest.stats("tiny")) == before + 4  # a gRPC inference counts as REST's do
    assert count(triton.get_inference_statistics("tiny", as_json=True)) == before + 4
    line = next(
        line
        for line in rest.metrics().splitlines()
        if line.startswith('maas_inferences_total{model="tiny"')
    )
    assert int(float(line.split()[-1])) == before + 4


def test_bad_requests_get_their_grpc_status_and_the_server_keeps_serving(server, triton, stub):
    import grpc

    channel, call = stub
    garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as excinfo:
        garbage(b"\x0a\xff\xff")  # a length-delimited field that runs past the end
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in excinfo.value.details()

    request = service_pb2.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 8])
    request.raw_input_contents.append(b"\0" * 60)  # 2 x 8 FP32 is 64 bytes
    with pytest.raises(grpc.RpcError) as excinfo:
        call.ModelInfer(request)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents holds 60 bytes" in excinfo.value.details()
    request.raw_input_contents[0] = b"\0" * 64
    request.raw_input_contents.append(b"\0" * 64)  # two buffers for one input
    with pytest.raises(grpc.RpcError) as excinfo:
        call.ModelInfer(request)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(InferenceServerException) as excinfo:  # the model's own checks
        _tiny(triton, np.zeros((2, 5), dtype=np.float32))
    assert _code(excinfo) == "StatusCode.INVALID_ARGUMENT"
    assert "must have size 8" in excinfo.value.message()

    tensor = grpcclient.InferInput("input", [1, 8], "FP32")
    tensor.set_data_from_numpy(X[:1])
    with pytest.raises(InferenceServerException) as excinfo:
        triton.infer("nope", [tensor])
    assert _code(excinfo) == "StatusCode.NOT_FOUND"

    big = np.zeros((int(MAX_BODY_MB * 2**20) // 32 + 100, 8), dtype=np.float32)
    with pytest.raises(InferenceServerException) as excinfo:
        _tiny(triton, big)
    assert _code(excinfo) == "StatusCode.RESOURCE_EXHAUSTED"

    assert str(server.root) not in excinfo.value.message()
    np.testing.assert_allclose(_tiny(triton, X), server.client().infer("tiny", X)["output"])


def test_repository_calls_need_the_admin_token(home, server, triton):
    with pytest.raises(InferenceServerException) as excinfo:
        triton.get_model_repository_index()
    assert _code(excinfo) == "StatusCode.UNAUTHENTICATED"
    assert server.token not in excinfo.value.message()
    reader = api.token_create("grpc-reader", "infer", models=["tiny"], root=home).token
    with pytest.raises(InferenceServerException) as excinfo:  # known, but not admin
        triton.get_model_repository_index(headers={"authorization": f"Bearer {reader}"})
    assert _code(excinfo) == "StatusCode.PERMISSION_DENIED"
    assert reader not in excinfo.value.message()
    admin = {"authorization": f"Bearer {server.token}"}
    index = triton.get_model_repository_index(headers=admin, as_json=True)["models"]
    assert {m["name"] for m in index} == {"tiny", "words"}
    with pytest.raises(InferenceServerException) as excinfo:
        triton.unload_model("nope", headers=admin)
    assert _code(excinfo) == "StatusCode.NOT_FOUND"
    triton.load_model("tiny", headers=admin)  # the latest version (1), now followed
    assert triton.is_model_ready("tiny")


def test_draining_answers_not_ready_and_finishes_a_call_in_flight(home):
    """Two replicas share the gRPC port; the first step of a stop turns ServerReady false;
    stopping lets a gRPC call already taken finish, then nothing answers on the port."""
    handle = api.serve("words@1", name="drain", port=0, replicas=2, grpc_port=0, root=home)
    assert len(handle.workers) == 2  # both listen on the one gRPC port (SO_REUSEPORT)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port(handle)}")
    outcome = {}

    def slow():  # "slow" holds the backend for 2 s
        tensor = grpcclient.InferInput("words", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"slow good"], dtype=object))
        try:
            outcome["scores"] = client.infer("words", [tensor]).as_numpy("scores")
        except Exception as exc:  # shown by the assertion below
            outcome["error"] = exc

    caller = threading.Thread(target=slow)
    try:
        assert client.is_server_ready()
        for pid in handle.workers:
            os.kill(pid, signal.SIGUSR1)
        _wait(lambda: not client.is_server_ready(), "ServerReady to answer false")
        caller.start()
        time.sleep(0.5)  # the call reaches the server (as test_serving's drain test does)
        api.stop(handle.name, root=home)
        caller.join(30)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["scores"].shape == (1,)
        with pytest.raises(InferenceServerException):
            client.is_server_live()
    finally:
        if caller.is_alive() or caller.ident is not None:
            caller.join(30)
        client.close()
        try:
            api.stop(handle.name, root=home)
        except MaasError:
            pass


def _wait(predicate, what: str, wait_s: float = 30.0):
    """Poll until ``predicate()`` holds; the deadline only bounds a hang."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_scaling_down_under_grpc_load_fails_no_call(home):
    """Clients keep several calls in flight on each connection while one of two replicas is
    removed: every call is answered, those on the removed replica's connections included
    (grpcio's own stop CANCELs the calls it has received but not yet handed over, and those
    sent before the client reads its GOAWAY; the drain retires connections first)."""
    handle = api.serve("words@1", name="shrink", port=0, replicas=2, grpc_port=0, root=home)
    address = f"127.0.0.1:{grpc_port(handle)}"
    stop, lock = threading.Event(), threading.Lock()
    answered, failures = [0], []

    words = np.array([b"good", b"bad good"] * 8, dtype=object)

    def load(window: int = 24):
        # a connection of its own, as separate client processes have (grpc's channels to
        # one address otherwise share one)
        client = grpcclient.InferenceServerClient(
            address, channel_args=[("grpc.use_local_subchannel_pool", 1)]
        )
        room = threading.Semaphore(window)
        tensor = grpcclient.InferInput("words", list(words.shape), "BYTES")
        tensor.set_data_from_numpy(words)

        def done(result, error):
            with lock:
                if error is None:
                    answered[0] += 1
                else:
                    failures.append(f"{error.status()} {error.message()}")
            room.release()

        try:
            while not stop.is_set():
                if room.acquire(timeout=0.5):
                    client.async_infer("words", [tensor], done)
            for _ in range(window):  # the last calls are answered before the client closes
                room.acquire(timeout=30)
        finally:
            client.close()

    def count() -> int:
        with lock:
            return answered[0]

    # eight connections (all on the replica that stays: 1 in 256) with 24 calls in flight
    # each: enough that grpcio's stop would catch some not yet handed over, and fewer than
    # one replica queues (256) once the other is gone
    callers = [threading.Thread(target=load) for _ in range(8)]
    try:
        for caller in callers:
            caller.start()
        _wait(lambda: count() >= 100 or failures, "calls to be answered")
        removed = max(handle.workers)  # the supervisor drains the newest
        api.scale(handle.name, 1, root=home)
        _wait(lambda: not _alive(removed), "the removed replica to exit")
        after = count()
        _wait(lambda: count() >= after + 100 or failures, "calls after the scale-down")
    finally:
        stop.set()
        for caller in callers:
            caller.join(60)
        try:
            api.stop(handle.name, root=home)
        except MaasError:
            pass
    assert failures == [], failures[:5]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
