"""The Jupyter server extension behind the JupyterLab sidebar (``labextension/``).

JupyterLab's front end runs in the browser and cannot open the registry itself, so this
extension answers it over REST under ``/maas/api/`` (``handlers.py``, routes documented in
docs/lab.md). It calls ``maas_lab.api`` only, as the CLI, the magics and the panels do, so a
version reads the same whichever way a person looks at it.

Enabled by the ``jupyter_server_config.d/maas_lab.json`` file the package installs, and by
``jupyter server extension enable maas_lab.lab`` where that file is not used.
"""

from __future__ import annotations

from .handlers import routes


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "maas_lab.lab"}]


def _jupyter_labextension_paths() -> list[dict]:
    """Where the built front end sits in a source checkout (``jupyter labextension develop``);
    a wheel installs it under ``share/jupyter/labextensions/maas-lab`` instead."""
    return [{"src": "labextension", "dest": "maas-lab"}]


def _load_jupyter_server_extension(server_app) -> None:
    web_app = server_app.web_app
    base = web_app.settings["base_url"]
    web_app.add_handlers(".*$", routes(base))
    server_app.log.info("maas_lab: the models sidebar's API is at %smaas/api/", base)
