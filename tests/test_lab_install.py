"""The lab extension as installed: both halves enabled in this environment (what
`make install` did), and a wheel that carries a working, prebuilt extension, so a user's
`pip install` needs no Node.js."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def jupyter(*args, env=None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return ANSI.sub("", done.stdout + done.stderr)


def test_both_halves_are_enabled_in_this_environment():
    listed = jupyter("labextension", "list")
    assert re.search(r"maas-lab v\S+ enabled OK \(python, maas-lab\)", listed), listed
    servers = jupyter("server", "extension", "list")
    assert re.search(r"maas_lab\.lab enabled", servers), servers
    assert re.search(r"maas_lab\.lab\s+OK", servers), servers


@pytest.mark.slow
def test_a_wheel_carries_the_built_extension_and_jupyter_finds_it_installed(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("maas_lab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    ext = f"{data}/data/share/jupyter/labextensions/maas-lab/"
    assert f"{ext}package.json" in names and f"{ext}install.json" in names
    assert any(n.startswith(f"{ext}static/remoteEntry.") for n in names)
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/maas_lab.json" in names
    assert not any("node_modules" in n or n.endswith(".ts") for n in names)
    # `maas plugin new` writes from templates that ship in the wheel, every kind's.
    from maas_lab.scaffold import KINDS

    for kind in KINDS:
        assert f"maas_lab/templates/plugin/{kind}/module.py.tmpl" in names, kind

    # Installed into a prefix of its own, found by a Jupyter whose PATH has no Node.js.
    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip first uninstalls this environment's own maas-lab.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed"]
        + ["--prefix", str(prefix)]
        + [str(wheel)],
        check=True,
        timeout=300,
    )
    site = next(prefix.glob("lib/python*/site-packages"))
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent),  # jupyter, and no node, npm or jlpm
        "PYTHONPATH": str(site),
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_CONFIG_PATH": str(prefix / "etc" / "jupyter"),
    }
    listed = jupyter("labextension", "list", env=env)
    assert str(prefix / "share" / "jupyter" / "labextensions") in listed, listed
    assert re.search(r"maas-lab v\S+ enabled OK", listed), listed
    config = prefix / "etc" / "jupyter" / "jupyter_server_config.d" / "maas_lab.json"
    assert json.loads(config.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"maas_lab.lab": True}}
    }
    found = subprocess.run(
        [sys.executable, "-c", "import maas_lab.lab as m; print(m.__file__)"],
        env=env,
        cwd=tmp_path,  # not the checkout, whose maas_lab would be found first
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.startswith(str(site))  # the server extension imports from the wheel
