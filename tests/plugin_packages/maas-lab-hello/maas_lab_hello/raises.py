"""A plugin that imports fine but raises inside its hook."""

from maas_lab import hookimpl


@hookimpl
def maas_exporters(register):
    raise RuntimeError("exporter table is corrupt")
