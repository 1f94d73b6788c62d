"""A registry home for one module of server tests, and what every such module needs.

Servers run in processes of their own: they find the registry through ``MAAS_LAB_HOME``
and a third-party plugin through ``PYTHONPATH`` (as they would find any installed package),
and they outlive a module that forgets them. So the home sets both, gives the module a
fresh plugin set, and stops every server started in it when the module ends, however it
ends.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from maas_lab import api
from maas_lab.plugins import Plugins, set_plugins
from maas_lab.testing import stop_servers


@contextlib.contextmanager
def serving_home(root, plugin_path=None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAAS_LAB_HOME", str(root))
        mp.setenv("MAAS_LAB_PROGRESS", "0")
        if plugin_path is not None:
            paths = [str(plugin_path), os.environ.get("PYTHONPATH", "")]
            mp.setenv("PYTHONPATH", os.pathsep.join(paths))
            mp.syspath_prepend(str(plugin_path))
        old = set_plugins(Plugins())
        try:
            yield root
        finally:
            stop_servers(root)
            set_plugins(old)
            api.close_all()
