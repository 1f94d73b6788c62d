"""The plugin manager: built-ins and third-party plugins, all through the ``maas_lab`` group.

Entry points are loaded one at a time, and each hook implementation is called on its own, so
a plugin that fails to import, was written for another contract version (see
:mod:`maas_lab.contract`) or raises in a hook is recorded (name, distribution, version, hook,
error) and everything else keeps working. ``MAAS_LAB_LOAD_PLUGINS`` (comma-separated
entry-point names; empty for none) chooses which entry points load, so tests and users can
isolate themselves from whatever else is installed.

When two plugins offer the same thing (a component name, or the loader, backend or exporter
for one format), neither silently wins: the bare name or format is refused with both named,
each stays reachable as ``plugin:name``, and ``MAAS_LAB_PREFER`` (plugin names, first wins)
says which one the user wants. It is read on each use, so ``%env`` in a notebook works.
"""

from __future__ import annotations

import difflib
import os
import traceback
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points

import pluggy

from . import contract, hookspecs
from .components import KINDS, Component
from .errors import NotFoundError, UsageError
from .hints import command

GROUP = "maas_lab"
PREFER = "MAAS_LAB_PREFER"
HOOK_FOR_KIND = {
    "loader": "maas_loaders",
    "exporter": "maas_exporters",
    "compressor": "maas_compressors",
    "launcher": "maas_launchers",
    "serving_backend": "maas_serving_backends",
    "evaluator": "maas_evaluators",
    "engine": "maas_serving_engines",
    "explainer": "maas_explainers",
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
    contract: str = ""  # the contract version it declares ("" when registered in-process)


class Plugins:
    """The loaded plugins and the components they provide."""

    def __init__(self, load_entry_points: bool = True, allow: str | None = None):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self._components: dict[str, dict[str, Component]] | None = None
        self._conflicts: list[str] = []
        self._ambiguous: dict[tuple[str, str], list[Component]] = {}
        self._prefer_seen: tuple[str, ...] = ()
        if load_entry_points:
            if allow is None:
                allow = os.environ.get("MAAS_LAB_LOAD_PLUGINS")
            self._load_entry_points(allow)

    def _load_entry_points(self, allow: str | None) -> None:
        wanted = None if allow is None else {a.strip() for a in allow.split(",") if a.strip()}
        # One distribution found twice on sys.path is one plugin (the first copy, as import
        # finds it); two distributions naming one plugin are both refused, never one picked.
        by_name: dict[str, dict[str, tuple]] = {}
        for ep in entry_points(group=GROUP):
            if wanted is None or ep.name in wanted:
                dist_name, dist_version = distribution_of(ep)
                by_name.setdefault(ep.name, {}).setdefault(dist_name, (ep, dist_version))
        for name, dists in by_name.items():
            if len(dists) > 1:
                for dist_name, (_, dist_version) in dists.items():
                    others = " and ".join(
                        f"{d} {v}".strip() for d, (_, v) in dists.items() if d != dist_name
                    )
                    self.failures.append(
                        PluginFailure(
                            name,
                            dist_name,
                            dist_version,
                            "entry point",
                            f"{others} also installs a plugin named {name!r}, so neither is "
                            "loaded: uninstall the one you do not want",
                        )
                    )
                continue
            ((dist_name, (ep, dist_version)),) = dists.items()
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin is named, not fatal
                self.failures.append(
                    PluginFailure(ep.name, dist_name, dist_version, "import", _describe(exc))
                )
                continue
            # An installed plugin must say which contract it was written for.
            why = contract.problem(contract.declared(module), ep.value, dist_name)
            if why:
                self.failures.append(
                    PluginFailure(ep.name, dist_name, dist_version, "contract", why)
                )
                continue
            self.register(module, ep.name, dist_name, dist_version)

    def register(
        self, plugin: object, name: str, distribution: str = "", version: str = ""
    ) -> None:
        """Register a plugin object or module directly (tests, notebooks, entry points).

        One declaring ``MAAS_LAB_CONTRACT`` is checked like an installed plugin; one that
        does not is taken as written for this core (it was written in this process)."""
        declared = contract.declared(plugin)
        if declared is not None:
            where = getattr(plugin, "__name__", type(plugin).__name__)
            why = contract.problem(declared, where, distribution)
            if why:
                self.failures.append(PluginFailure(name, distribution, version, "contract", why))
                return
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
        self.info[name] = PluginInfo(name, distribution, version, hooks, str(declared or ""))
        self._components = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._components = None

    @property
    def components(self) -> dict[str, dict[str, Component]]:
        """Each kind's components by name; a name two plugins claim appears only as
        ``plugin:name``, unless ``MAAS_LAB_PREFER`` names one of them."""
        if self._components is None or self._prefer_seen != preferred():
            self._prefer_seen = preferred()
            self._components = self._collect()
        return self._components

    def _collect(self) -> dict[str, dict[str, Component]]:
        found: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        clashes: dict[tuple[str, str], list[Component]] = {}
        # Failures from an earlier collection are recomputed, not accumulated.
        self.failures = [f for f in self.failures if f.hook in ("import", "contract", "register")]
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
                        _check_option_names(kind, comp)
                except Exception as exc:
                    self.failures.append(
                        PluginFailure(
                            info.name, info.distribution, info.version, hook_name, _describe(exc)
                        )
                    )
                    continue
                names = [c.name for c in pending]
                twice = sorted({n for n in names if names.count(n) > 1})
                if twice:
                    self.failures.append(
                        PluginFailure(
                            info.name,
                            info.distribution,
                            info.version,
                            hook_name,
                            f"it registers {kind} {', '.join(map(repr, twice))} more than once",
                        )
                    )
                    continue
                for comp in pending:
                    comp.kind, comp.plugin = kind, info.name
                    comp.distribution, comp.version = info.distribution, info.version
                    clash = clashes.get((kind, comp.name))
                    if clash is not None:
                        clash.append(comp)
                    elif comp.name in found[kind]:
                        clashes[(kind, comp.name)] = [found[kind].pop(comp.name), comp]
                    else:
                        found[kind][comp.name] = comp
        self._ambiguous = {}
        name_lines = []
        for (kind, name), comps in clashes.items():
            chosen = _choose(comps)
            for comp in comps:
                if comp is chosen:
                    found[kind][name] = comp
                else:
                    qualified = f"{comp.plugin}:{name}"
                    found[kind][qualified] = replace(comp, name=qualified)
            if chosen is None:
                self._ambiguous[(kind, name)] = comps
            name_lines.append(_clash_line(f"{_kinds(kind)} named {name!r}", comps, chosen))
        self._conflicts = name_lines + _format_conflicts(found)
        return found

    def get(self, kind: str, name: str) -> Component:
        if kind not in KINDS:
            raise UsageError(f"Unknown component kind {kind!r}; kinds are {', '.join(KINDS)}.")
        found = self._named(kind, name)
        if found is None:
            raise NotFoundError(kind.replace("_", " "), name, list(self.components[kind]))
        return found

    def _named(self, kind: str, name: str) -> Component | None:
        """The component ``name`` (or ``plugin:name``) of ``kind``; a name two plugins
        claim, with no preference, is refused naming both and how to choose."""
        comps = self.components[kind]
        if name in comps:
            return comps[name]
        if (kind, name) in self._ambiguous:
            raise UsageError(_ambiguous(kind, name, self._ambiguous[(kind, name)]))
        plugin, sep, bare = name.partition(":")
        if sep:
            for comp in comps.values():
                if comp.plugin == plugin and comp.name == bare:
                    return comp
        return None

    def for_format(self, kind: str, fmt: str) -> list[Component]:
        return [c for c in self.components[kind].values() if fmt in c.formats]

    def formats(self, kind: str = "loader") -> list[str]:
        return sorted({f for c in self.components[kind].values() for f in c.formats})

    # Typed look-ups: the one place that says which component does a job, and the one
    # error ("which plugins can") when none does. When several claim a format, the one
    # MAAS_LAB_PREFER names is used; without it the job is refused naming them all, and
    # `conflicts` says so up front (shown by `maas plugins`).

    def loader(self, fmt: str) -> Component:
        """The loader that opens ``fmt``."""
        return self._one_for("loader", fmt, "opens", "Formats with a loader")

    def backend(self, fmt: str) -> Component:
        """The serving backend that runs ``fmt`` (inference, parity checks, serving)."""
        return self._one_for("serving_backend", fmt, "can run", "Formats with a runner")

    def exporter(self, to: str, fmt: str) -> Component:
        """The exporter named ``to``, or producing format ``to``, that takes ``fmt``."""
        able = [e for e in self.components["exporter"].values() if fmt in e.formats]
        named = self._named("exporter", to)
        if named is not None and fmt in named.formats:
            return named
        making = [e for e in able if e.produces == to]
        if making:
            return _pick("exporter", making, f"make {to!r} from {fmt!r}")
        takes = ", ".join(f"{e.name} (to {e.produces})" for e in able) or "none"
        raise UsageError(
            f"No exporter makes {to!r} from format {fmt!r}. Exporters that take {fmt!r}: "
            f"{takes}.{self._failed_hint('maas_exporters')}"
        )

    def compressor(self, name: str, fmt: str, ref: str = "") -> Component:
        """The compressor ``name``, checked to take format ``fmt`` (of version ``ref``)."""
        comps = self.components["compressor"]
        what = f"{ref} ({fmt})" if ref else fmt
        able = ", ".join(sorted(c.name for c in comps.values() if fmt in c.formats)) or "none"
        comp = self._named("compressor", name)
        if comp is None:
            close = difflib.get_close_matches(name, list(comps), n=2)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise UsageError(
                f"No compressor named {name!r}.{hint} Installed: "
                f"{', '.join(sorted(comps)) or 'none'}; those that take {what}: {able}."
                + self._failed_hint("maas_compressors")
            )
        if fmt not in comp.formats:
            raise UsageError(
                f"Compressor {name!r} takes {', '.join(comp.formats)} versions, not {what}. "
                f"Compressors that take {fmt}: {able}.{self._export_hint(comp, fmt, ref)}"
            )
        return comp

    def _export_hint(self, comp: Component, fmt: str, ref: str) -> str:
        """How to reach a format ``comp`` takes from ``fmt``, when an exporter can."""
        for exp in self.components["exporter"].values():
            if fmt in exp.formats and exp.produces in comp.formats:
                target = ref or "REF"
                return f" Export it first: {command('export', target, to=exp.produces)}"
        return ""

    def launcher(self, name: str) -> Component:
        """The launcher plugin named ``name``."""
        return self.get("launcher", name)

    def engine(self, name: str) -> Component:
        """The serving engine named ``name`` (``local``, ``ray``, a third party's)."""
        return self.get("engine", name)

    def explainer(self, name: str) -> Component:
        """The explainer named ``name`` (``integrated-gradients``, ``occlusion``...)."""
        return self.get("explainer", name)

    def evaluators(self) -> list[Component]:
        """The evaluators every comparison runs. One whose name two plugins claim runs as
        ``MAAS_LAB_PREFER`` chooses, and not at all without a choice: two figures under one
        name would be shown as one."""
        return [c for key, c in self.components["evaluator"].items() if ":" not in key]

    @property
    def conflicts(self) -> list[str]:
        """Formats (and export targets) that more than one component claims, in words."""
        self.components  # noqa: B018 - collecting fills _conflicts
        return list(self._conflicts)

    def _one_for(self, kind: str, fmt: str, verb: str, known_label: str) -> Component:
        found = self.for_format(kind, fmt)
        if found:
            return _pick(kind, found, f"claim format {fmt!r}")
        known = ", ".join(self.formats(kind)) or f"none (no {kind.replace('_', ' ')} plugins)"
        raise UsageError(
            f"No installed plugin {verb} format {fmt!r}. {known_label}: {known}. Install "
            f"the plugin for it.{self._failed_hint(HOOK_FOR_KIND[kind])}"
        )

    def _failed_hint(self, hook: str) -> str:
        failed = sorted({f.plugin for f in self.failures if f.hook in (hook, "import", "contract")})
        if not failed:
            return ""
        return f" Plugins that failed to load ({', '.join(failed)}): see `{command('plugins')}`."


def _check_option_names(kind: str, comp: Component) -> None:
    """Refuse a parameter its command already takes: it would be listed, and never set."""
    from .schemas import RESERVED_OPTIONS

    for p in comp.params:
        if p.name in RESERVED_OPTIONS.get(kind, {"help"}):
            raise ValueError(
                f"component {comp.name!r}, parameter {p.name!r}: the "
                f"{kind.replace('_', ' ')}'s command takes {p.option()} itself, so the plugin "
                "would never get it; name the parameter differently"
            )


def preferred() -> tuple[str, ...]:
    """The plugins ``MAAS_LAB_PREFER`` names, first first: they win any clash they are in."""
    return tuple(p.strip() for p in os.environ.get(PREFER, "").split(",") if p.strip())


def _choose(comps: list[Component]) -> Component | None:
    for plugin in preferred():
        for comp in comps:
            if comp.plugin == plugin:
                return comp
    return None


def _origin(comp: Component) -> str:
    return f"{comp.name!r} (plugin {comp.plugin}" + (
        f", {comp.distribution} {comp.version})" if comp.distribution else ")"
    )


def _kinds(kind: str) -> str:
    return kind.replace("_", " ") + "s"


def _pick(kind: str, comps: list[Component], doing: str) -> Component:
    """The one of ``comps`` to use for a job several claim: the only one, or the one whose
    plugin ``MAAS_LAB_PREFER`` names; else a refusal naming all and how to choose."""
    if len(comps) == 1:
        return comps[0]
    chosen = _choose(comps)
    if chosen is not None:
        return chosen
    names = " and ".join(_origin(c) for c in comps)
    raise UsageError(
        f"{len(comps)} {_kinds(kind)} {doing}: {names}; maas_lab will not pick one for you. "
        f"Choose with {PREFER}={comps[0].plugin} (the plugin to use), or leave the other "
        "out with MAAS_LAB_LOAD_PLUGINS or by uninstalling it."
    )


def _ambiguous(kind: str, name: str, comps: list[Component]) -> str:
    names = " and ".join(_origin(c) for c in comps)
    which = " or ".join(f"{c.plugin}:{name}" for c in comps)
    return (
        f"Two plugins provide a {kind.replace('_', ' ')} named {name!r}: {names}. Name the "
        f"one you mean ({which}), or set {PREFER}={comps[0].plugin} to prefer a plugin."
    )


def _clash_line(what: str, comps: list[Component], chosen: Component | None) -> str:
    names = ", ".join(_origin(c) for c in comps)
    if chosen is not None:
        return f"{what}: {names}; {chosen.plugin}'s is used ({PREFER})."
    return f"{what}: {names}; neither is used until you choose ({PREFER}=PLUGIN)."


def _format_conflicts(found: dict[str, dict[str, Component]]) -> list[str]:
    """Where two components claim one job (a loader or backend for a format, an exporter
    from one format to another), say so: using it is refused until the user chooses."""
    claims: dict[tuple[str, str], list[Component]] = {}
    for kind in ("loader", "serving_backend"):
        for comp in found[kind].values():
            for fmt in comp.formats:
                claims.setdefault((kind, fmt), []).append(comp)
    for comp in found["exporter"].values():
        for fmt in comp.formats:
            claims.setdefault(("exporter", f"{fmt} to {comp.produces}"), []).append(comp)
    return [
        _clash_line(f"{_kinds(kind)} for {what}", comps, _choose(comps))
        for (kind, what), comps in claims.items()
        if len(comps) > 1
    ]


def _describe(exc: BaseException) -> str:
    """One line naming the exception and where in the plugin it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def distribution_of(ep) -> tuple[str, str]:
    """The name and version of the installed distribution an entry point comes from."""
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else ("", "")


def rescan_site_packages() -> list[str]:
    """Put on ``sys.path`` the folders that ``.pth`` files installed since start-up name (an
    editable ``pip install -e`` of a plugin, run in a live kernel), and forget cached
    package metadata, so a fresh :class:`Plugins` finds what was installed. Only plain path
    lines are read: a ``.pth`` line that runs code ran at start-up and does not run again."""
    import importlib
    import site
    import sys
    from pathlib import Path

    added = []
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    for sitedir in dirs:
        for pth in sorted(Path(sitedir).glob("*.pth")) if os.path.isdir(sitedir) else []:
            try:
                lines = pth.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith(("#", "import ", "import\t")):
                    continue
                folder = os.path.join(sitedir, line) if not os.path.isabs(line) else line
                if os.path.isdir(folder) and folder not in sys.path:
                    sys.path.append(folder)
                    added.append(folder)
    importlib.invalidate_caches()
    return added


def forget_plugin_modules() -> list[str]:
    """Drop third-party plugin modules from ``sys.modules`` so the next load imports them
    again: after an author edits and reinstalls a plugin in a live kernel, a reload must
    run the new code, not the module imported before. maas_lab's own plugins stay."""
    import sys

    tops = {
        ep.value.split(":")[0].strip().split(".")[0]
        for ep in entry_points(group=GROUP)
        if distribution_of(ep)[0] != "maas-lab"
    }
    dropped = [m for m in sys.modules if m.split(".")[0] in tops]
    for name in dropped:
        del sys.modules[name]
    return dropped


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
