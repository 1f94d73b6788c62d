"""A small synchronous client for the server, so a notebook needs only the standard library.

tritonclient works against the server too, but it pulls in gevent and speaks in InferInput
objects; here a dict of numpy arrays goes in and a dict comes out. The binary extension is on
by default because JSON number lists cost far more to build and parse than raw bytes. One
keep-alive connection is reused (one ``Client`` per thread), and a connection the server
dropped while idle is reopened once rather than surfacing as an error.
"""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
import zlib
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from ..errors import ServerError, UsageError
from ..hints import command, option
from .access import token_text
from .client_wire import as_input_array, encode_infer_request, parse_infer_response
from .wire import DATATYPES, ProtocolError, numpy_dtype

_DROPPED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}  # model kind -> list kinds cast to it
_CASTABLE = frozenset(DATATYPES.values()) - {"BYTES"}


class Client:
    """Talks the Open Inference Protocol v2 (REST) to a maas server, numpy in and out."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 60.0, ca: str | None = None
    ):
        """``ca``: a PEM file of the certificate authorities to trust for an https url (a
        server with a certificate of its own CA); without it, the system's are trusted."""
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{url!r} is not a server url; use one like http://127.0.0.1:8000.")
        if ca is not None and parts.scheme != "https":
            raise UsageError(
                f"A CA bundle (ca=) is for https urls; {url!r} is plain http. Use https://..."
            )
        self._ssl = _ssl_context(ca) if parts.scheme == "https" else None
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token_text(token)
        self._conn: http.client.HTTPConnection | None = None
        self.last_version: str | None = None  # the version that answered the last infer
        self._metadata: dict[tuple[str, str], dict] = {}

    def __repr__(self) -> str:
        token = ", token=***" if self._token else ""
        return f"Client({self.url!r}{token})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the keep-alive connection (the next call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- health and metadata ----------------------------------------------------------------

    def live(self) -> bool:
        """Whether the server process answers (GET /v2/health/live)."""
        return self._request("GET", "/v2/health/live")[0] == 200

    def ready(self) -> bool:
        """Whether the server is ready for inference (GET /v2/health/ready)."""
        return self._request("GET", "/v2/health/ready")[0] == 200

    def server_metadata(self) -> dict:
        """The server's name, version and protocol extensions (GET /v2)."""
        return self._json("GET", "/v2")

    def model_metadata(self, name: str, version: str | int | None = None) -> dict:
        """A model's inputs and outputs, with protocol datatypes and shapes."""
        return self._json("GET", _model_path(name, version))

    def model_ready(self, name: str, version: str | int | None = None) -> bool:
        """Whether a model (version) is loaded and ready; False for an unknown one too."""
        return self._request("GET", _model_path(name, version) + "/ready")[0] == 200

    def model_config(self, name: str, version: str | int | None = None) -> dict:
        """How the server runs a model (batching, instances...)."""
        return self._json("GET", _model_path(name, version) + "/config")

    def stats(self, name: str) -> dict:
        """A model's inference statistics (GET /v2/models/{name}/stats)."""
        return self._json("GET", _model_path(name, None) + "/stats")

    def repository_index(self) -> Any:
        """The models the server can serve, and their state."""
        return self._json("POST", "/v2/repository/index", {})

    def load(self, name: str, parameters: dict | None = None) -> None:
        """Load (or reload) a model on the server."""
        self._metadata.clear()
        payload = {"parameters": parameters} if parameters else {}
        self._json("POST", f"/v2/repository/models/{quote(name, safe='')}/load", payload)

    def unload(self, name: str) -> None:
        """Unload a model from the server."""
        self._metadata.clear()
        self._json("POST", f"/v2/repository/models/{quote(name, safe='')}/unload", {})

    def metrics(self) -> str:
        """The Prometheus metrics text (GET /metrics)."""
        return self._checked("GET", "/metrics")[1].decode("utf-8", "replace")

    # --- inference --------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Any,
        version: str | int | None = None,
        outputs: list[str] | None = None,
        binary: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run a model: ``{name: array or list}`` in, ``{output name: array}`` out.

        ``inputs`` may also be one value (a str, a list of str, an array) for a model with a
        single input, or with a BYTES input named "text". Plain lists are cast to the
        model's dtype (ints to FP32, say); numpy arrays are sent as they are.
        """
        if not isinstance(inputs, dict):
            inputs = {self._single_input(model, version): inputs}
        if any(not isinstance(v, (np.ndarray, str, bytes)) for v in inputs.values()):
            inputs = self._cast_lists(model, version, inputs)
        body, headers = encode_infer_request(inputs, outputs=outputs, binary=binary)
        path = _model_path(model, version) + "/infer"
        response, data = self._checked("POST", path, body, headers)
        encoding = response.getheader("Content-Encoding")
        if encoding == "gzip":
            data = gzip.decompress(data)
        elif encoding == "deflate":
            data = zlib.decompress(data)
        length = response.getheader("Inference-Header-Content-Length")
        try:
            result = parse_infer_response(data, int(length) if length is not None else None)
        except (ProtocolError, ValueError) as exc:
            raise ServerError(str(exc), response.status) from None
        self.last_version = result.get("model_version")
        return result["outputs"]

    def _meta(self, model: str, version: str | int | None) -> dict:
        key = (model, "" if version is None else str(version))
        if key not in self._metadata:
            self._metadata[key] = self.model_metadata(model, version) or {}
        return self._metadata[key]

    def _single_input(self, model: str, version: str | int | None) -> str:
        specs = self._meta(model, version).get("inputs") or []
        if len(specs) == 1:
            return specs[0]["name"]
        for spec in specs:
            if spec.get("name") == "text" and spec.get("datatype") == "BYTES":
                return "text"
        needed = ", ".join(
            f"{s.get('name')} ({s.get('datatype')} [{', '.join(map(str, s.get('shape') or []))}])"
            for s in specs
        )
        raise UsageError(
            f"Model {model!r} takes several inputs, so pass a dict {{name: array}}; it needs: "
            f"{needed or 'none'}."
        )

    def _cast_lists(self, model: str, version: str | int | None, inputs: dict) -> dict:
        specs = self._meta(model, version).get("inputs") or []
        declared = {s.get("name"): s.get("datatype") for s in specs}
        out = {}
        for name, value in inputs.items():
            array = as_input_array(name, value)
            datatype = declared.get(name)
            if not isinstance(value, np.ndarray) and datatype in _CASTABLE:
                target = numpy_dtype(datatype)
                if array.dtype.kind in _KINDS[target.kind]:
                    array = array.astype(target)
            out[name] = array
        return out

    # --- HTTP ---------------------------------------------------------------------------------

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {} if payload is None else {"Content-Type": "application/json"}
        data = self._checked(method, path, body, headers)[1]
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise ServerError(
                f"The server answered {path} with something that is not JSON."
            ) from None

    def _checked(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        status, response, data = self._request(method, path, body, headers)
        if not 200 <= status < 300:
            raise ServerError(f"The server answered {status}: {_error_message(data)}", status)
        return response, data

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        headers = dict(headers or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        retried = False
        while True:
            fresh = self._conn is None
            conn = self._conn = self._conn or self._connect()
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except ConnectionRefusedError:
                self.close()
                raise ServerError(
                    f"Nothing answers at {self.url}: is the server running? "
                    f"Check `{command('status')}`."
                ) from None
            except _DROPPED:
                self.close()
                if fresh or retried:
                    raise ServerError(
                        f"The server at {self.url} closed the connection without answering."
                    ) from None
                retried = True  # a keep-alive connection the server dropped while idle
                continue
            except TimeoutError:
                self.close()
                raise ServerError(
                    f"The server at {self.url} did not answer within {self.timeout:g} s."
                ) from None
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise ServerError(
                    f"The certificate of {self.url} is not trusted ({exc.verify_message}); "
                    f"pass {option('ca', 'FILE')}: the PEM file of the authority that issued it."
                ) from None
            except http.client.HTTPException as exc:  # an answer that is not HTTP/1.1 at all
                self.close()
                raise ServerError(
                    f"What answers at {self.url} does not speak HTTP/1.1 "
                    f"({type(exc).__name__}): is it the server's REST url, not its gRPC port?"
                ) from None
            except OSError as exc:
                self.close()
                reason = exc.strerror or type(exc).__name__
                raise ServerError(f"Cannot reach {self.url}: {reason}.") from None
            if response.will_close:
                self.close()
            return response.status, response, data

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)


def _ssl_context(ca: str | None) -> ssl.SSLContext:
    if ca is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca))
    except FileNotFoundError:
        raise UsageError(f"{ca} does not exist; pass ca= the server's CA bundle (PEM).") from None
    except (ssl.SSLError, OSError):
        raise UsageError(
            f"{ca} is not a PEM CA bundle (-----BEGIN CERTIFICATE-----); pass ca= the "
            "certificate of the authority that issued the server's certificate."
        ) from None


def _model_path(name: str, version: str | int | None) -> str:
    path = f"/v2/models/{quote(name, safe='')}"
    if version is not None and str(version) != "":
        path += f"/versions/{quote(str(version), safe='')}"
    return path


def _error_message(data: bytes) -> str:
    try:
        message = json.loads(data).get("error")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        return message
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return "(no message)"
    return text if len(text) <= 300 else text[:297] + "..."
