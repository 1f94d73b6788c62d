"""A third-party loader: a "word-table" model is a JSON file mapping words to numbers."""

import json

from maas_lab import Component, Param, hookimpl
from maas_lab.errors import UsageError


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
