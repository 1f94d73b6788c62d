"""maas_lab: a Jupyter-native Model-as-a-Service workbench.

``import maas_lab`` and ``%load_ext maas_lab`` stay light: torch, onnxruntime, transformers
and accelerate are imported only by the plugins that need them, when they are used.
The functions of :mod:`maas_lab.api` are available here too (``maas_lab.register(...)``).
"""

from __future__ import annotations

from .components import Component, Param
from .hookspecs import hookimpl
from .version import __version__

# Not the names of modules of this package (registry, plugins, tokens, components): once one is
# imported, Python binds its name here, so maas_lab.plugins would be the api function before
# and the module after (use maas_lab.api.plugins(), maas_lab.api.tokens()).
_API = frozenset(
    """alias bundle_export bundle_import close_all compare compress distill evaluate export fsck
    history list_models load log_metrics recommend register resolve runner search show
    tag serve status logs scale stop predict client launch jobs job cancel wait
    trust_code versions lineage revision schema reporting_to
    token_create token_revoke export_repo tune studies study explain""".split()
)


def __getattr__(name: str):
    if name == "api" or name in _API:  # `import maas_lab; maas_lab.api.serve(...)` works too
        import importlib

        api = importlib.import_module("maas_lab.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'maas_lab' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    from .magics import MaasMagics

    ipython.register_magics(MaasMagics)


__all__ = ["Component", "Param", "__version__", "hookimpl", "load_ipython_extension", *sorted(_API)]
