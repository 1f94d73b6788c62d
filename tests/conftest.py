import importlib
import sys
from pathlib import Path

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
