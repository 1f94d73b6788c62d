"""The server extension behind the JupyterLab sidebar (maas_lab.lab), through jupyter_server's
own test fixtures (pytest-jupyter): a real ServerApp with the extension loaded, real HTTP
requests with Jupyter's token or cookie, a real registry. What the sidebar does with the
answers is checked in a real browser by tests/test_lab_browser.py."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie

import pytest

pytest.importorskip("jupyter_server")
pytest.importorskip("pytest_jupyter")
pytest.importorskip("torch")

# pytest-jupyter's fixtures, for this module only: its autouse fixtures (an event loop per
# test, a ServerApp cleanup) must not run under the rest of the suite.
from pytest_jupyter.jupyter_server import *  # noqa: E402, F403
from registry_edits import delete_version  # noqa: E402

from maas_lab import api  # noqa: E402
from maas_lab.testing import registry_snapshot  # noqa: E402


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"maas_lab.lab": True}}}


@pytest.fixture
def tiny(maas_home, tiny_torch_model, tmp_path):
    """tiny@1 (torch, card, tag), tiny@2 (its ONNX export, alias prod), other@1."""
    card = tmp_path / "README.md"
    card.write_text("# Tiny\n\nA **small** MLP. <script>alert(1)</script>\n")
    common = {
        "from_torch": tiny_torch_model["factory"],
        "config": tiny_torch_model["config"],
        "weights": tiny_torch_model["weights"],
        "inputs": ["input:float32:batch,8"],
    }
    api.register("tiny", task="classification", card=card, tags=["team=vision"], **common)
    api.export("tiny@1", "onnx")
    api.alias("tiny", "prod", 2)
    api.register("other", task="regression", description="about forecasting", **common)
    return maas_home


@pytest.fixture
def call(jp_fetch, jp_asyncio_loop):
    """``call(method, route, params=None, body=None, **fetch)`` -> (status, JSON answer)."""

    def run(method, route, params=None, body=None, **kwargs):
        request = jp_fetch(
            "maas",
            "api",
            route,
            method=method,
            params=params,
            body=None if body is None else (body if isinstance(body, str) else json.dumps(body)),
            allow_nonstandard_methods=True,
            raise_error=False,
            **kwargs,
        )
        response = jp_asyncio_loop.run_until_complete(request)
        try:
            return response.code, json.loads(response.body or b"null")
        except ValueError:  # e.g. an HTML page: the test says what it expected
            return response.code, response.body.decode()

    return run


def test_lists_versions_newest_first_with_aliases_sizes_and_metrics(tiny, call):
    code, answer = call("GET", "versions")
    assert code == 200
    assert [r["ref"] for r in answer["rows"]] == ["other@1", "tiny@2", "tiny@1"]
    assert answer["title"] == "3 version(s) of 2 model(s)"
    by_ref = {r["ref"]: r for r in answer["rows"]}
    assert by_ref["tiny@2"]["aliases"] == ["prod"]
    assert by_ref["tiny@2"]["format"] == "onnx"
    assert by_ref["tiny@1"]["tags"] == ["team=vision"]
    assert by_ref["tiny@1"]["size"].endswith(("B", "kB"))
    assert by_ref["tiny@1"]["size_bytes"] > 0
    assert by_ref["tiny@2"]["metrics"]["parity_min_cosine"] > 0.99


def test_search_ranks_and_reads_search_syntax_as_plain_words(tiny, call):
    code, answer = call("GET", "versions", {"search": "forecasting"})
    assert code == 200 and [r["ref"] for r in answer["rows"]] == ["other@1"]
    before = registry_snapshot(tiny)
    for text in ['"unbalanced', "AND AND", "*", "tiny NEAR(", "'); drop table models; --"]:
        code, answer = call("GET", "versions", {"search": text})
        assert code == 200, (text, answer)
        assert isinstance(answer["rows"], list)
    assert registry_snapshot(tiny) == before
    code, answer = call("GET", "versions", {"search": "*"})
    assert len(answer["rows"]) == 3 and "'*' has no words to search for" in answer["note"]
    code, answer = call("GET", "versions", {"search": "zebra"})
    assert answer["rows"] == [] and answer["note"] == "No model matches 'zebra'."
    code, answer = call("GET", "versions", {"limit": "0"})
    assert code == 400 and "--limit 0" in answer["error"]
    code, answer = call("GET", "versions", {"limit": "1000000"})
    assert code == 400 and "at most 1000" in answer["error"]


def test_details_have_files_signature_card_lineage_and_notebook_lines(tiny, call):
    code, info = call("GET", "version", {"ref": "tiny@prod"})
    assert code == 200
    assert info["ref"] == "tiny@2" and info["aliases"] == ["prod"]
    assert [f["name"] for f in info["files"]] == ["model.onnx"]
    assert len(info["files"][0]["sha256"]) == 64
    assert info["signature"]["inputs"] == [
        {"name": "input", "dtype": "float32", "shape": ["batch", 8]}
    ]
    (edge,) = info["lineage"]["edges"]
    assert (edge["parent"], edge["child"]) == ("tiny@1", "tiny@2")
    assert edge["label"].startswith("export onnx, size ")
    assert info["servers"] == []
    codes = {s["action"]: s["code"] for s in info["snippets"]}
    assert codes == {
        "load": 'import maas_lab\n\nmodel = maas_lab.load("tiny@2")',
        "compress": "%maas compress tiny@2 --with ort-int8",
        "serve": "%maas serve tiny@2",
    }  # an ONNX version has no exporter here: no export line is offered
    code, first = call("GET", "version", {"ref": "tiny@1"})
    assert first["card"].startswith("# Tiny")  # Markdown: the sidebar renders it sanitized
    assert first["tags"] == ["team=vision"]
    codes = {s["action"]: s["code"] for s in first["snippets"]}
    assert codes["export"] == "%maas export tiny@1 --to onnx"
    assert codes["compress"] == "%maas compress tiny@1 --with prune"


def test_a_version_that_is_not_there_is_refused_naming_it(tiny, call):
    code, answer = call("GET", "version", {"ref": "tiny@9"})
    assert code == 404 and answer["error"].startswith("'tiny' has no version 9")
    code, answer = call("GET", "version", {"ref": "nosuch"})
    assert code == 404 and "'nosuch'" in answer["error"]
    code, answer = call("GET", "version", {"ref": "../../etc/passwd"})
    assert code == 400 and "error" in answer
    code, answer = call("GET", "version")
    assert code == 400 and answer == {"error": "Give 'ref'."}


def test_a_version_deleted_behind_the_sidebar_answers_404_and_the_list_follows(tiny, call):
    """No command deletes a version, but another tool or a restored backup can: the details
    of a version that vanished while open are a 404 with a message, the list drops it and
    the revision the sidebar polls changes."""
    _, before = call("GET", "revision")
    delete_version(tiny, "other", 1)  # another tool, a restored backup
    code, answer = call("GET", "version", {"ref": "other@1"})
    assert code == 404 and "other" in answer["error"]
    assert "traceback" not in json.dumps(answer).lower()
    _, after = call("GET", "revision")
    assert after["revision"] != before["revision"]
    _, listed = call("GET", "versions")
    assert "other@1" not in [r["ref"] for r in listed["rows"]]


def test_moving_an_alias_answers_the_line_that_does_the_same(tiny, call):
    code, answer = call("POST", "alias", body={"name": "tiny", "alias": "prod", "version": 1})
    assert code == 200
    assert answer["line"] == "%maas alias tiny prod 1"
    assert answer["message"] == "tiny@prod now points at tiny@1."
    assert api.resolve("tiny@prod") == "tiny@1"


def test_bad_action_requests_are_refused_by_name_and_change_nothing(tiny, call):
    before = registry_snapshot(tiny)
    cases = [
        ("{not json", 400, "The request body is not JSON."),
        ("[1, 2]", 400, "The request body must be a JSON object."),
        ({"name": "tiny", "alias": "prod"}, 400, "Give 'version'."),
        ({"name": "tiny", "alias": "prod", "version": [1]}, 400, "'version' must be text"),
        ({"name": "nosuch", "alias": "prod", "version": 1}, 404, "'nosuch'"),
        ({"name": "tiny", "alias": "prod", "version": 7}, 404, "'tiny' has no version 7"),
        ({"name": "tiny", "alias": "bad alias!", "version": 1}, 400, "alias"),
        ({"name": "tiny", "alias": "prod", "version": 1, "x": "y" * 70_000}, 413, "64 kB"),
    ]
    for body, status, text in cases:
        code, answer = call("POST", "alias", body=body)
        assert code == status and text in answer["error"], (body, code, answer)
    code, answer = call("POST", "servers", body={"ref": "nosuch"})
    assert code == 404 and "'nosuch'" in answer["error"]
    code, answer = call("DELETE", "servers", {"name": "nosuch"})
    assert code == 404 and "'nosuch'" in answer["error"]
    assert registry_snapshot(tiny) == before


def test_every_route_needs_jupyters_login(tiny, call):
    for method, route, params in [
        ("GET", "revision", None),
        ("GET", "versions", None),
        ("GET", "version", {"ref": "tiny@1"}),
        ("GET", "servers", None),
        ("POST", "alias", None),
        ("POST", "servers", None),
        ("DELETE", "servers", {"name": "x"}),
    ]:
        body = json.dumps({"name": "tiny", "alias": "prod", "version": 1, "ref": "tiny@1"})
        for auth in ("token wrong", ""):
            code, answer = call(
                method,
                route,
                params,
                body=body if method == "POST" else None,
                headers={"Authorization": auth},
            )
            assert code == 403, (method, route, auth, code, answer)
    assert api.resolve("tiny@prod") == "tiny@2"


def test_changes_from_a_browser_session_need_the_xsrf_token(
    tiny, call, jp_fetch, jp_asyncio_loop, jp_serverapp
):
    """Logged in by cookie, as a browser is: reads pass, a change without Jupyter's XSRF
    token is refused and changes nothing, and with it (as JupyterLab sends it) it goes
    through."""
    cookies = _browser_login(jp_fetch, jp_asyncio_loop, jp_serverapp.identity_provider.token)
    headers = {"Authorization": "", "Cookie": cookies["header"]}
    code, answer = call("GET", "versions", headers=headers)
    assert code == 200 and len(answer["rows"]) == 3
    body = {"name": "tiny", "alias": "prod", "version": 1}
    code, answer = call("POST", "alias", body=body, headers=headers)
    assert code == 403 and "xsrf" in answer["error"].lower()
    assert api.resolve("tiny@prod") == "tiny@2"
    code, answer = call("DELETE", "servers", {"name": "x"}, headers=headers)
    assert code == 403 and "xsrf" in answer["error"].lower()
    headers["X-XSRFToken"] = cookies["_xsrf"]
    code, answer = call("POST", "alias", body=body, headers=headers)
    assert code == 200 and api.resolve("tiny@prod") == "tiny@1"


def _browser_login(jp_fetch, loop, token: str) -> dict:
    """Log in as a browser does: the login page sets the XSRF cookie, posting the token to it
    sets the login cookie. Returns the cookies and a ``Cookie`` header with them all."""

    def fetch(*args, **kwargs):
        kwargs.setdefault("headers", {})["Authorization"] = ""
        return loop.run_until_complete(
            jp_fetch(*args, raise_error=False, follow_redirects=False, **kwargs)
        )

    jar = SimpleCookie()
    page = fetch("login")
    for header in page.headers.get_list("Set-Cookie"):
        jar.load(header)
    form = f"password={token}&_xsrf={jar['_xsrf'].value}"
    headers = {"Cookie": f"_xsrf={jar['_xsrf'].value}"}
    done = fetch("login", method="POST", body=form, headers=headers)
    assert done.code == 302, done.code
    for header in done.headers.get_list("Set-Cookie"):
        jar.load(header)
    found = {k: v.value for k, v in jar.items()}
    assert any(k.startswith("username-") for k in found), found
    found["header"] = "; ".join(f"{k}={v}" for k, v in found.items())
    return found


def test_an_empty_registry_says_how_to_start(maas_home, call):
    code, answer = call("GET", "versions")
    assert code == 200 and answer["rows"] == []
    assert answer["note"] == "No models yet. Register one: %maas register NAME --from-hf FOLDER"


def test_an_unreadable_registry_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch, call):
    from maas_lab.registry import close_all

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MAAS_LAB_HOME", str(blocker))
    close_all()
    for route in ("revision", "versions", "servers"):
        code, answer = call("GET", route)
        assert code == 500, (route, answer)
        assert answer["error"].startswith(f"Cannot open the registry at {blocker}")
        assert "MAAS_LAB_HOME" in answer["error"]
    close_all()


@pytest.mark.slow
def test_start_servers_see_them_on_their_versions_and_stop_them(tiny, call):
    """Each start takes a free port on 127.0.0.1 whatever the body says, and a second version
    of a model gets a server name of its own, so the sidebar can start more than one."""
    body = {"ref": "tiny@prod", "host": "0.0.0.0", "port": 80, "token": "x"}
    code, answer = call("POST", "servers", body=body, request_timeout=120)
    assert code == 200, answer
    started = [answer["server"]]
    try:
        assert answer["server"] == "tiny"
        assert answer["line"] == "%maas serve tiny@prod --port 0"
        assert answer["url"].startswith("http://127.0.0.1:") and not answer["url"].endswith(":80")
        code, second = call("POST", "servers", body={"ref": "tiny@1"}, request_timeout=120)
        assert code == 200, second
        started.append(second["server"])
        assert second["server"] == "tiny-1"
        assert second["line"] == "%maas serve tiny@1 --port 0 --name tiny-1"
        code, servers = call("GET", "servers")
        rows = {r["server"]: r for r in servers["rows"]}
        assert (rows["tiny"]["model"], rows["tiny"]["version"]) == ("tiny@prod", "2")
        assert (rows["tiny-1"]["model"], rows["tiny-1"]["version"]) == ("tiny@1", "1")
        code, info = call("GET", "version", {"ref": "tiny@2"})
        assert [s["server"] for s in info["servers"]] == ["tiny"]
        code, info = call("GET", "version", {"ref": "tiny@1"})
        assert [s["server"] for s in info["servers"]] == ["tiny-1"]
        code, info = call("GET", "version", {"ref": "other@1"})
        assert info["servers"] == []
    finally:
        answers = [call("DELETE", "servers", {"name": n}, request_timeout=120) for n in started]
    assert answers == [
        (200, {"message": f"Stopped server {n}.", "line": f"%maas stop {n}"}) for n in started
    ]
    _, servers = call("GET", "servers")
    assert servers["rows"] == []


def test_jupyters_authorizer_decides_who_may_use_the_routes(tiny, call, jp_serverapp):
    """A deployment's authorizer (JupyterHub's scopes, a custom one) can refuse the "maas"
    resource to a logged-in user: reads and changes are then refused and change nothing."""
    from jupyter_server.auth import Authorizer

    class NoRegistry(Authorizer):
        def is_authorized(self, handler, user, action, resource):
            return resource != "maas"

    jp_serverapp.web_app.settings["authorizer"] = NoRegistry(
        parent=jp_serverapp, identity_provider=jp_serverapp.identity_provider
    )
    assert call("GET", "versions")[0] == 403
    assert call("GET", "revision")[0] == 403
    body = {"name": "tiny", "alias": "prod", "version": 1}
    assert call("POST", "alias", body=body)[0] == 403
    assert api.resolve("tiny@prod") == "tiny@2"
