"""``maas plugin new NAME --kind KIND``: a new plugin package, installable and tested, that
does something real from its first minute, so an author starts from working code and a
passing test rather than from a stub.

Each kind's package is written from the templates in ``templates/plugin/`` (``*.tmpl`` files,
so neither pytest nor ruff takes them for code; the files they become pass both):
``common/`` holds what every package has (``pyproject.toml``, ``README.md``), ``<kind>/``
the entry-point module, its test and the README's kind-specific part. Templates are
:class:`string.Template` text: ``$module``, ``$component``... are filled in and ``$$`` is a
dollar sign.

Nothing is written unless all of it is: the package is written into a hidden sibling folder
and renamed into place at the end, and that folder is removed on any failure.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from string import Template

from . import contract
from .errors import UsageError
from .hookspecs import CONTRACT

KINDS = ("compressor", "exporter", "serving-backend", "launcher", "loader", "evaluator", "engine")
TEMPLATES = Path(__file__).parent / "templates" / "plugin"
# Modules a plugin must never shadow: the core and the built-in plugins.
RESERVED = (
    "maas_lab",
    "maas_torch",
    "maas_hf",
    "maas_onnx",
    "maas_eval",
    "maas_accelerate",
    "maas_ray",
    "maas_captum",
)
# Modules Python imports by itself at start-up when they exist: a plugin must never be one.
STARTUP = ("sitecustomize", "usercustomize")
# PEP 508 distribution names: letters, digits, '-', '_', '.', a letter or digit at each end.
_DISTRIBUTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_COMPONENT = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")  # the core's rule (components._NAME)
_PREFIX = re.compile(r"^maas[-_.](lab[-_.])?")  # maas-lab-x, maas_lab_x, maas-x, maas.x: x
MAX_NAME = 40  # the generated code's lines hold the names and must stay within 100 columns


@dataclass(frozen=True)
class Kind:
    """What a package of one kind holds: its one-line description, what it installs (and
    what its tests need besides), its files as ``(template, path in the package)``, the
    README's word on what to replace to make it one's own (a template too), and the plugin
    contract it declares: the oldest that has every hook and field its code uses, so the
    package also loads into older cores of the same major version."""

    description: str
    dependencies: tuple[str, ...]
    test_dependencies: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    replace: str
    contract: str = "1.0"


def _files(kind: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (
        (f"{kind}/module.py.tmpl", "$module/__init__.py"),
        *extra,
        (f"{kind}/test.py.tmpl", "tests/test_$module.py"),
    )


_LINEAR = ("common/linear.py.tmpl", "$module/linear.py")
_SKLEARN = ("numpy>=1.24", "safetensors>=0.4", "scikit-learn>=1.3")

KIND_SPECS = {
    "compressor": Kind(
        "Half-precision (float16) copies of torch and ONNX models: half the size",
        ("numpy>=1.24", "safetensors>=0.4", "torch>=2.2", "onnx>=1.15", "onnxruntime>=1.17"),
        ("maas-lab[torch,onnx]",),
        _files("compressor"),
        "The work is `compress(checkout, options, workdir, context)` in `$module/__init__.py`:"
        " replace it with your own compression (it writes files into `workdir` and returns an"
        " `Artifact` naming them), and the `Component` that `maas_compressors` registers with"
        " your formats and parameters.",
    ),
    "exporter": Kind(
        "ONNX models optimised offline by onnxruntime: fused graph, faster to load",
        ("onnx>=1.15", "onnxruntime>=1.17"),
        ("maas-lab[torch,onnx]",),
        _files("exporter"),
        "The work is `export(checkout, options, workdir)` in `$module/__init__.py`: replace it"
        " with your own export (it writes files into `workdir` and returns an `Artifact`), and"
        " the `Component` that `maas_exporters` registers with the formats it takes and makes.",
    ),
    "serving-backend": Kind(
        "Serve scikit-learn linear models stored without pickle (safetensors)",
        _SKLEARN,
        (),
        _files("serving-backend", _LINEAR),
        "The runner is made by `serve(checkout, options)` in `$module/__init__.py`; the stored"
        " format (writing, reading and checking its file) is `$module/linear.py`. Replace them"
        " with your own runtime and format: a runner needs `signature` and `infer(feeds)`.",
    ),
    "launcher": Kind(
        "Run maas_lab training jobs with PyTorch's own torchrun",
        ("torch>=2.2",),
        (),
        _files("launcher"),
        "The command line is made by `plan(entry, options)` in `$module/__init__.py`, and a"
        " failed job's log is read by `explain(log)`: replace them for your engine (Slurm's"
        " srun, mpirun, a cluster's own launcher), with its options as `Param`s.",
    ),
    "loader": Kind(
        "Load scikit-learn linear models stored without pickle (safetensors)",
        _SKLEARN,
        (),
        _files("loader", _LINEAR),
        "The loader is `load(checkout, options)` in `$module/__init__.py`, with `validate(files,"
        " config)` refusing bad files at registration; the format itself (writing, reading and"
        " checking its file) is `$module/linear.py`. Replace them with your own format.",
    ),
    "evaluator": Kind(
        "Expected calibration error of classifiers: are their confidences honest?",
        ("numpy>=1.24",),
        ("maas-lab[torch]",),
        _files("evaluator"),
        "The measurement is `calibration(subjects, context)` in `$module/__init__.py`: replace"
        " it with your own figure, one `{metric: number}` dict per version (empty where it does"
        " not apply), and the `Component` that `maas_evaluators` registers.",
    ),
    "engine": Kind(
        "Serve a maas_lab server from one process on uvicorn, for containers",
        ("uvicorn>=0.30",),
        ("maas-lab[torch]",),
        _files("engine"),
        "The engine is `serve(server)` in `$module/__init__.py`, with `validate(options, core)`"
        " refusing what it cannot do before anything starts: replace them with your own (start"
        " replicas where your platform runs them, each hosting `replica_app(...)`), keeping the"
        " calls to `server` (`started`, `report`, `wait`).",
        contract="1.1",  # the maas_serving_engines hook
    ),
}
assert tuple(KIND_SPECS) == KINDS
# A package must load into the core that writes it.
assert all(contract.parse(k.contract) <= contract.parse(CONTRACT) for k in KIND_SPECS.values())


def names(name: str) -> dict[str, str]:
    """The distribution, module and component names a package called ``name`` gets, checked:
    ``maas-fp16`` -> module ``maas_fp16``, component (and entry point) ``fp16``. Raises
    :class:`UsageError` naming what is wrong and how to fix it."""
    if not isinstance(name, str) or not _DISTRIBUTION.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a valid package name: use letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (e.g. maas-fp16)."
        )
    if len(name) > MAX_NAME:
        raise UsageError(
            f"{name!r} is {len(name)} characters long; give at most {MAX_NAME}, so the "
            "generated code stays readable (e.g. maas-fp16)."
        )
    module = re.sub(r"[-_.]+", "_", name).lower()
    if not module.isidentifier() or keyword.iskeyword(module):
        raise UsageError(
            f"{name!r} gives the module name {module!r}, which Python cannot import: start "
            "the name with a letter and avoid Python keywords (e.g. maas-fp16)."
        )
    _check_module_is_free(name, module)
    _check_distribution_is_free(name)
    component = _PREFIX.sub("", name.lower(), count=1).replace(".", "-")
    if not _COMPONENT.fullmatch(component):
        raise UsageError(
            f"{name!r} gives the component name {component!r} (the name without its maas "
            "prefix), which must start with a letter and hold at most 64 lower-case letters, "
            "digits, '-' or '_': choose another name, e.g. maas-fp16."
        )
    return {"distribution": name, "module": module, "component": component}


def _same(a: str, b: str) -> bool:
    """Whether two distribution names are the same distribution (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", a).lower() == re.sub(r"[-_.]+", "-", b).lower()


def _check_component_is_free(name: str, component: str, kind: str) -> None:
    """The entry-point name (the component's) must be free: the core loads one entry point
    per name, so a second ``torch`` would be refused with the first; and so must the component's
    name among those of its kind. An installed earlier version of this very distribution
    does not count."""
    from importlib.metadata import entry_points

    from .plugins import GROUP, distribution_of, get_plugins

    for ep in entry_points(group=GROUP):
        owner = distribution_of(ep)[0]
        if ep.name == component and not _same(owner, name):
            raise UsageError(
                f"{name!r} gives the entry-point name {component!r}, which {owner or 'another'}"
                f" plugin already uses; choose another name, e.g. maas-{component}2."
            )
    other = get_plugins().components[kind.replace("-", "_")].get(component)
    if other is not None and not _same(other.distribution, name):
        raise UsageError(
            f"{name!r} gives the {kind} name {component!r}, which plugin {other.plugin!r} "
            f"({other.distribution or 'registered in code'}) already provides; choose another "
            f"name, e.g. maas-{component}2."
        )


def _check_distribution_is_free(name: str) -> None:
    """Installing a package named like an installed one (``scikit-learn``, ``pyyaml``)
    would replace it; a maas_lab plugin of that name may be written again."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        found = distribution(name)
    except PackageNotFoundError:
        return
    if any(ep.group == "maas_lab" for ep in found.entry_points):
        return
    raise UsageError(
        f"{name!r} is the name of the installed package {found.metadata['Name']} "
        f"{found.version}, which installing this one would replace; choose another name, "
        f"e.g. maas-{name.lower()}."
    )


def _check_module_is_free(name: str, module: str) -> None:
    """A plugin module must not shadow the core, a built-in plugin, the standard library or
    an installed package (``onnx`` would shadow onnx itself). A module that an installed
    maas_lab plugin provides may be regenerated: that is the same plugin, written again."""
    if module in RESERVED:
        rest = module.removeprefix("maas_").removeprefix("lab").strip("_")
        raise UsageError(
            f"{name!r} gives the module name {module!r}, which is maas_lab's own; choose "
            f"another name, e.g. maas-lab-{rest.replace('_', '-') or 'mine'}."
        )
    if module in STARTUP:
        raise UsageError(
            f"{name!r} gives the module name {module!r}, which Python imports into every "
            f"process at start-up; choose another name, e.g. maas-{module}."
        )
    if module in sys.stdlib_module_names:
        raise UsageError(
            f"{name!r} gives the module name {module!r}, which would shadow Python's standard "
            f"library module; choose another name, e.g. maas-{module}."
        )
    from importlib.metadata import entry_points

    plugin_modules = {ep.value.split(":")[0].split(".")[0] for ep in entry_points(group="maas_lab")}
    if module not in plugin_modules and _importable(module):
        raise UsageError(
            f"{name!r} gives the module name {module!r}, which is already installed here and "
            f"would be shadowed; choose another name, e.g. maas-{module.replace('_', '-')}."
        )


def _importable(module: str) -> bool:
    """Whether ``import module`` would find something now. Asks the import system's finders
    rather than ``importlib.util.find_spec``, which answers from ``sys.modules`` too: a
    module imported earlier from a folder no longer on the path is not installed."""
    for finder in sys.meta_path:
        try:
            if getattr(finder, "find_spec", None) and finder.find_spec(module, None):
                return True
        except (ImportError, ValueError):
            continue
    return False


def new_plugin(name: str, kind: str, parent: str | os.PathLike = ".") -> dict:
    """Write the plugin package ``parent/NAME`` for a component of ``kind`` (one of
    :data:`KINDS`) and return ``{"path", "distribution", "module", "component", "kind",
    "files"}`` (``files``: paths relative to the package folder).

    A bad name or kind, a missing parent folder, or ``parent/NAME`` already there is a
    :class:`UsageError`, and then nothing is written."""
    chosen = str(kind).strip().lower().replace("_", "-") if isinstance(kind, str) else kind
    if chosen not in KINDS:
        raise UsageError(f"Unknown plugin kind {kind!r}; choose one of {', '.join(KINDS)}.")
    spec = KIND_SPECS[chosen]
    found = names(name)
    _check_component_is_free(name, found["component"], chosen)
    try:
        parent = Path(parent).expanduser()
    except RuntimeError:  # ~someone who has no home here
        raise UsageError(f"{str(parent)!r} names a home folder that does not exist here.") from None
    if not parent.is_dir():
        raise UsageError(
            f"{str(parent)!r} is not a folder; create it first or give another parent folder."
        )
    target = parent / name
    if os.path.lexists(target):
        raise UsageError(
            f"{str(target)!r} already exists; choose another name or parent folder, or remove it."
        )
    values = {
        **found,
        "kind": chosen,
        "contract": spec.contract,
        "description": spec.description,
        "dependencies": _toml_list(("maas-lab", *spec.dependencies)),
        "test_dependencies": _toml_list(("pytest>=8", *spec.test_dependencies)),
    }
    values["about"] = _render(f"{chosen}/about.md.tmpl", values).rstrip("\n")
    values["replace"] = textwrap.fill(Template(spec.replace).substitute(values), 92)
    files = [
        ("common/pyproject.toml.tmpl", "pyproject.toml"),
        ("common/README.md.tmpl", "README.md"),
    ]
    files += spec.files
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
    except OSError as exc:
        raise UsageError(f"Cannot write in {str(parent)!r}: {exc.strerror}.") from None
    work = staging / name  # made with the usual permissions (mkdtemp's are private)
    written = []
    try:
        work.mkdir()
        for template, where in files:
            rel = Template(where).substitute(values)
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_render(template, values), encoding="utf-8")
            written.append(rel)
        if os.path.lexists(target):  # someone made it meanwhile: theirs stays
            raise UsageError(f"{str(target)!r} appeared while writing; nothing was written.")
        os.rename(work, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "path": str(target),
        "distribution": found["distribution"],
        "module": found["module"],
        "component": found["component"],
        "kind": chosen,
        "files": sorted(written),
    }


def _render(template: str, values: dict[str, str]) -> str:
    return Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values)


def _toml_list(items) -> str:
    return "[\n" + "".join(f'    "{i}",\n' for i in items) + "]"
