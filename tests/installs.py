"""Installing a package for real, as a user would, without touching the test's environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def pip_install_into(target: Path, package: str | Path) -> Path:
    """``pip install`` ``package`` (a folder) into ``target``, a folder of its own: putting
    it on sys.path or PYTHONPATH 'installs' it. Never into the running environment, and
    never with ``--prefix``, which would first uninstall this environment's maas-lab."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--disable-pip-version-check", "--target", str(target), str(package)],
        check=True,
    )
    return Path(target)
