"""One third-party plugin, end to end, through every front end.

``examples/maas-fp16`` is the package ``maas plugin new maas-fp16 --kind compressor`` writes
(a test holds it to that, byte for byte). It is pip-installed for real into a folder of its
own, as a third party's package, and its ``fp16`` compressor is used from the shell command,
the ``%maas`` magic, the Python API (a torch version and its ONNX export), the Compress
panel, and the HTTP server serving what it made. Each test starts from a fresh registry and
a fresh plugin set that found the package through its entry point, as a user's session would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from installs import pip_install_into

from maas_lab import api
from maas_lab.errors import MaasError
from maas_lab.plugins import Plugins, set_plugins
from maas_lab.results import Report

pytest.importorskip("torch")

EXAMPLE = Path(__file__).parent.parent / "examples" / "maas-fp16"
REGENERATE = (
    "rm -rf examples/maas-fp16 && .venv/bin/maas plugin new maas-fp16 --kind compressor "
    "--into examples"
)
# Big enough that a version's file is mostly weights (38 kB; the safetensors header is
# ~300 bytes), so half-precision weights make a version about half the size.
CONFIG = {"in_features": 64, "hidden": 128, "out_features": 10}
FP16 = {"rtol": 1e-2, "atol": 2e-3}  # float16 keeps 11 significant bits: ~5e-4 relative


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a package folder by relative path, without what running it leaves."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not {"__pycache__", ".pytest_cache"} & set(p.parts)
    }


@pytest.fixture(scope="session")
def fp16_site(tmp_path_factory):
    """examples/maas-fp16 pip-installed for real into a folder of its own (never into the
    test's environment): putting the folder on sys.path or PYTHONPATH 'installs' it."""
    return pip_install_into(tmp_path_factory.mktemp("fp16-site"), EXAMPLE)


@pytest.fixture
def fp16(fp16_site, maas_home, monkeypatch):
    """The package installed for this test and the processes it starts (servers, the CLI),
    and a fresh plugin set that found it through its entry point."""
    monkeypatch.syspath_prepend(str(fp16_site))  # also invalidates import caches
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(fp16_site), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.delenv("MAAS_LAB_LOAD_PLUGINS", raising=False)
    plugins = Plugins()
    old = set_plugins(plugins)
    yield plugins
    set_plugins(old)
    for name in [m for m in sys.modules if m.split(".")[0] == "maas_fp16"]:
        del sys.modules[name]


@pytest.fixture
def mlp(fp16, tmp_path) -> str:
    """``mlp@1``: a torch MLP with seeded weights, 64 inputs, 10 outputs."""
    import torch
    from safetensors.torch import save_file

    from maas_lab.zoo import mlp as factory

    torch.manual_seed(0)
    weights = tmp_path / "mlp.safetensors"
    save_file(factory(**CONFIG).eval().state_dict(), str(weights))
    return api.register(
        "mlp",
        from_torch="maas_lab.zoo:mlp",
        config=CONFIG,
        weights=weights,
        inputs=["input:float32:batch,64"],
    )["ref"]


def rows(n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, CONFIG["in_features"])).astype(np.float32)


def stored_dtypes(ref: str) -> dict[str, str]:
    """The dtype each weight tensor of a torch version is stored in."""
    from safetensors import safe_open

    out = {}
    for path in api.registry().checkout(ref).by_role("weights"):
        with safe_open(str(path), framework="pt") as f:
            out.update({k: str(f.get_slice(k).get_dtype()) for k in f.keys()})
    return out


def assert_made_by_fp16(ref: str, parent: str) -> dict:
    """``ref`` is a new version of ``parent``'s model about half its size, with one lineage
    edge naming the plugin (its entry point, fp16, and its distribution's version)."""
    new, old = api.show(ref).data, api.show(parent).data
    assert 0.45 < new["size_bytes"] / old["size_bytes"] < 0.6, (new["size_bytes"], old)
    (edge,) = new["parents"]
    assert (edge["ref"], edge["operation"]) == (parent, "compress")
    assert (edge["plugin"], edge["plugin_version"]) == ("fp16", "0.1.0")
    assert edge["plugin_distribution"] == "maas-fp16"
    assert edge["params"]["compressor"] == "fp16"
    assert edge["params"]["report"]["precision"] == "float16"
    return new


def test_the_example_is_exactly_what_the_scaffold_writes(tmp_path):
    from maas_lab.scaffold import new_plugin

    made = new_plugin("maas-fp16", "compressor", tmp_path)
    assert (made["distribution"], made["module"], made["component"]) == (
        "maas-fp16",
        "maas_fp16",
        "fp16",
    )
    fresh, example = files(Path(made["path"])), files(EXAMPLE)
    assert sorted(fresh) == sorted(example), f"files differ; regenerate with: {REGENERATE}"
    changed = [name for name in fresh if fresh[name] != example[name]]
    assert not changed, f"{', '.join(changed)} differ; regenerate with: {REGENERATE}"


def test_the_plugin_is_found_through_its_entry_point(fp16):
    (row,) = [r for r in api.plugins() if r["plugin"] == "fp16"]
    assert (row["distribution"], row["version"], row["contract"]) == (
        "maas-fp16",
        "0.1.0",
        "1.0",  # what examples/maas-fp16 declares: the oldest contract it needs
    )
    assert (row["hooks"], row["provides"], row["status"]) == (
        "maas_compressors",
        "compressor:fp16",
        "ok",
    )
    comp = fp16.get("compressor", "fp16")
    assert comp.formats == ("torch", "onnx") and comp.distribution == "maas-fp16"
    assert [p.name for p in comp.params] == ["keep"]
    assert fp16.failures == []


def maas(*args: str) -> subprocess.CompletedProcess:
    """The real ``maas`` console script, in a process of its own (environment: the test's,
    with the package on PYTHONPATH and the registry in MAAS_LAB_HOME)."""
    exe = os.path.join(os.path.dirname(sys.executable), "maas")
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True)


@pytest.mark.slow
def test_the_shell_command_lists_the_plugin_and_compresses_with_it(mlp):
    listed = maas("plugins").stdout
    (line,) = [x for x in listed.splitlines() if x.startswith("fp16 ")]
    assert re.split(r" {2,}", line) == [
        "fp16",
        "maas-fp16",
        "0.1.0",
        "1.0",  # what examples/maas-fp16 declares: the oldest contract it needs
        "compressor:fp16",
        "ok",
    ]
    helped = maas("compress", "--with", "fp16", "--help").stdout
    assert "Options of the fp16 compressor (torch, onnx):" in helped
    assert "--keep STR  comma-separated names to keep in float32" in helped

    out = maas("compress", mlp, "--with", "fp16", "--budget-s", "0.2").stdout
    assert out.startswith("mlp@2: fp16 of mlp@1\n")
    assert re.search(r"^size_bytes +38,\d{3} +19,\d{3} +0\.5\dx$", out, re.M), out
    assert re.search(r"^tensors_cast +4$", out, re.M)
    assert_made_by_fp16("mlp@2", mlp)
    shown = maas("show", "mlp@2").stdout
    assert re.search(r"^derived from +mlp@1 +compress +fp16$", shown, re.M), shown


def test_the_magic_compresses_with_the_plugins_own_option(mlp, maas_shell):
    report = maas_shell.run_line_magic(
        "maas", f"compress {mlp} --with fp16 --keep 2.weight,2.bias --budget-s 0.2"
    )
    assert isinstance(report, Report) and report["ref"] == "mlp@2"
    assert (report["parent"], report.data["report"]["kept_float32"]) == (
        mlp,
        ["2.bias", "2.weight"],
    )
    assert report["after"]["cosine_mean"] > 0.9999
    assert stored_dtypes("mlp@2") == {
        "0.weight": "F16",
        "0.bias": "F16",
        "2.weight": "F32",
        "2.bias": "F32",
    }
    assert "<table" in report._repr_html_() and "fp16 of mlp@1" in str(report)
    edge = api.show("mlp@2")["parents"][0]
    assert (edge["plugin"], edge["params"]["options"]) == ("fp16", {"keep": "2.weight,2.bias"})
    # A mistake in the plugin's option is a short error that fails the cell; nothing is stored.
    with pytest.raises(MaasError, match=r"--keep names 2\.wieght, which mlp@1 does not have"):
        maas_shell.run_line_magic("maas", f"compress {mlp} --with fp16 --keep 2.wieght")
    assert api.resolve("mlp") == "mlp@2"


def test_the_api_compresses_a_torch_version(mlp):
    import torch

    report = api.compress(mlp, "fp16", max_drop="cosine=0.001", budget_s=0.2)
    assert report["ref"] == "mlp@2" and report["over_budget"] == []
    new = assert_made_by_fp16("mlp@2", mlp)
    assert new["format"] == "torch" and new["metrics"]["cosine_mean"] > 0.9999
    assert set(stored_dtypes("mlp@2").values()) == {"F16"}
    done = report["report"]
    assert (done["tensors_cast"], done["kept_float32"]) == (4, [])
    assert done["weight_bytes_after"] * 2 == done["weight_bytes_before"]
    # It loads as the float32 model its parent is, with every weight rounded to float16.
    half, full = api.load("mlp@2"), api.load(mlp)
    original = full.state_dict()
    for name, value in half.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, original[name].half().float()), name
    x = torch.from_numpy(rows())
    with torch.no_grad():
        np.testing.assert_allclose(half(x).numpy(), full(x).numpy(), **FP16)


@pytest.mark.slow
def test_the_api_compresses_an_onnx_export(mlp):
    import onnx

    exported = api.export(mlp, to="onnx")["ref"]
    report = api.compress(exported, "fp16", max_drop="cosine=0.001", budget_s=0.2)
    new = assert_made_by_fp16(report["ref"], exported)
    assert new["format"] == "onnx" and new["metrics"]["cosine_mean"] > 0.9999
    checkout = api.registry().checkout(report["ref"])
    (model,) = [checkout.dir / f["name"] for f in checkout.files if f["name"].endswith(".onnx")]
    graph = onnx.load(str(model)).graph
    assert {t.data_type for t in graph.initializer} == {onnx.TensorProto.FLOAT16}
    # Computed in float16, but its inputs and outputs stay float32: clients need no change.
    float32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)] == [float32] * 2
    assert report["report"]["converter"] == "onnxruntime.transformers.float16"
    x = {"input": rows()}
    (half,) = api.runner(report["ref"]).infer(x).values()
    (full,) = api.runner(exported).infer(x).values()
    assert half.dtype == np.float32 and half.shape == (16, 10)
    np.testing.assert_allclose(half, full, **FP16)


def test_the_compress_panel_offers_the_plugin_with_a_form_from_its_schema(mlp):
    pytest.importorskip("anywidget")
    from maas_lab.widgets import CompressPanel

    comp = api.components("compressor", "onnx")
    assert "fp16" in [r["name"] for r in comp]  # offered for ONNX versions as well
    panel = CompressPanel()
    try:
        panel.version.value = mlp
        assert "fp16" in panel.compressor.options and "prune" in panel.compressor.options
        panel.compressor.value = "fp16"
        assert "(plugin fp16)" in panel.about.value and "Half precision" in panel.about.value
        keep = panel.form.fields["keep"]  # the plugin's one parameter, after the core's
        assert [p.name for p in panel.form.params][-1] == "keep"
        assert keep.tooltip.startswith("comma-separated names to keep in float32")
        assert keep.value == "" and keep.placeholder == "str"

        keep.value = "0.bias"
        panel.form.fields["budget_s"].value = "0.2"
        panel.run_button.click()
        panel.task.join(120)
        assert panel.task.last_error == ""
        assert panel.line.value == "%maas compress mlp@1 --with fp16 --budget-s 0.2 --keep 0.bias"
        assert "mlp@2" in panel.report.value and "<table" in panel.report.value
        assert "mlp@2" in panel.version.options  # the panel read the versions again
        assert_made_by_fp16("mlp@2", mlp)
        assert stored_dtypes("mlp@2")["0.bias"] == "F32"
    finally:
        panel.close()


@pytest.mark.slow
def test_the_server_answers_from_the_fp16_versions_as_the_parent_does(mlp):
    torch_half = api.compress(mlp, "fp16", budget_s=0.2)["ref"]  # mlp@2
    exported = api.export(mlp, to="onnx")["ref"]  # mlp@3
    onnx_half = api.compress(exported, "fp16", budget_s=0.2)["ref"]  # mlp@4
    x = rows()
    (parent,) = api.runner(mlp).infer({"input": x}).values()
    handle = api.serve([torch_half, onnx_half], port=0, max_delay_ms=5)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        client = api.client(handle.url)
        for ref in (torch_half, onnx_half):
            version = ref.split("@")[1]
            served = client.infer("mlp", {"input": x}, version=version)["output"]
            assert client.last_version == version
            (local,) = api.runner(ref).infer({"input": x}).values()
            np.testing.assert_allclose(served, local, rtol=1e-6, atol=1e-6)  # what it serves
            np.testing.assert_allclose(served, parent, **FP16)  # within float16's precision
            assert not np.array_equal(served, parent)  # and not the parent's float32 weights
    finally:
        api.stop(handle.name)
