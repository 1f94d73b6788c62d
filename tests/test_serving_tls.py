"""TLS, end to end: a throwaway CA (trustme) signs a certificate for 127.0.0.1, a real server
serves REST (https) and gRPC through it, and both clients call it trusting only that CA; and
:func:`maas_lab.serving.tls.check_pair` refuses each bad pair with one line naming the file.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from maas_lab import api
from maas_lab.errors import MaasError, ServerError, UsageError
from maas_lab.serving import state
from maas_lab.serving.client import Client
from maas_lab.serving.tls import check_pair

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def pem(ca, tmp_path_factory):
    """The CA's certificate, and a server certificate and key for 127.0.0.1, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def test_check_pair_accepts_a_good_pair_and_says_when_it_expires(pem):
    info = check_pair(pem["cert"], pem["key"])
    assert info["days_left"] > 0 and info["not_after"]
    assert "O=" in info["subject"] or "CN=" in info["subject"] or info["subject"]


def test_check_pair_refuses_a_missing_file(pem, tmp_path):
    with pytest.raises(UsageError, match=r"does not exist.*tls.cert"):
        check_pair(tmp_path / "nope.pem", pem["key"])
    with pytest.raises(UsageError, match=r"does not exist.*tls.key"):
        check_pair(pem["cert"], tmp_path / "nope.pem")


def test_check_pair_refuses_a_file_that_is_not_pem(pem, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(UsageError, match="is not a PEM certificate"):
        check_pair(junk, pem["key"])
    with pytest.raises(UsageError, match="is not a PEM private key"):
        check_pair(pem["cert"], junk)


def test_check_pair_refuses_a_key_of_another_certificate(ca, pem, tmp_path):
    other = tmp_path / "other-key.pem"
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other))
    with pytest.raises(UsageError) as excinfo:
        check_pair(pem["cert"], other)
    message = str(excinfo.value)
    assert "is not the key of" in message and str(other) in message
    assert "\n" not in message


def test_check_pair_refuses_an_expired_or_future_certificate(ca, tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, start, end, words in [
        ("expired", now - datetime.timedelta(days=30), now - datetime.timedelta(days=1), "expired"),
        ("future", now + datetime.timedelta(days=1), now + datetime.timedelta(days=30), "before"),
    ]:
        leaf = ca.issue_cert("127.0.0.1", not_before=start, not_after=end)
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        with pytest.raises(UsageError, match=words):
            check_pair(cert, key)


@pytest.mark.slow
def test_rest_and_grpc_through_tls_with_the_ca(pem, tiny_torch_version):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    handle = api.serve(
        tiny_torch_version,
        port=0,
        grpc_port=0,
        tls_cert=str(pem["cert"]),
        tls_key=str(pem["key"]),
    )
    try:
        row = state.get(api.registry(handle.root).db, handle.name)
        url = f"https://127.0.0.1:{row['port']}"
        assert handle.url == url
        target = f"127.0.0.1:{row['options']['grpc_port']}"
        x = np.random.default_rng(1).random((3, 8), dtype=np.float32)

        with Client(url, ca=str(pem["ca"])) as rest:  # https, trusting only the test CA
            expected = rest.infer("tiny", {"input": x})["output"]
        with handle.client(ca=str(pem["ca"])) as rest:  # the handle passes ca= through
            np.testing.assert_array_equal(rest.infer("tiny", {"input": x})["output"], expected)
        with pytest.raises(ServerError, match="not trusted"), Client(url) as untrusting:
            untrusting.infer("tiny", {"input": x})
        with pytest.raises(ServerError), Client(url.replace("https", "http")) as plain:
            plain.infer("tiny", {"input": x})  # plain HTTP to the TLS port gets no answer

        secure = grpcclient.InferenceServerClient(
            target, ssl=True, root_certificates=str(pem["ca"])
        )
        tensor = grpcclient.InferInput("input", [3, 8], "FP32")
        tensor.set_data_from_numpy(x)
        got = secure.infer("tiny", [tensor]).as_numpy("output")
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        secure.close()

        plaintext = grpcclient.InferenceServerClient(target)
        with pytest.raises(InferenceServerException) as excinfo:
            plaintext.infer("tiny", [tensor], client_timeout=5)
        assert excinfo.value.status() == "StatusCode.UNAVAILABLE"
        plaintext.close()
    finally:
        try:
            api.stop(handle.name)
        except MaasError:
            pass


def test_a_client_pointed_at_something_that_is_not_http_says_so_in_one_line():
    """`maas predict --url` given the gRPC port got http.client's BadStatusLine traceback."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_like_http2():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an HTTP/2 SETTINGS frame
        conn.close()

    threading.Thread(target=answer_like_http2, daemon=True).start()
    try:
        with pytest.raises(ServerError, match="REST url, not its gRPC port"):
            Client(f"http://127.0.0.1:{listener.getsockname()[1]}").live()
    finally:
        listener.close()
