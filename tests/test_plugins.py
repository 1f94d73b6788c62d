"""The plugin core: entry points, a real third-party package, and broken plugins."""

import json
import os
import subprocess
import sys

import pytest

from maas_lab import Component, api, hookimpl
from maas_lab.errors import NotFoundError, UsageError
from maas_lab.hookspecs import CONTRACT
from maas_lab.plugins import Plugins, set_plugins
from maas_lab.views import plugins_table


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
    assert "hello" in out and "maas-lab-hello  0.3.1    1.0" in out
    assert f"this core: contract {CONTRACT}" in out
    assert "FAILED in import: ModuleNotFoundError" in out
    assert "FAILED in maas_exporters: RuntimeError: exporter table is corrupt" in out
    assert "REFUSED: it was written for plugin contract 0.4" in out
    assert "loader:torch-factory" in out


@pytest.mark.parametrize(
    "entry, expected",
    [
        (
            "hello_old_major",
            f"it was written for plugin contract 0.4; this maas-lab implements {CONTRACT}, which "
            "changed what 0.x plugins rely on (docs/contract.md): upgrade maas-lab-hello to a "
            "release written for contract 1.x",
        ),
        (
            "hello_newer_minor",
            f"it was written for plugin contract 1.9, newer than this maas-lab's {CONTRACT}: "
            "upgrade maas-lab (pip install -U maas-lab), or install a release of "
            f"maas-lab-hello written for contract 1.0 to {CONTRACT}",
        ),
        (
            "hello_undeclared",
            f'it declares no plugin contract version; add MAAS_LAB_CONTRACT = "{CONTRACT}" to '
            "maas_lab_hello.contracts:undeclared",
        ),
    ],
)
def test_plugins_written_for_another_contract_are_refused_naming_both(
    hello_installed, monkeypatch, entry, expected
):
    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", f"hello,{entry}")
    plugins = Plugins()
    assert set(plugins.info) == {"hello"}  # refused: nothing of it is registered
    (refused,) = plugins.failures
    assert (refused.plugin, refused.hook) == (entry, "contract")
    assert (refused.distribution, refused.version) == ("maas-lab-hello", "0.3.1")
    assert expected in refused.error
    assert "evaluator" not in str(plugins.components["evaluator"])  # its hook never ran
    rows = {r["plugin"]: r for r in plugins_table(plugins)}
    assert rows[entry]["status"] == f"REFUSED: {refused.error}"
    assert rows["hello"]["contract"] == "1.0"


def test_contract_rule_accepts_older_minors_of_the_same_major(monkeypatch):
    from maas_lab import contract

    monkeypatch.setattr(contract, "CONTRACT", "1.3")
    assert contract.problem("1.0", "m") is None
    assert contract.problem("1.3", "m") is None
    assert "newer than this maas-lab's 1.3" in contract.problem("1.4", "m")
    assert "newer" in contract.problem("2.0", "m")
    assert "changed what 0.x plugins rely on" in contract.problem("0.9", "m")
    for wrong in ("1", "v1.0", " 1.0", 1.0):
        assert f'= {wrong!r}, which is not a "MAJOR.MINOR" string' in contract.problem(wrong, "m")
    assert "written for contract 1.0 to 1.3" in contract.problem("1.4", "m", "maas-x")


def test_a_plugin_registered_in_process_is_checked_when_it_declares_a_contract():
    class Future:
        MAAS_LAB_CONTRACT = "7.0"

        @hookimpl
        def maas_evaluators(self, register):
            register(Component(name="future", description="x", run=lambda s, c: []))

    plugins = Plugins(load_entry_points=False)
    plugins.register(Future(), "future", "maas-future", "2.0")
    assert plugins.info == {}
    assert "written for plugin contract 7.0" in plugins.failures[0].error


def test_a_plugin_failing_at_work_is_named_with_its_distribution_and_changes_nothing(
    hello_installed, maas_home, tiny_torch_version, monkeypatch
):
    from maas_lab.errors import PluginError
    from maas_lab.testing import registry_snapshot

    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "torch,eval,hello_crashes")
    old = set_plugins(Plugins())
    try:
        before = registry_snapshot(maas_home)
        with pytest.raises(PluginError) as caught:
            api.compress("tiny@1", "explode")
        assert str(caught.value) == (
            "The compressor 'explode' (plugin hello_crashes, maas-lab-hello 0.3.1) failed on "
            "tiny@1: RuntimeError: the tensor cores caught fire"
        )
        assert registry_snapshot(maas_home) == before
    finally:
        set_plugins(old)


def test_allow_list_chooses_which_plugins_load(hello_installed, monkeypatch):
    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "hello,torch")
    plugins = Plugins()
    assert set(plugins.info) == {"hello", "torch"}
    assert plugins.failures == []
    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "")
    assert Plugins().info == {}


def test_two_plugins_with_one_component_name_neither_wins_and_the_user_chooses(
    monkeypatch,
):
    class First:
        @hookimpl
        def maas_compressors(self, register):
            register(Component(name="prune", description="first", run=lambda c, o: None))

    class Second:
        @hookimpl
        def maas_compressors(self, register):
            register(Component(name="prune", description="second", run=lambda c, o: None))

    monkeypatch.delenv("MAAS_LAB_PREFER", raising=False)
    plugins = Plugins(load_entry_points=False)
    plugins.register(First(), "first", "maas-first", "1.0")
    plugins.register(Second(), "second", "maas-second", "2.1")
    with pytest.raises(UsageError) as caught:
        plugins.get("compressor", "prune")
    assert str(caught.value) == (
        "Two plugins provide a compressor named 'prune': 'prune' (plugin first, maas-first "
        "1.0) and 'prune' (plugin second, maas-second 2.1). Name the one you mean "
        "(first:prune or second:prune), or set MAAS_LAB_PREFER=first to prefer a plugin."
    )
    with pytest.raises(UsageError, match="Two plugins provide a compressor named 'prune'"):
        plugins.compressor("prune", "torch")
    # Each stays reachable by its qualified name; listings show both, distinctly.
    assert plugins.get("compressor", "second:prune").description == "second"
    assert plugins.get("compressor", "first:prune").description == "first"
    assert sorted(plugins.components["compressor"]) == ["first:prune", "second:prune"]
    assert plugins.failures == []
    (line,) = plugins.conflicts
    assert "compressors named 'prune'" in line and "neither is used until you choose" in line
    # The user's preference, read on each use, settles it.
    monkeypatch.setenv("MAAS_LAB_PREFER", "second")
    assert plugins.get("compressor", "prune").description == "second"
    assert plugins.get("compressor", "first:prune").description == "first"
    assert "second's is used (MAAS_LAB_PREFER)" in plugins.conflicts[0]
    # A qualified name works without any clash too.
    assert Plugins().get("compressor", "onnx:ort-int8").name == "ort-int8"


def test_a_plugin_registering_one_name_twice_is_refused():
    class Twice:
        @hookimpl
        def maas_evaluators(self, register):
            for _ in range(2):
                register(Component(name="echo", description="x", run=lambda s, c: []))

    plugins = Plugins(load_entry_points=False)
    plugins.register(Twice(), "twice")
    assert plugins.components["evaluator"] == {}
    assert "registers evaluator 'echo' more than once" in plugins.failures[0].error


def test_invalid_parameter_schemas_are_refused_at_load_naming_the_field():
    from maas_lab import Param

    bad = {
        "bad-type": lambda: (Param("level", "integer", 1),),
        "bad-default": lambda: (Param("level", "int", "high"),),
        "bad-choice-default": lambda: (Param("mode", "str", "x", choices=("a", "b")),),
        "bad-choices": lambda: (Param("bits", "int", 8, choices=("8", "4")),),
        "bad-name": lambda: (Param("max drop", "float", 0.1),),
        "not-a-param": lambda: ({"name": "level"},),
        "bad-flag": lambda: (Param("level", "int", 1, required="yes"),),
        "fractional-default": lambda: (Param("bits", "int", 1.5),),
        "number-for-text": lambda: (Param("mode", "str", 5),),
        "command-option": lambda: (Param("data", "str", "zzz"),),
        "twice": lambda: (Param("bits", "int", 8), Param("bits", "int", 4)),
    }

    expected = [
        "Param 'level': type must be one of",
        "component 'bad-default', parameter 'level': default 'high' is refused: level "
        "expects an int, got 'high'.",
        "component 'bad-choice-default', parameter 'mode': default 'x' is refused: mode "
        "must be one of a, b; got 'x'.",
        "component 'bad-choices', parameter 'bits': choice '8' is not of type int",
        "component 'bad-name': parameter name 'max drop' must be an identifier",
        "component 'not-a-param': params must be Param(...) objects",
        "component 'bad-flag', parameter 'level': required must be True or False",
        "component 'fractional-default', parameter 'bits': default 1.5 is refused: bits "
        "expects an int, got 1.5.",
        "component 'number-for-text', parameter 'mode': default 5 is not of type str",
        "component 'command-option', parameter 'data': the compressor's command takes data "
        "itself, so the plugin would never get it; name the parameter differently",
        "component 'twice' declares parameter 'bits' twice",
    ]
    for i, (name, make) in enumerate(bad.items()):
        plugins = Plugins(load_entry_points=False)
        only = dict([(name, make)])

        class One:
            @hookimpl
            def maas_compressors(self, register, _only=only):
                for n, params in _only.items():
                    register(Component(name=n, description="x", run=print, params=params()))

        plugins.register(One(), "schemas")
        assert plugins.components["compressor"] == {}, name
        (failure,) = plugins.failures
        assert failure.hook == "maas_compressors"
        assert expected[i] in failure.error, (name, failure.error)


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


def test_two_plugins_claiming_one_format_are_both_named_until_the_user_chooses(
    maas_home, monkeypatch
):
    def run(checkout, options):
        return None

    monkeypatch.delenv("MAAS_LAB_PREFER", raising=False)
    plugins = Plugins(load_entry_points=False)
    plugins.register(
        _plugin("maas_loaders", Component("tables", "first", run, formats=("table",))), "one"
    )
    plugins.register(
        _plugin("maas_loaders", Component("tables2", "second", run, formats=("table",))), "two"
    )
    with pytest.raises(UsageError) as caught:
        plugins.loader("table")
    assert str(caught.value) == (
        "2 loaders claim format 'table': 'tables' (plugin one) and 'tables2' (plugin two); "
        "maas_lab will not pick one for you. Choose with MAAS_LAB_PREFER=one (the plugin to "
        "use), or leave the other out with MAAS_LAB_LOAD_PLUGINS or by uninstalling it."
    )
    (conflict,) = plugins.conflicts
    assert "loaders for table: 'tables' (plugin one), 'tables2' (plugin two)" in conflict
    assert "neither is used until you choose" in conflict
    old = set_plugins(plugins)
    try:
        assert conflict in api.plugins().note
        monkeypatch.setenv("MAAS_LAB_PREFER", "two")
        assert plugins.loader("table").name == "tables2"
        assert "two's is used" in api.plugins().note
        monkeypatch.setenv("MAAS_LAB_PREFER", "tow,two")
        assert "MAAS_LAB_PREFER names tow, which no loaded plugin is called." in (
            api.plugins().note
        )
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


def test_plugins_reload_finds_a_package_installed_editable_in_a_live_process(tmp_path, monkeypatch):
    """What `pip install -e` leaves in site-packages (a .pth naming the source folder, and a
    dist-info with the entry point) is found by `plugins --reload` without a restart."""
    import site

    source = tmp_path / "src"
    (source / "maas_lab_reloaded").mkdir(parents=True)
    (source / "maas_lab_reloaded" / "__init__.py").write_text(
        "from maas_lab import Component, hookimpl\n"
        'MAAS_LAB_CONTRACT = "1.0"\n\n\n'
        "@hookimpl\n"
        "def maas_evaluators(register):\n"
        '    register(Component(name="rows", description="rows", run=lambda s, c: []))\n'
    )
    sitedir = tmp_path / "site-packages"
    dist = sitedir / "maas_lab_reloaded-0.2.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: maas-lab-reloaded\nVersion: 0.2.0\n"
    )
    (dist / "entry_points.txt").write_text("[maas_lab]\nreloaded = maas_lab_reloaded\n")
    (sitedir / "_maas_lab_reloaded.pth").write_text(f"# editable\n{source}\n")
    (sitedir / "runs-code.pth").write_text("import sys; sys.exit('a .pth line ran again')\n")
    monkeypatch.syspath_prepend(str(sitedir))  # site-packages is on sys.path from start-up
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(sitedir)])
    monkeypatch.setattr(site, "getusersitepackages", lambda: str(tmp_path / "none"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("MAAS_LAB_LOAD_PLUGINS", raising=False)
    old = set_plugins(Plugins())
    try:
        # Without a reload the entry point may be seen, but its module is not importable.
        rows = {r["plugin"]: r for r in api.plugins()}
        assert rows.get("reloaded", {"status": "absent"})["status"] != "ok"
        rows = {r["plugin"]: r for r in api.plugins(reload=True)}
        assert rows["reloaded"]["status"] == "ok"
        assert rows["reloaded"]["distribution"] == "maas-lab-reloaded"
        assert rows["reloaded"]["contract"] == "1.0"
        assert rows["reloaded"]["provides"] == "evaluator:rows"
        assert str(source) in sys.path
        # An edit to the installed source is what the next reload runs.
        init = source / "maas_lab_reloaded" / "__init__.py"
        init.write_text(init.read_text().replace('name="rows"', 'name="row-count"'))
        rows = {r["plugin"]: r for r in api.plugins(reload=True)}
        assert rows["reloaded"]["provides"] == "evaluator:row-count"
        assert "torch" in rows  # the built-ins are still there
    finally:
        set_plugins(old)
        sys.modules.pop("maas_lab_reloaded", None)


def test_plugin_new_from_the_cli_writes_a_package_or_refuses_writing_nothing(tmp_path):
    def maas(*args):
        return subprocess.run(
            [sys.executable, "-m", "maas_lab.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    group = maas("plugin")  # a group without its subcommand shows its help, not an error
    assert group.returncode == 0 and "Commands:\n  new  Write a plugin package" in group.stdout
    made = maas("plugin", "new", "maas-lab-half", "--kind", "compressor", "--into", "pkgs")
    assert made.returncode == 1 and "Usage error: 'pkgs' is not a folder" in made.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "pkgs").mkdir()
    made = maas("plugin", "new", "maas-lab-half", "--kind", "compressor", "--into", "pkgs")
    assert made.returncode == 0, made.stderr
    package = tmp_path / "pkgs" / "maas-lab-half"
    assert made.stdout.startswith("New plugin package maas-lab-half: the compressor 'half'")
    assert "pip install -e ./pkgs/maas-lab-half\nmaas plugins --reload" in made.stdout
    pyproject = (package / "pyproject.toml").read_text()
    assert 'half = "maas_lab_half"' in pyproject
    written = (package / "maas_lab_half" / "__init__.py").read_text()
    assert 'MAAS_LAB_CONTRACT = "1.0"' in written  # the oldest contract a compressor needs
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    again = maas("plugin", "new", "maas-lab-half", "--kind", "loader", "--into", "pkgs")
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = maas("plugin", "new", "maas rows!", "--kind", "loader", "--into", "pkgs")
    assert bad.returncode == 1 and "is not a valid package name" in bad.stderr
    kind = maas("plugin", "new", "maas-x", "--kind", "quantum", "--into", "pkgs")
    assert kind.returncode == 1 and "'quantum' is not one of 'loader', 'exporter'" in kind.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_two_distributions_installing_one_plugin_name_are_both_refused(
    hello_installed, tmp_path, monkeypatch
):
    """Another package whose entry point is also called 'hello': neither loads (which one
    Python lists first is an accident of sys.path), both are named, and the rest loads."""
    dist = tmp_path / "maas_lab_hola-1.2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: maas-lab-hola\nVersion: 1.2.0\n")
    (dist / "entry_points.txt").write_text("[maas_lab]\nhello = maas_lab_hello\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "hello,torch")
    plugins = Plugins()
    assert set(plugins.info) == {"torch"}
    failures = {f.distribution: f.error for f in plugins.failures if f.plugin == "hello"}
    assert failures == {
        "maas-lab-hola": "maas-lab-hello 0.3.1 also installs a plugin named 'hello', so "
        "neither is loaded: uninstall the one you do not want",
        "maas-lab-hello": "maas-lab-hola 1.2.0 also installs a plugin named 'hello', so "
        "neither is loaded: uninstall the one you do not want",
    }


def test_numeric_choices_are_offered_checked_and_shown(maas_plugins):
    from maas_lab import Param
    from maas_lab.cli import _param_row

    bits = Param("bits", "int", 8, "Bits per weight.", choices=(4, 8))
    comp = Component("quant", "x", print, params=(bits,))
    comp.check()
    assert comp.options({"bits": "4"}) == {"bits": 4}
    with pytest.raises(UsageError, match=r"bits must be one of 4, 8; got 3\."):
        comp.options({"bits": 3})
    with pytest.raises(UsageError, match=r"bits expects an int, got 2\.7\."):
        comp.options({"bits": 2.7})
    assert _param_row(bits) == ("--bits INT", "Bits per weight. [4|8] (default: 8)")


def test_a_plugin_whose_hook_raises_is_one_row_saying_so(hello_installed, monkeypatch):
    class HalfWorking:
        @hookimpl
        def maas_evaluators(self, register):
            register(Component(name="rows", description="x", run=lambda s, c: []))

        @hookimpl
        def maas_exporters(self, register):
            raise KeyError("oops")

    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "torch")
    plugins = Plugins()
    plugins.register(HalfWorking(), "half", "maas-half", "0.2.0")
    table = plugins_table(plugins)
    rows = [r for r in table if r["plugin"] == "half"]
    assert len(rows) == 1
    assert rows[0]["provides"] == "evaluator:rows"
    assert rows[0]["status"].startswith("FAILED in maas_exporters: KeyError: 'oops'")
    assert table.title == f"1 plugin(s) working (this core: contract {CONTRACT}), 1 with problems"


def test_evaluators_two_plugins_name_alike_run_only_as_the_user_chooses(monkeypatch):
    def figure(value):
        return lambda subjects, context: [{"figure": value} for _ in subjects]

    monkeypatch.delenv("MAAS_LAB_PREFER", raising=False)
    plugins = Plugins(load_entry_points=False)
    for name, value in (("one", 1.0), ("two", 2.0)):
        plugins.register(_plugin("maas_evaluators", Component("size", name, figure(value))), name)
    assert plugins.evaluators() == []
    monkeypatch.setenv("MAAS_LAB_PREFER", "two")
    assert [e.description for e in plugins.evaluators()] == ["two"]


@pytest.mark.parametrize(
    "lists, expected",
    [
        ("../outside.bin", "listed a file it may not write: File name '../outside.bin'"),
        ("link.bin", "wrote 'link.bin' as a link; write the file itself."),
    ],
)
def test_a_plugin_writing_outside_its_work_folder_is_named_and_changes_nothing(
    maas_home, tiny_torch_version, monkeypatch, lists, expected
):
    from maas_lab.components import Artifact
    from maas_lab.errors import PluginError
    from maas_lab.testing import registry_snapshot

    def escape(checkout, options, workdir, context):
        (workdir / "link.bin").symlink_to("/etc/hostname")
        return Artifact(format="torch", files={lists: "weights"}, config=checkout.config)

    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "torch,eval")
    plugins = Plugins()
    escaping = Component("escape", "x", escape, formats=("torch",))
    plugins.register(_plugin("maas_compressors", escaping), "escapes", "maas-escape", "0.0.1")
    old = set_plugins(plugins)
    try:
        before = registry_snapshot(maas_home)
        with pytest.raises(PluginError) as caught:
            api.compress("tiny@1", "escape")
        assert str(caught.value).startswith(
            "The compressor 'escape' (plugin escapes, maas-escape 0.0.1) " + expected
        )
        assert registry_snapshot(maas_home) == before
    finally:
        set_plugins(old)


def test_a_compression_nothing_could_open_is_refused_before_any_work(
    hello_installed, maas_home, tiny_torch_version, monkeypatch
):
    monkeypatch.setenv("MAAS_LAB_LOAD_PLUGINS", "eval,hello_crashes")  # torch left out
    old = set_plugins(Plugins())
    try:
        with pytest.raises(UsageError, match="No installed plugin opens format 'torch'"):
            api.compress("tiny@1", "explode")  # it would fail if it ran: it never does
    finally:
        set_plugins(old)
