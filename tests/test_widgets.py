"""The widget panels, driven from Python against a real registry: type, click (set what a
click sets), read what the widgets hold. Work the panels run in threads is awaited with
``task.join()``; live views are polled until they change. The same panels are checked in a
real browser by tests/test_panels_browser.py."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import textwrap
import time

import pytest

pytest.importorskip("anywidget")
pytest.importorskip("torch")

from maas_lab import api  # noqa: E402
from maas_lab.errors import UsageError  # noqa: E402
from maas_lab.hints import command_with, prog_scope  # noqa: E402
from maas_lab.testing import registry_snapshot  # noqa: E402
from maas_lab.widgets import (  # noqa: E402
    CompressPanel,
    JobsPanel,
    ModelsPanel,
    Panel,
    ServePanel,
)

slow = pytest.mark.slow

CARD = textwrap.dedent(
    """\
    # Tiny classifier

    A **small** MLP for tests. <script>alert("card")</script>
    [click](javascript:alert(1))
    """
)


def until(check, timeout=20.0, every=0.05):
    """Wait for ``check()`` to be true (a poller or a debounce runs in a thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {check}")


@pytest.fixture
def tiny(maas_home, tiny_torch_model, tmp_path):
    """tiny@1 (torch, with a card and a tag), tiny@2 (its ONNX export), other@1."""
    card = tmp_path / "README.md"
    card.write_text(CARD)
    api.register(
        "tiny",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
        task="classification",
        card=card,
        tags=["team=vision"],
        inputs=["input:float32:batch,8"],
    )
    api.export("tiny@1", "onnx")
    api.register(
        "other",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
        task="regression",
        description="a second model about forecasting",
        inputs=["input:float32:batch,8"],
    )
    return maas_home


# ---------------------------------------------------------------------- Models


def test_an_empty_registry_is_a_friendly_empty_state(maas_home):
    panel = ModelsPanel(debounce_s=0)
    try:
        assert panel.status_text == "No models yet"
        assert panel.table.rows == []
        assert "No models yet. Register one: %maas register NAME" in panel.table.empty
        assert repr(panel) == "Models panel: No models yet"
        assert panel.detail.layout.display == "none"
    finally:
        panel.close()


def test_search_as_you_type_fills_the_table_and_a_click_opens_the_version(tiny, monkeypatch):
    show = api.show
    panel = ModelsPanel(debounce_s=0.05)
    try:
        assert panel.table.order() == ["other@1", "tiny@2", "tiny@1"]
        assert "3 version(s) of 2 model(s)" in panel.status_text
        panel.search.value = "forecasting"  # debounced: the table changes a moment later
        until(lambda: panel.table.order() == ["other@1"])
        panel.search.value = "vision"  # a tag
        until(lambda: panel.table.order() == ["tiny@2", "tiny@1"])
        row = next(r for r in panel.table.rows if r["key"] == "tiny@2")
        assert row["cells"]["format"] == "onnx" and row["cells"]["task"] == "classification"
        assert "parity_min_cosine" in row["cells"]["metrics"]

        panel.table.selected = "tiny@2"  # what a click on the row sends
        assert panel.detail.layout.display == ""
        assert "tiny@2" in panel.title.value
        refs = [n["ref"] for n in panel.graph.nodes]
        assert refs == ["tiny@1", "tiny@2"]
        (edge,) = panel.graph.edges
        assert (edge["parent"], edge["child"]) == ("tiny@1", "tiny@2")
        assert edge["label"].startswith("export onnx, size ")
        assert "parity cosine 1.0000" in edge["label"]
        assert panel.graph.current == "tiny@2"
        assert "model.onnx" in panel.summary.value and "maas-files" in panel.summary.value
        # The card is Markdown, and nothing in it can run in the page.
        assert "<strong>small</strong>" in panel.card.value
        assert "<script>" not in panel.card.value and "&lt;script&gt;" in panel.card.value
        assert "javascript:" not in panel.card.value

        panel.graph.clicked = "tiny@1"  # a click on a lineage node opens that version
        assert panel.selected == "tiny@1" and panel.table.selected == "tiny@1"

        # Typing a search reads the list, not the open version again (nothing changed).
        reads = []
        monkeypatch.setattr(api, "show", lambda *a, **k: reads.append(a) or show(*a, **k))
        panel.search.value = "forecasting"
        until(lambda: panel.table.order() == ["other@1"])
        with panel.lock:  # the refresh has finished
            assert reads == []
    finally:
        panel.close()


def test_columns_sort_by_value_not_by_text(tiny):
    panel = ModelsPanel(debounce_s=0)
    try:
        sizes = {r["key"]: r["sort"]["size"] for r in panel.table.rows}
        panel.table.sort_by = "size"  # what a click on the header sends
        assert panel.table.order() == sorted(sizes, key=sizes.get)
        panel.table.descending = True
        assert panel.table.order() == sorted(sizes, key=sizes.get, reverse=True)
    finally:
        panel.close()


@pytest.mark.parametrize("text", ['"unbalanced', "AND AND", "*", "tiny OR", "NEAR(", "-", "'"])
def test_search_syntax_is_read_as_plain_words(tiny, text):
    panel = ModelsPanel(debounce_s=0)
    try:
        panel.search.value = text
        assert "color: var(--jp-error" not in panel.status.value, panel.status.value
        assert panel.status_text.startswith("0 version(s) matching") or panel.table.rows
    finally:
        panel.close()


def test_actions_move_an_alias_tag_and_write_a_bundle_with_the_line_for_a_cell(tiny, tmp_path):
    panel = ModelsPanel(debounce_s=0)
    try:
        panel.show_version("tiny@1")
        panel.alias_name.value = "prod"
        panel.move_alias.click()
        panel.task.join(30)
        assert api.resolve("tiny@prod") == "tiny@1"
        assert panel.line.value == "%maas alias tiny prod 1"
        assert panel.task.text == "tiny@prod -> @1: done. The same as a cell: " + panel.line.value
        assert "elsewhere" not in panel.task.text  # the panel's own change
        assert "prod" in panel.title.value

        panel.tag_text.value = "stage=qa reviewed"
        panel.add_tag.click()
        panel.task.join(30)
        assert api.show("tiny@1")["tags"] == {"team": "vision", "stage": "qa", "reviewed": ""}
        assert panel.line.value == "%maas tag tiny@1 stage=qa reviewed"

        panel.bundle_path.value = str(tmp_path) + "/"
        panel.bundle.click()
        panel.task.join(60)
        assert (tmp_path / "tiny-1.maas.tar").exists()
        assert f"done (wrote {tmp_path / 'tiny-1.maas.tar'})" in panel.task.text
        assert panel.line.value.startswith("%maas bundle export tiny@1 ")
        assert panel.task.last_error == ""
    finally:
        panel.close()


def test_a_failed_action_says_why_in_one_line_and_changes_nothing(tiny):
    panel = ModelsPanel(debounce_s=0)
    try:
        panel.show_version("tiny@1")
        before = registry_snapshot(tiny)
        panel.alias_name.value = ""
        panel.move_alias.click()  # nothing typed: refused before anything runs
        assert "Type the alias" in panel.task.text and panel.line.value == ""
        panel.alias_name.value = "no good!"
        panel.move_alias.click()
        panel.task.join(30)
        assert panel.task.last_error.startswith("Usage error: ")
        assert "\n" not in panel.task.last_error and "Traceback" not in panel.task.last_error
        assert panel.line.value == ""
        assert registry_snapshot(tiny) == before
    finally:
        panel.close()


def test_the_panel_refreshes_when_another_notebook_changes_the_registry(tiny, tmp_path):
    panel = ModelsPanel(debounce_s=0, poll_s=0.2)
    try:
        panel.show_version("tiny@2")
        api.alias("tiny", "prod", 2)  # from elsewhere: another notebook, a terminal
        until(lambda: "Aliases of tiny@2 changed elsewhere: now prod" in panel.task.message.value)
        row = next(r for r in panel.table.rows if r["key"] == "tiny@2")
        assert row["cells"]["aliases"] == "prod" and "(prod)" in panel.title.value
        api.tag("tiny@1", ["seen"])
        until(lambda: "The registry changed elsewhere" in panel.task.message.value)

        panel.show_version("other@1")
        # Versions are immutable and no command deletes one; a database tool can. The
        # panel says the version is gone instead of failing.
        with sqlite3.connect(tiny / "registry.db") as db:
            (vid,) = db.execute(
                "select v.id from versions v join models m on m.id = v.model_id "
                "where m.name = 'other'"
            ).fetchone()
            for table in ("files", "tags", "metrics", "aliases"):
                db.execute(f"delete from {table} where version_id = ?", [vid])
            db.execute("delete from lineage where child_id = ? or parent_id = ?", [vid, vid])
            db.execute("delete from versions where id = ?", [vid])
        until(lambda: "other@1 is gone" in panel.task.message.value)
        assert panel.detail.layout.display == "none"
        assert "other@1" not in panel.table.order()
    finally:
        panel.close()
    panel.poller.thread.join(5)
    assert not panel.poller.thread.is_alive()  # closing the panel stops its polling


def test_nothing_from_the_registry_reaches_the_page_as_markup(maas_home, tmp_path):
    """A registry can hold what a bundle or a database tool wrote: a format, a description,
    tags and a card are shown as text, and a card's remote images are not loaded."""
    from maas_lab.registry.registry import FileSpec
    from maas_lab.widgets.models import markdown

    evil = "<img src=x onerror=alert(1)>"
    blob = tmp_path / "w.bin"
    blob.write_bytes(b"weights")
    api.registry().register(
        "odd", [FileSpec(blob, "w.bin")], evil, description=evil, tags={"k": evil}, card=evil
    )
    models = ModelsPanel(debounce_s=0)
    compress = CompressPanel()
    try:
        models.show_version("odd@1")
        shown = models.title.value + models.summary.value + models.card.value
        compress.version.value = "odd@1"
        shown += compress.about.value + models.status.value
        assert "<img" not in shown and "&lt;img src=x onerror=alert(1)&gt;" in shown
        assert next(r for r in models.table.rows)["cells"]["format"] == evil  # textContent
    finally:
        models.close()
    card = markdown("![logo](https://tracker.example/p.png) ![ok](data:image/png;base64,AA==)")
    assert "tracker.example" in card and '<img src="https://' not in card
    assert '<img src="data:image/png;base64,AA==' in card
    assert 'rel="noopener noreferrer"' in markdown("[docs](https://example.org)")


def test_the_version_column_sorts_2_before_10_and_blanks_last():
    from maas_lab.widgets.table import RowTable

    table = RowTable()
    rows = [
        {"key": k, "cells": {}, "sort": {"ref": ["m", n], "took": t}}
        for k, n, t in (("m@10", 10, 4.5), ("m@2", 2, None), ("m@1", 1, 30.0))
    ]
    table.show([("ref", "version"), ("took", "took")], rows)
    table.sort_by = "ref"
    assert table.order() == ["m@1", "m@2", "m@10"]
    table.sort_by = "took"
    assert table.order() == ["m@10", "m@1", "m@2"]
    assert all(isinstance(v, int) for r in table.rows for v in r["sort"].values())


def test_the_api_the_panels_use_refuses_bad_arguments_by_name(tiny):
    before = registry_snapshot(tiny)
    with pytest.raises(UsageError, match=r"limit=0: list at least 1 version"):
        api.versions(limit=0)
    with pytest.raises(UsageError, match="a model name or search words, not both"):
        api.versions("tiny", search="vision")
    with pytest.raises(api.NotFoundError):
        api.versions("nosuch")
    with pytest.raises(UsageError, match="Unknown component kind 'compresor'; kinds are "):
        api.components("compresor")
    with pytest.raises(UsageError, match="No option schema for 'deploy'; commands: serve, "):
        api.schema("deploy")
    with pytest.raises(UsageError, match="'tiny' has no version 9; its versions are 1..2"):
        api.lineage("tiny@9")
    assert registry_snapshot(tiny) == before


# ---------------------------------------------------------------------- Compress
# ---------------------------------------------------------------------- Compress


def test_the_compress_form_comes_from_the_compressors_schema(tiny):
    panel = CompressPanel()
    assert panel.version.value == "other@1"  # the newest, with the first compressor for it
    assert panel.compressor.value == panel.compressor.options[0] and panel.form.params
    panel.version.value = "tiny@1"
    assert "prune" in panel.compressor.options and "ort-int8" not in panel.compressor.options
    panel.compressor.value = "prune"
    names = [p.name for p in panel.form.params]
    assert names[:5] == ["data", "calibration", "max_drop", "allow_over_budget", "budget_s"]
    assert {"sparsity", "structured", "storage"} <= set(names)
    panel.version.value = "tiny@2"  # ONNX: the list follows the format
    assert "ort-int8" in panel.compressor.options and "prune" not in panel.compressor.options


@slow
def test_a_wrong_value_is_marked_inline_and_a_right_one_registers_a_version(tiny):
    panel = CompressPanel()
    panel.version.value = "tiny@1"
    panel.compressor.value = "prune"
    before = registry_snapshot(tiny)
    panel.form.fields["sparsity"].value = "abc"
    panel.form.fields["budget_s"].value = "0.2"
    assert panel.compress() is False
    assert panel.form.problem("sparsity") == "--sparsity expects a float, got 'abc'."
    assert panel.form.problem("budget_s") == ""
    assert not panel.task.busy and registry_snapshot(tiny) == before

    events = []
    panel.form.fields["sparsity"].value = "0.5"
    assert panel.compress() is True
    panel.task.join(120)
    assert panel.task.last_error == ""
    assert panel.form.problem("sparsity") == ""
    assert api.resolve("tiny") == "tiny@3"
    assert panel.line.value == "%maas compress tiny@1 --with prune --budget-s 0.2"
    assert "tiny@3" in panel.report.value and "<table" in panel.report.value
    assert "tiny@3" in panel.version.options
    assert panel.task.bar.value == 1.0 and panel.task.bar.bar_style == "success"
    del events


@slow
def test_compare_mode_measures_the_chosen_versions(tiny):
    panel = CompressPanel()
    panel.mode.value = "Compare"
    assert panel.compress_box.layout.display == "none"
    panel.versions.value = ("tiny@2", "tiny@1")  # the page sends them newest first
    panel.compare_form.fields["budget_s"].value = "0.2"
    panel.compare_form.fields["log"].value = False
    assert panel.compare() is True
    panel.task.join(120)
    assert panel.task.last_error == ""
    assert panel.line.value == "%maas compare tiny@1 tiny@2 --budget-s 0.2 --no-log"
    assert "tiny@1" in panel.report.value and "tiny@2" in panel.report.value


# ---------------------------------------------------------------------- Serve


@slow
def test_serve_start_watch_try_and_stop(tiny):
    panel = ServePanel(poll_s=0.3)
    try:
        assert panel.server.options == ()
        assert "No server is running" in panel.url.value
        panel.version.value = "tiny@2"
        assert panel.form.params == ()  # built when "Server options" is opened
        panel.options.selected_index = 0
        assert panel.form.fields["port"].value == "0"
        panel.form.fields["port"].value = "not a port"
        assert panel.start() is False
        assert panel.form.problem("port") == "--port expects an int, got 'not a port'."
        panel.form.fields["port"].value = "0"
        panel.form.fields["token"].value = "s3cret-token-for-the-panel"
        assert type(panel.form.fields["token"]).__name__ == "Password"
        assert panel.start() is True
        panel.task.join(120)
        assert panel.task.last_error == ""
        assert panel.server.value == "tiny"
        assert panel.line.value == "%maas serve tiny@2 --port 0"  # the token is not written
        assert panel.form.fields["token"].value == ""  # nor kept in the page's state
        assert "http://127.0.0.1:" in panel.url.value

        panel.try_text.value = "[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]]"
        for _ in range(20):
            panel.try_it()
            panel.task.join(30)
        assert panel.task.last_error == ""
        assert "(version 2)" in panel.answer.value  # which version answered
        until(lambda: any(y > 0 for _, y in panel.chart.points("requests/s", "req/s")))
        assert panel.chart.points("latency ms", "p50")

        panel.try_text.value = "[[0.1, "
        assert panel.try_it() is False  # not JSON: said, nothing sent
        panel.stop()
        panel.task.join(60)
        assert panel.task.last_error == ""
        assert panel.line.value == "%maas stop tiny"
        until(lambda: panel.poller is None or not panel.poller.running)
        assert api.status().rows == []
    finally:
        panel.close()
        for row in api.status().rows:
            api.stop(row["server"])


@slow
def test_a_server_that_died_behind_the_panel_shows_as_stopped_with_its_log(tiny):
    handle = api.serve("tiny@2", port=0)
    panel = ServePanel(poll_s=0.3)
    try:
        assert panel.server.value == handle.name
        pids = [int(p) for p in api.status().rows[0]["pids"].split()]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        until(lambda: "stopped" in panel.url.value, timeout=30)
        assert "log" in panel.log_view.value and "serving" in panel.log_view.value
        until(lambda: not panel.poller.running)
    finally:
        panel.close()


# ---------------------------------------------------------------------- Jobs


@slow
def test_jobs_show_status_a_loss_chart_and_the_log(maas_home, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from maas_lab.training import report
            for step in range(1, 31):
                report(step, total=30, loss=1.0 / step, samples=8)
                time.sleep(0.05)
            print("trained")
            """
        )
    )
    panel = JobsPanel(poll_s=0.3)
    try:
        assert panel.table.rows == [] and "No jobs yet" in panel.table.empty
        job = api.launch(str(script), processes=1, wait=False)
        until(lambda: panel.table.rows, timeout=30)
        panel.table.selected = str(job.id)
        job.wait()
        until(lambda: panel.statuses.get(str(job.id)) == "succeeded", timeout=30)
        losses = panel.chart.points("loss", "loss")
        assert len(losses) >= 4 and losses[-1][1] < losses[0][1]  # reports are 0.25 s apart
        until(lambda: "trained" in panel.log_view.value, timeout=10)
        assert panel.cancel_button.disabled
    finally:
        panel.close()


# ---------------------------------------------------------------------- %maas lines


def _sample(p):
    """A value other than the default for every kind of Param, as a user types it."""
    if p.type == "bool":
        return not p.default
    if p.choices:
        return p.choices[-1]
    value = {"int": 3, "float": 0.5, "code": "maas_lab.zoo:mlp"}.get(p.type, "x=1")
    return [value] if p.multiple else value


def _parses(name: str, line: str, component_params=()) -> None:
    """``line`` is ``%maas NAME ...`` and click parses it as that command; a plugin's own
    options (which the command hands to the plugin) are each one of its Params."""
    from maas_lab.cli import cli

    words = shlex.split(line)
    assert words[:2] == ["%maas", name], line
    cmd = cli.commands[name]
    cmd.make_context(name, words[2:])
    flags = {p.cli_flag for p in component_params}
    flags |= {"--no-" + p.cli_flag[2:] for p in component_params if p.type == "bool"}
    core = {
        o for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
    }
    for word in words:
        if word.startswith("--"):
            assert word in core | flags | {"--with"}, f"{word} in {line}"


def test_every_line_a_panel_writes_from_a_form_parses_as_its_command():
    """The lines the static check of test_hints cannot read (built from a schema at run
    time, through hints.command_with), built for every schema with every option set."""
    from maas_lab.widgets.form import SchemaForm

    def line(name, args, form, fixed=None):
        values = {p.name: _sample(p) for p in form.params}
        with prog_scope("%maas"):
            return command_with(name, args, {**(fixed or {}), **form.as_typed(values)})

    checked = 0
    for comp in api.components("compressor"):
        form = SchemaForm(tuple(api.schema("compress")) + comp["params"])
        _parses(
            "compress", line("compress", ("m@1",), form, {"with_": comp["name"]}), comp["params"]
        )
        checked += 1
    _parses("serve", line("serve", ("m@1",), SchemaForm(api.schema("serve"))))
    _parses("compare", line("compare", ("m@1", "m@2"), SchemaForm(api.schema("compare"))))
    with prog_scope("%maas"):
        _parses("tag", command_with("tag", ("m@1", "stage=qa", "reviewed")))
    assert checked >= 3  # the walk found the compressors


# ---------------------------------------------------------------------- the whole panel


def test_panel_magic_shows_tabs_or_one_and_refuses_what_it_does_not_know(maas_shell):
    panel = maas_shell.run_line_magic("maas", "panel")
    try:
        assert isinstance(panel, Panel)
        assert panel.titles == ("Models", "Compress", "Serve", "Jobs")
        assert (
            repr(panel) == "maas panel (Models, Compress, Serve, Jobs): Models panel: No models yet"
        )
        assert list(panel.panels) == ["models"]  # a tab is built when first opened
        panel.selected_index = 2  # what a click on the tab's title sends
        assert isinstance(panel.panels["serve"], ServePanel)
        assert panel.tab("jobs") is panel.tab("jobs")
    finally:
        panel.close()
    one = maas_shell.run_line_magic("maas", "panel serve")
    try:
        assert isinstance(one, ServePanel)
    finally:
        one.close()
    assert "Usage: %maas panel [TAB]" in maas_shell.run_line_magic("maas", "panel --help")
    # `#` starts a comment only where a word starts: `%maas panel  # note` is the panel
    jobs = maas_shell.run_line_magic("maas", "panel jobs  # the jobs")
    assert isinstance(jobs, JobsPanel)
    jobs.close()
    from maas_lab.magics import without_comment

    line = without_comment("tag m@1 note=#1 'a #b' c\\ #d # why")
    assert shlex.split(line) == ["tag", "m@1", "note=#1", "a #b", "c #d"]
    with pytest.raises(UsageError, match="No panel 'modles'; panels: models, compress"):
        maas_shell.run_line_magic("maas", "panel modles")
    with pytest.raises(UsageError, match="no option --bogus"):
        maas_shell.run_line_magic("maas", "panel --bogus")
