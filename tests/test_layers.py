"""The layers, checked from the source: what imports what.

``maas_lab.api`` is the facade the front ends call (the CLI, the magics, widgets, the lab
extension, the package's own ``__init__``, the pytest fixtures for plugin authors); nothing
under it may call back up into it, no module may reach into another's private names, and no
package's imports may go round in a circle (a circle is how a layer ends up calling back
into the one above it). The walk reads every ``import`` with ast, function-level ones
included, since a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# maas_lab.testing is the front end of a plugin author's tests: fixtures built on the API.
FRONT_ENDS = (
    "maas_lab",
    "maas_lab.cli",
    "maas_lab.magics",
    "maas_lab.widgets",
    "maas_lab.lab",
    "maas_lab.testing",
)


def _packages(root: Path) -> dict[str, Path]:
    """Top-level package name -> its folder: maas_lab and each plugin package."""
    found = {"maas_lab": root / "maas_lab"}
    for folder in sorted((root / "plugins").iterdir()):
        if (folder / "__init__.py").exists():
            found[folder.name] = folder
    return found


def _module_name(path: Path, folder: Path, package: str) -> str:
    parts = [package, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """``{module: modules it imports}`` over our own packages, and the private names one
    module imports from another (``a imports _b from c``)."""
    packages = _packages(root)
    modules: dict[str, Path] = {}
    for package, folder in packages.items():
        for path in folder.rglob("*.py"):
            modules[_module_name(path, folder, package)] = path
    graph: dict[str, set[str]] = {}
    private = []
    for name, path in sorted(modules.items()):
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] in packages}
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in packages:
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:  # `from . import jobs`: a module
                    deps.add(f"{target}.{alias.name}")
                    continue
                deps.add(target)
                dunder = alias.name.startswith("__") and alias.name.endswith("__")
                if alias.name.startswith("_") and not dunder and target != name:
                    private.append(f"{name} imports {alias.name} from {target}")
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_front_end(module: str) -> bool:
    return module == "maas_lab" or any(
        module == f or module.startswith(f + ".") for f in FRONT_ENDS[1:]
    )


def problems(root: Path) -> list[str]:
    graph, private = import_graph(root)
    found = [
        f"{m} imports maas_lab.api (only front ends may: {', '.join(FRONT_ENDS)})"
        for m, deps in sorted(graph.items())
        if "maas_lab.api" in deps and not _is_front_end(m)
    ]
    found += private
    found += ["an import circle: " + " <-> ".join(group) for group in cycles(graph)]
    return found


def test_only_front_ends_import_the_api_and_nothing_imports_a_private_name_or_goes_in_a_circle():
    assert problems(ROOT) == []


@pytest.mark.parametrize("front_end", ["maas_lab.widgets", "maas_lab.lab"])
def test_panels_and_the_lab_sidebar_call_the_api_only(front_end):
    """A panel, and the server extension behind the lab sidebar, reach the registry, plugins
    and servers through ``maas_lab.api``, as the CLI does; besides their own modules they may
    use only how commands are spelled (hints), how results read (results: sizes as a person
    reads them) and the errors they show."""
    graph, _ = import_graph(ROOT)
    allowed = {"maas_lab.api", "maas_lab.hints", "maas_lab.errors", "maas_lab.results"}
    found = {
        f"{m} imports {d}"
        for m, deps in graph.items()
        if m.startswith(front_end)
        for d in deps
        if not d.startswith(front_end) and d not in allowed
    }
    assert found == set()
    assert any(m.startswith(front_end + ".") for m in graph), f"the walk found no {front_end}"


def test_the_walk_catches_a_layer_calling_back_up(tmp_path):
    """The check above can fail: a small tree with each fault is caught, function-level and
    relative imports included."""
    pkg = tmp_path / "maas_lab"
    (pkg / "serving").mkdir(parents=True)
    (tmp_path / "plugins" / "maas_x").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text("from .serving import control\n")
    (pkg / "serving" / "__init__.py").write_text("")
    (pkg / "serving" / "control.py").write_text(
        "def f():\n    from ..api import registry\n    from .helpers import _secret\n"
    )
    (pkg / "serving" / "helpers.py").write_text("_secret = 1\n")
    (tmp_path / "plugins" / "maas_x" / "__init__.py").write_text("from .a import thing\n")
    (tmp_path / "plugins" / "maas_x" / "a.py").write_text("import maas_x\nthing = 1\n")
    found = problems(tmp_path)
    assert "maas_lab.serving.control imports maas_lab.api (only front ends may: " in found[0]
    assert "maas_lab.serving.control imports _secret from maas_lab.serving.helpers" in found
    assert "an import circle: maas_lab.api <-> maas_lab.serving.control" in found
    assert "an import circle: maas_x <-> maas_x.a" in found


def test_the_packages_api_names_are_not_also_its_modules():
    """``maas_lab.NAME`` is the api function NAME, before and after anything is imported: a
    name that is also a module of the package would turn into that module once imported."""
    import pkgutil

    import maas_lab

    modules = {m.name for m in pkgutil.iter_modules(maas_lab.__path__)}
    assert not modules & maas_lab._API
    from maas_lab import api

    for name in sorted(maas_lab._API):
        assert getattr(maas_lab, name) is getattr(api, name), name
