"""A bundle is data from someone else: it must never choose what code runs, nor fill the disk.

Each test builds a hostile bundle from a real export, the way an attacker would edit one,
and checks what the user sees and that the registry is left as it was."""

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap

import pytest

from maas_lab import api
from maas_lab.errors import IntegrityError, UntrustedCode, UsageError
from maas_lab.testing import registry_snapshot

pytest.importorskip("torch")


@pytest.fixture
def thirdparty(tmp_path, monkeypatch):
    """A factory module of someone else's that leaves a mark when imported and when called,
    on sys.path for this process and for the subprocesses the test starts."""
    folder = tmp_path / "site"
    folder.mkdir()
    name = f"thirdparty_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    marks = tmp_path / "marks"
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            Path({str(marks)!r}).mkdir(exist_ok=True)
            (Path({str(marks)!r}) / "imported").write_text("yes")

            def build(**kwargs):
                (Path({str(marks)!r}) / "called").write_text("yes")
                from maas_lab.zoo import mlp
                return mlp(**kwargs)
            """
        )
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield {"ref": f"{name}:build", "marks": marks}
    sys.modules.pop(name, None)


def rewrite(src, dest, manifest_edit=None, extra=()):
    """Copy bundle ``src`` to ``dest``, editing its manifest and adding members."""
    with tarfile.open(src) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = json.loads(members["manifest.json"])
    if manifest_edit:
        manifest_edit(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(dest, "w") as tar:
        for name, data in [*members.items(), *extra]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


@pytest.fixture
def exported(maas_home, tmp_path, tiny_torch_model):
    api.register(
        "digits-mlp",
        from_torch=tiny_torch_model["factory"],
        weights=tiny_torch_model["weights"],
        config=tiny_torch_model["config"],
    )
    return api.bundle_export("digits-mlp@1", tmp_path / "b.maas.tar")["bundle"]


def set_factory(ref):
    def edit(manifest):
        manifest["version"]["config"]["factory"] = ref

    return edit


def test_a_bundle_naming_os_system_is_refused_and_nothing_runs(exported, tmp_path):
    evil = rewrite(exported, tmp_path / "evil.tar", set_factory("os:system"))
    other = tmp_path / "other"
    api.list_models(root=other)
    before = registry_snapshot(other)
    with pytest.raises(UntrustedCode, match="'os:system'") as err:
        api.bundle_import(evil, root=other)
    assert "maas trust os:system" in str(err.value) and "--trust" in str(err.value)
    assert registry_snapshot(other) == before


def test_untrusted_factory_never_imported_and_trust_is_recorded(exported, tmp_path, thirdparty):
    bundle = rewrite(exported, tmp_path / "third.tar", set_factory(thirdparty["ref"]))
    other = tmp_path / "other"
    with pytest.raises(UntrustedCode):
        api.bundle_import(bundle, root=other)
    assert not thirdparty["marks"].exists()  # not even imported
    assert list(api.trust_code(root=other)) == []

    report = api.bundle_import(bundle, trust=True, root=other)
    assert report["ref"] == "digits-mlp@1"
    assert (thirdparty["marks"] / "called").exists()  # validated like any registration
    (row,) = api.trust_code(root=other)
    assert row["reference"] == thirdparty["ref"] and row["how"] == "bundle import trust=True"


def test_a_version_whose_trust_was_removed_does_not_load(exported, tmp_path, thirdparty):
    bundle = rewrite(exported, tmp_path / "third.tar", set_factory(thirdparty["ref"]))
    other = tmp_path / "other"
    api.bundle_import(bundle, trust=True, root=other)
    api.trust_code(thirdparty["ref"], remove=True, root=other)
    for mark in thirdparty["marks"].iterdir():
        mark.unlink()
    # A fresh process, as a server following `latest` would be: nothing typed there.
    code = "import maas_lab.api as a, sys; a.load('digits-mlp', root=sys.argv[1])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(other)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "UntrustedCode" in done.stderr and thirdparty["ref"] in done.stderr
    assert list(thirdparty["marks"].iterdir()) == []
    api.trust_code(thirdparty["ref"], root=other)
    done = subprocess.run(
        [sys.executable, "-c", code, str(other)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_cli_trust_lists_grants_with_who_and_how(exported, tmp_path, thirdparty):
    env = {**os.environ, "MAAS_LAB_HOME": str(tmp_path / "cli")}
    maas = [sys.executable, "-m", "maas_lab.cli"]
    bundle = rewrite(exported, tmp_path / "third.tar", set_factory(thirdparty["ref"]))
    refused = subprocess.run(
        [*maas, "bundle", "import", str(bundle)], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "Untrusted code" in refused.stderr
    assert "Traceback" not in refused.stderr
    ok = subprocess.run(
        [*maas, "bundle", "import", str(bundle), "--trust"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    listed = subprocess.run([*maas, "trust"], env=env, capture_output=True, text=True)
    assert thirdparty["ref"] in listed.stdout and "bundle import --trust" in listed.stdout


def test_register_from_torch_records_the_factory_it_was_given(maas_home, thirdparty, tmp_path):
    from safetensors.torch import save_file

    from maas_lab.zoo import mlp

    weights = tmp_path / "w.safetensors"
    save_file(mlp(hidden=8).state_dict(), str(weights))
    api.register("mine", from_torch=thirdparty["ref"], config={"hidden": 8}, weights=weights)
    (row,) = api.trust_code()
    assert row["reference"] == thirdparty["ref"] and row["how"].startswith("given to register")


def test_a_factory_that_is_not_a_code_reference_is_refused(exported, tmp_path):
    for bad in ["os:system\n", "../evil:x", "a b:c", "os"]:
        evil = rewrite(exported, tmp_path / "evil.tar", set_factory(bad))
        with pytest.raises(UsageError, match="must look like 'package.module:callable'"):
            api.bundle_import(evil, root=tmp_path / "other")


def test_two_manifests_in_one_tar_are_refused(exported, tmp_path):
    second = json.dumps({"bundle_version": 1}).encode()
    evil = rewrite(exported, tmp_path / "two.tar", extra=[("manifest.json", second)])
    other = tmp_path / "other"
    api.list_models(root=other)
    before = registry_snapshot(other)
    with pytest.raises(UsageError, match="holds manifest.json twice"):
        api.bundle_import(evil, root=other)
    assert registry_snapshot(other) == before


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["files"][0].update(size="12"), r"files\[0\].size must be a whole number"),
        (lambda m: m["files"][0].update(name=["x"]), r"files\[0\].name must be a string"),
        (lambda m: m.update(files={"a": 1}), "files must be a non-empty list"),
        (lambda m: m["version"].update(config=[1]), "version.config must be an object"),
        (lambda m: m["version"].update(tags={"a": 1}), "version.tags must be an object of str"),
        (lambda m: m["model"].update(name=7), "model.name must be a string"),
        (lambda m: m["version"].update(metrics={"a": "x"}), "version.metrics must be an object"),
    ],
)
def test_manifest_with_wrong_types_is_a_clear_error(exported, tmp_path, edit, message):
    evil = rewrite(exported, tmp_path / "typed.tar", edit)
    with pytest.raises(UsageError, match=message):
        api.bundle_import(evil, root=tmp_path / "other")


def test_a_compressed_bomb_writes_nothing_before_its_digest_fails(exported, tmp_path):
    """50 MB of zeros in a small .tar.gz, declared honestly in size but not in digest: the
    import must hash it before writing. The registry's temp folder is made unusable, so
    any write attempt would surface as a RegistryError instead of the digest mismatch."""
    size = 50 << 20

    def edit(manifest):
        manifest["files"][0].update(size=size, sha256="0" * 64)

    with tarfile.open(exported) as tar:
        man = json.loads(tar.extractfile("manifest.json").read())
    edit(man)
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        data = json.dumps(man).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("blobs/" + "0" * 64)
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    assert bomb.stat().st_size < size // 100
    other = tmp_path / "other"
    api.list_models(root=other)
    tmp = other / "blobs" / "tmp"
    tmp.rmdir()
    tmp.write_text("not a folder: writing here fails")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        api.bundle_import(bomb, root=other)


def test_a_bundle_larger_than_the_free_space_is_refused_first(exported, tmp_path):
    import shutil

    huge = shutil.disk_usage(tmp_path).free * 2

    def edit(manifest):
        manifest["files"][0].update(size=huge)

    with tarfile.open(exported) as tar:
        man = json.loads(tar.extractfile("manifest.json").read())
        blob = [m for m in tar.getmembers() if m.name.startswith("blobs/")][0]
    edit(man)
    evil = tmp_path / "huge.tar"
    with open(evil, "wb") as f:  # a real tar whose member is a hole: small on disk
        data = json.dumps(man).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        f.write(info.tobuf() + data + bytes(-len(data) % 512))
        info = tarfile.TarInfo(blob.name)
        info.size = huge
        f.write(info.tobuf())
        f.seek(huge + (-huge % 512), os.SEEK_CUR)
        f.write(bytes(1024))
    assert evil.stat().st_blocks * 512 < 1 << 20
    with pytest.raises(UsageError, match="free"):
        api.bundle_import(evil, root=tmp_path / "other")


def test_registries_from_before_trust_keep_loading_except_what_came_in_a_bundle(
    exported, tmp_path, thirdparty, tiny_torch_model
):
    """m006 trusts the factories an old registry's versions name, but not a bundle's."""
    import sqlite3

    other = tmp_path / "old"
    api.register(
        "mine",
        from_torch=tiny_torch_model["factory"],
        weights=tiny_torch_model["weights"],
        config=tiny_torch_model["config"],
        root=other,
    )
    conn = sqlite3.connect(other / "registry.db")
    conn.execute("update versions set config = json_set(config, '$.factory', 'legacy.m:build')")
    conn.commit()
    bundle = rewrite(exported, tmp_path / "third.tar", set_factory(thirdparty["ref"]))
    api.bundle_import(bundle, trust=True, root=other)
    api.close_all()
    # Back to the state before m006: no table, the migration not applied.
    conn.execute("drop table trusted_code")
    conn.execute("delete from _sqlite_migrations where name = 'm006_trusted_code'")
    conn.commit()
    conn.close()
    rows = {r["reference"]: r for r in api.trust_code(root=other)}
    assert set(rows) == {"legacy.m:build"}
    assert rows["legacy.m:build"]["granted_by"] == "migration"
