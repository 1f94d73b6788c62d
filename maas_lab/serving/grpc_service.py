"""The gRPC side of a worker: Open Inference Protocol v2 ``GRPCInferenceService`` on grpcio's
asyncio server, on the same event loop as the REST side.

A gRPC call is the same request as its REST twin: it goes through the same
:meth:`Server.infer <maas_lab.serving.app.Server.infer>` (capacity, validation against the
model, batcher, timeout, statistics), the same access check with the ``authorization``
metadata, and is refused with the same cleaned message; only the reading and writing of
tensors is gRPC's own (``grpc_wire``). Refusals carry the HTTP status inside the server and
leave as the matching gRPC status code.

Every replica serves gRPC on the same port (``SO_REUSEPORT``: the supervisor reserves the
port, each worker listens on it, the kernel spreads connections). Requests arrive as raw
bytes and are parsed here, so a malformed message is an INVALID_ARGUMENT that says so rather
than grpcio's bare INTERNAL.

Draining (:func:`drain`) never ends a call a client sent. grpcio's ``server.stop(grace)`` sends
GOAWAY but also CANCELs every call that reached the server and was not yet handed to Python
(grpc.aio asks for one call at a time, so under load a few always wait), and every call that
arrives on an open connection before the client reads the GOAWAY: CANCELLED, which no client
retries. So a draining worker first stops listening (new connections go to the other
replicas), keeps serving, and lets each open connection be retired by the connection age
limit (``CONNECTION_AGE_S``: a GOAWAY from a server that still serves, after which the client
finishes its calls there and sends new ones on a new connection, to a replica that stays);
only when no client connection is left (or that age has passed) is the server stopped.
The age limit also spreads long-lived clients over replicas added later.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import traceback

from ..hints import prog_scope
from ..version import __version__
from .grpc_proto import protocol
from .grpc_wire import encode_response, parse_request, repository_version
from .models import NotServed
from .refusals import HTTPError, clean
from .wire import EXTENSIONS, ProtocolError

SERVICE = "inference.GRPCInferenceService"

# A connection older than this gets a GOAWAY (grpcio adds up to 10 % jitter) and its client
# reconnects: how long a draining worker waits for its clients to move to other replicas.
CONNECTION_AGE_S = 2.0
AGE_JITTER = 0.1

# HTTP status (what the shared core raises) -> gRPC status code name.
_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def address(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(app):
    """Start the gRPC server for ``app`` on ``host:options["grpc_port"]``; returns it."""
    import grpc

    options = app.options
    port = int(options["grpc_port"])
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            # REST's body limit; grpcio refuses a larger message (RESOURCE_EXHAUSTED) before
            # it is parsed. The option is an int32.
            ("grpc.max_receive_message_length", min(app.max_body, 2**31 - 1)),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_connection_age_ms", int(CONNECTION_AGE_S * 1000)),
            # calls on a retired connection may take as long as a drain allows
            ("grpc.max_connection_age_grace_ms", int(float(options.get("drain_s", 30)) * 1000)),
        ]
    )
    server.add_generic_rpc_handlers((_handlers(app, grpc),))
    where = address(options.get("host", "127.0.0.1"), port)
    cert, key = options.get("tls_cert"), options.get("tls_key")
    try:
        if cert and key:
            with open(cert, "rb") as c, open(key, "rb") as k:
                credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
            bound = server.add_secure_port(where, credentials)
        else:
            bound = server.add_insecure_port(where)
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"cannot listen for gRPC on {where}")
    await server.start()
    app.log(f"gRPC on {where}{' (TLS)' if cert else ''}")
    server.maas_port = bound  # the port itself (grpc_port may have been 0 in a test's options)
    return server


async def drain(server, grace_s: float, log=None) -> None:
    """Stop listening, let every client connection be retired by its age limit while serving
    on, then stop the server (calls still running get what is left of ``grace_s``)."""
    port = getattr(server, "maas_port", None)
    deadline = time.monotonic() + grace_s
    if port and _stop_listening(port):
        if log is not None:  # grpcio then logs "Closing acceptor. Failed accept4": expected
            log("gRPC: no longer listening; clients move to other replicas as calls finish")
        settle = time.monotonic() + min(grace_s, CONNECTION_AGE_S * (1 + AGE_JITTER) + 0.5)
        while time.monotonic() < settle and _connections(port):
            await asyncio.sleep(0.05)
    elif log is not None:
        log("gRPC: could not stop listening first; stopping the gRPC server at once")
    await server.stop(max(0.0, deadline - time.monotonic()))


def _socket_inodes() -> dict[int, int]:
    """Socket inode -> file descriptor, for this process's open sockets (Linux)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found[int(target[8:-1])] = int(fd)
    return found


def _tcp_rows(port: int):
    """(state, inode) of this machine's TCP sockets whose local port is ``port`` (Linux)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        yield fields[3], int(fields[9])
        except (OSError, StopIteration, IndexError, ValueError):
            continue


def _stop_listening(port: int) -> bool:
    """Take grpcio's listening sockets on ``port`` out of the kernel's SO_REUSEPORT group
    (``shutdown`` on a listener), so new connections reach only the other replicas; grpcio
    has no call for this short of stopping the whole server. False where it cannot."""
    try:
        mine = _socket_inodes()
        listeners = [
            mine[inode] for state, inode in _tcp_rows(port) if state == "0A" and inode in mine
        ]
    except OSError:
        return False
    for fd in listeners:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            return False
        finally:
            sock.close()  # the duplicate only; grpcio's descriptor stays
    return bool(listeners)


def _connections(port: int) -> int:
    """Client connections this process still holds on ``port``."""
    try:
        mine = _socket_inodes()
        return sum(1 for state, inode in _tcp_rows(port) if state == "01" and inode in mine)
    except OSError:
        return 0


def _handlers(app, grpc):
    p = protocol()
    calls = Calls(app, p)

    def handler(name: str, fn):
        request_class = p.methods[name][0]

        async def call(raw: bytes, context):
            code, message = None, None
            try:
                request = request_class.FromString(raw)
            except Exception:  # protobuf's DecodeError (or worse): not a message at all
                code, message = "INVALID_ARGUMENT", f"The {name} request is not a valid message."
            if code is None:
                try:
                    with prog_scope(app.prog):
                        answer = await fn(request, context, len(raw))
                    return answer if isinstance(answer, bytes) else answer.SerializeToString()
                except (HTTPError, ProtocolError, NotServed) as exc:
                    status = exc.status
                    text = exc.message if isinstance(exc, HTTPError) else str(exc)
                    code, message = _CODES.get(status, "UNKNOWN"), clean(text)
                except Exception as exc:
                    app.log(f"internal error on gRPC {name}: {traceback.format_exc()}")
                    code = "INTERNAL"
                    message = f"internal server error ({type(exc).__name__}); see the log"
            await context.abort(getattr(grpc.StatusCode, code), message)

        return grpc.unary_unary_rpc_method_handler(call)  # bytes in, bytes out

    methods = {name: handler(name, getattr(calls, name)) for name in p.methods}
    return grpc.method_handlers_generic_handler(SERVICE, methods)


def _authorization(context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class Calls:
    """One coroutine per call of the service: ``(request, context, size) -> response``."""

    def __init__(self, app, p):
        self.app, self.p = app, p

    def _allow(self, context, scope: str, model: str | None) -> None:
        self.app.authorize(_authorization(context), scope, model or None)

    async def ServerLive(self, request, context, size):
        return self.p.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context, size):
        return self.p.ServerReadyResponse(ready=self.app.ready())

    async def ModelReady(self, request, context, size):
        self._allow(context, "read", request.name)
        try:
            self.app.models.find(request.name, request.version or None)
        except NotServed:
            return self.p.ModelReadyResponse(ready=False)
        return self.p.ModelReadyResponse(ready=not self.app.draining)

    async def ServerMetadata(self, request, context, size):
        self._allow(context, "read", None)
        return self.p.ServerMetadataResponse(
            name="maas_lab", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request, context, size):
        self._allow(context, "read", request.name)
        meta = self.app.model_metadata(self.app.models.find(request.name, request.version or None))
        out = self.p.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for kind in ("inputs", "outputs"):
            for t in meta[kind]:
                getattr(out, kind).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return out

    async def ModelInfer(self, request, context, size):
        self._allow(context, "infer", request.model_name)
        remaining = context.time_remaining()
        return await self.app.infer(
            request.model_name,
            request.model_version or None,
            lambda check: parse_request(request, check),
            size,
            lambda name, version, req, outputs: encode_response(
                self.p, name, version, req, outputs
            ),
            timeout_s=remaining if remaining is not None and remaining > 0 else None,
        )

    async def ModelConfig(self, request, context, size):
        self._allow(context, "read", request.name)
        config = self.app.model_config(self.app.models.find(request.name, request.version or None))
        types = self.p.data_types
        out = self.p.ModelConfig(
            name=config["name"],
            platform=config["platform"],
            max_batch_size=config["max_batch_size"],
        )
        for t in config["input"]:
            out.input.add(
                name=t["name"],
                data_type=types[t["data_type"]],
                dims=t["dims"],
                optional=bool(t.get("optional")),
            )
        for t in config["output"]:
            out.output.add(name=t["name"], data_type=types[t["data_type"]], dims=t["dims"])
        batching = config["dynamic_batching"]
        out.dynamic_batching.max_queue_delay_microseconds = batching["max_queue_delay_microseconds"]
        policy = out.dynamic_batching.default_queue_policy
        policy.max_queue_size = batching["max_queue_size"]
        policy.default_timeout_microseconds = int(config["default_timeout_s"] * 1e6)
        return self.p.ModelConfigResponse(config=out)

    async def ModelStatistics(self, request, context, size):
        self._allow(context, "read", request.name)
        name = None
        if request.name:
            name = self.app.models.find(request.name, request.version or None).name
        out = self.p.ModelStatisticsResponse()
        for entry in self.app.model_stats(name):
            if request.version and entry["version"] != request.version:
                continue
            stats = out.model_stats.add(
                name=entry["name"],
                version=entry["version"],
                last_inference=entry["last_inference"],
                inference_count=entry["inference_count"],
                execution_count=entry["execution_count"],
            )
            for key, value in entry["inference_stats"].items():
                duration = getattr(stats.inference_stats, key)
                duration.count, duration.ns = value["count"], value["ns"]
        return out

    async def RepositoryIndex(self, request, context, size):
        self._allow(context, "admin", None)
        out = self.p.RepositoryIndexResponse()
        for entry in self.app.repository_index():
            if request.ready and entry["state"] != "READY":
                continue
            out.models.add(
                name=entry["name"],
                version=entry["version"],
                state=entry["state"],
                reason=entry["reason"],
            )
        return out

    async def RepositoryModelLoad(self, request, context, size):
        self._allow(context, "admin", request.model_name)
        version = repository_version(request.parameters)
        await self.app.repository_change(request.model_name, "load", version)
        return self.p.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context, size):
        self._allow(context, "admin", request.model_name)
        await self.app.repository_change(request.model_name, "unload", None)
        return self.p.RepositoryModelUnloadResponse()
