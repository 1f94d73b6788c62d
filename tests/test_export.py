"""The core export flow (exporter plugin -> parity check -> new version with lineage), driven
through a small plugin of the test's own: a numpy linear model y = x @ W stored as .npy."""

import json
import re

import numpy as np
import pytest

from maas_lab import Component, Param, api, hookimpl
from maas_lab.components import Artifact, tensor
from maas_lab.errors import Interrupted, ParityError, PluginError, UsageError
from maas_lab.testing import registry_snapshot


class LinearRunner:
    def __init__(self, checkout):
        (f,) = checkout.files
        self.w = np.load(checkout.dir / f["name"], allow_pickle=False)
        n_in, n_out = self.w.shape
        self.signature = {
            "inputs": [tensor("x", "float32", ["batch", n_in])],
            "outputs": [tensor("y", "float32", ["batch", n_out])],
        }

    def infer(self, feeds):
        return {"y": (feeds["x"] @ self.w.astype(np.float32)).astype(np.float32)}


def validate(files, config):
    (path,) = files.values()
    np.load(path, allow_pickle=False)


def export_linear(checkout, options, workdir):
    (f,) = checkout.files
    w = np.load(checkout.dir / f["name"], allow_pickle=False)
    if options["fail"]:
        raise RuntimeError("operator 'aten::frobnicate' is not supported")
    w = w.astype(options["precision"]).astype(np.float32) + options["noise"]
    if options["interrupt"]:
        (workdir / "half.npy").write_bytes(b"\x93NUMPY")
        raise KeyboardInterrupt
    if options["forget_file"]:
        return Artifact(format="npy-linear", files={"missing.npy": "model"})
    np.save(workdir / "w.npy", w)
    return Artifact(
        format="npy-linear", files={"w.npy": "model"}, report={"precision": options["precision"]}
    )


class LinearPlugin:
    @hookimpl
    def maas_loaders(self, register):
        register(
            Component(
                name="npy-linear",
                description="x @ W from a .npy file",
                formats=("npy-linear",),
                run=lambda checkout, options: LinearRunner(checkout),
                validate=validate,
            )
        )

    @hookimpl
    def maas_serving_backends(self, register):
        register(
            Component(
                name="npy-linear",
                description="x @ W",
                formats=("npy-linear",),
                run=lambda checkout, options: LinearRunner(checkout),
            )
        )

    @hookimpl
    def maas_exporters(self, register):
        register(
            Component(
                name="requantize",
                description="Round W through another dtype",
                formats=("npy-linear",),
                produces="npy-linear",
                run=export_linear,
                params=(
                    Param("precision", default="float16", choices=("float16", "float32")),
                    Param("noise", "float", 0.0, "added to every weight"),
                    Param("fail", "bool", False, "raise like an unsupported operator"),
                    Param("forget_file", "bool", False, "list a file that was not written"),
                    Param("interrupt", "bool", False, "Ctrl-C halfway through writing"),
                ),
            )
        )


@pytest.fixture
def linear(maas_home, maas_plugins, tmp_path):
    maas_plugins.register(LinearPlugin(), "linear")
    w = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    api.register("lin", from_file=tmp_path / "w.npy", format="npy-linear", task="regression")
    return w


def test_export_registers_a_version_with_parity_and_lineage(linear):
    report = api.export("lin@1", "npy-linear", precision="float32")
    info = report.data
    assert info["ref"] == "lin@2" and info["format"] == "npy-linear"
    assert info["signature"]["inputs"] == [tensor("x", "float32", ["batch", 8])]
    assert info["metrics"]["parity_max_abs_diff"] == 0.0
    assert info["metrics"]["parity_min_cosine"] == pytest.approx(1.0)
    (edge,) = info["parents"]
    assert (edge["ref"], edge["operation"], edge["plugin"]) == ("lin@1", "export", "linear")
    assert edge["params"]["options"]["precision"] == "float32"
    assert edge["params"]["report"] == {"precision": "float32"}
    assert "y" in edge["params"]["parity"]
    assert api.show("lin@1")["children"] == [
        {"ref": "lin@2", "operation": "export", "plugin": "linear"}
    ]
    assert "<h4>Signature</h4>" in report._repr_html_()


def test_small_differences_pass_large_ones_fail_and_register_nothing(linear, maas_home):
    small = api.export("lin@1", "npy-linear", precision="float32", noise=1e-6)
    assert 0 < small["metrics"]["parity_max_abs_diff"] < 1e-4
    before = registry_snapshot(maas_home)
    with pytest.raises(ParityError, match=r"y: max abs diff .* > 0.0001.*Nothing was registered"):
        api.export("lin@1", "npy-linear", noise=0.05)
    assert registry_snapshot(maas_home) == before
    kept = api.export("lin@1", "npy-linear", noise=0.05, allow_mismatch=True)
    assert kept["tags"] == {"parity": "mismatch"}
    assert kept["parents"][0]["params"]["mismatch"][0].startswith("y: max abs diff")
    loose = api.export("lin@1", "npy-linear", noise=0.05, atol=1.0, min_cosine=0.9)
    assert loose["tags"] == {}


def test_export_bad_input_changes_nothing(linear, maas_home):
    before = registry_snapshot(maas_home)
    able = r"Exporters that take 'npy-linear': requantize \(to npy-linear\)"
    with pytest.raises(
        UsageError, match=r"No exporter makes 'tflite' from format 'npy-linear'. " + able
    ):
        api.export("lin@1", "tflite")
    with pytest.raises(
        PluginError,
        match="'requantize' .* failed on lin@1: RuntimeError: operator 'aten::frobnicate'",
    ):
        api.export("lin@1", "npy-linear", fail=True)
    with pytest.raises(PluginError, match="listed 'missing.npy' but did not write it"):
        api.export("lin@1", "npy-linear", forget_file=True)
    with pytest.raises(UsageError, match="has no option colour"):
        api.export("lin@1", "npy-linear", colour="red")
    with pytest.raises(UsageError, match="^precision must be one of float16, float32"):
        api.export("lin@1", "npy-linear", precision="int4")
    assert registry_snapshot(maas_home) == before


def test_export_from_the_command_line_and_magic(linear, maas_shell, capsys):
    from maas_lab.cli import run

    report = run(["export", "lin@1", "--to", "npy-linear", "--precision", "float32"])
    assert report["ref"] == "lin@2"
    report = maas_shell.run_line_magic(
        "maas", "export lin --to npy-linear --noise=0.0 --fail false --precision=float32"
    )
    assert report["ref"] == "lin@3"
    assert run(["export", "--help"]) is None
    help_text = capsys.readouterr().out
    listed = re.search(r"^  requantize +(.*)$", help_text, re.M)  # one line per exporter
    assert listed[1] == "Round W through another dtype (npy-linear -> npy-linear)"
    assert run(["export", "--to", "requantize", "--help"]) is None  # one exporter's options
    help_text = capsys.readouterr().out
    assert "--precision STR" in help_text and "[float16|float32]" in help_text
    with pytest.raises(UsageError, match="Unexpected argument 'stray'"):
        run(["export", "lin@1", "--to", "npy-linear", "--noise", "0", "stray"])


def test_signature_survives_a_bundle(linear, tmp_path):
    api.export("lin@1", "npy-linear", precision="float32")
    api.bundle_export("lin@2", tmp_path / "b.tar")
    other = api.bundle_import(tmp_path / "b.tar", root=tmp_path / "other")
    assert other["signature"] == json.loads(json.dumps(api.show("lin@2")["signature"]))


def test_signature_from_inputs_or_given_whole(linear, maas_home, tmp_path):
    w = tmp_path / "w.npy"
    inferred = api.register("lin", from_file=w, format="npy-linear", inputs=["x:float32:batch,8"])
    assert inferred["signature"] == {
        "inputs": [tensor("x", "float32", ["batch", 8])],
        "outputs": [tensor("y", "float32", ["batch", 3])],
    }
    given = {
        "inputs": [tensor("x", "float32", [1, 8])],
        "outputs": [tensor("y", "float32", [1, 3])],
    }
    assert (
        api.register("lin", from_file=w, format="npy-linear", signature=json.dumps(given))[
            "signature"
        ]
        == given
    )
    before = registry_snapshot(maas_home)
    for bad, message in [
        (dict(inputs=["x:float99:batch,8"]), "should be NAME:DTYPE:DIMS"),
        (dict(inputs=["x:float32:batch,,8"]), "empty dimension"),
        (dict(inputs=["x:float32:batch,5"]), "The model failed on inputs \\['x'\\]"),
        (dict(signature="{not json"), "not valid JSON"),
        (dict(signature='{"inputs": []}'), "must look like"),
    ]:
        with pytest.raises(UsageError, match=message):
            api.register("lin", from_file=w, format="npy-linear", **bad)
    assert registry_snapshot(maas_home) == before


def test_interrupted_export_leaves_nothing(linear, maas_home):
    import glob
    import tempfile

    before = registry_snapshot(maas_home)
    leftovers = set(glob.glob(f"{tempfile.gettempdir()}/export-*"))
    with pytest.raises(
        Interrupted,
        match=r"^Exporter 'requantize' on lin@1 was interrupted; "
        "nothing was registered",
    ):
        api.export("lin@1", "npy-linear", interrupt=True)
    assert registry_snapshot(maas_home) == before
    assert set(glob.glob(f"{tempfile.gettempdir()}/export-*")) == leftovers


def test_inferred_output_dims_follow_the_inputs_not_coincidences(linear, tmp_path):
    """A model with 4 outputs, probed at batch 4, must not get two dims named batch."""
    import maas_lab

    np.save(tmp_path / "w4.npy", np.ones((8, 4), dtype=np.float32))
    report = maas_lab.register(
        "lin4", from_file=tmp_path / "w4.npy", format="npy-linear", inputs=["x:float32:batch,8"]
    )
    assert report["signature"]["outputs"] == [tensor("y", "float32", ["batch", 4])]
    assert maas_lab.export is api.export and maas_lab.runner is api.runner


def test_parity_tolerances_out_of_range_are_refused(linear, maas_home):
    before = registry_snapshot(maas_home)
    for bad, message in [
        (dict(atol=-1), r"^atol=-1\.0: the largest difference allowed is 0 or more"),
        (dict(min_cosine=2), r"^min_cosine=2\.0: a cosine is between -1 and 1"),
        (dict(atol="abc"), r"^atol expects a float, got 'abc'"),
    ]:
        with pytest.raises(UsageError, match=message):
            api.export("lin@1", "npy-linear", **bad)
    assert registry_snapshot(maas_home) == before
