"""The plugin core: entry points, a real third-party package, and broken plugins."""

import json
import os
import subprocess
import sys

import pytest

from maas_lab import Component, api, hookimpl
from maas_lab.errors import NotFoundError, UsageError
from maas_lab.plugins import Plugins, set_plugins


def test_builtins_load_through_entry_points(maas_plugins):
    names = set(maas_plugins.info)
    assert {"torch", "hf", "onnx"} <= names
    assert maas_plugins.info["torch"].distribution == "maas-lab"
    loaders = maas_plugins.components["loader"]
    assert loaders["torch-factory"].plugin == "torch"
    assert loaders["hf-transformers"].formats == ("hf",)
    assert maas_plugins.failures == []


def test_third_party_package_is_listed_and_callable(hello_installed, maas_home, tmp_path):
    plugins = Plugins()
    old = set_plugins(plugins)
    try:
        table = api.plugins()
        rows = {r["plugin"]: r for r in table}
        assert rows["hello"]["distribution"] == "maas-lab-hello"
        assert rows["hello"]["version"] == "0.3.1"
        assert rows["hello"]["provides"] == (
            "loader:word-table, launcher:torchrun, serving_backend:word-table"
        )
        assert rows["hello"]["status"] == "ok"
        # Its loader opens a format the core has never heard of.
        table_file = tmp_path / "sentiment.json"
        table_file.write_text(json.dumps({"good": 1.0, "bad": -1.0}))
        api.register("sentiment", from_file=table_file, format="word-table", task="scoring")
        model = api.load("sentiment", default=0.5)
        assert model(["good", "bad", "meh"]) == [1.0, -1.0, 0.5]
    finally:
        set_plugins(old)


def test_broken_plugins_are_named_and_the_rest_keep_working(hello_installed):
    plugins = Plugins()
    loaders = plugins.components["loader"]  # collecting calls every hook
    failures = {f.plugin: f for f in plugins.failures}
    broken = failures["hello_broken_import"]
    assert broken.hook == "import"
    assert (broken.distribution, broken.version) == ("maas-lab-hello", "0.3.1")
    assert "maas_lab_hello_missing_dependency" in broken.error
    raises = failures["hello_raises"]
    assert raises.hook == "maas_exporters"
    assert "exporter table is corrupt" in raises.error
    assert "raises.py" in raises.error
    # Everything else still works.
    assert "word-table" in loaders and "torch-factory" in loaders


def test_cli_lists_plugins_and_failures(hello_plugin_path):
    env = dict(os.environ, PYTHONPATH=str(hello_plugin_path))
    out = subprocess.run(
        [sys.executable, "-m", "maas_lab.cli", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "hello" in out and "maas-lab-hello  0.3.1" in out
    assert "FAILED: ModuleNotFoundError" in out
    assert "FAILED: RuntimeError: exporter table is corrupt" in out
    assert "loader:torch-factory" in out


def test_allow_list_chooses_which_plugins_load(hello_installed, monkeypatch):
    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "hello,torch")
    plugins = Plugins()
    assert set(plugins.info) == {"hello", "torch"}
    assert plugins.failures == []
    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "")
    assert Plugins().info == {}


def test_duplicate_component_names_are_reported_not_renamed():
    class First:
        @hookimpl
        def maas_compressors(self, register):
            register(Component(name="prune", description="first", run=lambda c, o: None))

    class Second:
        @hookimpl
        def maas_compressors(self, register):
            register(Component(name="prune", description="second", run=lambda c, o: None))

    plugins = Plugins(load_entry_points=False)
    plugins.register(First(), "first")
    plugins.register(Second(), "second")
    assert plugins.get("compressor", "prune").description == "first"
    (failure,) = plugins.failures
    assert failure.plugin == "second"
    assert "already provided by plugin 'first'" in failure.error


def test_invalid_component_and_fewer_hook_arguments():
    class Bad:
        @hookimpl
        def maas_launchers(self, register):
            register(Component(name="Bad Name", description="x", run=print))

    class NoArgs:
        # A hook implementation may take fewer arguments than the spec.
        @hookimpl
        def maas_serving_backends(self):
            pass

    plugins = Plugins(load_entry_points=False)
    plugins.register(Bad(), "bad")
    plugins.register(NoArgs(), "noargs")
    assert plugins.components["launcher"] == {}
    assert "lower-case" in plugins.failures[0].error
    assert [f.plugin for f in plugins.failures] == ["bad"]


def test_unknown_component_suggests_close_names(maas_plugins):
    with pytest.raises(NotFoundError, match="Did you mean 'torch-factory'"):
        maas_plugins.get("loader", "torch-factroy")


def _plugin(hook: str, *components):
    class One:
        pass

    def provide(self, register):
        for comp in components:
            register(comp)

    setattr(One, hook, hookimpl(provide))
    return One()


def test_two_plugins_claiming_one_format_are_reported_and_the_first_is_used(maas_home):
    def run(checkout, options):
        return None

    plugins = Plugins(load_entry_points=False)
    plugins.register(
        _plugin("maas_loaders", Component("tables", "first", run, formats=("table",))), "one"
    )
    plugins.register(
        _plugin("maas_loaders", Component("tables2", "second", run, formats=("table",))), "two"
    )
    assert plugins.loader("table").name == "tables"
    (conflict,) = plugins.conflicts
    assert "loaders for table: 'tables' (plugin one), 'tables2' (plugin two)" in conflict
    assert "the first is used" in conflict
    old = set_plugins(plugins)
    try:
        assert conflict in api.plugins().note
    finally:
        set_plugins(old)


def test_typed_lookups_say_which_plugins_can(maas_plugins):
    assert maas_plugins.loader("onnx").plugin == "onnx"
    assert maas_plugins.backend("torch").name
    assert maas_plugins.exporter("onnx", "torch").produces == "onnx"
    assert maas_plugins.compressor("ort-int8", "onnx").name == "ort-int8"
    assert maas_plugins.launcher("accelerate").name == "accelerate"
    with pytest.raises(UsageError, match=r"opens format 'tflite'\. Formats with a loader: .*onnx"):
        maas_plugins.loader("tflite")
    with pytest.raises(UsageError, match=r"No exporter makes 'tflite' from format 'onnx'"):
        maas_plugins.exporter("tflite", "onnx")
    with pytest.raises(UsageError, match=r"Did you mean 'ort-int8'"):
        maas_plugins.compressor("ort-in8", "onnx")
    with pytest.raises(UsageError, match=r"takes onnx versions, not m@1 \(torch\)"):
        maas_plugins.compressor("ort-int8", "torch", "m@1")
    with pytest.raises(NotFoundError, match="Did you mean 'accelerate'"):
        maas_plugins.launcher("acelerate")
