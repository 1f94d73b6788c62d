"""The plugin manager: built-ins and third-party plugins, all through the ``maas_lab`` group.

Entry points are loaded one at a time, and each hook implementation is called on its own, so
a plugin that fails to import or raises in a hook is recorded (name, distribution, version,
hook, error) and everything else keeps working. ``MAAS_LAB_LOAD_PLUGINS`` (comma-separated
entry-point names; empty for none) chooses which entry points load, so tests and users can
isolate themselves from whatever else is installed.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .components import KINDS, Component
from .errors import NotFoundError, UsageError

GROUP = "maas_lab"
HOOK_FOR_KIND = {
    "loader": "maas_loaders",
    "exporter": "maas_exporters",
    "compressor": "maas_compressors",
    "launcher": "maas_launchers",
    "serving_backend": "maas_serving_backends",
    "evaluator": "maas_evaluators",
}
assert set(HOOK_FOR_KIND) == set(KINDS)


@dataclass
class PluginFailure:
    plugin: str
    distribution: str
    version: str
    hook: str
    error: str

    def __str__(self) -> str:
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"plugin {self.plugin!r}{dist} failed in {self.hook}: {self.error}"


@dataclass
class PluginInfo:
    name: str
    distribution: str = ""
    version: str = ""
    hooks: list[str] = field(default_factory=list)


class Plugins:
    """The loaded plugins and the components they provide."""

    def __init__(self, load_entry_points: bool = True, allow: str | None = None):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self._components: dict[str, dict[str, Component]] | None = None
        if load_entry_points:
            if allow is None:
                allow = os.environ.get("MAAS_LAB_LOAD_PLUGINS")
            self._load_entry_points(allow)

    def _load_entry_points(self, allow: str | None) -> None:
        wanted = None if allow is None else {a.strip() for a in allow.split(",") if a.strip()}
        seen = set()
        for ep in entry_points(group=GROUP):
            if ep.name in seen or (wanted is not None and ep.name not in wanted):
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else ""
            dist_version = dist.version if dist is not None else ""
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin is named, not fatal
                self.failures.append(
                    PluginFailure(ep.name, dist_name, dist_version, "import", _describe(exc))
                )
                continue
            self.register(module, ep.name, dist_name, dist_version)

    def register(
        self, plugin: object, name: str, distribution: str = "", version: str = ""
    ) -> None:
        """Register a plugin object or module directly (tests, notebooks, entry points)."""
        if name in self.info:
            self.failures.append(
                PluginFailure(name, distribution, version, "register", "duplicate plugin name")
            )
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # e.g. a hookimpl that matches no hookspec
            self.failures.append(PluginFailure(name, distribution, version, "register", str(exc)))
            return
        hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        self.info[name] = PluginInfo(name, distribution, version, hooks)
        self._components = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._components = None

    @property
    def components(self) -> dict[str, dict[str, Component]]:
        if self._components is None:
            self._components = self._collect()
        return self._components

    def _collect(self) -> dict[str, dict[str, Component]]:
        found: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        # Failures from an earlier collection are recomputed, not accumulated.
        self.failures = [f for f in self.failures if f.hook in ("import", "register")]
        for kind, hook_name in HOOK_FOR_KIND.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # registration order: first one wins
                info = self.info.get(impl.plugin_name, PluginInfo(impl.plugin_name))
                pending: list[Component] = []

                def register(component, _pending=pending):
                    if not isinstance(component, Component):
                        raise TypeError(f"register() takes a Component, got {component!r}")
                    _pending.append(component)

                args = {"register": register}
                try:
                    impl.function(*(args[a] for a in impl.argnames))
                    for comp in pending:
                        comp.check()
                except Exception as exc:
                    self.failures.append(
                        PluginFailure(
                            info.name, info.distribution, info.version, hook_name, _describe(exc)
                        )
                    )
                    continue
                for comp in pending:
                    other = found[kind].get(comp.name)
                    if other is not None:
                        self.failures.append(
                            PluginFailure(
                                info.name,
                                info.distribution,
                                info.version,
                                hook_name,
                                f"{kind} {comp.name!r} is already provided by plugin "
                                f"{other.plugin!r}; this one was not registered",
                            )
                        )
                        continue
                    comp.kind, comp.plugin = kind, info.name
                    comp.distribution, comp.version = info.distribution, info.version
                    found[kind][comp.name] = comp
        return found

    def get(self, kind: str, name: str) -> Component:
        if kind not in KINDS:
            raise UsageError(f"Unknown component kind {kind!r}; kinds are {', '.join(KINDS)}.")
        comps = self.components[kind]
        if name not in comps:
            raise NotFoundError(kind.replace("_", " "), name, list(comps))
        return comps[name]

    def for_format(self, kind: str, fmt: str) -> list[Component]:
        return [c for c in self.components[kind].values() if fmt in c.formats]

    def formats(self, kind: str = "loader") -> list[str]:
        return sorted({f for c in self.components[kind].values() for f in c.formats})


def _describe(exc: BaseException) -> str:
    """One line naming the exception and where in the plugin it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
    return _plugins


def set_plugins(plugins: Plugins | None) -> Plugins | None:
    """Swap the process-wide plugin set (tests use a fresh one each); returns the old one."""
    global _plugins
    old, _plugins = _plugins, plugins
    return old
