"""A process killed in the middle of registering leaves the old state or the new one, never a
half version; what it leaves behind is found (and removed) by fsck."""

import subprocess
import sys
import textwrap

import pytest

from maas_lab import api
from maas_lab.testing import registry_snapshot

CRASH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from maas_lab.registry import FileSpec, Registry, registry as module

    root, source, point = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if point == "after-blob":  # the blob is in place, the transaction has not started
        real_write = module.write
        def write(db):
            os._exit(3)
        module.write = write
    elif point == "in-transaction":  # rows inserted, COMMIT never happens
        real_index = module.Registry._index
        def index(self, version_id):
            real_index(self, version_id)
            os._exit(3)
        module.Registry._index = index
    Registry(root).register("digits-mlp", [FileSpec(source, "model.safetensors", "weights")],
                            "torch")
    """
)


@pytest.mark.parametrize("point", ["after-blob", "in-transaction"])
def test_crash_while_registering(maas_home, tiny_torch_model, tmp_path, point):
    api.register(
        "digits-mlp",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
    )
    before = registry_snapshot(maas_home)
    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_torch_model["weights"].read_bytes()[:-4] + b"\x00\x00\x80\x3f")
    proc = subprocess.run([sys.executable, "-c", CRASH, str(maas_home), str(other), point])
    assert proc.returncode == 3
    api.close_all()
    dump, files = registry_snapshot(maas_home)
    assert dump == before[0]  # the database is exactly as before: no half version
    assert [r["number"] for r in api.history("digits-mlp")["versions"]] == [1]
    leftover = sorted(set(files) - set(before[1]))  # the blob (and its new prefix folder)
    assert leftover[-1].startswith("blobs/sha256/") and len(leftover[-1]) == 16 + 64
    assert [p["kind"] for p in api.fsck()] == ["orphan blob"]
    api.fsck(repair=True, grace_seconds=0)
    assert registry_snapshot(maas_home) == before
    assert api.load("digits-mlp@1") is not None
