"""A compressor that loads fine and fails while it works, as a buggy plugin would."""

from maas_lab import Component, hookimpl

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"


def explode(checkout, options, workdir, context):
    (workdir / "half-written.bin").write_bytes(b"\0" * 1024)
    raise RuntimeError("the tensor cores caught fire")


@hookimpl
def maas_compressors(register):
    register(
        Component(
            name="explode",
            description="Writes half a file, then fails",
            formats=("torch",),
            produces="torch",
            run=explode,
        )
    )
