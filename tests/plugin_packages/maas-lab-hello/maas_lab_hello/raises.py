"""A plugin that imports fine but raises inside its hook."""

from maas_lab import hookimpl

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"


@hookimpl
def maas_exporters(register):
    raise RuntimeError("exporter table is corrupt")
