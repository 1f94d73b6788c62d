"""Training jobs through accelerate: real `accelerate launch` processes (CPU, gloo) on this
machine, checked by what they did (world size, identical weights on every rank, one
registration) rather than by their exit code alone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from maas_lab import api
from maas_lab.errors import JobFailed, MaasError, NotFoundError, UsageError
from maas_lab.launching import jobs
from maas_lab.serving.state import process_started
from maas_lab.testing import registry_snapshot

pytest.importorskip("accelerate")
slow = pytest.mark.slow

# A digits MLP trained data-parallel. Each rank writes its world size and a digest of its
# final weights into OUT (the test's folder), so the test can compare ranks.
TRAIN = """
import hashlib, json, os
import torch
from maas_lab.datasets import load
from maas_lab.training import report
from maas_lab.zoo import mlp


def train(accelerator, registry):
    torch.manual_seed(0)
    data = load("sklearn:digits")
    part, test = data.split("train"), data.split("test")
    rows = torch.utils.data.TensorDataset(torch.from_numpy(part.x), torch.from_numpy(part.y))
    loader = torch.utils.data.DataLoader(rows, batch_size=32, shuffle=True)
    model = mlp(hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    steps, step = 4 * len(loader), 0
    for _ in range(4):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            accelerator.backward(loss)
            opt.step()
            step += 1
            report(step, total=steps, loss=loss.item(), samples=len(x))
    inner = accelerator.unwrap_model(model).eval()
    with torch.no_grad():
        accuracy = float((inner(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean())
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in inner.parameters()))
    rank = accelerator.process_index
    with open(os.path.join(OUT, f"rank{rank}.json"), "w") as f:
        json.dump({"world": accelerator.num_processes, "hash": digest.hexdigest()}, f)
    ref = registry.register(model, factory="maas_lab.zoo:mlp", config={"hidden": 32},
                            metrics={"accuracy": accuracy}, inputs=["input:float32:batch,64"],
                            data="sklearn:digits")
    with open(os.path.join(OUT, f"registered{rank}.json"), "w") as f:
        json.dump(ref, f)
"""


def _script(tmp_path, body: str, name: str = "train.py") -> str:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(f"OUT = {str(out)!r}\n" + textwrap.dedent(body))
    return str(path)


def _ranks(tmp_path) -> dict[int, dict]:
    return {
        int(p.stem[4:]): json.loads(p.read_text()) for p in (tmp_path / "out").glob("rank*.json")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _folder(maas_home, job_id) -> object:
    return jobs.job_dir(maas_home, job_id)


# ---------------------------------------------------------------------- jobs that work


@slow
def test_two_processes_train_one_model_and_register_it_once_with_lineage(maas_home, tmp_path):
    report = api.launch(
        _script(tmp_path, TRAIN), processes=2, register="digits-mlp", metric="accuracy"
    )
    row = report.data
    assert row["status"] == "succeeded" and row["exit_code"] == 0
    ranks = _ranks(tmp_path)
    assert sorted(ranks) == [0, 1] and {r["world"] for r in ranks.values()} == {2}
    assert ranks[0]["hash"] == ranks[1]["hash"], "DDP ranks ended with different weights"
    assert row["world_size"] == 2
    # rank 0 registered, rank 1 got None and wrote nothing
    assert json.loads((tmp_path / "out" / "registered0.json").read_text()) == "digits-mlp@1"
    assert json.loads((tmp_path / "out" / "registered1.json").read_text()) is None
    assert row["registered"] == "digits-mlp@1"
    assert [m["latest"] for m in api.list_models()] == ["@1"]
    shown = api.show("digits-mlp@1").data
    assert shown["metrics"]["accuracy"] > 0.9
    (edge,) = shown["parents"]
    assert edge["operation"] == "train" and edge["plugin"] == "accelerate"
    params = edge["params"]
    assert params["job"] == row["id"] and params["world_size"] == 2
    assert params["data"] == "sklearn:digits" and params["options"]["processes"] == 2
    # progress streamed into the record: every step, throughput counted on both ranks
    prog = row["progress"]
    assert prog["step"] == prog["total"] > 0 and prog["samples"] >= 2 * 1000
    assert prog["samples_per_s"] > 0 and "loss" in prog
    line = row["timeline"]
    assert line["launched"] < line["rank0_started"] < line["first_step"] < line["ended"]
    # the registered model is a normal torch version: it loads and classifies digits
    import numpy as np

    from maas_lab.datasets import load

    test = load("sklearn:digits").split("test")
    model = api.load("digits-mlp@1")
    import torch

    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean())
    assert np.isclose(accuracy, shown["metrics"]["accuracy"])
    text = str(report)
    assert "succeeded" in text and "digits-mlp@1" in text and "accuracy" in text


@slow
def test_a_plain_script_runs_as_main_with_its_arguments_and_jobs_survive_the_kernel(
    maas_home, tmp_path
):
    script = _script(
        tmp_path,
        """
        import json, os, sys
        from maas_lab import training

        accelerator = training.accelerator()
        steps = int(sys.argv[sys.argv.index("--steps") + 1])
        for step in range(1, steps + 1):
            training.report(step, total=steps, loss=1.0 / step, samples=8)
        with open(os.path.join(OUT, f"rank{accelerator.process_index}.json"), "w") as f:
            json.dump({"world": accelerator.num_processes, "argv": sys.argv[1:],
                       "name": __name__}, f)
        """,
    )
    with pytest.raises(JobFailed) as failed:
        api.launch(script, args=["--steps", "5"], register="never")
    message = str(failed.value)
    assert "register='never' was given but the job registered nothing" in message
    ranks = _ranks(tmp_path)
    assert ranks == {0: {"world": 1, "argv": ["--steps", "5"], "name": "__main__"}}
    # found again from another process, as after a kernel restart
    env = {"MAAS_LAB_HOME": str(maas_home), "PATH": "/usr/bin:/bin"}
    listed = subprocess.run(
        [sys.executable, "-m", "maas_lab.cli", "jobs"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "failed" in listed and "train.py" in listed and "5/5" in listed
    assert api.list_models().rows == []
    # the script's arguments as one string, as typed after `--`, are split as a shell would
    with pytest.raises(JobFailed):
        api.launch(script, args="--steps '3'", register="never")
    assert _ranks(tmp_path)[0]["argv"] == ["--steps", "3"]


@slow
def test_cell_magic_runs_the_cell_on_two_processes(maas_shell, maas_home, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cell = f"OUT = {str(out)!r}\n" + TRAIN
    report = maas_shell.run_cell_magic(
        "maas", "launch --processes 2 --register cell-mlp --metric accuracy", cell
    )
    assert report.data["status"] == "succeeded" and report.data["registered"] == "cell-mlp@1"
    ranks = _ranks(tmp_path)
    assert {r["world"] for r in ranks.values()} == {2} and len(
        {r["hash"] for r in ranks.values()}
    ) == 1
    table = maas_shell.run_line_magic("maas", "jobs")
    assert table.rows[0]["status"] == "succeeded" and table.rows[0]["target"] == "cell"
    assert table.rows[0]["metric"].startswith("accuracy=0.9")
    log = maas_shell.run_line_magic("maas", f"logs {report.data['id']}")
    assert "Last 40 lines of job" in str(log)


@slow
def test_two_machines_meet_at_a_loopback_rendezvous(maas_home, tmp_path):
    script, port = _script(tmp_path, TRAIN), _free_port()
    # machine 0 from options, machine 1 from an accelerate config file, as on a cluster
    first = api.launch(
        script,
        processes=1,
        machines=2,
        machine_rank=0,
        wait=False,
        main_address="127.0.0.1",
        main_port=port,
        register="two-machines",
    )
    config = tmp_path / "multinode.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 2\n"
        f"machine_rank: 1\nnum_processes: 2\nmain_process_ip: 127.0.0.1\n"
        f"main_process_port: {port}\nmixed_precision: 'no'\n"
    )
    second = api.launch(script, config=str(config), wait=False, register="two-machines")
    first, second = first.data["id"], second.data["id"]
    rows = [api.wait(first).data, api.wait(second).data]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert [r["world_size"] for r in rows] == [2, 2]
    assert "--machine_rank" in rows[1]["command"] and "--num_processes" in rows[1]["command"]
    ranks = _ranks(tmp_path)
    assert sorted(ranks) == [0, 1] and ranks[0]["hash"] == ranks[1]["hash"]
    assert {r["world"] for r in ranks.values()} == {2}
    # the global rank 0 (machine 0) registered; machine 1 wrote nothing
    assert rows[0]["registered"] == "two-machines@1" and rows[1]["registered"] is None
    assert [m["latest"] for m in api.list_models()] == ["@1"]


# ---------------------------------------------------------------------- jobs that fail


@slow
def test_a_failing_rank_fails_the_job_names_it_and_leaves_nothing(maas_home, tmp_path):
    script = _script(
        tmp_path,
        """
        def train(accelerator, registry):
            if accelerator.process_index == 1:
                raise ValueError("no data for shard 1")
            accelerator.wait_for_everyone()  # rank 0 waits for a rank that is gone
            registry.register(None, factory="maas_lab.zoo:mlp")
        """,
    )
    api.list_models()  # the database exists before the snapshot
    before = registry_snapshot(maas_home)
    started = time.monotonic()
    with pytest.raises(JobFailed) as failed:
        api.launch(script, processes=2, register="never")
    assert time.monotonic() - started < 120
    message = str(failed.value)
    assert "rank 1: ValueError: no data for shard 1" in message
    assert "Nothing was registered" in message and "maas logs" in message
    row = failed.value.report.data
    assert row["status"] == "failed" and row["exit_code"] != 0
    folder = _folder(maas_home, row["id"])
    assert jobs.processes(folder) == []  # no rank outlived its job
    log = str(api.logs(str(row["id"]), lines=500))
    assert "[rank1]:" in log and "no data for shard 1" in log  # each line names its rank
    assert not (folder / "tmp").exists()  # torch elastic's temporary files went with the job
    shown = str(failed.value.report)
    assert "Rank 1's traceback" in shown and 'raise ValueError("no data for shard 1")' in shown
    after = registry_snapshot(maas_home)
    assert [line for line in after[0] if "jobs" not in line] == [
        line for line in before[0] if "jobs" not in line
    ], "only the job's own row may change"
    assert api.list_models().rows == []


@slow
def test_cancel_stops_every_rank(maas_home, tmp_path):
    script = _script(
        tmp_path,
        """
        import time

        def train(accelerator, registry):
            from maas_lab.training import report
            for step in range(1, 10_000):
                time.sleep(0.05)
                accelerator.wait_for_everyone()
                report(step, total=10_000, samples=1)
        """,
    )
    row = api.launch(script, processes=2, wait=False).data
    folder = _folder(maas_home, row["id"])
    deadline = time.monotonic() + 90
    while not jobs.last_progress(folder).get("step") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jobs.last_progress(folder).get("step"), "the job never reported a step"
    assert len(jobs.processes(folder)) >= 3  # the launcher and two ranks
    report = api.cancel(row["id"])
    assert report.data["status"] == "cancelled" and "every process stopped" in report.title
    assert jobs.processes(folder) == []
    with pytest.raises(UsageError, match="already cancelled"):
        api.cancel(row["id"])
    assert api.jobs().rows[0]["status"] == "cancelled"


@slow
def test_an_unreachable_main_address_fails_within_the_rendezvous_timeout(maas_home, tmp_path):
    script = _script(tmp_path, "def train(accelerator, registry):\n    pass\n")
    started = time.monotonic()
    with pytest.raises(JobFailed) as failed:
        # 192.0.2.0/24 is TEST-NET-1: never routed, so the connection cannot succeed
        api.launch(
            script,
            machines=2,
            machine_rank=1,
            main_address="192.0.2.1",
            main_port=29555,
            rdzv_timeout=5,
        )
    took = time.monotonic() - started
    message = str(failed.value)
    assert "192.0.2.1:29555" in message, message
    assert "Check main_address and main_port" in message  # as api.launch took them
    assert took < 120, f"took {took:.0f} s"
    assert jobs.processes(_folder(maas_home, failed.value.report.data["id"])) == []


# ---------------------------------------------------------------------- refused up front


def _no_job_recorded(maas_home):
    assert not (maas_home / "jobs").exists() or not any((maas_home / "jobs").iterdir())
    if (maas_home / "registry.db").exists():
        assert api.jobs().rows == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("compute_environment: LOCAL_MACHINE\nnum_processes: [2,\n", "does not parse"),
        (
            "compute_environment: LOCAL_MACHINE\nnum_processes: 2\nnum_procesess: 3\n",
            "does not parse",
        ),
    ],
)
def test_an_accelerate_config_that_does_not_parse_is_refused_before_anything_starts(
    maas_home, tmp_path, text, expected
):
    config = tmp_path / "multinode.yaml"
    config.write_text(text)
    script = _script(tmp_path, "def train(accelerator, registry):\n    pass\n")
    with pytest.raises(UsageError) as refused:
        api.launch(script, config=str(config))
    assert expected in str(refused.value) and "multinode.yaml" in str(refused.value)
    assert "accelerate config --config_file" in str(refused.value)
    _no_job_recorded(maas_home)


def test_bad_launches_are_refused_with_the_fix(maas_home, tmp_path):
    script = _script(tmp_path, "def train(accelerator, registry):\n    pass\n")
    one_arg = _script(tmp_path, "def train(accelerator):\n    pass\n", "one.py")
    cases = [
        (dict(target=str(tmp_path / "missing.py")), "No script at"),
        (dict(target="no_such_module_xyz:train"), "Cannot find module 'no_such_module_xyz'"),
        (dict(target="what"), "neither a .py file nor a module:function"),
        (dict(), "What should run?"),
        (dict(code="x = 1\n"), "must define train(accelerator, registry)"),
        (dict(code="def train(a, b):\n  return (\n"), "The cell does not parse: line"),
        (dict(target=one_arg), "it must take two: train(accelerator, registry)"),
        (dict(target=script, code="def train(a, b): pass"), "not both"),
        (dict(target=script, processes=0), "processes must be at least 1"),
        (dict(target=script, machines=2), "needs main_address:"),
        (
            dict(target=script, machines=2, machine_rank=2, main_address="127.0.0.1"),
            "machine_rank=2 is not a rank of 2 machine(s)",
        ),
        (
            dict(target=script, accelerate_args="--num_procesess 2"),
            "has no option --num_procesess (in accelerate_args). Did you mean --num_processes",
        ),
        (dict(target=script, gpus=2), "has no option gpus"),
        (dict(target=script, register="bad name!"), "model name"),
        (dict(target=script, config=str(tmp_path / "nope.yaml")), "No accelerate config at"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(MaasError) as refused:
            api.launch(**kwargs)
        assert expected in str(refused.value), (kwargs, str(refused.value))
    with pytest.raises(NotFoundError, match="No launcher named 'torchrunn'"):
        api.launch(script, launcher="torchrunn")
    _no_job_recorded(maas_home)
    with pytest.raises(NotFoundError, match="No job named '7'"):
        api.cancel(7)
    with pytest.raises(UsageError, match="not a job id"):
        api.job("seven")


def test_launch_options_go_before_or_after_the_target_and_the_scripts_after_a_double_dash(
    maas_home, tmp_path
):
    """`maas launch train.py --processes 2`, the README's form, must not hand --processes to
    the script: launcher options are ours wherever they stand; the script's own arguments
    follow `--`. Anything else is refused by name before a job is recorded."""
    from maas_lab.cli import run

    for args in (["--gpus", "2", "train.py"], ["train.py", "--gpus", "2"]):
        with pytest.raises(UsageError, match="No option --gpus for `launch`.*--processes"):
            run(["launch", *args])
    with pytest.raises(
        UsageError,
        match=r"No option --lr .*put the script's own arguments "
        r"after `--`: maas launch train.py --processes 2 -- --lr 0.1$",
    ):
        run(["launch", "train.py", "--processes", "2", "--lr", "0.1"])
    with pytest.raises(
        UsageError,
        match=r"Unexpected argument 'data.csv' after TARGET "
        r"'train.py'.*after `--`",
    ):
        run(["launch", "train.py", "data.csv"])
    _no_job_recorded(maas_home)


@slow
def test_options_after_the_script_reach_the_launcher_and_the_rest_the_script(maas_home, tmp_path):
    script = _script(
        tmp_path,
        """
        import json, os, sys
        from maas_lab import training

        accelerator = training.accelerator()
        with open(os.path.join(OUT, f"rank{accelerator.process_index}.json"), "w") as f:
            json.dump({"world": accelerator.num_processes, "argv": sys.argv[1:]}, f)

        # what a program counts on at exit, though a finished rank skips the interpreter's
        # teardown: its atexit functions run after its non-daemon threads end
        import atexit, threading, time

        def at_exit(name=f"{OUT}/exit{accelerator.process_index}.txt"):
            with open(name, "a") as f:
                f.write("atexit ")

        def late(name=f"{OUT}/exit{accelerator.process_index}.txt"):
            time.sleep(0.5)
            with open(name, "a") as f:
                f.write("thread ")

        atexit.register(at_exit)
        threading.Thread(target=late).start()
        """,
    )
    from maas_lab.cli import run

    report = run(["launch", script, "--processes", "2", "--", "--processes", "9", "-x"])
    assert (report.data["status"], report.data["world_size"]) == ("succeeded", 2)
    want = {"world": 2, "argv": ["--processes", "9", "-x"]}
    assert _ranks(tmp_path) == {0: want, 1: want}
    for rank in (0, 1):
        assert (tmp_path / "out" / f"exit{rank}.txt").read_text() == "thread atexit "


def test_the_training_registry_writes_from_rank_zero_only(maas_home, tmp_path, tiny_torch_model):
    from maas_lab import training

    folder = tmp_path / "job"
    folder.mkdir()
    spec = {"id": 1, "register_as": "tiny", "metric": "accuracy", "launcher": "accelerate"}
    try:
        training._job = training._Job(folder, spec, rank=1, world=2)
        reg = training.registry()
        model, config = tiny_torch_model["model"], tiny_torch_model["config"]
        got = reg.register(
            model, factory="maas_lab.zoo:mlp", config=config, metrics={"accuracy": 1}
        )
        assert got is None
        assert not (maas_home / "registry.db").exists() or api.list_models().rows == []
        training._job = training._Job(folder, spec, rank=0, world=2)
        with pytest.raises(UsageError, match="launched with metric='accuracy'"):
            reg.register(
                tiny_torch_model["model"],
                factory="maas_lab.zoo:mlp",
                config=tiny_torch_model["config"],
                metrics={"loss": 0.1},
            )
        # a job launched from a command line (job.json's prog) is told in its flags
        training._job = training._Job(folder, {**spec, "prog": "%maas"}, rank=0, world=2)
        with pytest.raises(UsageError, match="launched with --metric accuracy"):
            reg.register(
                tiny_torch_model["model"],
                factory="maas_lab.zoo:mlp",
                config=tiny_torch_model["config"],
                metrics={"loss": 0.1},
            )
        training._job = training._Job(folder, spec, rank=0, world=2)
        assert api.list_models().rows == []
        ref = reg.register(
            tiny_torch_model["model"],
            factory="maas_lab.zoo:mlp",
            config=tiny_torch_model["config"],
            metrics={"accuracy": 0.5},
            inputs=["input:float32:batch,8"],
        )
        assert ref == "tiny@1"
        assert json.loads((folder / "result.json").read_text())["ref"] == "tiny@1"
        training.report(1, total=2, loss=0.5, samples=4)
        training.report(2, total=2, loss=0.25, samples=4)  # the last step is always written
        assert (
            jobs.last_progress(folder)["samples"] == 16 and jobs.last_progress(folder)["step"] == 2
        )
    finally:
        training._job = None


@slow
def test_distillation_runs_data_parallel_as_a_recorded_job(maas_home, tmp_path):
    import torch
    from safetensors.torch import save_file

    from maas_lab.datasets import load
    from maas_lab.zoo import mlp

    torch.manual_seed(0)
    part = load("sklearn:digits").split("train")
    teacher = mlp(hidden=64)
    opt = torch.optim.Adam(teacher.parameters(), lr=0.01)
    x, y = torch.from_numpy(part.x), torch.from_numpy(part.y)
    for _ in range(20):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(teacher(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    save_file(teacher.state_dict(), str(tmp_path / "teacher.safetensors"))
    api.register(
        "digits",
        from_torch="maas_lab.zoo:mlp",
        config={"hidden": 64},
        weights=tmp_path / "teacher.safetensors",
        task="classification",
        inputs=["input:float32:batch,64"],
    )
    report = api.distill(
        "digits@1",
        "maas_lab.zoo:mlp",
        config={"hidden": 16},
        data="sklearn:digits",
        epochs=12,
        processes=2,
        budget_s=0.1,
    )
    assert report.data["report"]["processes"] == 2
    info = api.show(report["ref"]).data
    assert info["parents"][0]["operation"] == "distill" and info["parents"][0]["ref"] == "digits@1"
    assert info["metrics"]["accuracy"] > 0.85
    (job,) = api.jobs().rows
    assert (job["status"], job["processes"]) == ("succeeded", 2)
    assert job["target"] == "maas_torch.distill:train_data_parallel"
    row = api.job(job["job"]).data
    assert 1 <= row["progress"]["step"] <= 12 and 0 < row["progress"]["val_acc"] <= 1


@slow
def test_a_third_party_launcher_runs_jobs_through_the_same_core(
    hello_installed, maas_plugins, maas_home, tmp_path, monkeypatch
):
    """maas-lab-hello's torchrun launcher, pip-installed like any package: the core records,
    follows and registers its job exactly as it does accelerate's."""
    monkeypatch.setenv("PYTHONPATH", str(hello_installed))
    assert "torchrun" in maas_plugins.components["launcher"]
    report = api.launch(
        _script(tmp_path, TRAIN), launcher="torchrun", processes=2, register="by-torchrun"
    )
    row = report.data
    assert (row["status"], row["launcher"], row["world_size"]) == ("succeeded", "torchrun", 2)
    assert "torch.distributed.run" in row["command"]
    ranks = _ranks(tmp_path)
    assert {r["world"] for r in ranks.values()} == {2} and ranks[0]["hash"] == ranks[1]["hash"]
    assert row["registered"] == "by-torchrun@1"
    assert api.show("by-torchrun@1").data["parents"][0]["plugin"] == "torchrun"


@slow
def test_a_job_whose_monitor_pid_was_reused_is_lost_and_the_stranger_never_signalled(
    maas_home, tmp_path
):
    """Defect 11's class for jobs: a pid alone, or a name in a command line, does not say
    which process it is. A stranger that got the monitor's pid (simulated: the record points
    at it, with the monitor's start time) passes for the monitor only by both."""
    import os
    import signal as signals

    script = _script(
        tmp_path, "import time\n\ndef train(accelerator, registry):\n    time.sleep(60)\n"
    )
    row = api.launch(script, processes=1, wait=False).data
    folder = _folder(maas_home, row["id"])
    known = jobs.read_json(folder / "monitor.json")
    assert known["pid"] == row["pid"] and known["started"]
    # Start times are clock ticks (10 ms): a real reuse needs the pid space to wrap, so the
    # stranger must start in a later tick than the monitor did, or it would be the monitor.
    time.sleep(0.05)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "maas_lab.launching.monitor"]
    )
    try:
        assert process_started(stranger.pid) != known["started"]
        os.kill(row["pid"], signals.SIGKILL)  # the monitor dies; its pid goes to the stranger
        reg = api.registry()
        jobs.update(reg.db, row["id"], pid=stranger.pid)
        jobs.write_json(folder / "monitor.json", {"pid": stranger.pid, "started": known["started"]})
        with pytest.raises(UsageError, match="already lost"):
            api.cancel(row["id"])
        assert api.jobs().rows[0]["status"] == "lost"
        assert stranger.poll() is None  # still running: never signalled
        assert jobs.processes(folder) == []  # the job's own processes were stopped
    finally:
        stranger.kill()
        stranger.wait()
