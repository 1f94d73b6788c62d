"""One Ray Serve replica: hosts the core's Open Inference Protocol application.

A plain ASGI application behind ``serve.ingress`` (built in the replica, after the
constructor: ``__serve_build_asgi_app__``), so Ray runs its lifespan and routes every path
to it: the same routes, validation, limits, batching, tokens and metrics as a local worker.
Imports Ray, so it is imported only by a server running on Ray and by its replicas.
"""

from __future__ import annotations

import os

from ray import serve

from maas_lab.serving.engine import replica_app
from maas_lab.serving.worker import log_to_stderr


@serve.ingress()
class Replica:
    def __init__(self, root: str, name: str, options: dict, port: int, token_sha256):
        self._args = (root, name, options, port, token_sha256)

    def __serve_build_asgi_app__(self):
        root, name, options, port, token_sha256 = self._args
        log = log_to_stderr(f"[replica {os.getpid()}]")
        return replica_app(root, name, options, port, log, token_sha256)
