"""The REST routes the JupyterLab sidebar calls (documented in docs/lab.md).

Each route is a thin translation: query or JSON body in, one ``maas_lab.api`` call, JSON out.
What a route may do is decided by the API's own checks, so the sidebar can refuse nothing the
CLI would accept and accept nothing it would refuse.

- Every route needs Jupyter's login (``@web.authenticated``) and passes its authorizer
  (``@authorized``, resource ``maas``); tornado checks the XSRF token on POST and DELETE.
- The API runs in a thread (``asyncio.to_thread``): a registry read takes milliseconds, but
  starting a server takes seconds and must not stall every other tab's kernel traffic.
- An error is ``{"error": "one line"}``: 400 for a bad request, 404 for a version or server
  that is not there, 409 for a clash, 500 for anything else, without a traceback (the
  server's log keeps that). Messages name commands as they are typed in a notebook
  (``%maas ...``), since that is where the sidebar sends people.
"""

from __future__ import annotations

import asyncio
import json
import re

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from maas_lab import api
from maas_lab.errors import ConflictError, MaasError, NotFoundError, RegistryError, ServeError
from maas_lab.hints import PROG, command
from maas_lab.results import human_size

POLL_LIMIT = 200  # versions the sidebar lists; the title says how many there are in all
MAX_LIMIT = 1000  # a page lists no more, whatever it asks for
_MAX_BODY = 64 * 1024


class _Handler(APIHandler):
    auth_resource = "maas"

    async def prepare(self):
        await super().prepare()
        # Hints name commands as typed in a notebook, where the sidebar sends people. The
        # request runs as its own asyncio task, so this lasts for this request only (and
        # asyncio.to_thread carries it into the API's thread).
        PROG.set("%maas")

    async def call(self, fn, *args, **kwargs):
        """``fn`` in a thread, off the server's event loop; its errors as JSON."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NotFoundError as exc:
            raise _Refused(404, str(exc)) from None
        except ConflictError as exc:
            raise _Refused(409, str(exc)) from None
        except RegistryError as exc:  # not the request's fault: the registry cannot be read
            raise _Refused(500, str(exc)) from None
        except ServeError as exc:  # one line: the first, and the log's last if it has a tail
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            message = lines[0].removesuffix(" Its log ends with:")
            if len(lines) > 1:
                message += f" The log's last line: {lines[-1]}"
            raise _Refused(500, message) from None
        except MaasError as exc:
            raise _Refused(400, str(exc)) from None

    def body(self) -> dict:
        raw = self.request.body or b"{}"
        if len(raw) > _MAX_BODY:
            raise _Refused(413, f"The request body is over {_MAX_BODY // 1024} kB.")
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Refused(400, "The request body is not JSON.") from None
        if not isinstance(data, dict):
            raise _Refused(400, "The request body must be a JSON object.")
        return data

    def text(self, data: dict, key: str, required: bool = True) -> str | None:
        """A string field of the body or query, refused by name when missing or not text."""
        value = data.get(key)
        if value is None or value == "":
            if required:
                raise _Refused(400, f"Give {key!r}.")
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise _Refused(400, f"{key!r} must be text, not {type(value).__name__}.")
        return str(value)

    def reply(self, data) -> None:
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, _Refused):
            message = exc.message
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message or exc.reason or f"HTTP {status_code}"
        else:  # a bug: the log has the traceback, the page one line without internals
            message = f"The maas_lab server extension failed ({type(exc).__name__}); see the log."
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))


class _Refused(web.HTTPError):
    """An answer with a status and a message meant for the person."""

    def __init__(self, status: int, message: str):
        super().__init__(status, reason=None)
        self.message = message


def _args(handler: _Handler) -> dict:
    return {k: handler.get_argument(k) for k in handler.request.arguments}


class Revision(_Handler):
    _track_activity = False  # polled every 2 s: that is not a person being active

    @web.authenticated
    @authorized
    async def get(self):
        self.reply({"revision": await self.call(api.revision)})


class Versions(_Handler):
    @web.authenticated
    @authorized
    async def get(self):
        args = _args(self)
        search = self.text(args, "search", required=False)
        limit = self.text(args, "limit", required=False) or POLL_LIMIT
        if str(limit).isdigit() and int(limit) > MAX_LIMIT:
            raise _Refused(400, f"List at most {MAX_LIMIT} versions at once (limit={limit}).")
        wordless = bool(search) and not re.search(r"\w", search)
        if wordless:  # "*" or "-" as the Models panel reads them: nothing to search for
            search = None
        table = await self.call(api.versions, search=search, limit=limit)
        note = table.note
        if wordless:
            note = f"{args['search'].strip()!r} has no words to search for; showing all"
        elif not table.rows:
            note = (
                f"No model matches {search!r}."
                if search
                else "No models yet. Register one: " + command("register", "NAME", from_hf="FOLDER")
            )
        self.reply({"title": table.title, "note": note, "rows": [_row(r) for r in table]})


class Version(_Handler):
    @web.authenticated
    @authorized
    async def get(self):
        ref = self.text(_args(self), "ref")
        self.reply(await self.call(_details, ref))


class Servers(_Handler):
    @web.authenticated
    @authorized
    async def get(self):
        table = await self.call(api.status)
        self.reply({"rows": [_server(r) for r in table], "note": table.note})

    @web.authenticated
    @authorized
    async def post(self):
        data = self.body()
        ref = self.text(data, "ref")
        replicas = self.text(data, "replicas", required=False) or None  # None: the machine's
        # One start at a time: two clicks (two tabs, a button and the palette) must not race
        # to start two supervisors under one name.
        async with self.settings.setdefault("maas_lab_starting", asyncio.Lock()):
            name = await self.call(_free_name, ref)
            # Any free port, on 127.0.0.1 (api.serve's default host): a fixed default port
            # would serve one version and refuse every other.
            handle = await self.call(api.serve, ref, name=name, port=0, replicas=replicas)
        self.reply(
            {
                "message": f"Serving {ref} at {handle.url} as server {handle.name}.",
                "server": handle.name,
                "url": handle.url,
                "line": command(
                    "serve",
                    ref,
                    port=0,
                    name=name,
                    replicas=replicas,
                ),
            }
        )

    @web.authenticated
    @authorized
    async def delete(self):
        name = self.text(_args(self), "name")
        await self.call(api.stop, name)
        self.reply({"message": f"Stopped server {name}.", "line": command("stop", name)})


class Alias(_Handler):
    @web.authenticated
    @authorized
    async def post(self):
        data = self.body()
        name, alias = self.text(data, "name"), self.text(data, "alias")
        version = self.text(data, "version")
        moved = (await self.call(api.alias, name, alias, version)).data
        message = f"{name}@{alias} now points at {moved['ref']}."
        if moved["servers"]:
            message += " " + " ".join(moved["servers"])
        self.reply({"message": message, "line": command("alias", name, alias, version)})


def _free_name(ref: str) -> str | None:
    """The server name for ``ref``: the model's (api.serve's default) unless a server of
    that name runs already (serving another version), then ``MODEL-NUMBER``."""
    info = api.show(ref).data
    running = {r["server"] for r in api.status()}
    if info["name"] not in running:
        return None
    return f"{info['name']}-{info['number']}"


def _split(text) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _row(row: dict) -> dict:
    return {
        "ref": row["ref"],
        "name": row["name"],
        "number": row["number"],
        "aliases": _split(row.get("aliases")),
        "tags": _split(row.get("tags")),
        "task": row.get("task"),
        "format": row.get("format"),
        "size_bytes": row.get("size_bytes"),
        "size": human_size(row.get("size_bytes")),
        "metrics": row.get("metrics") or {},
        "created_at": row.get("created_at"),
    }


def _server(row: dict) -> dict:
    keep = ("server", "url", "model", "version", "state", "replicas", "queue", "req/s")
    keep += ("p50 ms", "p99 ms", "requests", "errors", "problem")
    return {k: row.get(k) for k in keep if k in row}


def _details(ref: str) -> dict:
    """One version for the detail view: ``api.show``'s data, its lineage, the servers that
    serve it now and the notebook lines that act on it."""
    info = api.show(ref).data
    graph = api.lineage(info["ref"]).data
    number = str(info["number"])
    servers = [
        _server(r)
        for r in api.status()
        if r["model"].split("@")[0] == info["name"] and number in r["version"].split(",")
    ]
    tags = [f"{k}={v}" if v else k for k, v in (info["tags"] or {}).items()]
    return {
        "ref": info["ref"],
        "name": info["name"],
        "number": info["number"],
        "task": info["task"],
        "format": info["format"],
        "size": human_size(info["size_bytes"]),
        "size_bytes": info["size_bytes"],
        "description": info["description"],
        "aliases": info["aliases"],
        "tags": tags,
        "created_at": info["created_at"],
        "created_by": info["created_by"],
        "files": [
            {
                "name": f["name"],
                "role": f["role"],
                "size": human_size(f["size"]),
                "sha256": f["sha256"],
            }
            for f in info["files"]
        ],
        "signature": info["signature"] or {"inputs": [], "outputs": []},
        "metrics": info["metrics"],
        "card": info["card"],
        "lineage": graph,
        "servers": servers,
        "snippets": snippets(info["ref"], info["format"]),
    }


def snippets(ref: str, fmt: str) -> list[dict]:
    """The notebook lines that load, export, compress and serve ``ref``: what the sidebar
    inserts into a notebook, so a click becomes a cell anyone can re-run."""
    found = [
        {
            "action": "load",
            "title": "Load it in Python",
            "code": f"import maas_lab\n\nmodel = maas_lab.load({json.dumps(ref)})",
        }
    ]
    exporters = [r["name"] for r in api.components("exporter", format=fmt)]
    if exporters:
        target = "onnx" if "onnx" in exporters else exporters[0]
        found.append(
            {
                "action": "export",
                "title": f"Export to {target}",
                "code": command("export", ref, to=target),
            }
        )
    compressors = [r["name"] for r in api.components("compressor", format=fmt)]
    if compressors:
        found.append(
            {
                "action": "compress",
                "title": f"Compress with {compressors[0]}",
                "code": command("compress", ref, with_=compressors[0]),
            }
        )
    found.append({"action": "serve", "title": "Serve it", "code": command("serve", ref)})
    return found


def routes(base_url: str) -> list[tuple[str, type]]:
    prefix = base_url.rstrip("/") + "/maas/api"
    return [
        (prefix + "/revision", Revision),
        (prefix + "/versions", Versions),
        (prefix + "/version", Version),
        (prefix + "/servers", Servers),
        (prefix + "/alias", Alias),
    ]
