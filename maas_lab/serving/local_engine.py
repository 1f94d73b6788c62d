"""The built-in ``local`` serving engine: worker processes on this machine, kept by our own
supervisor (:mod:`maas_lab.serving.supervisor`). It is registered through the same entry
point group and hook as any third party's engine (``[project.entry-points.maas_lab]
local = "maas_lab.serving.local_engine"``), so the local supervisor and Ray Serve are two
implementations of one contract."""

from __future__ import annotations

from ..components import Component
from ..hookspecs import hookimpl

MAAS_LAB_CONTRACT = "1.1"


def run(server) -> int:
    from .supervisor import Supervisor

    return Supervisor(server.root, server.name).run()


@hookimpl
def maas_serving_engines(register):
    register(
        Component(
            name="local",
            description="Worker processes on this machine sharing one port, kept alive, "
            "scaled and drained by maas_lab's supervisor (the default).",
            run=run,
            extra={"replicas": "per-core"},  # without --replicas: one per core (at most 4)
        )
    )
