"""Server processes as the notebook and shell see them: which process a server row names,
what `status` shows right after a request, how a crashing worker comes back, and what the
serve result shows (never the token).

Servers are real processes on 127.0.0.1 serving the word tables of the third-party plugin
in ``tests/plugin_packages`` (fast to register, no torch).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from maas_lab import api
from maas_lab.errors import ConflictError, MaasError, NotFoundError, UsageError
from maas_lab.results import Table
from maas_lab.serving import control, state
from maas_lab.serving.client import Client

pytestmark = pytest.mark.slow


@pytest.fixture
def words(maas_home, hello_plugin_path, monkeypatch, tmp_path):
    """A registry with a word table (words@1); servers started here see the plugin."""
    from maas_lab.plugins import Plugins, set_plugins

    path = os.pathsep.join([str(hello_plugin_path), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.syspath_prepend(str(hello_plugin_path))
    old = set_plugins(Plugins())  # one that sees the plugin just put on the path
    table = tmp_path / "words.json"
    table.write_text(json.dumps({"good": 1.0, "bad": -1.0}))
    api.register("words", from_file=table, format="word-table")
    yield maas_home
    for row in state.all_rows(api.registry(maas_home).db):
        try:
            api.stop(row["name"], root=maas_home)
        except MaasError:
            pass
    set_plugins(old)


def _wait(predicate, what: str, wait_s: float = 60.0):
    """Poll until ``predicate()`` holds; the deadline only bounds a hang, it is no assertion
    about speed."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


# ---------------------------------------------------------------------- which process (11)


def _gone(pid: int) -> bool:
    """The process has ended (reaped, or a zombie: reap it if it is our child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        stat = open(f"/proc/{pid}/stat", "rb").read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


STRANGER = r"""
import signal, sys, time
out = sys.argv[1]
def note(sig, frame):
    with open(out, "a") as f:
        f.write(f"{sig}\n")
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
    signal.signal(sig, note)
open(out + ".ready", "w").close()
while True:
    time.sleep(1)
"""


def test_a_stale_row_whose_pid_was_reused_is_dead_and_the_process_is_never_signalled(
    words, tmp_path
):
    handle = api.serve("words@1", name="stale", port=0)
    db = api.registry(words).db
    workers = list(handle.workers)
    os.kill(handle.pid, signal.SIGKILL)  # the supervisor dies outright: its row stays
    _wait(lambda: _gone(handle.pid), "the supervisor to end")
    _wait(lambda: all(_gone(p) for p in workers), "its workers to end")
    # The kernel gives the old pid to an unrelated program, with "maas" in its arguments.
    signals = tmp_path / "signals.txt"
    stranger = subprocess.Popen(
        [sys.executable, "-c", STRANGER, str(signals), "maas_lab.serving.supervisor"],
        start_new_session=True,
    )
    try:
        _wait(lambda: (tmp_path / "signals.txt.ready").exists(), "the stranger to start")
        state.update(db, "stale", pid=stranger.pid)
        recorded = state.run_dir(words, "stale") / "supervisor.json"
        if recorded.exists():  # what the dead supervisor recorded, as if its pid were reused
            old = json.loads(recorded.read_text())
            recorded.write_text(json.dumps({**old, "pid": stranger.pid}))

        with pytest.raises(NotFoundError, match="stale"):
            api.stop("stale")
        table = api.status()
        assert "stale" not in [r["server"] for r in table]
        assert "Removed stale entries: stale" in table.note or state.get(db, "stale") is None
        assert state.get(db, "stale") is None  # the stale row is cleaned
        handle = api.serve("words@1", name="stale", port=0)  # the name is free again
        assert api.status("stale").rows[0]["state"] == "running"
        api.stop("stale")
        assert stranger.poll() is None  # still running ...
        assert not signals.exists() or signals.read_text() == ""  # ... and never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_is_named_by_its_pid_and_start_time():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = _wait(lambda: state.process_started(proc.pid), "the process to start")
        assert state.same_process(proc.pid, started)
        assert not state.same_process(proc.pid, started - 1)  # same pid, another process
        assert not state.same_process(proc.pid, None)
    finally:
        proc.kill()
        proc.wait()
    assert state.process_started(proc.pid) is None
    assert not state.same_process(proc.pid, started)


# ---------------------------------------------------------------------- status (15)


def test_status_right_after_a_prediction_counts_it(words, maas_shell):
    maas_shell.run_line_magic("maas", "serve words@1 --name at-once --port 0")
    for n in (1, 2, 3):  # no waiting between a prediction and the status that follows it
        out = maas_shell.run_line_magic("maas", "predict words@1 good")
        assert out.data["scores"].tolist() == [1.0]
        row = maas_shell.run_line_magic("maas", "status at-once").rows[0]
        assert row["requests"] == n
        assert row["p50 ms"] != "" and row["p99 ms"] != ""
        assert row["req/s"] > 0


# ---------------------------------------------------------------------- restarts (12)


def test_restart_backoff_doubles_while_crashing_and_resets_after_healthy_running():
    from maas_lab.serving.supervisor import Backoff

    backoff = Backoff(first_s=0.2, max_s=5.0, reset_after_s=30.0)
    assert [backoff.crashed() for _ in range(6)] == [0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert not backoff.healthy(100.0)
    assert not backoff.healthy(129.0)  # healthy, but not long enough yet
    backoff.unhealthy()  # a replica was not ready: the healthy period starts over
    assert not backoff.healthy(130.0)
    assert not backoff.healthy(159.9)
    assert backoff.healthy(160.0)  # 30 s of healthy running: forgiven
    assert backoff.crashed() == 0.4


def test_a_server_that_runs_healthy_again_restarts_a_crashed_worker_at_once(words):
    handle = control.serve("words@1", name="crashy", port=0, replicas=1, healthy_reset_s=0.5)
    db = api.registry(words).db

    def crash_and_replace(old: int) -> int:
        os.kill(old, signal.SIGKILL)
        row = _wait(
            lambda: (
                (r := state.get(db, "crashy"))["workers"] not in ([], [old])
                and r["status"] == "running"
                and r
            ),
            "a new worker",
        )
        return row["workers"][0]

    worker = crash_and_replace(handle.workers[0])
    assert "exited with code -9; starting another in 0.4 s" in api.logs("crashy").text
    _wait(lambda: "the restart back-off is reset" in api.logs("crashy").text, "the reset")
    crash_and_replace(worker)
    log = api.logs("crashy").text
    crashes = [line for line in log.splitlines() if "exited with code" in line]
    assert len(crashes) == 2 and crashes[-1].endswith("starting another in 0.4 s")


def test_healthy_reset_must_be_positive(words):
    with pytest.raises(UsageError, match="^healthy_reset_s must be between"):
        control.serve("words@1", name="bad", port=0, healthy_reset_s=0)
    assert state.get(api.registry(words).db, "bad") is None


# ---------------------------------------------------------------------- what serve shows (14)


def _everything_shown(result, shell) -> str:
    """Every form a notebook stores for an output, plus its text forms."""
    data, metadata = shell.display_formatter.format(result)
    return "\n".join([str(result), repr(result), json.dumps(data), json.dumps(metadata)])


def test_serve_in_a_notebook_shows_a_table_with_magic_hints_and_never_the_token(words, maas_shell):
    server = maas_shell.run_line_magic("maas", "serve words@1 --name nb --port 0")
    assert isinstance(server, Table) and server.rows[0]["server"] == "nb"
    assert server.rows[0]["url"] == server.url and server.rows[0]["models"] == "words@1"
    assert server.token and len(server.token) >= 16  # generated, kept on the handle
    shown = _everything_shown(server, maas_shell)
    assert server.token not in shown
    assert "`%maas status`" in shown and "`%maas stop nb`" in shown and "server.token" in shown
    assert "`maas " not in shown  # no shell syntax in a notebook
    # the token still works for what it guards, when asked for explicitly
    assert "token=***" in repr(server.client())  # the client sends it, never shows it
    api.stop("nb")
    assert server.token not in api.logs("nb").text


def test_serve_from_python_hints_at_the_handles_methods(words, maas_shell):
    server = api.serve("words@1", name="py", host="0.0.0.0", port=0)
    shown = _everything_shown(server, maas_shell)
    assert server.token not in shown
    assert "every request" in server.rows[0]["token"]
    # beyond loopback without TLS: said in the handle, the status and the server's log
    assert server.note.startswith("Warning: bound to 0.0.0.0 without TLS, so tokens and data")
    assert "py: Warning: bound to 0.0.0.0 without TLS" in api.status("py").note
    assert "warning: bound to 0.0.0.0 without TLS" in api.logs("py").text
    assert "`server.status()`" in shown and "`server.token`" in shown


def test_serve_in_a_shell_in_the_background_hints_in_shell_syntax(words):
    env = {**os.environ, "MAAS_LAB_HOME": str(words)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "maas_lab.cli",
            "serve",
            "words@1",
            "--name",
            "sh",
            "--port",
            "0",
            "--background",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "`maas status`" in done.stdout and "`maas stop sh`" in done.stdout
    assert "%maas" not in done.stdout
    assert "Management token" not in done.stderr  # not a terminal: the token is not shown


def _from_a_foreign_host(url: str) -> tuple[int, str]:
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    where = urlsplit(url)
    conn = HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.request("GET", "/v2/models/words", headers={"Host": "elsewhere.example"})
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def test_a_servers_answers_name_its_options_as_it_was_started(words):
    """A server's process knows how it was started (the prog, kept with its options): its
    answers name an option as that person gave it."""
    from maas_lab import cli

    server = api.serve("words@1", name="py", port=0)
    status, text = _from_a_foreign_host(server.url)
    assert status == 403 and "Start it with allow_hosts for another name" in text
    typed = cli.run(["serve", "words@1", "--name", "sh", "--port", "0", "--background"])
    status, text = _from_a_foreign_host(typed.url)
    assert status == 403 and "Start it with --allow-host for another name" in text


@pytest.mark.parametrize("name", ["7", "job-7", "JOB-12"])
def test_a_server_name_never_reads_as_a_job_id(name):
    """`maas logs 7` means job 7: no server can be called 7, so it never has to guess."""
    with pytest.raises(UsageError, match=rf"{name!r}: it reads as a training job's id.*srv-"):
        state.check_server_name(name)
    assert state.check_server_name(f"srv-{name}") == f"srv-{name}"
    assert state.check_server_name("7b") == "7b"


def test_a_name_that_cannot_name_a_server_says_what_to_do(words, tmp_path):
    long_name = "w" * 70  # a fine model name, too long for a server's folder
    table = tmp_path / "long.json"
    table.write_text(json.dumps({"good": 1.0}))
    api.register(long_name, from_file=table, format="word-table")
    with pytest.raises(UsageError, match=r"takes its name from the first model: .* name=NAME"):
        api.serve(f"{long_name}@1", port=0)
    assert state.all_rows(api.registry(words).db) == []
    with pytest.raises(UsageError, match=r"No server is called '7'.*`maas cancel 7` stops it"):
        api.stop("7")


# ---------------------------------------------------------------------- autoscaling (17)

# Short timings (options of the server row) so a whole cycle takes seconds; the deadlines
# below only bound a hang.
QUICK = {"window_s": 1.5, "up_after_s": 1.0, "down_after_s": 1.5, "cooldown_s": 1.0}


def _ask(url: str, stop, outcomes: list, pause_s: float = 0.0) -> None:
    """Requests through our client until ``stop``; each outcome kept (200, or what failed)."""
    with Client(url) as client:
        while not stop.is_set():
            try:
                out = client.infer("words", {"words": np.array(["good"], dtype=object)})
                outcomes.append(200 if out["scores"].tolist() == [1.0] else repr(out))
            except (MaasError, OSError) as exc:
                outcomes.append(repr(exc))
            if pause_s:
                stop.wait(pause_s)


def test_replicas_follow_the_load_with_no_failed_request(words):
    """A load well over a (tiny) p99 target adds a replica; a trickle too small to judge a
    p99 by counts as idle and the replica goes again, drained while requests still flow."""
    handle = control.serve(
        "words@1",
        name="elastic",
        port=0,
        autoscale="1..2",
        target_p99_ms=0.01,
        autoscale_timings=QUICK,
    )
    db = api.registry(words).db
    assert handle.rows[0]["autoscale"] == "1..2" and len(handle.workers) == 1
    heavy, light = threading.Event(), threading.Event()
    outcomes: list = []
    threads = [threading.Thread(target=_ask, args=(handle.url, heavy, outcomes)) for _ in range(4)]
    threads.append(threading.Thread(target=_ask, args=(handle.url, light, outcomes, 0.25)))
    try:
        for t in threads:
            t.start()

        def replicas(n: int):
            row = state.get(db, "elastic")
            return row["replicas"] == n and len(row["workers"]) == n and row["status"] == "running"

        _wait(lambda: replicas(2), "a second replica under load", 120)
        answered = len(outcomes)
        _wait(lambda: len(outcomes) > answered + 50, "requests after the change")
        heavy.set()
        for t in threads[:-1]:
            t.join()
        _wait(lambda: replicas(1), "the idle replica to go", 120)
        answered = len(outcomes)
        _wait(lambda: len(outcomes) > answered + 3, "requests after the change")
    finally:
        heavy.set()
        light.set()
        for t in threads:
            t.join()
    assert outcomes and set(outcomes) == {200}, {o for o in outcomes if o != 200}
    log = api.logs("elastic", lines=200).text
    assert "autoscale: +1 replica (1 -> 2) at " in log and "p99 " in log
    assert "autoscale: -1 replica (2 -> 1) at " in log and "idle for " in log
    table = control.status("elastic")
    assert table.rows[0]["autoscale"] == "1..2" and table.rows[0]["replicas"] == "1/1"
    assert "elastic autoscales 1..2: +1 replica (1 -> 2) at " in table.note
    assert "; -1 replica (2 -> 1) at " in table.note
    # By hand: within the range it is a nudge; outside it is refused, naming the option.
    with pytest.raises(UsageError, match=r"autoscales between 1 and 2 replicas \(autoscale="):
        control.scale("elastic", 3)
    assert control.scale("elastic", 2).rows[0]["replicas"] == "2/2"
    assert "replicas set to 2 by hand" in api.logs("elastic").text


@pytest.mark.parametrize(
    "options, message",
    [
        ({"autoscale": "2..1"}, "MIN is larger than MAX"),
        ({"autoscale": "1..4", "target_p99_ms": 0}, "^target_p99_ms must be a number"),
        ({"autoscale": "1-4"}, r"^autoscale takes MIN\.\.MAX replicas"),
        ({"autoscale": "0..4"}, "MIN and MAX must be at least 1"),
        ({"autoscale": "1..65"}, "MAX must be at most 64"),
        ({"autoscale": "1..2", "replicas": 3}, r"^replicas 3 is above the autoscale range"),
        (
            {"tls_cert": "c.pem"},
            r"^tls_cert and tls_key go together: add tls_key=FILE, or leave both",
        ),
        ({"tls_cert": "no.pem", "tls_key": "no.key"}, r"no\.pem does not exist; give tls_cert"),
    ],
)
def test_bad_autoscale_and_tls_options_are_refused_before_anything_starts(words, options, message):
    with pytest.raises(UsageError, match=message):
        control.serve("words@1", name="never", port=0, **options)
    assert state.all_rows(api.registry(words).db) == []  # no row, so no process either
    assert not state.run_dir(words, "never").exists()


# ---------------------------------------------------------------------- gRPC port (17)


def test_a_rows_addresses_say_https_with_tls_and_where_grpc_answers():
    row = {"host": "0.0.0.0", "port": 8443, "pid": 7, "options": {"tls_cert": "/c.pem"}}
    assert state.url(row) == "https://127.0.0.1:8443"
    assert state.grpc_address(row) is None  # no gRPC side
    row["options"]["grpc_port"] = 8001
    assert state.grpc_address(row) == "127.0.0.1:8001"
    assert state.grpc_address({**row, "pid": None}) is None  # its port is not reserved yet
    row = {"host": "::1", "port": 80, "pid": 7, "options": {"grpc_port": 81}}
    assert state.url(row) == "http://[::1]:80" and state.grpc_address(row) == "[::1]:81"


def test_the_grpc_port_is_reserved_for_the_servers_lifetime(words):
    handle = control.serve("words@1", name="both", port=0, grpc_port=0)
    port = state.get(api.registry(words).db, "both")["options"]["grpc_port"]
    assert port > 0 and handle.grpc == f"127.0.0.1:{port}"
    assert handle.rows[0]["grpc"] == handle.grpc
    assert control.status("both").rows[0]["grpc"] == handle.grpc
    plain = socket.socket()
    with pytest.raises(OSError):  # held: nothing else binds it ...
        plain.bind(("127.0.0.1", port))
    plain.close()
    worker_like = socket.socket()  # ... but a worker's gRPC server (SO_REUSEPORT) listens on it
    worker_like.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    worker_like.bind(("127.0.0.1", port))
    worker_like.listen(1)
    worker_like.close()
    with pytest.raises(MaasError, match=rf"cannot reserve the gRPC port 127.0.0.1:{port}: "):
        control.serve("words@1", name="second", port=0, grpc_port=port)  # one of ours has it
    with socket.socket() as taken:  # a port another program listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        with pytest.raises(MaasError, match=r"cannot reserve the gRPC port .*grpc_port=0 for any"):
            control.serve("words@1", name="second", port=0, grpc_port=busy)
    assert [r["name"] for r in state.all_rows(api.registry(words).db)] == ["both"]


# ---------------------------------------------------------------------- one name, one server


def test_a_name_being_started_elsewhere_is_refused_and_freed_when_its_starter_dies(words):
    """The check that a name is free and the insert are one transaction; a row with no
    supervisor yet belongs to the process starting it, while that process runs."""
    db = api.registry(words).db
    starter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = _wait(lambda: state.process_started(starter.pid), "the starter")
        row = {
            "name": "taken",
            "host": "127.0.0.1",
            "port": 0,
            "pid": None,
            "replicas": 1,
            "models": ["words@1"],
            "options": {"starter": {"pid": starter.pid, "started": started}},
            "status": "starting",
        }
        state.insert(db, row, words)
        with pytest.raises(ConflictError, match=r"'taken' already is being started\. Stop it"):
            control.serve("words@1", name="taken", port=0)
        assert state.get(db, "taken")["options"]["starter"]["pid"] == starter.pid
    finally:
        starter.kill()
        starter.wait()
    state.insert(db, {**row, "options": {}}, words)  # its starter is gone: the name is free
    assert state.get(db, "taken")["options"] == {}
    state.delete(db, "taken")


RACER = r"""
import os, sys, time
from maas_lab import api
from maas_lab.errors import ConflictError
go = sys.argv[1]
api.registry().resolve("words@1")  # warm: both wait at the same line
open(go + f".{os.getpid()}", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
try:
    api.serve("words@1", name="racy", port=0)
    print("started")
except ConflictError as exc:
    print("refused:", exc)
"""


def test_two_concurrent_starts_with_one_name_give_one_server(words, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "MAAS_LAB_HOME": str(words)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(go)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        _wait(lambda: len(list(tmp_path.glob("go.*"))) == 2, "both racers", 120)
        go.touch()
        answers = sorted(p.communicate(timeout=120)[0].strip() for p in racers)
    finally:
        for p in racers:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert answers[1] == "started", answers
    assert answers[0].startswith("refused: A server named 'racy' already "), answers
    assert len(state.all_rows(api.registry(words).db)) == 1


def test_options_are_checked_before_the_models(maas_home):
    """`--autoscale --target-p99-ms 100` made the flag the range and 100 a model: the answer
    was "No model named '100'" rather than what was wrong with --autoscale."""
    with pytest.raises(UsageError, match="takes MIN..MAX replicas"):
        api.serve(["100"], autoscale="--target-p99-ms")
