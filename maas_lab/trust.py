"""Whether a code reference (``module:callable``) may be imported and called.

A version's config can name code: a torch version names the factory that builds its
architecture. Importing that module and calling it runs whatever it says, so a reference
that arrived as data (in a bundle, a file, a server request) must never run unless a person
chose to trust it. A reference is trusted when:

- it is built in (``maas_lab.zoo``) or a loaded plugin vouches for it (its own factories,
  ``Component.trusted_code``): installed code the user chose to load;
- a person typed it in this process (``register --from-torch``, ``--student``, a training
  script's ``registry.register(model, factory=...)``): their own act;
- a registry this process opened records it (``trusted_code``), with who granted it and how:
  recorded with the version a person registered, by ``maas trust REF``, or by importing a
  bundle with ``--trust``.

Everything that builds from a stored config resolves through :func:`resolve`, and everything
that enters the registry is checked by :func:`require` before any of its code runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from .errors import UntrustedCode, UsageError
from .hints import command, prog_scope
from .registry.trust import check_code_ref

BUILTIN_MODULES = ("maas_lab.zoo",)
# References a person typed in this process; never filled from data.
_typed: set[str] = set()


def typed(ref: str) -> str:
    """A person gave ``ref`` in this process (an option, an argument): it is theirs to run."""
    _typed.add(check_code_ref(ref))
    return ref


def typed_options(component, options: dict) -> dict:
    """Options a person gave a plugin: those of type ``code`` are theirs to run."""
    for p in component.params:
        if p.type == "code" and options.get(p.name):
            typed(options[p.name])
    return options


def _vouched() -> set[str]:
    from .plugins import get_plugins

    out: set[str] = set()
    for kind in get_plugins().components.values():
        for comp in kind.values():
            out.update(getattr(comp, "trusted_code", ()) or ())
    return out


def is_builtin(ref: str) -> bool:
    return ref.partition(":")[0] in BUILTIN_MODULES or ref in _vouched()


def is_trusted(ref: str, registries: Iterable | None = None) -> bool:
    from .registry.registry import opened
    from .registry.trust import is_recorded

    ref = check_code_ref(ref)
    if ref in _typed or is_builtin(ref):
        return True
    return any(is_recorded(reg, ref) for reg in (opened() if registries is None else registries))


def require(refs: Iterable[str], registries: Iterable | None = None, where: str = "") -> None:
    """Raise :class:`UntrustedCode` naming every reference in ``refs`` nobody trusted."""
    refs = [check_code_ref(r) for r in refs]
    regs = None if registries is None else list(registries)
    untrusted = [r for r in refs if not is_trusted(r, regs)]
    if untrusted:
        named = ", ".join(repr(r) for r in untrusted)
        run = command("trust", untrusted[0])
        with prog_scope("%maas"):
            in_notebook = command("trust", untrusted[0])
        also = f" (`{in_notebook}` in a notebook)" if in_notebook != run else ""
        raise UntrustedCode(
            f"{where or 'This version'} names code nobody has trusted here: {named}. Loading it "
            f"would import and call that. If you know and trust it, run `{run}`{also}; for a "
            f"bundle, `{command('bundle import', 'FILE', trust=True)}` trusts what it names.",
            untrusted,
        )


def resolve(ref: str, registries: Iterable | None = None):
    """Import ``module:callable`` once it is trusted (dotted attributes after the colon)."""
    require([ref], registries, where=f"Code reference {ref!r}")
    module_name, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"Cannot import {module_name!r} for {ref!r}: {exc}. Is it installed or on sys.path?"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r} ({ref!r}).")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{ref!r} is not callable.")
    return obj
