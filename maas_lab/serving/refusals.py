"""What a client may be told when a request is refused: an HTTP status and a message with no
file system paths in it.

Its own module because both doors raise and clean refusals the same way: the REST side
(``app``) answers them as ``{"error": ...}`` and the gRPC side (``grpc_service``) as the
matching gRPC status, and neither may depend on the other.
"""

from __future__ import annotations

import re
from pathlib import Path

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s'\"/:]+){2,}/?")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# Folders whose paths must never reach a client, whatever characters they hold (a space
# ends a path for _PATH, which then left the rest of a registry path in the message).
_PRIVATE: set[str] = {str(Path.home())}


def hide_paths_under(*folders) -> None:
    for folder in folders:
        _PRIVATE.update({str(folder), str(Path(folder).resolve())})


def clean(message: str) -> str:
    """No file system paths in anything a client sees: known folders first, longest first,
    then anything shaped like a path."""
    for folder in sorted(_PRIVATE, key=len, reverse=True):
        if len(folder) > 1:
            message = message.replace(folder, "<path>")
    return _PATH.sub("<path>", message)
