"""The local registry: SQLite (via sqlite-utils) plus a content-addressed blob store."""

from .refs import Ref, parse_ref
from .registry import Checkout, FileSpec, Registry, default_root

__all__ = ["Checkout", "FileSpec", "Ref", "Registry", "default_root", "parse_ref"]
