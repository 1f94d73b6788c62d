"""The one check every new version passes before it is stored, whichever way it comes in.

``register`` (files a person offers), ``bundle import``, ``export``, ``compress`` and a
training job's registration all call :func:`check`: the format must have a loader, every
code reference the config names must be trusted (before the loader's own check, which may
build the model and so run that code), and the loader's ``validate`` must accept the files.
It returns the grants to record with the version, so trust lands with it or not at all.
"""

from __future__ import annotations

from pathlib import Path

from . import trust
from .plugins import get_plugins


def code_refs(fmt: str, config: dict) -> list[str]:
    """The code references a version of ``fmt`` with ``config`` would import when loaded."""
    loader = get_plugins().loader(fmt)
    if loader.code_refs is None:
        return []
    refs = loader.code_refs(config or {})
    return [trust.check_code_ref(r) for r in refs]


def require_trusted(reg, fmt: str, config: dict, where: str = "") -> list[str]:
    """Refuse (``UntrustedCode``) a config naming code nobody trusted; return its references.
    Only the target registry's grants count here: what enters it is decided by it."""
    refs = code_refs(fmt, config)
    trust.require(refs, [reg], where=where)
    return refs


def check(
    reg,
    fmt: str,
    files: dict[str, Path],
    config: dict,
    *,
    how: str,
    typed: tuple[str, ...] | list[str] = (),
    where: str = "",
) -> dict[str, str]:
    """Check a new version's code references and files; return ``{ref: how}`` to record.

    ``typed`` lists references the person gave in this very call (e.g. ``--from-torch``),
    which their act trusts; any other reference must already be trusted.
    """
    for ref in typed:
        trust.typed(ref)
    refs = require_trusted(reg, fmt, config, where)
    loader = get_plugins().loader(fmt)
    if loader.validate is not None:
        loader.validate(files, config)
    return {r: how for r in refs if not trust.is_builtin(r)}
