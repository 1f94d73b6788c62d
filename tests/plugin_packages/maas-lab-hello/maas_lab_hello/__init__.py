"""A third-party plugin: a "word-table" model format (a JSON file mapping words to numbers)
with its loader and serving backend, and a launcher on PyTorch's own torchrun."""

import json
import sys

from maas_lab import Component, Param, hookimpl
from maas_lab.errors import UsageError

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"


class WordTable:
    def __init__(self, table, default):
        self.table, self.default = table, default

    def __call__(self, words):
        return [self.table.get(w, self.default) for w in words]


def validate(files, config):
    (path,) = files.values()
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise UsageError(f"{path.name} is not a JSON word table.") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path.name} must hold a JSON object of word -> number.")


def load(checkout, options):
    (f,) = checkout.files
    return WordTable(json.loads(checkout.path(f["name"]).read_text()), options["default"])


@hookimpl
def maas_loaders(register):
    register(
        Component(
            name="word-table",
            description="JSON word -> number table",
            formats=("word-table",),
            run=load,
            validate=validate,
            params=(Param("default", "float", 0.0, "value for unknown words"),),
        )
    )


class TableRunner:
    """Serves a word table: words in (BYTES), scores out. Two words misbehave on purpose, so
    the server's handling of a slow or failing backend can be tested: "slow" takes 2 s and
    "boom" raises."""

    def __init__(self, table, default):
        import numpy as np

        from maas_lab.components import tensor

        self.np, self.table, self.default = np, table, default
        self.signature = {
            "inputs": [tensor("words", "str", ["batch"])],
            "outputs": [tensor("scores", "float32", ["batch"])],
        }

    def infer(self, feeds):
        import time

        words = [str(w) for w in feeds["words"]]
        if "boom" in words:
            raise ValueError("the word 'boom' makes this backend fail")
        if "slow" in words:
            time.sleep(2.0)
        scores = [float(self.table.get(w, self.default)) for w in words]
        return {"scores": self.np.asarray(scores, dtype=self.np.float32)}

    def example_feeds(self, batch):
        return {"words": self.np.asarray(["hello"] * batch, dtype=object)}


def serve_table(checkout, options):
    (f,) = checkout.files
    table = json.loads(checkout.path(f["name"]).read_text())
    if not table:
        raise UsageError("an empty word table has nothing to serve")
    return TableRunner(table, options["default"])


@hookimpl
def maas_serving_backends(register):
    register(
        Component(
            name="word-table",
            description="Serve a JSON word table: words in, scores out",
            formats=("word-table",),
            run=serve_table,
            params=(Param("default", "float", 0.0, "value for unknown words"),),
        )
    )


def torchrun(entry, options):
    from maas_lab.components import Launch

    n = options["processes"]
    run = [sys.executable, "-m", "torch.distributed.run"]
    argv = [*run, "--standalone", "--nproc-per-node", str(n), *entry]
    return Launch(argv=argv, env={"OMP_NUM_THREADS": "1"}, world_size=n)


@hookimpl
def maas_launchers(register):
    register(
        Component(
            name="torchrun",
            description="PyTorch's torchrun on this machine",
            run=torchrun,
            params=(Param("processes", "int", 1, "processes to start"),),
        )
    )
