"""Progress as a person sees it: named steps in order, one truthful final line (done, or
where it failed), only text/html and text/plain in a notebook's saved outputs, nothing at
all with MAAS_LAB_PROGRESS=0, and listeners that cannot break the work. Also the short
`compress --help` and the one-compressor `--with NAME --help`."""

from __future__ import annotations

import re

import pytest

from maas_lab import api, progress
from maas_lab.cli import run
from maas_lab.plugins import get_plugins


@pytest.fixture
def shown(monkeypatch):
    monkeypatch.setenv("MAAS_LAB_PROGRESS", "1")


@pytest.fixture
def notebook(shown, monkeypatch):
    """A real IPython shell whose display outputs are captured, taken for a kernel's."""
    IPython = pytest.importorskip("IPython")
    from IPython.utils.capture import capture_output

    IPython.core.interactiveshell.InteractiveShell.instance()
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    return capture_output


def steps_of(events: list[dict]) -> list[str]:
    """The step names in the order they started."""
    out = []
    for e in events:
        if e["step"] is not None and (not out or out[-1] != e["step"]):
            out.append(e["step"])
    return out


def test_steps_report_in_order_and_end_in_one_line_with_each_step_time():
    events = []
    with progress.listening(events.append):
        with progress.steps("export m@1 to onnx", ["load", "export", "register"]) as p:
            p.step("load")
            p.step("export")
            p.step("register")
            p.done("m@2")
    assert steps_of(events) == ["load", "export", "register"]
    assert [e["index"] for e in events[:3]] == [1, 2, 3]
    assert {e["total"] for e in events} == {3}
    assert {e["title"] for e in events} == {"export m@1 to onnx"}
    assert [e["state"] for e in events] == ["running"] * 3 + ["done"]
    *running, last = events
    assert all(e["summary"] is None for e in running)
    assert re.fullmatch(
        r"export m@1 to onnx: done in \d+\.\d s "
        r"\(load \d+\.\d s, export \d+\.\d s, register \d+\.\d s\): m@2",
        last["summary"],
    )
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1
    assert all(set(e) >= {"elapsed_s", "fraction", "summary"} for e in events)


def test_leaving_the_block_ends_it_and_an_inner_bar_reports_into_its_step(monkeypatch):
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0)
    events = []
    with progress.listening(events.append):
        with progress.steps("train", ["prepare", "fit"]) as p:
            p.step("prepare")
            p.step("fit")
            bar = progress.bar(4, "epochs", unit="epoch")
            for _ in range(4):
                bar.update()
            bar.close()
    inner = [e for e in events if e["detail"]]
    assert [e["detail"] for e in inner] == [f"epochs {n}/4 epoch" for n in (1, 2, 3, 4)]
    assert [e["fraction"] for e in inner] == [0.625, 0.75, 0.875, 1.0]
    assert events[-1]["state"] == "done"
    assert events[-1]["summary"].startswith("train: done in ")


@pytest.mark.parametrize(
    "error, state", [(ValueError("broken"), "failed"), (KeyboardInterrupt(), "interrupted")]
)
def test_a_failure_says_at_which_step_and_passes_through_unchanged(error, state):
    events = []
    with pytest.raises(type(error)) as caught:
        with progress.listening(events.append):
            with progress.steps("export m@1 to onnx", ["load", "parity check"]) as p:
                p.step("load")
                p.step("parity check")
                raise error
    assert caught.value is error
    assert events[-1]["state"] == state
    assert re.fullmatch(
        rf"export m@1 to onnx: {state} at parity check after \d+\.\d s", events[-1]["summary"]
    )


def test_a_notebook_gets_html_and_text_only_and_its_last_update_is_the_final_line(notebook):
    with notebook() as captured:
        with progress.steps("compare a@1, a@2", ["a@1", "a@2", "measure"]) as p:
            for name in ("a@1", "a@2", "measure"):
                p.step(name)
    outputs = captured.outputs
    assert len(outputs) == 4  # one display, then one update per step and the end
    assert not outputs[0].update and all(o.update for o in outputs[1:])
    assert {key for o in outputs for key in o.data} == {"text/plain", "text/html"}
    assert "2/3 a@2" in outputs[1].data["text/plain"]
    assert "<progress" in outputs[1].data["text/html"]
    final = outputs[-1].data
    assert re.fullmatch(
        r"compare a@1, a@2: done in \d+\.\d s \(.*measure \d+\.\d s\)", final["text/plain"]
    )
    assert final["text/plain"] in final["text/html"] and "<progress" not in final["text/html"]
    assert captured.stdout == "" and captured.stderr == ""


def test_a_failure_in_a_notebook_leaves_the_failed_line(notebook):
    with notebook() as captured, pytest.raises(RuntimeError):
        with progress.steps("compress m@1 with prune", ["load", "compress"]) as p:
            p.step("load")
            p.step("compress")
            raise RuntimeError("boom")
    assert re.fullmatch(
        r"compress m@1 with prune: failed at compress after \d+\.\d s",
        captured.outputs[-1].data["text/plain"],
    )


def test_a_byte_bar_in_a_notebook_is_no_widget_and_ends_in_a_truthful_line(notebook):
    with notebook() as captured:
        bar = progress.byte_bar(64 * 1000 * 1000, "registering")
        for _ in range(4):
            bar.update(16 * 1000 * 1000)
        bar.close()
    assert {key for o in captured.outputs for key in o.data} == {"text/plain", "text/html"}
    assert re.fullmatch(
        r"registering: 64\.0 MB in \d+\.\d s", captured.outputs[-1].data["text/plain"]
    )


def test_a_terminal_gets_a_line_per_step_on_stderr_and_nothing_on_stdout(shown, capsys):
    with progress.steps("export m@1 to onnx", ["load", "export"]) as p:
        p.step("load")
        p.step("export")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[:2] == ["export m@1 to onnx: 1/2 load", "export m@1 to onnx: 2/2 export"]
    assert lines[2].startswith("export m@1 to onnx: done in ")


def test_progress_off_shows_nothing(notebook, monkeypatch, capsys):
    monkeypatch.setenv("MAAS_LAB_PROGRESS", "0")
    with notebook() as captured:
        with progress.steps("export m@1 to onnx", ["load"]) as p:
            p.step("load")
            bar = progress.bar(3, "inner")
            bar.update(3)
            bar.close()
        assert progress.byte_bar(10**9, "registering") is None
        silent = progress.bar(3, "alone")
        silent.update()
        silent.close()
    assert captured.outputs == [] and captured.stdout == "" and captured.stderr == ""
    assert capsys.readouterr() == ("", "")


def test_a_listener_is_the_display_and_one_that_raises_breaks_nothing(notebook, caplog):
    calls = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("the panel is gone")

    with notebook() as captured, progress.listening(broken):
        with progress.steps("work", ["one", "two"]) as p:
            p.step("one")
            p.step("two")
            result = 42
    assert result == 42 and len(calls) == 3
    assert captured.outputs == []  # the listener is the display
    assert "progress listener raised" in caplog.text


def test_library_bars_are_silenced_inside_steps_and_restored():
    hf_logging = pytest.importorskip("transformers.utils.logging")
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        with progress.steps("load", ["load"]):
            assert not hf_logging.is_progress_bar_enabled()
            assert progress.libraries_quiet()
        assert hf_logging.is_progress_bar_enabled()
    finally:
        if not was:
            hf_logging.disable_progress_bar()


def test_a_real_export_reports_its_steps_in_order(maas_home, tiny_torch_model):
    pytest.importorskip("onnx")
    api.register(
        "digits-mlp",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
        inputs=["input:float32:batch,8"],
    )
    events = []
    with progress.listening(events.append):
        report = api.export("digits-mlp@1", "torchscript")
    assert steps_of(events) == ["load", "export", "parity check", "register"]
    assert events[-1]["title"] == "export digits-mlp@1 to torchscript"
    assert events[-1]["state"] == "done"
    assert events[-1]["summary"].endswith(f": {report['ref']}")


def test_a_real_compare_has_one_step_per_version(maas_home, tiny_torch_model):
    for _ in range(2):
        api.register(
            "digits-mlp",
            from_torch=tiny_torch_model["factory"],
            config=tiny_torch_model["config"],
            weights=tiny_torch_model["weights"],
            inputs=["input:float32:batch,8"],
        )
    events = []
    with progress.listening(events.append):
        api.compare("digits-mlp@1", "digits-mlp@2", budget_s=0.05, log=False)
    assert steps_of(events) == ["digits-mlp@1", "digits-mlp@2", "measure"]
    assert events[-1]["summary"].startswith("compare digits-mlp@1, digits-mlp@2: done in ")


# ---------------------------------------------------------------------- help


def test_compress_help_is_short_and_names_every_compressor(capsys):
    assert run(["compress", "--help"]) is None
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 35
    for name in get_plugins().components["compressor"]:
        assert re.search(rf"^  {re.escape(name)} ", out, re.M), name
    assert "--sparsity" not in out and "--smooth" not in out  # no compressor's options
    assert "`maas compress --with NAME --help`" in out


def test_compress_with_a_compressor_help_shows_only_its_options(capsys):
    comps = get_plugins().components["compressor"]
    assert "prune" in comps and "ort-int8" in comps
    assert run(["compress", "--with", "prune", "--help"]) is None
    out = capsys.readouterr().out
    assert "--with COMPRESSOR" in out and "--max-drop" in out  # the core options
    assert "Options of the prune compressor" in out
    assert all(p.cli_flag in out for p in comps["prune"].params)
    assert "--smooth" not in out and "--outliers" not in out  # ort-int8's
    assert "--student" not in out  # distill's
    assert "Other compressors: ort-int8" in out


def test_magic_compress_with_help(maas_shell, capsys):
    assert maas_shell.run_line_magic("maas", "compress --with ort-int8 --help") is None
    out = capsys.readouterr().out
    assert out.startswith("Usage: %maas compress")
    assert "Options of the ort-int8 compressor" in out and "--smooth" in out
    assert "--sparsity" not in out


def test_export_help_lists_exporters_and_to_picks_one(capsys):
    assert run(["export", "--help"]) is None
    out = capsys.readouterr().out
    assert "--opset" not in out and re.search(r"^  onnx ", out, re.M)
    assert run(["export", "--to", "onnx", "--help"]) is None
    out = capsys.readouterr().out
    assert "Options of the onnx exporter" in out and "--opset" in out
