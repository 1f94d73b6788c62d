"""Which plugins this core can load: the contract version a plugin declares, checked at load.

A plugin's entry-point module says which version of the plugin contract (the hooks, what
they pass and what they take back) it was written for: ``MAAS_LAB_CONTRACT = "1.0"``. The
core implements one version, :data:`maas_lab.hookspecs.CONTRACT`. Minor versions only add
(a new hook, a new optional field or argument), so a plugin written for 1.0 works with a 1.3
core; a plugin written for 1.3 may use what a 1.0 core lacks, and a new major version
changed or removed something a plugin relies on. Refusing at load, with both versions
named, beats a plugin failing half-way through a user's compression. docs/contract.md holds
the rule and the changelog.
"""

from __future__ import annotations

import re

from .hookspecs import CONTRACT

ATTRIBUTE = "MAAS_LAB_CONTRACT"
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def parse(version: str) -> tuple[int, int]:
    """``"1.2"`` as ``(1, 2)``; ``ValueError`` for anything else."""
    found = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if not found:
        raise ValueError(version)
    return int(found[1]), int(found[2])


def declared(plugin: object) -> object:
    """The contract version a plugin module (or object) declares (a string, when it is
    right), or None."""
    return getattr(plugin, ATTRIBUTE, None)


def problem(version: object, module: str, distribution: str = "") -> str | None:
    """Why a plugin declaring ``version`` cannot load into this core, in words naming both
    versions and what to do; None when it can. ``module`` is where the declaration goes."""
    dist = distribution or "the plugin"
    core_major, core_minor = parse(CONTRACT)
    if version is None:
        return (
            f'it declares no plugin contract version; add {ATTRIBUTE} = "{CONTRACT}" to '
            f"{module} once it works with contract {CONTRACT} (see docs/contract.md)"
        )
    try:
        major, minor = parse(version)
    except ValueError:
        return (
            f'it declares {ATTRIBUTE} = {version!r}, which is not a "MAJOR.MINOR" string; '
            f'this core implements contract {CONTRACT}: write {ATTRIBUTE} = "{CONTRACT}" in '
            f"{module}"
        )
    if (major, minor) > (core_major, core_minor):
        older = CONTRACT if core_minor == 0 else f"{core_major}.0 to {CONTRACT}"
        return (
            f"it was written for plugin contract {version}, newer than this maas-lab's "
            f"{CONTRACT}: upgrade maas-lab (pip install -U maas-lab), or install a release of "
            f"{dist} written for contract {older}"
        )
    if major < core_major:
        return (
            f"it was written for plugin contract {version}; this maas-lab implements "
            f"{CONTRACT}, which changed what {major}.x plugins rely on (docs/contract.md): "
            f"upgrade {dist} to a release written for contract {core_major}.x"
        )
    return None
