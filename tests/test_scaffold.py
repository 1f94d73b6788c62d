"""`maas plugin new`: every kind of generated package installs for real, is listed by `maas
plugins` with its distribution and version, and passes its own tests through maas_lab; bad
names are refused before anything is written; the generated code passes the repo's ruff."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from maas_lab import contract, scaffold
from maas_lab.errors import UsageError
from maas_lab.hookspecs import CONTRACT

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# One name per kind, as an author would choose it; the distribution each prefix form gives.
NAMES = {
    "compressor": "maas-fp16",
    "exporter": "maas-lab-ort-optimize",
    "serving-backend": "maas_sklearn_serve",
    "launcher": "maas-torchrun",
    "loader": "maas.sklearn.linear",
    "evaluator": "maas-calibration",
    "engine": "maas-uvicorn",
}
COMPONENTS = {
    "compressor": "fp16",
    "exporter": "ort-optimize",
    "serving-backend": "sklearn_serve",
    "launcher": "torchrun",
    "loader": "sklearn-linear",
    "evaluator": "calibration",
    "engine": "uvicorn",
}
slow = pytest.mark.slow


@pytest.fixture(autouse=True)
def plugins(maas_plugins):
    """Name checks ask the plugins what is taken: a fresh set, whatever ran before."""
    return maas_plugins


def listing(folder: Path) -> list[str]:
    """Everything under ``folder``, hidden entries included (a left-over staging folder)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def env_with(site: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_LAB_")}
    env.update(PYTHONPATH=str(site), MAAS_LAB_HOME=str(home), MAAS_LAB_PROGRESS="0")
    env.update(HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    return env


# ---------------------------------------------------------------------- what is written


@pytest.mark.parametrize("kind", scaffold.KINDS)
def test_a_package_has_its_metadata_entry_point_and_contract(kind, tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    made = scaffold.new_plugin(NAMES[kind], kind, tmp_path)
    module = made["module"]
    assert made == {
        "path": str(tmp_path / NAMES[kind]),
        "distribution": NAMES[kind],
        "module": module,
        "component": COMPONENTS[kind],
        "kind": kind,
        "files": made["files"],
    }
    folder = Path(made["path"])
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert made["files"] == files
    for must in ("pyproject.toml", "README.md", f"{module}/__init__.py", f"tests/test_{module}.py"):
        assert must in made["files"]
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    meta = project["project"]
    assert (meta["name"], meta["version"]) == (NAMES[kind], "0.1.0")
    assert meta["description"] and meta["requires-python"] == ">=3.10"
    assert meta["dependencies"][0] == "maas-lab"
    assert meta["entry-points"]["maas_lab"] == {COMPONENTS[kind]: module}
    assert project["build-system"]["build-backend"] == "hatchling.build"
    assert project["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    # what it needs is what this environment has (the tests below install with --no-deps)
    for dep in meta["dependencies"] + meta["optional-dependencies"]["test"]:
        assert version(Requirement(dep).name)
    # the contract is a literal in the entry-point module, as the core reads it at load: the
    # oldest that has what the package uses (serving engines came with 1.1), so the package
    # loads into every core of that major version from then on, this one included
    tree = ast.parse((folder / module / "__init__.py").read_text())
    declared = [
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["MAAS_LAB_CONTRACT"]
    ]
    assert declared == ["1.1" if kind == "engine" else "1.0"]
    assert contract.problem(declared[0], module) is None, CONTRACT
    readme = (folder / "README.md").read_text()
    assert f"pip install -e ./{NAMES[kind]}" in readme and "docs/plugins.md" in readme
    assert "pytest" in readme and "%maas" in readme


def test_templates_ship_in_the_wheel():
    pytest.importorskip("hatchling")
    from hatchling.builders.wheel import WheelBuilder

    shipped = {f.distribution_path for f in WheelBuilder(str(REPO)).recurse_included_files()}
    templates = {
        p.relative_to(REPO).as_posix() for p in scaffold.TEMPLATES.rglob("*") if p.is_file()
    }
    assert templates and templates <= shipped


# ---------------------------------------------------------------------- refused


@pytest.mark.parametrize("existing", ["folder", "file", "link"])
def test_an_existing_target_is_refused_and_left_alone(existing, tmp_path):
    target = tmp_path / "maas-fp16"
    if existing == "folder":
        target.mkdir()
        (target / "mine.txt").write_text("keep me")
    elif existing == "file":
        target.write_text("keep me")
    else:
        target.symlink_to(tmp_path / "nowhere")
    before = listing(tmp_path)
    with pytest.raises(UsageError, match="already exists; choose another name or parent"):
        scaffold.new_plugin("maas-fp16", "compressor", tmp_path)
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    "name,message",
    [
        ("", "not a valid package name"),
        ("-maas-fp16", "not a valid package name"),
        ("maas-fp16-", "not a valid package name"),
        ("maas fp16", "not a valid package name"),
        ("../maas-fp16", "not a valid package name"),
        ("maas/fp16", "not a valid package name"),
        ("maas-fp16!", "not a valid package name"),
        ("máas-fp16", "not a valid package name"),
        ("maas-" + "x" * 36, "is 41 characters long; give at most 40"),
        ("3d-maas", "module name '3d_maas', which Python cannot import"),
        ("class", "module name 'class', which Python cannot import"),
        ("maas-lab", "module name 'maas_lab', which is maas_lab's own"),
        ("maas_onnx", "module name 'maas_onnx', which is maas_lab's own"),
        ("maas-ray", "module name 'maas_ray', which is maas_lab's own"),
        ("json", "shadow Python's standard library module"),
        ("onnx", "module name 'onnx', which is already installed here"),
        ("scikit-learn", "the installed package scikit-learn .*, which installing this one"),
        ("PyYAML", "the installed package PyYAML .*, which installing this one would replace"),
        ("sitecustomize", "which Python imports into every process at start-up"),
        ("maas-3d", "component name '3d'"),
        ("maas-_fp16", "component name '_fp16'"),
        ("maas-lab-torch", "entry-point name 'torch', which maas-lab plugin already uses"),
        ("maas-prune", "compressor name 'prune', which plugin 'torch' \\(maas-lab\\) already"),
    ],
)
def test_a_bad_name_is_refused_with_the_fix_and_nothing_is_written(name, message, tmp_path):
    before = listing(tmp_path)
    with pytest.raises(UsageError, match=message) as caught:
        scaffold.new_plugin(name, "compressor", tmp_path)
    assert "e.g. maas-" in str(caught.value)  # each message shows a name that works
    assert listing(tmp_path) == before


def test_an_unknown_kind_is_refused_naming_the_kinds(tmp_path):
    with pytest.raises(
        UsageError,
        match="Unknown plugin kind 'quantizer'; choose one of "
        "compressor, exporter, serving-backend, launcher, loader, evaluator, engine",
    ):
        scaffold.new_plugin("maas-fp16", "quantizer", tmp_path)
    assert listing(tmp_path) == []
    # the core's own spelling is understood
    assert scaffold.new_plugin("maas-x", "serving_backend", tmp_path)["kind"] == "serving-backend"


def test_a_parent_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is not a folder; create it first"):
        scaffold.new_plugin("maas-fp16", "compressor", tmp_path / "missing")
    with pytest.raises(UsageError, match="names a home folder that does not exist here"):
        scaffold.new_plugin("maas-fp16", "compressor", "~maas-nobody/plugins")
    assert listing(tmp_path) == []


def test_a_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    real, calls = scaffold._render, []

    def failing(template, values):
        calls.append(template)
        if len(calls) == 4:  # the README's part, pyproject and README: then the module
            raise OSError("disk full")
        return real(template, values)

    monkeypatch.setattr(scaffold, "_render", failing)
    with pytest.raises(OSError, match="disk full"):
        scaffold.new_plugin("maas-fp16", "compressor", tmp_path)
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------- the code it writes


@pytest.mark.parametrize("length", ["usual", "longest"])
def test_generated_code_passes_the_repos_ruff(length, tmp_path):
    for i, kind in enumerate(scaffold.KINDS):
        name = NAMES[kind] if length == "usual" else f"plugin{i}-" + "x" * 32
        scaffold.new_plugin(name, kind, tmp_path)
    config = ["--config", str(REPO / "pyproject.toml")]
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [str(BIN / "ruff"), *command, *config, str(tmp_path)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------- installed for real


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """One package of every kind, generated and installed by one ``pip install`` (into a
    folder on PYTHONPATH, beside this venv's maas-lab and torch), as an author who keeps
    several plugins installs them; and ``maas plugins`` as it lists them all."""
    parent = tmp_path_factory.mktemp("plugins")
    made = {kind: scaffold.new_plugin(NAMES[kind], kind, parent) for kind in scaffold.KINDS}
    site = parent / "site"
    # tests/installs.py's pip_install_into, for several packages in one call
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--disable-pip-version-check", "--target", str(site)]
        + [m["path"] for m in made.values()],
        check=True,
    )
    listed = subprocess.run(
        [str(BIN / "maas"), "plugins"],
        capture_output=True,
        text=True,
        env=env_with(site, parent / "home"),
        check=True,
    ).stdout
    return {"made": made, "site": site, "listed": listed}


@slow
@pytest.mark.parametrize("kind", scaffold.KINDS)
def test_a_generated_package_installs_is_listed_and_passes_its_own_tests(kind, installed, tmp_path):
    """Each kind is listed by ``maas plugins`` with its distribution, version, status and
    what it provides, and ``pytest`` runs in the package as its author would, with a
    registry of its own."""
    made, listed = installed["made"][kind], installed["listed"]
    (row,) = [line.split() for line in listed.splitlines() if line.startswith(made["component"])]
    assert row[:3] == [made["component"], NAMES[kind], "0.1.0"], listed
    assert row[-1] == "ok" and f"{kind.replace('-', '_')}:{made['component']}" in listed

    start = time.monotonic()
    tests = subprocess.run(
        # nbval is this checkout's notebook plugin, not the package's: loading it halved the
        # speed of each package's own run (measured), and its author's environment lacks it
        [str(BIN / "pytest"), "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:nbval"],
        cwd=made["path"],
        capture_output=True,
        text=True,
        env=env_with(installed["site"], tmp_path / "home"),
    )
    out = tests.stdout + tests.stderr
    assert tests.returncode == 0, out
    assert " passed" in out and "skipped" not in out and "failed" not in out, out
    print(f"{kind}: its own tests took {time.monotonic() - start:.1f} s")
