"""What a plugin hands to the core: a named, described component with a parameter schema.

One shape serves every kind (loader, exporter, compressor, launcher, serving backend) so the
CLI, magics and widgets can build their options from ``params`` without code per plugin.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .hints import flag_for, option

KINDS = (
    "loader",
    "exporter",
    "compressor",
    "launcher",
    "serving_backend",
    "evaluator",
    "engine",
    "explainer",
)
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# "code" is a ``module:callable`` reference: a string that the user's typing makes trusted
# (see maas_lab.trust), so a front end must never fill it from data.
_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "code": str}


@dataclass(frozen=True)
class Param:
    """One option of a component or of a core command: how the CLI, a magic or a widget
    asks for it, and the default the Python API takes when it is not given.

    ``multiple``: given any number of times (a list). ``flag``: the CLI spelling when it is
    not ``--name-with-dashes`` (e.g. ``--allow-host`` for ``allow_hosts``). ``envvar``: an
    environment variable the CLI reads when the option is not typed. A ``bool`` defaulting
    to True is typed ``--name/--no-name``."""

    name: str
    type: str = "str"
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    required: bool = False
    multiple: bool = False
    metavar: str = ""
    envvar: str = ""
    flag: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"Param {self.name!r}: type must be one of {sorted(_TYPES)}")

    @property
    def cli_flag(self) -> str:
        """How the option is typed: ``--max-drop`` for ``max_drop``."""
        return self.flag or flag_for(self.name)

    def option(self, *value: Any) -> str:
        """This option (with a value, if one is given) as messages name it: ``--max-drop
        0.5`` under a command line, ``max_drop=0.5`` in Python (see ``hints.option``)."""
        return option(self.name, *value, flag=self.cli_flag)

    def convert(self, value: Any) -> Any:
        """Turn a typed-in string (or a Python value) into this parameter's type."""
        if value is None:
            return None
        if self.multiple:
            values = [value] if isinstance(value, (str, bytes)) else list(value)
            return [self._one(v) for v in values]
        return self._one(value)

    def _one(self, value: Any) -> Any:
        if self.type == "bool" and isinstance(value, str):
            low = value.strip().lower()
            if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise UsageError(f"{self.option()} expects true or false, got {value!r}.")
            return low in {"1", "true", "yes", "on"}
        try:
            if self.type == "int" and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)  # int(2.7) would quietly be 2
            out = _TYPES[self.type](value)
        except (TypeError, ValueError):
            article = "an" if self.type == "int" else "a"
            raise UsageError(
                f"{self.option()} expects {article} {self.type}, got {value!r}."
            ) from None
        if self.type == "code":
            from .registry.trust import check_code_ref

            check_code_ref(out)
        if self.choices and out not in self.choices:
            raise UsageError(
                f"{self.option()} must be one of {', '.join(map(str, self.choices))}; got {out!r}."
            )
        return out


class Schema(tuple):
    """The parameters of one command or component, in order: the one place their names,
    types, help and defaults are declared. The CLI builds its options from it, the Python
    API takes its defaults from it (``SERVE.defaults()["port"]``), widgets build forms."""

    def __new__(cls, *params: Param) -> Schema:
        return super().__new__(cls, params)

    def param(self, name: str) -> Param:
        for p in self:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        """Each parameter's default, as the Python API takes it (a multiple one: a tuple)."""
        return {p.name: (tuple(p.default or ()) if p.multiple else p.default) for p in self}

    def convert(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with each number and yes/no converted by its Param, as the CLI's are:
        from Python, ``log="no"`` is False and ``port="abc"`` a usage error naming it, not a
        TypeError deep below. Text options pass as given (``data`` may be an array)."""
        out = dict(values)
        for p in self:
            if p.name in out and p.type in ("int", "float", "bool") and not p.multiple:
                out[p.name] = p.convert(out[p.name])
        return out


@dataclass
class Component:
    """A unit of work a plugin provides.

    ``run`` does the work; its arguments depend on the kind (see ``maas_lab.hookspecs``).
    ``formats`` lists the model formats the component accepts (for a loader: opens).
    ``validate`` (optional) refuses up front: a loader's checks files at registration time,
    before anything is stored; an engine's checks its options before a server starts.
    """

    name: str
    description: str
    run: Callable[..., Any]
    formats: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    validate: Callable[..., Any] | None = None
    produces: str = ""  # exporters and compressors: the format they make
    # Loaders: the code references (``module:callable``) a config makes the loader import,
    # checked against what the user trusted before ``validate`` or ``run`` sees the config.
    code_refs: Callable[[dict], list[str]] | None = None
    # References to the plugin's own code that it vouches for wherever it is loaded.
    trusted_code: tuple[str, ...] = ()
    # Filled in by the core when the component is registered.
    kind: str = ""
    plugin: str = ""
    distribution: str = ""
    version: str = ""
    # Set by the plugin: what one kind reads beyond these fields (an engine's ``start_s``,
    # how long a server may take to be ready; an exporter's ``operation``).
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``ValueError`` describing what is wrong with this component's declaration."""
        if not _NAME.fullmatch(self.name or ""):
            raise ValueError(
                f"component name {self.name!r} must be lower-case letters, digits, '-' or '_'"
            )
        if not (self.description or "").strip():
            raise ValueError(f"component {self.name!r} needs a one-line description")
        if not callable(self.run):
            raise ValueError(f"component {self.name!r}: run must be callable")
        if not isinstance(self.params, (tuple, list)):
            raise ValueError(f"component {self.name!r}: params must be a tuple of Param")
        names = [p.name for p in self.params if isinstance(p, Param)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"component {self.name!r} declares parameter {twice[0]!r} twice")
        for p in self.params:
            _check_param(self.name, p)

    @property
    def origin(self) -> str:
        """Who provides this component, as messages name it: ``compressor 'fp16' (plugin
        fp16, maas-fp16 0.1.0)``: a user can tell whose bug it is and what to upgrade."""
        where = f"plugin {self.plugin}" if self.plugin else "no plugin"
        if self.distribution:
            where += f", {self.distribution} {self.version}".rstrip()
        return f"{self.kind.replace('_', ' ') or 'component'} {self.name!r} ({where})"

    def call(self, doing: str, *args: Any) -> Any:
        """``run(*args)``: a user mistake it raises (``MaasError``) passes through; anything
        else is the plugin's fault, raised as :class:`PluginError` naming the component, its
        plugin and distribution, and what it was ``doing`` ("on minilm@2")."""
        from .errors import MaasError, PluginError

        try:
            return self.run(*args)
        except MaasError:
            raise
        except Exception as exc:
            raise PluginError(
                f"The {self.origin} failed {doing}: {type(exc).__name__}: {exc}"
            ) from exc

    def produce(self, ref: str, *args: Any) -> Artifact:
        """Run an exporter or compressor on version ``ref``: its result must be an
        :class:`Artifact`. A user mistake it raises passes through; Ctrl-C is
        :class:`Interrupted`; anything else is the plugin's fault (:class:`PluginError`,
        naming it and its distribution). The caller has registered nothing yet."""
        from .errors import Interrupted, PluginError

        try:
            artifact = self.call(f"on {ref}", *args)
        except KeyboardInterrupt:
            raise Interrupted(
                f"{self.kind.capitalize()} {self.name!r} on {ref} was interrupted; nothing "
                "was registered."
            ) from None
        if not isinstance(artifact, Artifact):
            raise PluginError(f"The {self.origin} returned {artifact!r}, not an Artifact.")
        return artifact

    def options(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resolve user-given options against the schema: defaults, types, unknown names."""
        given = dict(given or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            valid = ", ".join(known[n].option() for n in sorted(known)) or "none"
            named = ", ".join(option(n) for n in unknown)
            raise UsageError(f"{self.kind} {self.name!r} has no option {named}. Options: {valid}.")
        out = {}
        for p in self.params:
            if p.name in given:
                out[p.name] = p.convert(given[p.name])
            elif p.required:
                raise UsageError(f"{self.kind} {self.name!r} needs {p.option()} ({p.help}).")
            else:
                out[p.name] = p.default
        return out


def _check_param(component: str, p: Any) -> None:
    """Refuse a parameter schema the CLI, magics and forms could not build, at load time,
    naming the field: better than a form that breaks when a user opens it."""
    if not isinstance(p, Param):
        raise ValueError(f"component {component!r}: params must be Param(...) objects, not {p!r}")
    where = f"component {component!r}, parameter {p.name!r}"
    if not isinstance(p.name, str) or not p.name.isidentifier():
        raise ValueError(
            f"component {component!r}: parameter name {p.name!r} must be an identifier"
        )
    for flag in ("required", "multiple"):
        if not isinstance(getattr(p, flag), bool):
            raise ValueError(f"{where}: {flag} must be True or False")
    if not isinstance(p.choices, tuple):
        raise ValueError(f"{where}: choices must be a tuple")
    for choice in p.choices:
        try:
            same = p._one(choice) == choice
        except UsageError:
            same = False
        if not same:
            raise ValueError(f"{where}: choice {choice!r} is not of type {p.type}")
    if p.default is not None:
        try:
            converted = p.convert(p.default)
        except UsageError as exc:
            raise ValueError(f"{where}: default {p.default!r} is refused: {exc}") from None
        given = list(p.default) if p.multiple else p.default
        if converted != given or type(converted) is not type(given):
            if not (p.type == "float" and isinstance(given, int) and not isinstance(given, bool)):
                raise ValueError(f"{where}: default {p.default!r} is not of type {p.type}")


@dataclass
class Artifact:
    """What an exporter or compressor made, in the work folder the core handed to ``run``.

    ``files`` maps each file's name (relative to that folder, and its name in the new version)
    to its role (``model``, ``weights``, ``config``, ``tokenizer``, ``external-data``...).
    ``signature`` describes the tensors (see :func:`tensor`); ``report`` holds the plugin's
    own figures (which exporter path was taken, sizes...). The core checks parity, then
    stores the files as a new version with a lineage edge.
    """

    format: str
    files: dict[str, str]
    signature: dict | None = None
    config: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Launch:
    """What a launcher plugin hands back: the command that starts a job's processes on this
    machine, and what to add to their environment.

    The core runs ``argv`` in a process group of its own with its output to the job's log,
    records it, streams its progress, cancels it and reads how it ended: a launcher only
    knows its engine's command line. ``world_size`` is how many processes the whole job has
    (all machines), when the launcher can tell. ``explain(log_text)`` (optional) turns the
    engine's own failure (a rendezvous that timed out...) into a sentence naming the fix.
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    world_size: int | None = None
    explain: Callable[[str], str | None] | None = None
    notes: list[str] = field(default_factory=list)


def tensor(name: str, dtype: str, shape: list) -> dict:
    """One entry of a signature: numpy dtype name, shape with ints or named dynamic dims."""
    return {"name": name, "dtype": dtype, "shape": list(shape)}
