"""Progress bars for long work: shown by default, off with ``MAAS_LAB_PROGRESS=0``.

One switch for ours and for the libraries plugins call (transformers has its own bars), so a
person can silence all of them, and saved notebook outputs stay stable.
"""

from __future__ import annotations

import os


def enabled() -> bool:
    return os.environ.get("MAAS_LAB_PROGRESS", "1") != "0"


def byte_bar(total: int, desc: str, min_bytes: int = 32 * 1024 * 1024):
    """A bar counting bytes, or None for small work or when bars are off."""
    if total < min_bytes or not enabled():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)


class _Silent:
    """Stands in for a bar when bars are off, so callers need no ``if``."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, unit: str = "it"):
    """A counting bar (``update``, ``set_postfix``, ``close``) for long work like training."""
    if not enabled():
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)
