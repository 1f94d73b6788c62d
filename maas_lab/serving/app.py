"""The HTTP side of a worker: Open Inference Protocol v2 as a plain ASGI application.

Plain ASGI rather than a web framework: the protocol is a dozen fixed routes, and owning the
request cycle lets the body-size limit act before a byte is parsed, lets the binary tensor
extension read raw bytes, and keeps per-request overhead to what this file does.

Every error is ``{"error": "..."}`` with no internal paths. Requests are validated against
the model's signature before they are queued, so nothing malformed reaches a batch.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
import traceback
import zlib
from collections.abc import Callable
from contextvars import copy_context
from urllib.parse import urlsplit

from ..components import tensor
from ..errors import MaasError, NotFoundError
from ..hints import command, option, prog_scope
from ..version import __version__
from .access import Access, Denied
from .batching import BackendFailed, Overloaded, RequestTimeout
from .explaining import EXTENSION as EXPLAIN
from .explaining import Explanations
from .metrics import merge, prometheus
from .models import ModelSet, NotServed
from .refusals import HTTPError, clean, hide_paths_under
from .server_wire import (
    check_inputs,
    check_requested_outputs,
    encode_infer_response,
    parse_infer_request,
    validate_inputs,
)
from .wire import EXTENSIONS, ProtocolError, oip_datatype, oip_dims, triton_datatype

_MODEL = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
    r"(?P<action>/ready|/infer|/explain|/config|/stats)?$"
)
_REPO = re.compile(r"^/v2/repository/models/(?P<name>[^/]+)/(?P<action>load|unload)$")
_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes '²', which int() refuses
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
OFFLOAD_BYTES = 256 * 1024  # bodies past this are parsed in a thread, off the event loop
OFFLOAD_ROWS = 64  # requests past this are tokenized and encoded in a thread
DRAIN_STALL_S = 1.0  # while draining, a body that sends nothing for this long is cut off


_TEXT = [tensor("text", "str", ["batch"])]


class Server:
    """One worker's application: ``models`` plus the rules (auth, limits) it answers by."""

    def __init__(self, root, name: str, options: dict, port: int, log):
        self.root, self.name, self.options, self.port, self.log = root, name, options, port, log
        hide_paths_under(root)
        self.models = ModelSet(root, name, options, log)
        host = options.get("host", "127.0.0.1")
        self.loopback = host in LOOPBACK
        self.access = Access(
            root,
            os.environ.get("MAAS_SERVE_TOKEN_SHA256") or None,
            bool(options.get("token_for_all")) or not self.loopback,
            log=log,
        )
        self.allowed_hosts = {f"{h}:{port}" for h in (*LOOPBACK, host)} | {
            f"{h}:{port}" for h in options.get("allow_hosts", [])
        }
        self.max_body = int(options.get("max_body_mb", 32) * 1024 * 1024)
        self.timeout_s = float(options.get("timeout_s", 30.0))
        self.max_rows = int(options.get("max_rows", 1024))
        self.body_timeout_s = float(options.get("body_timeout_s", 60.0))
        self.explanations = Explanations(options)
        # How the server was started (maas, %maas, or None: Python): answers name its
        # options as that person gave them ("start it with a larger --max-rows").
        self.prog = options.get("prog")
        self.draining = False
        self.in_flight = 0
        self.started = time.time()
        self._snapshots: asyncio.Task | None = None
        self.grpc = None  # the grpc.aio server, when options["grpc_port"] is set
        self._grpc_stopping: asyncio.Future | None = None

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        if kind != "http":
            return
        self.in_flight += 1
        try:
            with prog_scope(self.prog):
                status, body, headers = await self._handle(scope, receive)
        finally:
            self.in_flight -= 1
        if self.draining:
            headers["connection"] = "close"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), str(v).encode()) for k, v in headers.items()]
                + [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.models.start(asyncio.get_running_loop())
                self._snapshots = asyncio.get_running_loop().create_task(self._snapshot_loop())
                if self.options.get("grpc_port") is not None:
                    try:
                        await self._start_grpc()
                    except Exception as exc:  # the port is taken, the certificate unreadable
                        self.log(f"error: the gRPC side could not start: {clean(str(exc))}")
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                stopping = self.stop_grpc()
                if stopping is not None:
                    await stopping  # its calls in flight finish (within drain_s)
                self.models.stop()
                self.explanations.stop()
                if self._snapshots is not None:
                    self._snapshots.cancel()
                self._remove_snapshot()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_grpc(self) -> None:
        from .grpc_service import start  # grpc is imported only by a server that speaks it

        self.grpc = await start(self)

    def stop_grpc(self) -> asyncio.Future | None:
        """Drain the gRPC side (``grpc_service.drain``: stop listening, let clients move to
        other replicas, finish calls in flight, all within ``drain_s``); called when the worker
        starts draining and again at shutdown (the same drain, awaited)."""
        if self.grpc is not None and self._grpc_stopping is None:
            from .grpc_service import drain

            grace = float(self.options.get("drain_s", 30))
            self._grpc_stopping = asyncio.ensure_future(drain(self.grpc, grace, self.log))
        return self._grpc_stopping

    async def _handle(self, scope, receive) -> tuple[int, bytes, dict]:
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if path in ("/v2/health/live", "/v2/health/ready"):
                return self._health(path)
            management = path.startswith("/v2/repository")
            self._guard(method, path, headers)
            if method == "GET":
                return self._get(path)
            if method != "POST":
                raise HTTPError(405, f"{method} is not supported on {path}.")
            body = await self._body(receive, headers)
            if management:
                return await self._repository(path, body)
            match = _MODEL.fullmatch(path)
            if match and match["action"] == "/explain":
                answer = await self.explanations.explain(
                    self, match["name"], match["version"], body, headers
                )
                return _json(200, answer)
            if not match or match["action"] != "/infer":
                raise HTTPError(
                    404,
                    f"Nothing to POST at {path}; inference is POST "
                    "/v2/models/{name}[/versions/{version}]/infer.",
                )
            return await self._infer(match["name"], match["version"], body, headers)
        except HTTPError as exc:
            return _error(exc.status, exc.message, exc.headers)
        except ProtocolError as exc:
            return _error(exc.status, str(exc))
        except NotServed as exc:
            return _error(exc.status, str(exc))
        except Exception as exc:
            self.log(f"internal error on {method} {path}: {traceback.format_exc()}")
            return _error(500, f"internal server error ({type(exc).__name__}); see the log")

    # ------------------------------------------------------------------ rules

    def _guard(self, method: str, path: str, headers: dict) -> None:
        host = headers.get("host", "")
        if self.loopback and host not in self.allowed_hosts:
            raise HTTPError(
                403,
                f"Host {host!r} is not allowed on this server (it answers "
                "127.0.0.1 and localhost). Start it with "
                f"{option('allow_hosts', flag='--allow-host')} for another name.",
            )
        origin = headers.get("origin")
        if method != "GET" and origin and urlsplit(origin).netloc not in self.allowed_hosts:
            raise HTTPError(403, "Cross-origin requests that change state are refused.")
        scope, model = route_scope(method, path)
        self.authorize(headers.get("authorization"), scope, model)

    def authorize(self, authorization: str | None, scope: str, model: str | None) -> None:
        """The one access check for REST and gRPC: :class:`HTTPError` 401/403 if refused."""
        try:
            self.access.check(authorization, scope, model)
        except Denied as exc:
            raise HTTPError(exc.status, exc.message, exc.headers) from None

    async def _body(self, receive, headers: dict) -> bytes:
        declared = headers.get("content-length")
        too_big = (
            f"The request body is over the {self.max_body / 2**20:g} MiB limit; send "
            f"smaller batches, or start the server with a larger {option('max_body_mb')}."
        )
        if declared is not None:
            if not _DIGITS.fullmatch(declared.strip()):
                raise HTTPError(400, "Content-Length is not a number.")
            if int(declared) > self.max_body:
                raise HTTPError(413, too_big)
        chunks, size = [], 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            message = await self._next_chunk(receive, deadline)
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "The client went away before sending the whole body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise HTTPError(413, too_big)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "deflate"):
            raise HTTPError(
                415,
                f"Content-Encoding {encoding!r} is not supported; send "
                "gzip, deflate or an uncompressed body.",
            )
        # tritonclient compresses whole bodies; the limit applies to what they expand to.
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            plain = inflater.decompress(body, self.max_body + 1)
        except zlib.error:
            raise HTTPError(400, f"The body is not valid {encoding} data.") from None
        if len(plain) > self.max_body or inflater.unconsumed_tail:
            raise HTTPError(413, too_big)
        return plain

    async def _next_chunk(self, receive, deadline: float) -> dict:
        """The next part of the body, within the body timeout; while draining, a body that
        stalls is cut off at once, so a slow client never holds up a stop."""
        pending = asyncio.ensure_future(receive())
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HTTPError(
                        408,
                        f"The request body did not arrive within {self.body_timeout_s:g} s; "
                        "send it at once, or start the server with a larger "
                        f"{option('body_timeout_s')}.",
                        {"connection": "close"},
                    )
                step = min(left, DRAIN_STALL_S) if self.draining else min(left, 0.5)
                done, _ = await asyncio.wait({pending}, timeout=step)
                if done:
                    return pending.result()
                if self.draining:
                    raise HTTPError(
                        503,
                        "The server is shutting down and the request body stalled; retry.",
                        {"connection": "close"},
                    )
        finally:
            if not pending.done():
                pending.cancel()

    # ------------------------------------------------------------------ routes

    def _health(self, path: str):
        if path.endswith("/live"):
            return _json(200, {"live": True})
        if self.draining:
            return _error(503, "The server is shutting down.")
        if not self.models.ready():
            return _error(503, "Models are still loading.")
        return _json(200, {"ready": True})

    def _get(self, path: str):
        if path == "/v2":
            return _json(
                200,
                {
                    "name": "maas_lab",
                    "version": __version__,
                    "extensions": [*EXTENSIONS, EXPLAIN],
                },
            )
        if path == "/metrics":
            return (
                200,
                (
                    prometheus(self._all_stats())
                    + self.access.prometheus()
                    + self.explanations.prometheus()
                ).encode(),
                {"content-type": "text/plain; version=0.0.4"},
            )
        if path == "/v2/models/stats":
            return _json(200, {"model_stats": self.model_stats()})
        match = _MODEL.fullmatch(path)
        if not match:
            raise HTTPError(404, f"No such endpoint: GET {path}.")
        action = match["action"]
        if action in ("/infer", "/explain"):
            raise HTTPError(405, f"{action[1:].capitalize()} is a POST.")
        if action == "/stats":
            loaded = self.models.find(match["name"], match["version"])
            return _json(200, {"model_stats": self.model_stats(loaded.name)})
        if action == "/ready":
            try:
                loaded = self.models.find(match["name"], match["version"])
            except NotServed as exc:
                return _error(exc.status if exc.status != 404 else 404, str(exc))
            return _json(
                200,
                {"name": loaded.name, "version": str(loaded.number), "ready": not self.draining},
            )
        loaded = self.models.find(match["name"], match["version"])
        if action == "/config":
            return _json(200, self.model_config(loaded))
        return _json(200, self.model_metadata(loaded))

    def model_metadata(self, loaded) -> dict:
        return {
            "name": loaded.name,
            "versions": [str(v.number) for v in self.models.loaded() if v.name == loaded.name],
            "platform": loaded.platform,
            "inputs": [_meta(t) for t in loaded.inputs],
            "outputs": [_meta(t) for t in loaded.outputs],
        }

    def ready(self) -> bool:
        """Ready for inference: every model loaded and not draining (REST and gRPC)."""
        return not self.draining and self.models.ready()

    def model_config(self, loaded) -> dict:
        def entry(t, optional=False):
            out = {
                "name": t["name"],
                "data_type": "TYPE_" + triton_datatype(t["dtype"]),
                "dims": oip_dims(t["shape"])[1:]
                if loaded.batcher.max_batch > 1
                else oip_dims(t["shape"]),
            }
            if optional:  # Triton's mark: a client may leave this input out
                out["optional"] = True
            return out

        # A text model takes 'text' or its token inputs: either set alone is enough, so in
        # its configuration every input is optional (sending all, the token inputs are used).
        either = loaded.text is not None

        b = loaded.batcher
        return {
            "name": loaded.name,
            "version": str(loaded.number),
            "platform": loaded.platform,
            "max_batch_size": b.max_batch if b.max_batch > 1 else 0,
            "input": [entry(t, either) for t in loaded.inputs],
            "output": [entry(t) for t in loaded.outputs],
            "dynamic_batching": {
                "max_queue_delay_microseconds": int(b.max_delay_s * 1e6),
                "max_queue_size": b.max_queue,
                "group_by": loaded.batcher.plan.pad_dim or "exact shape",
            },
            "default_timeout_s": self.timeout_s,
        }

    async def _infer(self, name: str, version: str | None, body: bytes, headers: dict):
        parse = functools.partial(
            parse_infer_request, body, headers.get("inference-header-content-length")
        )
        response, out_headers = await self.infer(
            name, version, parse, len(body), encode_infer_response
        )
        return 200, response, out_headers

    async def infer(
        self,
        name: str,
        version: str | None,
        parse: Callable,
        size: int,
        encode: Callable,
        timeout_s: float | None = None,
    ):
        """One inference, whichever door it came through (REST or gRPC): find the model,
        refuse at capacity, parse and check the request against the model, queue it on the
        batcher, wait within the timeout, count it; the transport only reads and writes.

        ``parse(check)`` reads the request (calling ``check(inputs)`` before any tensor data
        is converted) into an :class:`InferRequest`; ``encode(name, version, request,
        outputs)`` writes the answer, which is returned. ``size`` (bytes received) decides
        whether parsing runs in a thread. ``timeout_s`` (a client's deadline) can only
        shorten the server's own timeout. Raises :class:`HTTPError`, :class:`ProtocolError`
        or :class:`NotServed`, each with the HTTP status the transport maps.
        """
        arrived = time.perf_counter()
        loaded = self.models.find(name, version)
        if loaded.batcher.depth >= loaded.batcher.max_queue:  # refuse before any parsing
            loaded.stats.fail(503)
            raise HTTPError(
                503,
                f"{loaded.ref} is at capacity ({loaded.batcher.depth} requests "
                "queued); retry shortly.",
                {"retry-after": "1"},
            )
        timeout = self.timeout_s if timeout_s is None else min(self.timeout_s, timeout_s)
        loop = asyncio.get_running_loop()
        try:
            # The header is checked against the model before any tensor data is converted,
            # and a large request is parsed in a thread: the event loop keeps answering others.
            parse = functools.partial(parse, functools.partial(self._check_header, loaded))
            big = size > OFFLOAD_BYTES
            # (in the request's context: its messages name options as the server was started)
            request = (
                await loop.run_in_executor(None, copy_context().run, parse) if big else parse()
            )
            check_requested_outputs(request, [t["name"] for t in loaded.outputs])
            rows = _rows(request)
            if big or rows > OFFLOAD_ROWS:
                feeds = await loop.run_in_executor(
                    None, copy_context().run, self._feeds, loaded, request
                )
            else:
                feeds = self._feeds(loaded, request)
            try:
                item = loaded.batcher.submit(feeds, timeout)
            except Overloaded:
                raise HTTPError(
                    503,
                    f"{loaded.ref} is at capacity ({loaded.batcher.depth} "
                    "requests queued); retry shortly.",
                    {"retry-after": "1"},
                ) from None
            try:
                outputs, queued_s = await asyncio.wait_for(asyncio.shield(item.future), timeout)
            except (asyncio.TimeoutError, RequestTimeout):
                item.future.cancel()
                if timeout < self.timeout_s:  # the client's own deadline came first
                    raise HTTPError(
                        504,
                        f"The request's deadline ({timeout:g} s) passed while waiting for "
                        f"{loaded.ref}; send less at once, or give it a longer deadline.",
                    ) from None
                raise HTTPError(
                    504,
                    f"The request timed out after {timeout:g} s "
                    f"waiting for {loaded.ref}; send less at once, or start "
                    f"the server with a larger {option('timeout_s')}.",
                ) from None
            except BackendFailed as exc:
                raise HTTPError(
                    500, f"{loaded.ref} failed on this request: {clean(str(exc))}"
                ) from None
            answer = functools.partial(encode, loaded.name, str(loaded.number), request, outputs)
            if big or rows > OFFLOAD_ROWS:
                response = await loop.run_in_executor(None, answer)
            else:
                response = answer()
        except (HTTPError, ProtocolError) as exc:
            loaded.stats.fail(exc.status)
            raise
        rows = int(next(iter(feeds.values())).shape[0])
        loaded.stats.ok(time.perf_counter() - arrived, queued_s, rows)
        return response

    def _check_header(self, loaded, inputs: list) -> None:
        """Names, datatypes, shapes and rows against the model, before any data is read."""
        names = {i.name for i in inputs}
        if loaded.text is not None and "text" in names:
            text = next(i for i in inputs if i.name == "text")
            check_inputs(_TEXT, [text], max_rows=self.max_rows)
            if names == {"text"}:
                return
            # Both ways at once (what the metadata lists): the token inputs are used, and
            # must agree with 'text' on the rows.
            tokens = [i for i in inputs if i.name != "text"]
            check_inputs(loaded.runner.signature["inputs"], tokens, max_rows=self.max_rows)
            if any(t.shape[:1] != text.shape for t in tokens):
                raise ProtocolError(
                    "'text' and the token inputs disagree on the number of rows; send one "
                    "of them, or both for the same sentences."
                )
            return
        check_inputs(
            loaded.runner.signature["inputs"], inputs, self._otherwise(loaded), self.max_rows
        )

    @staticmethod
    def _otherwise(loaded) -> str:
        return "or send sentences as 'text' (BYTES [batch])" if loaded.text else ""

    def _feeds(self, loaded, request) -> dict:
        names = {i.name for i in request.inputs}
        if loaded.text is not None and names == {"text"}:
            texts = validate_inputs(_TEXT, request.inputs)["text"]
            return loaded.text(list(texts))
        given = [i for i in request.inputs if i.name != "text" or loaded.text is None]
        feeds = validate_inputs(loaded.runner.signature["inputs"], given, self._otherwise(loaded))
        # Binary inputs are views of the request body; backends (torch.from_numpy) want
        # arrays they may write to.
        return {k: v if v.flags.writeable else v.copy() for k, v in feeds.items()}

    async def _repository(self, path: str, body: bytes):
        if path == "/v2/repository/index":
            return _json(200, self.repository_index())
        match = _REPO.fullmatch(path)
        if not match:
            raise HTTPError(404, f"No such repository endpoint: {path}.")
        version = _repository_version(body)
        return _json(200, await self.repository_change(match["name"], match["action"], version))

    def repository_index(self) -> list[dict]:
        """What the server was asked to serve, and how each is doing (REST and gRPC)."""
        out = []
        for slot in self.models.slots.values():
            out.append(
                {
                    "name": slot.name,
                    "version": str(slot.current.number) if slot.current else "",
                    "state": slot.state.upper(),
                    "reason": clean(slot.error or ""),
                    "follows": slot.follow,
                }
            )
        return out

    async def repository_change(self, name: str, action: str, version: str | None) -> dict:
        """Load (``version``: a number, an alias or None for the latest) or unload a model,
        through the server's registry row; the answer once every replica has done it."""
        from ..registry import open as open_registry
        from . import state

        ref = repository_ref(name, version)
        loop = asyncio.get_running_loop()
        db = open_registry(self.root).db
        # Everything is checked before the server's row changes: a load of something that
        # does not exist must not leave the server wanting it (readiness 503 for good).
        if action == "load":
            await loop.run_in_executor(None, _resolve, self.root, ref)
        row = await loop.run_in_executor(None, state.get, db, self.name)
        before = list(row["models"])
        mine = [m for m in before if m.split("@")[0] == name]
        if action == "unload" and not mine:
            served = sorted({m.split("@")[0] for m in before}) or ["none"]
            raise HTTPError(
                404, f"This server does not serve {name!r}; it serves {', '.join(served)}."
            )
        models = [m for m in before if m.split("@")[0] != name]
        if action == "load":
            models.append(ref)
        if not models:
            raise HTTPError(
                400,
                f"Unloading {name} would leave the server with no model; "
                f"stop the server instead (`{command('stop', self.name)}`).",
            )
        await loop.run_in_executor(None, lambda: state.update(db, self.name, models=models))
        deadline = time.monotonic() + 120
        failure = None
        while time.monotonic() < deadline:
            slot = self.models.slots.get(ref)
            if action == "unload" and not any(s.name == name for s in self.models.slots.values()):
                return {}
            if action == "load" and slot is not None:
                if slot.current is not None:
                    return {"name": name, "version": str(slot.current.number)}
                if slot.state == "failed":
                    failure = HTTPError(400, clean(slot.error or f"{ref} failed to load"))
                    break
            await asyncio.sleep(0.1)

        # A load that failed or never finished is taken back: the server serves what it did.
        def restore():
            now = state.get(db, self.name)["models"]
            state.update(db, self.name, models=[m for m in now if m != ref] + mine)

        if action == "load":
            await loop.run_in_executor(None, restore)
        raise failure or HTTPError(
            504,
            f"{ref} did not finish {action}ing within 120 s; see `{command('logs', self.name)}`.",
        )

    # ------------------------------------------------------------------ statistics

    def model_stats(self, name: str | None = None) -> list[dict]:
        out = []
        for entry in self._all_stats():
            if name is not None and entry["name"] != name:
                continue
            s = entry["stats"]
            fails = sum(s["failure"].values())
            out.append(
                {
                    "name": entry["name"],
                    "version": entry["version"],
                    "last_inference": s["last_inference_ms"],
                    "inference_count": s["inferences"],
                    "execution_count": s["executions"],
                    "inference_stats": {
                        "success": {"count": s["success"], "ns": s["success_ns"]},
                        "fail": {"count": fails, "ns": 0},
                        "queue": {"count": s["success"], "ns": s["queue_ns"]},
                        "compute_infer": {"count": s["executions"], "ns": s["compute_ns"]},
                    },
                }
            )
        return out

    def _all_stats(self) -> list[dict]:
        """This worker's live counters plus the other replicas' latest snapshots."""
        from . import state

        mine = self.snapshot()
        others = [s for s in state.read_snapshots(self._folder()) if s["pid"] != os.getpid()]
        grouped: dict[tuple, list] = {}
        queues: dict[tuple, int] = {}
        for snap in [mine, *others]:
            for m in snap["models"]:
                if m.get("number") is None:
                    continue
                key = (m["name"], str(m["number"]))
                grouped.setdefault(key, []).append(m["stats"])
                queues[key] = queues.get(key, 0) + m["queue"]
        return [
            {"name": k[0], "version": k[1], "stats": merge(v), "queue": queues[k]}
            for k, v in sorted(grouped.items())
        ]

    def snapshot(self) -> dict:
        models = []
        for slot in self.models.slots.values():
            cur = slot.current
            models.append(
                {
                    "follow": slot.follow,
                    "name": slot.name,
                    "number": cur.number if cur else None,
                    "state": slot.state,
                    "error": clean(slot.error) if slot.error else None,
                    "queue": cur.batcher.depth if cur else 0,
                    "stats": cur.stats.snapshot() if cur else None,
                }
            )
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "started": self.started,
            "ready": self.models.ready() and not self.draining,
            "draining": self.draining,
            "models": models,
        }

    def _folder(self):
        from .state import run_dir

        return run_dir(self.root, self.name) / "workers"

    async def _snapshot_loop(self):
        from .state import SNAPSHOT_EVERY_S, write_snapshot

        folder = self._folder()
        while True:
            try:
                write_snapshot(folder, os.getpid(), self.snapshot())
            except Exception as exc:
                self.log(f"could not write the status snapshot: {exc}")
            await asyncio.sleep(
                SNAPSHOT_EVERY_S / 4 if not self.models.ready() else SNAPSHOT_EVERY_S
            )

    def write_snapshot_now(self) -> None:
        from .state import write_snapshot

        try:
            write_snapshot(self._folder(), os.getpid(), self.snapshot())
        except OSError:
            pass

    def _remove_snapshot(self) -> None:
        try:
            (self._folder() / f"{os.getpid()}.json").unlink()
        except OSError:
            pass


def route_scope(method: str, path: str) -> tuple[str, str | None]:
    """The scope a REST call needs, and the model it is about (None: the whole server)."""
    repo = _REPO.fullmatch(path)
    if repo:
        return "admin", repo["name"]
    if path.startswith("/v2/repository"):
        return "admin", None
    match = None if path == "/v2/models/stats" else _MODEL.fullmatch(path)
    if method == "POST" and match and match["action"] in ("/infer", "/explain"):
        return "infer", match["name"]
    return "read", match["name"] if match else None


def _json(status: int, payload) -> tuple[int, bytes, dict]:
    body = json.dumps(payload, allow_nan=False).encode()
    return status, body, {"content-type": "application/json"}


_EXAMPLE = 'e.g. {"parameters": {"version": "prod"}}'


def _repository_version(body: bytes) -> str | None:
    """The version a REST repository call names in ``{"parameters": {"version"}}``;
    anything else is a 400 that says what to send."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise HTTPError(400, f"The body must be a JSON object, {_EXAMPLE}.")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise HTTPError(400, f'"parameters" must be a JSON object, {_EXAMPLE}.')
    version = params.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if version is not None and not isinstance(version, str):
        raise HTTPError(400, f"parameters.version must be a version number or alias, {_EXAMPLE}.")
    return version


def repository_ref(name: str, version: str | None) -> str:
    """The ref a repository call names (``name@version``), or a 400 saying what is wrong."""
    from ..registry.refs import check_model_name, parse_ref

    try:
        check_model_name(name)
        if version is not None and not (
            _DIGITS.fullmatch(version) or re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", version)
        ):
            raise HTTPError(
                400,
                f"parameters.version {version!r} is not a version number or alias, {_EXAMPLE}.",
            )
        ref = f"{name}@{version}" if version else name
        parse_ref(ref)
    except MaasError as exc:
        raise HTTPError(400, str(exc)) from None
    return ref


def _resolve(root, ref: str) -> None:
    from ..registry import open as open_registry

    try:
        open_registry(root).resolve(ref)
    except NotFoundError as exc:
        raise HTTPError(404, str(exc)) from None
    except MaasError as exc:
        raise HTTPError(400, str(exc)) from None


def _rows(request) -> int:
    shape = request.inputs[0].shape
    return shape[0] if shape else 1


def _error(status: int, message: str, headers: dict | None = None):
    status, body, base = _json(status, {"error": clean(message)})
    return status, body, {**base, **(headers or {})}


def _meta(t: dict) -> dict:
    return {"name": t["name"], "datatype": oip_datatype(t["dtype"]), "shape": oip_dims(t["shape"])}
