"""Results with one shape (issue 13): tables as plain dicts and DataFrames, reports that
iterate as the record they index, notebook variables seen only inside a `%maas` command,
and the handle a detached training job returns."""

from __future__ import annotations

import json
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from maas_lab import api, datasets
from maas_lab.errors import JobFailed, UsageError
from maas_lab.launching import control, jobs
from maas_lab.launching.control import Job
from maas_lab.results import Report, Table, human_size
from maas_lab.serving.inputs import predict_inputs

slow = pytest.mark.slow


# ---------------------------------------------------------------------- tables


def _table() -> Table:
    rows = [
        {"name": "a", "size": 1234.0, "score": 0.123456, "hidden": "x"},
        {"name": "b", "size": None, "score": 2},
    ]
    return Table(rows, ["name", "size", "score"], title="T", formatters={"size": human_size})


def test_table_dicts_are_the_shown_columns_with_values_as_stored():
    table = _table()
    assert table.dicts() == [
        {"name": "a", "size": 1234.0, "score": 0.123456},
        {"name": "b", "size": None, "score": 2},
    ]
    assert [list(d) for d in table.dicts()] == [["name", "size", "score"]] * 2
    assert all(type(d) is dict for d in table.dicts())
    table.dicts()[0]["name"] = "changed"  # a copy: the table is not changed through it
    assert table[0]["name"] == "a"
    assert "1.2 kB" in str(table)  # shown formatted, handed over as stored
    assert Table([], ["a", "b"]).dicts() == []


def test_table_sequence_protocol_is_complete():
    table = _table()
    assert len(table) == 2 and list(table) == table.rows and table[-1] is table.rows[-1]
    assert not Table([])  # an empty table is false, as a Report's parts rely on


def test_table_to_pandas_without_pandas_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(UsageError, match=r"pip install pandas"):
        _table().to_pandas()


def test_table_to_pandas_hands_rows_and_columns_to_dataframe(monkeypatch):
    calls = []
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda data, columns: calls.append((data, columns)) or "frame"
    monkeypatch.setitem(sys.modules, "pandas", fake)
    assert _table().to_pandas() == "frame"
    assert calls == [(_table().dicts(), ["name", "size", "score"])]


def test_table_to_pandas_with_pandas():
    pd = pytest.importorskip("pandas")
    frame = _table().to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["name", "size", "score"] and len(frame) == 2
    assert list(Table([], ["a", "b"]).to_pandas().columns) == ["a", "b"]


# ---------------------------------------------------------------------- reports


def test_report_iterates_as_the_record_it_indexes():
    report = Report("r", [("", "text")], data={"ref": "m@1", "metrics": {}})
    assert list(report) == ["ref", "metrics"] == list(report.data)
    assert {k: report[k] for k in report} == report.data
    assert len(report) == 2 and "ref" in report and "nope" not in report
    empty = Report("stopped", [])
    assert list(empty) == [] and len(empty) == 0 and "x" not in empty
    assert empty and Report("r", [], data={})  # still true, as before it had a length


def test_report_rendering_is_unchanged():
    table = Table([{"a": 1}])
    report = Report("Title", [("Part", table), ("", "plain"), ("Empty", Table([]))])
    assert str(report) == "Title\n=====\n\nPart:\na\n-\n1\n\nplain"
    assert repr(report) == str(report)
    assert report._repr_html_() == (
        "<h3>Title</h3><h4>Part</h4><table><thead><tr><th>a</th></tr></thead>"
        "<tbody><tr><td>1</td></tr></tbody></table><pre>plain</pre>"
    )


# ---------------------------------------------------------------------- notebook variables


ROWS = (np.random.default_rng(0).random((12, 8), dtype=np.float32), np.arange(12) % 3)


def test_a_notebook_variable_resolves_only_inside_its_scope():
    assert datasets.notebook_variables.get() is None
    with datasets.notebook_scope({"rows": ROWS, "five": ROWS[0][:5]}):
        assert datasets.load("rows").name == "rows" and len(datasets.load("rows")) == 12
        assert predict_inputs((), None, "five").shape == (5, 8)
    assert datasets.notebook_variables.get() is None
    with pytest.raises(UsageError, match="is neither a file nor a known dataset"):
        datasets.load("rows")
    with pytest.raises(UsageError, match="neither a notebook variable nor a .npy file"):
        predict_inputs((), None, "five")


def test_the_scope_is_reset_when_the_command_fails_and_nests():
    with pytest.raises(UsageError), datasets.notebook_scope({"rows": ROWS}):
        with datasets.notebook_scope({"other": ROWS}):
            assert datasets.notebook_variable("rows") == (False, None)
        assert datasets.notebook_variable("rows")[0]
        raise UsageError("the command failed")
    assert datasets.notebook_variables.get() is None
    assert datasets.notebook_variable("rows") == (False, None)


def test_the_magic_lends_its_variables_for_one_command(maas_shell, monkeypatch):
    import maas_lab.cli

    seen = []

    def command(args, prog_name):
        seen.append((args, datasets.load("rows").name))
        if args == ["fail"]:
            raise UsageError("no such command")
        return "done"

    monkeypatch.setattr(maas_lab.cli, "run", command)
    maas_shell.user_ns["rows"] = ROWS
    assert maas_shell.run_line_magic("maas", "list --data rows") == "done"
    with pytest.raises(UsageError, match="no such command"):
        maas_shell.run_line_magic("maas", "fail")
    assert seen == [(["list", "--data", "rows"], "rows"), (["fail"], "rows")]
    assert datasets.notebook_variables.get() is None  # after the magic, in the same kernel
    with pytest.raises(UsageError, match="is neither a file nor a known dataset"):
        datasets.load("rows")


def test_a_later_python_call_does_not_see_the_notebook(maas_shell, tiny_torch_model):
    """The defect: `%maas compare ... --data rows` in one cell left the notebook's
    variables in a module global, so `api.compare(..., data="rows")` later still found them."""
    api.register(
        "tiny",
        from_torch=tiny_torch_model["factory"],
        config=json.dumps(tiny_torch_model["config"]),
        weights=tiny_torch_model["weights"],
        inputs=["input:float32:batch,8"],
    )
    maas_shell.user_ns["rows"] = ROWS
    report = maas_shell.run_line_magic(
        "maas", "compare tiny@1 --data rows --budget-s 0.05 --no-log"
    )
    assert report["rows"][0]["ref"] == "tiny@1"
    with pytest.raises(UsageError, match="is neither a file nor a known dataset"):
        api.compare("tiny@1", data="rows", budget_s=0.05, log=False)


# ---------------------------------------------------------------------- job handles


def _record(status: str = "succeeded") -> int:
    reg = api.registry()
    job_id = jobs.insert(
        reg.db,
        {
            "launcher": "accelerate",
            "kind": "script",
            "target": "/somewhere/train.py",
            "options": {"processes": 1},
            "register_as": None,
            "metric": None,
            "status": status,
            "timeline": {},
        },
    )
    jobs.update(reg.db, job_id, world_size=1, error="bad" if status == "failed" else None)
    return job_id


def test_a_job_handle_shows_and_reads_as_its_record(maas_home):
    job_id = _record()
    job = Job(job_id, maas_home)
    shown = control.show(job_id)
    assert isinstance(job, Report) and job.id == job_id and job.root == maas_home
    assert str(job) == str(shown) and job._repr_html_() == shown._repr_html_()
    assert job._repr_mimebundle_() == {"text/plain": str(shown), "text/html": shown._repr_html_()}
    assert job.title == shown.title and len(job.parts) == len(shown.parts)
    assert job.data == shown.data and job["id"] == job.data["id"] == job_id
    assert list(job) == list(shown.data) and len(job) == len(shown.data) and "status" in job
    assert job.status == "succeeded" and repr(job) == f"Job({job_id}, status='succeeded')"
    # the functions that take a job's number take its handle
    assert api.job(job) is job and api.job(job_id).data["id"] == job_id
    assert api.wait(job)["status"] == "succeeded"  # nothing to follow: it already ended
    assert job.wait()["status"] == "succeeded"
    with pytest.raises(UsageError, match="already succeeded"):
        job.cancel()
    assert job.logs(3).text == "(no log)" and f"job {job_id}'s log" in job.logs().title
    assert api.logs(job).title == api.logs(job_id).title == job.logs().title
    # read afresh: the handle follows the record
    jobs.update(api.registry().db, job_id, status="failed", error="it broke")
    assert job.status == "failed" and job["error"] == "it broke" and "failed" in str(job)
    with pytest.raises(JobFailed, match="it broke") as failed:
        job.wait()
    assert failed.value.report["status"] == "failed"


def test_a_job_handle_renders_in_ipython_as_the_report_did(maas_shell):
    job = Job(_record(), api.registry().root)
    data, _ = maas_shell.display_formatter.format(job)
    assert data["text/plain"] == str(control.show(job.id))
    assert data["text/html"] == control.show(job.id)._repr_html_()


def test_a_job_handle_repr_survives_a_missing_record(maas_home):
    api.registry()
    assert repr(Job(999, maas_home)) == "Job(999)"


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


@slow
def test_a_detached_job_handle_waits_for_the_succeeded_record(maas_home, tmp_path):
    pytest.importorskip("accelerate")
    script = _script(
        tmp_path,
        """
        def train(accelerator, registry):
            for i in range(3):
                print("hello from rank", accelerator.process_index, "line", i, flush=True)
        """,
    )
    job = api.launch(script, processes=1, wait=False)
    assert isinstance(job, Job) and job["id"] == job.id and job.data["pid"]
    assert job.status in ("starting", "running", "succeeded")
    final = job.wait()
    assert final.data["status"] == "succeeded" and final.data["id"] == job.id
    assert job.status == "succeeded" and str(job) == str(final)
    assert job._repr_html_() == final._repr_html_()
    log = job.logs()
    assert "hello from rank 0 line 2" in log.text and f"job {job.id}'s log" in log.title
    assert job.logs(lines=1).text.count("hello from rank") <= 1
    with pytest.raises(UsageError, match="already succeeded"):
        job.cancel()


@slow
def test_a_detached_job_handle_cancels_a_sleeping_job(maas_home, tmp_path):
    pytest.importorskip("accelerate")
    script = _script(
        tmp_path,
        """
        import time

        def train(accelerator, registry):
            print("asleep", flush=True)
            time.sleep(120)
        """,
    )
    job = api.launch(script, processes=1, wait=False)
    folder = jobs.job_dir(maas_home, job.id)
    deadline = time.monotonic() + 90
    while "asleep" not in job.logs().text and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status == "running", job.logs(lines=20).text
    report = job.cancel()
    assert report["status"] == "cancelled" and "every process stopped" in report.title
    assert job.status == "cancelled" and jobs.processes(folder) == []
