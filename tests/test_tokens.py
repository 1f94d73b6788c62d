"""Named tokens: made, listed and revoked through the API, the shell and the magic, stored
as their sha256 only, and obeyed by real servers on 127.0.0.1 (one started with a
``token``, which guards every scope, and one on loopback with a generated token, which
guards admin alone), revocation included, without restarting them.

The servers serve two word tables of the third-party plugin in ``tests/plugin_packages``
(fast to register, no torch), so a token for one model can be tried on the other.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time

import pytest
from serving_home import serving_home

from maas_lab import api
from maas_lab.errors import ConflictError, NotFoundError, UsageError
from maas_lab.serving import state
from maas_lab.serving.access import Access, Denied
from maas_lab.tokens import digest

ADMIN = "the-servers-own-token-for-tests"


@pytest.fixture(scope="module")
def home(tmp_path_factory, hello_plugin_path):
    """A registry with two word tables, ``words`` and ``other``, and the tokens the server
    tests use; servers started here see the plugin through PYTHONPATH."""
    root = tmp_path_factory.mktemp("tokens") / "registry"
    with serving_home(root, hello_plugin_path):
        for name in ("words", "other"):
            path = root.parent / f"{name}.json"
            path.write_text(json.dumps({"good": 1.0, "bad": -1.0}))
            api.register(name, from_file=path, format="word-table")
        yield root


@pytest.fixture(scope="module")
def made(home):
    """Tokens by name: infer on words, read everything, admin everything, and one revoked."""
    tokens = {
        "infer-words": api.token_create("infer-words", "infer", ["words"]).token,
        "reader": api.token_create("reader", ["read"]).token,
        "admin": api.token_create("admin", ["admin"]).token,
        "gone": api.token_create("gone", ["admin"]).token,
    }
    api.token_revoke("gone")
    return tokens


def _request(url, method, path, token=None, body=None):
    conn = http.client.HTTPConnection(url.split("//", 1)[1], timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        if method == "POST" and body is None:
            body = {}
        conn.request(
            method, path, body=json.dumps(body) if body is not None else None, headers=headers
        )
        resp = conn.getresponse()
        data = resp.read().decode()
        return resp.status, data
    finally:
        conn.close()


def _infer(model: str) -> tuple[str, str, dict]:
    body = {"inputs": [{"name": "words", "shape": [1], "datatype": "BYTES", "data": ["good"]}]}
    return "POST", f"/v2/models/{model}/infer", body


# Each route with the scope it needs: (method, path, body).
ROUTES = {
    "infer words": _infer("words"),
    "infer other": _infer("other"),
    "metadata words": ("GET", "/v2/models/words", None),
    "stats words": ("GET", "/v2/models/words/stats", None),
    "metadata other": ("GET", "/v2/models/other", None),
    "server metadata": ("GET", "/v2", None),
    "metrics": ("GET", "/metrics", None),
    "repository index": ("POST", "/v2/repository/index", None),
    "unload other": ("POST", "/v2/repository/models/other/unload", None),
}


def _statuses(url, token) -> dict[str, int]:
    return {
        name: _request(url, method, path, token, body)[0]
        for name, (method, path, body) in ROUTES.items()
        if name != "unload other" or token is None  # only ever refused here: nothing unloads
    }


def _all(status: int, *names) -> dict[str, int]:
    return {n: status for n in (names or [n for n in ROUTES if n != "unload other"])}


# ---------------------------------------------------------------------- the store


@pytest.fixture
def shell(home):
    IPython = pytest.importorskip("IPython")
    shell = IPython.core.interactiveshell.InteractiveShell.instance()
    shell.run_line_magic("load_ext", "maas_lab")
    return shell


def test_create_list_revoke_round_trip_keeps_only_the_digest(home, made, shell):
    table = api.tokens()
    rows = {r["name"]: r for r in table}
    assert set(rows) >= {"infer-words", "reader", "admin", "gone"}
    assert rows["infer-words"]["scopes"] == ["infer"] and rows["infer-words"]["models"] == ["words"]
    assert rows["reader"]["models"] == [] and rows["gone"]["revoked_at"]
    assert rows["admin"]["created_by"] and rows["admin"]["created_at"]
    assert rows["admin"]["revoked_at"] is None
    assert "(all)" in str(table) and "sha256" not in rows["admin"]
    # Revoking again changes nothing; an unknown name says which exist.
    assert api.token_revoke("gone")[0]["revoked_at"] == rows["gone"]["revoked_at"]
    with pytest.raises(NotFoundError, match="No token named 'nope'"):
        api.token_revoke("nope")
    # What a notebook would save of a new token never holds it; `.token` does.
    new = shell.run_line_magic("maas", "token create nb --scope infer --model other")
    data, metadata = shell.display_formatter.format(new)
    shown = "\n".join([str(new), repr(new), json.dumps(data), json.dumps(metadata)])
    assert new.token.startswith("maas_") and new.token not in shown
    assert "tok.token" in shown and "`%maas token revoke nb`" in shown
    # The registry's files hold digests, never a token.
    # (Closed first: closing any descriptor of a file drops this process's SQLite locks on it.)
    api.close_all()
    stored = b"".join(p.read_bytes() for p in home.glob("registry.db*"))
    assert digest(new.token).encode() in stored  # the file is read: the digest is there
    assert not any(t.encode() in stored for t in [*made.values(), new.token])


def test_names_are_checked_and_never_reused(home, made):
    for bad, why in [
        ("", "cannot be empty"),
        ("../etc", "Invalid token name"),
        ("a/b", "Invalid token name"),
        ("bad\x1b[31mname", r"Invalid token name 'bad\\x1b\[31mname'"),
        ("x" * 200, "200 characters; the limit is 128"),
        ("-flag", "Invalid token name"),
    ]:
        with pytest.raises(UsageError, match=why):
            api.token_create(bad, "infer")
    with pytest.raises(ConflictError, match="'gone' exists already .revoked"):
        api.token_create("gone", "infer")
    with pytest.raises(UsageError, match="Unknown scope 'write'"):
        api.token_create("w", ["write"])
    with pytest.raises(UsageError, match="at least one scope"):
        api.token_create("w", [])
    with pytest.raises(NotFoundError, match="No model named 'nope'"):
        api.token_create("w", "infer", ["nope"])
    with pytest.raises(UsageError, match="give 'words', not 'words@1'"):
        api.token_create("w", "infer", ["words@1"])
    assert "w" not in {r["name"] for r in api.tokens()}


def test_a_shell_prints_the_token_alone_on_stdout(home):
    env = {**os.environ, "MAAS_LAB_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "maas_lab.cli", "token", "create", "ci", "--scope", "infer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("maas_") and "\n" not in token
    assert token not in done.stderr and "Token ci" in done.stderr
    assert "`maas token revoke ci`" in done.stderr


# ---------------------------------------------------------------------- the rule, in one worker


def test_refusals_are_logged_with_the_name_never_the_token(home, made):
    lines = []
    admin_words = api.token_create("admin-words", "admin", ["words"]).token
    access = Access(home, digest(ADMIN), True, log=lines.append)
    access.check(f"Bearer {ADMIN}", "admin")  # the server's own token: admin
    access.check(f"Bearer {made['infer-words']}", "infer", "words")
    for auth, scope, model, status in [
        (f"Bearer {made['infer-words']}", "infer", "other", 403),
        (f"Bearer {admin_words}", "admin", None, 403),
        (f"Bearer {made['gone']}", "read", None, 401),
        ("Bearer maas_unknown", "read", None, 401),
        (None, "admin", None, 401),
    ]:
        with pytest.raises(Denied) as refused:
            access.check(auth, scope, model)
        assert refused.value.status == status
    assert len(lines) == 5 and "token 'infer-words'" in lines[0] and "model 'other'" in lines[0]
    assert "token 'admin-words'" in lines[1] and "for some models only" in lines[1]
    assert lines[2] == lines[3]  # revoked reads as unknown
    log = "\n".join(lines)
    assert not any(t in log for t in [*made.values(), admin_words, ADMIN])
    assert "gone" not in log  # a revoked token is not known: its name is not told either
    counted = access.prometheus()
    assert 'maas_auth_refused_total{scope="infer",status="403"} 1' in counted
    assert 'maas_auth_refused_total{scope="admin",status="403"} 1' in counted
    assert 'maas_auth_refused_total{scope="read",status="401"} 2' in counted
    assert 'maas_auth_refused_total{scope="admin",status="401"} 1' in counted


# ---------------------------------------------------------------------- real servers


@pytest.mark.slow
def test_scopes_and_models_on_a_server_started_with_a_token(home, made):
    # one replica: the counts are read back at once (replicas merge theirs every second)
    server = api.serve(["words@1", "other@1"], name="guarded", port=0, token=ADMIN, replicas=1)
    url = server.url
    try:
        assert _statuses(url, None) == {**_all(401), "unload other": 401}
        assert _statuses(url, ADMIN) == _all(200)  # the old single token: admin
        assert _statuses(url, made["admin"]) == _all(200)
        reader = _all(200)
        reader.update(_all(403, "infer words", "infer other", "repository index"))
        assert _statuses(url, made["reader"]) == reader
        # An infer token for words: runs it and reads it; nothing of other, nor the server.
        infer = _all(403)
        infer.update(_all(200, "infer words", "metadata words", "stats words"))
        assert _statuses(url, made["infer-words"]) == infer
        status, body = _request(
            url, *ROUTES["infer other"][:2], made["infer-words"], ROUTES["infer other"][2]
        )
        assert "not for model 'other'" in body and "--scope infer --model MODEL" in body
        status, body = _request(url, "POST", "/v2/repository/index", made["reader"])
        assert status == 403 and "lacks the 'admin' scope" in body
        # Unknown and revoked: one 401 body, whatever the token was.
        answers = {
            _request(url, "GET", "/v2", t) for t in (made["gone"], "maas_" + "x" * 43, "nope")
        }
        assert len(answers) == 1 and next(iter(answers))[0] == 401
        # Every refusal so far is counted in /metrics.
        metrics = _request(url, "GET", "/metrics", ADMIN)[1]
        counted = {
            line.split("{")[1].split("}")[0]: int(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("maas_auth_refused_total{")
        }
        assert counted['scope="read",status="401"'] == 5 + 3
        assert counted['scope="read",status="403"'] == 3
        assert counted['scope="infer",status="403"'] == 4  # reader x2, infer-words x2
        assert counted['scope="admin",status="403"'] == 3
    finally:
        api.stop("guarded")
    log = state.log_path(home, "guarded").read_text()
    assert not any(t in log for t in [ADMIN, *made.values()])
    assert "refused 403 for admin on the whole server: token 'reader'" in log
    assert "refused 401 for read on the whole server: a token that is not valid" in log


@pytest.mark.slow
def test_loopback_default_guards_admin_only_and_a_revoke_reaches_a_running_server(home, made):
    server = api.serve(["words@1", "other@1"], name="open", port=0)
    url = server.url
    try:
        opened = _all(200)
        opened["repository index"] = 401
        assert _statuses(url, None) == {**opened, "unload other": 401}
        assert _statuses(url, made["infer-words"])["repository index"] == 403
        assert _statuses(url, server.token)["repository index"] == 200  # generated: admin
        late = api.token_create("late", "admin", ["words"]).token
        assert _request(url, "POST", "/v2/repository/index", late)[0] == 403  # words only
        assert _request(url, "POST", "/v2/repository/models/other/unload", late)[0] == 403
        rotate = api.token_create("rotate", "admin").token  # made while the server runs
        assert _request(url, "POST", "/v2/repository/index", rotate)[0] == 200
        api.token_revoke("rotate")
        deadline = time.monotonic() + 10  # bounds a hang; the rule is within a second
        while _request(url, "POST", "/v2/repository/index", rotate)[0] == 200:
            assert time.monotonic() < deadline, "the revoke never reached the server"
            time.sleep(0.05)
        assert _request(url, "POST", "/v2/repository/index", server.token)[0] == 200
    finally:
        api.stop("open")
    assert server.token not in state.log_path(home, "open").read_text()


def test_a_pasted_token_loses_its_newline_and_a_broken_one_is_refused_without_echo():
    """A token read from a file or pasted keeps its trailing newline; sent as it is, the
    header broke inside http.client with a traceback that printed the whole secret."""
    from maas_lab.serving.client import Client

    secret = "maas_" + "x" * 40
    assert Client("http://127.0.0.1:1", token=secret + "\r\n")._token == secret
    for broken in (secret[:10] + "\n" + secret[10:], secret + " more", secret + "é"):
        with pytest.raises(UsageError) as refused:
            Client("http://127.0.0.1:1", token=broken)
        assert secret[:10] not in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(UsageError, match="cannot carry"):
        api.serve("anything", token=secret + "\nmore", port=0)
