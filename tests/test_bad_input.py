"""Bad input: each refused call names the problem and the fix, and leaves the database and
the blob folder exactly as they were (compared through a dump before and after)."""

import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
from contextlib import contextmanager

import pytest
import torch

from maas_lab import api
from maas_lab.errors import (
    ConflictError,
    MaasError,
    NotFoundError,
    RegistryError,
    UsageError,
)
from maas_lab.testing import registry_snapshot


@pytest.fixture
def populated(maas_home, tiny_torch_model):
    """A registry with one model (two versions, an alias) and a snapshot to compare with."""
    kwargs = dict(
        from_torch=tiny_torch_model["factory"],
        config=json.dumps(tiny_torch_model["config"]),
        weights=tiny_torch_model["weights"],
        task="classification",
    )
    api.register("digits-mlp", **kwargs)
    api.register("digits-mlp", **kwargs)
    api.alias("digits-mlp", "prod", 1)
    return {"home": maas_home, "kwargs": kwargs, "before": registry_snapshot(maas_home)}


@contextmanager
def unchanged(populated):
    yield
    assert registry_snapshot(populated["home"]) == populated["before"]


BAD_NAMES = [
    ("a/b", "no '/'"),
    ("../escape", "Invalid model name"),
    ("a..b", "Invalid model name"),
    ("nul\x00byte", "Invalid model name"),
    ("has space", "Invalid model name"),
    ("x" * 300, "300 characters; the limit is 128"),
    ("CON", "reserved device name on Windows"),
    ("lpt1.model", "reserved device name on Windows"),
    ("", "cannot be empty"),
]


@pytest.mark.parametrize("name,message", BAD_NAMES)
def test_bad_model_names_are_refused(populated, name, message):
    with unchanged(populated), pytest.raises(UsageError, match=message):
        api.register(name, **populated["kwargs"])


@pytest.mark.parametrize(
    "ref,error,message",
    [
        ("digits-mpl", NotFoundError, "Did you mean 'digits-mlp'"),
        ("digits-mlp@7", UsageError, "has no version 7; its versions are 1..2"),
        ("digits-mlp@prdo", NotFoundError, "Did you mean 'prod'"),
        ("digits-mlp@", UsageError, "ends with '@'"),
        ("digits-mlp@0", UsageError, "start at 1"),
        ("../../etc/passwd", UsageError, "Invalid model name"),
    ],
)
def test_unknown_references_are_named(populated, ref, error, message):
    with unchanged(populated):
        for call in (api.show, api.load, api.resolve):
            with pytest.raises(error, match=message):
                call(ref)
        with pytest.raises(error, match=message):
            api.tag(ref, ["x=y"])


def test_duplicate_alias_and_bad_alias_names(populated):
    with unchanged(populated):
        with pytest.raises(ConflictError, match="already points at digits-mlp@1; nothing"):
            api.alias("digits-mlp", "prod", 1)
        with pytest.raises(UsageError, match="reserved"):
            api.alias("digits-mlp", "latest", 1)
        with pytest.raises(UsageError, match="Invalid alias '7'"):
            api.alias("digits-mlp", "7", 1)
        with pytest.raises(UsageError, match="has no version 9"):
            api.alias("digits-mlp", "staging", 9)
        with pytest.raises(UsageError, match="Which version"):
            api.alias("digits-mlp", "staging")


def test_weights_that_are_not_safetensors(populated, tmp_path):
    saved = tmp_path / "weights.pt"
    torch.save({"0.weight": torch.zeros(2)}, saved)
    text = tmp_path / "weights.safetensors"
    text.write_text("not weights at all")
    with unchanged(populated):
        with pytest.raises(UsageError, match="zip archive .torch.save output"):
            api.register("digits-mlp", **{**populated["kwargs"], "weights": saved})
        with pytest.raises(UsageError, match="not valid safetensors.*save_file"):
            api.register("digits-mlp", **{**populated["kwargs"], "weights": text})
        with pytest.raises(UsageError, match="does not exist"):
            api.register("digits-mlp", **{**populated["kwargs"], "weights": tmp_path / "nope"})


class Canary:
    """Unpickling this creates a folder: proof that code in a pickle ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_pickle_weights_are_refused_and_never_run(populated, tmp_path):
    canary = tmp_path / "canary-ran"
    payload = pickle.dumps(Canary(canary))
    hf = tmp_path / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "bert"}')
    (hf / "pytorch_model.bin").write_bytes(payload)
    offers = {}
    for name in ("evil.pkl", "evil.safetensors", "evil.pt"):
        (tmp_path / name).write_bytes(payload)
        offers[name] = tmp_path / name
    with unchanged(populated):
        for path in offers.values():
            with pytest.raises(UsageError, match="Python pickle.*never unpickles"):
                api.register("digits-mlp", **{**populated["kwargs"], "weights": path})
        with pytest.raises(UsageError, match="pytorch_model.bin .* pickle-format weights"):
            api.register("evil-hf", from_hf=hf)
        with pytest.raises(UsageError, match="not a TorchScript archive"):
            api.register("evil-ts", from_file=offers["evil.pt"], format="torchscript")
        with pytest.raises(UsageError, match="looks like a pickle"):
            api.register("evil-file", from_file=offers["evil.pkl"], format="onnx")
    assert not canary.exists()
    pickle.loads(payload)  # the canary itself works: unpickling would have left this trace
    assert canary.exists()


def test_weights_that_do_not_fit_the_architecture(populated, tmp_path):
    with unchanged(populated):
        with pytest.raises(UsageError, match=r"shape mismatch 0.weight \[16, 8\] vs \[16, 9\]"):
            api.register(
                "digits-mlp",
                **{
                    **populated["kwargs"],
                    "config": '{"in_features": 9, "hidden": 16, "out_features": 3}',
                },
            )
        with pytest.raises(UsageError, match="Cannot import 'no_such_pkg'"):
            api.register("digits-mlp", **{**populated["kwargs"], "from_torch": "no_such_pkg:f"})
        with pytest.raises(UsageError, match="must be a JSON object"):
            api.register("digits-mlp", **{**populated["kwargs"], "config": "[1, 2]"})
        with pytest.raises(UsageError, match="exactly one of"):
            api.register("digits-mlp", from_hf=tmp_path, **populated["kwargs"])
        with pytest.raises(UsageError, match="No installed plugin opens format 'tflite'"):
            api.register("x", from_file=populated["kwargs"]["weights"], format="tflite")
        with pytest.raises(UsageError, match="Metric 'accuracy' must be a number"):
            api.register("digits-mlp", metrics=["accuracy=high"], **populated["kwargs"])
        with pytest.raises(UsageError, match="Invalid tag key"):
            api.register("digits-mlp", tags=["bad key=1"], **populated["kwargs"])


@contextmanager
def immutable(*folders):
    """Make folders unwritable even for root (chattr +i), or skip where that is impossible."""
    if os.geteuid() != 0:
        for f in folders:
            f.chmod(0o555)
        try:
            yield
        finally:
            for f in folders:
                f.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a folder unwritable")
    done = []
    try:
        for f in folders:
            if subprocess.run(["chattr", "+i", str(f)], capture_output=True).returncode:
                pytest.skip("this file system does not support chattr +i")
            done.append(f)
        yield
    finally:
        for f in done:
            subprocess.run(["chattr", "-i", str(f)], check=True)


def test_registry_folder_that_is_not_writable(populated, tmp_path, monkeypatch):
    home = populated["home"]
    store = home / "blobs"
    new_weights = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    save_file(model.state_dict(), str(new_weights))
    with immutable(home, store / "tmp", store / "sha256"), unchanged(populated):
        with pytest.raises(RegistryError, match="Cannot write to the registry.*MAAS_LAB_HOME"):
            api.register("digits-mlp", **{**populated["kwargs"], "weights": new_weights})
    locked = tmp_path / "locked"
    locked.mkdir()
    with immutable(locked):
        monkeypatch.setenv("MAAS_LAB_HOME", str(locked / "registry"))
        with pytest.raises(RegistryError, match="Cannot open the registry.*MAAS_LAB_HOME"):
            api.list_models()
    assert not (locked / "registry").exists()


def _register_many(root, worker, count, weights_dir):
    from maas_lab.registry import FileSpec, Registry

    reg = Registry(root)
    errors = []
    for i in range(count):
        path = weights_dir / f"w{worker}-{i}.bin"
        path.write_bytes(f"{worker}-{i}".encode() * 100)
        try:
            reg.register(f"shared-{i % 2}", [FileSpec(path, "model.bin", "weights")], "raw")
        except Exception as exc:  # counted and reported by the test
            errors.append(repr(exc))
    return errors


@pytest.mark.slow
def test_processes_registering_at_once_get_distinct_numbers(maas_home, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(
            _register_many, [(str(maas_home), w, 25, tmp_path) for w in range(4)]
        )
    assert [e for errors in results for e in errors] == []
    counts = []
    for name in ("shared-0", "shared-1"):
        numbers = [v["number"] for v in api.history(name)["versions"]]
        assert numbers == list(range(1, len(numbers) + 1))  # no gaps, no duplicates
        counts.append(len(numbers))
    assert counts == [52, 48]  # 4 workers x 13 even and 12 odd indices
    assert len(api.fsck()) == 0


def test_errors_render_as_one_short_line():
    err = NotFoundError("model", "minlm", ["minilm", "digits"])
    (line,) = err._render_traceback_()
    assert "Not found" in line and "Did you mean 'minilm'?" in line
    assert isinstance(err, MaasError)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 384 kB file system (tmpfs) to fill up; needs root, as CI has."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    api.close_all()
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_registers_nothing(tiny_disk, tiny_torch_model, tmp_path):
    root = tiny_disk / "registry"
    kwargs = dict(
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
        root=root,
    )
    api.register("tiny", **kwargs)
    before = registry_snapshot(root)
    from safetensors.torch import save_file

    from maas_lab.zoo import mlp

    big = {"in_features": 8, "hidden": 20_000, "out_features": 3}  # about 1 MB of weights
    save_file(mlp(**big).state_dict(), str(tmp_path / "big.safetensors"))
    with pytest.raises(RegistryError, match="No space left on the disk of the registry"):
        api.register("tiny", **{**kwargs, "weights": tmp_path / "big.safetensors", "config": big})
    assert registry_snapshot(root) == before
    assert [v["number"] for v in api.history("tiny", root=root)["versions"]] == [1]


@pytest.mark.parametrize("typed", ["m@²", "m@١", "m@³2"])
def test_non_ascii_digits_in_a_reference_are_a_usage_error(maas_home, typed):
    """'²'.isdigit() is True but int('²') fails: a version typed with one was a traceback."""
    with pytest.raises(UsageError):
        api.show(typed)


def test_non_ascii_digits_are_not_a_job_id(maas_home):
    with pytest.raises(UsageError, match="not a job id"):
        api.job("²")
