"""The errors a user can see.

Every mistake a person can make (a wrong name, a missing file, a broken plugin) is a
``MaasError`` whose message says what was wrong and what to do. In IPython,
``_render_traceback_`` shows that message instead of a traceback, yet the exception still
propagates, so a notebook cell (and nbval) fails on it. Tracebacks are kept for bugs.
"""

from __future__ import annotations

import difflib


class MaasError(Exception):
    """Base class: a user-facing error with a readable, one-paragraph message."""

    label = "Error"

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31m{self.label}:\x1b[0m {self}"]


class UsageError(MaasError):
    """The request itself is malformed: a bad name, option, value or file."""

    label = "Usage error"


class NotFoundError(MaasError):
    """A model, version, alias or plugin that does not exist."""

    label = "Not found"

    def __init__(self, what: str, name: str, candidates: list[str] | tuple[str, ...] = ()):
        hint = ""
        close = difflib.get_close_matches(name, list(candidates), n=3)
        if close:
            hint = " Did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif candidates:
            shown = ", ".join(sorted(candidates)[:10])
            hint = f" Known: {shown}."
        super().__init__(f"No {what} named {name!r}.{hint}")
        self.what = what
        self.name = name


class NoSuchVersion(NotFoundError, UsageError):
    """A model that exists, asked for a version number it does not have. Still a
    ``UsageError`` (the reference was mistyped), and a ``NotFoundError`` so that whatever
    answers "is it there?" (the lab sidebar's 404) treats it like any missing version."""

    label = "Not found"

    def __init__(self, message: str, name: str):
        MaasError.__init__(self, message)
        self.what, self.name = "version", name


class ConflictError(MaasError):
    """The request clashes with what is already there (a duplicate alias or name)."""

    label = "Conflict"


class IntegrityError(MaasError):
    """Stored bytes do not match their recorded digest: the registry was tampered with."""

    label = "Integrity error"


class RegistryError(MaasError):
    """The registry cannot be opened or written (permissions, a file where a folder should be)."""

    label = "Registry error"


class UntrustedCode(MaasError):
    """A version names code (``module:callable``) that nobody has trusted in this registry.

    A factory reference is code: importing and calling it runs whatever it names. One that
    arrived with data (a bundle, a file, a request) runs only after a person trusts it."""

    label = "Untrusted code"

    def __init__(self, message: str, refs: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.refs = list(refs)


class BackendUnavailable(MaasError):
    """An optional dependency (torch, onnxruntime, ...) a plugin needs is not installed."""

    label = "Backend unavailable"


class PluginError(MaasError):
    """A plugin failed while doing work; the message names the plugin."""

    label = "Plugin error"


class JobFailed(MaasError):
    """A training job failed, or was lost with its monitor; ``report`` holds its record."""

    label = "Job failed"

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class ParityError(MaasError):
    """An export's outputs differ from its parent's beyond tolerance; nothing was registered."""

    label = "Parity check failed"


class BudgetError(MaasError):
    """A compressed result lost more than the fidelity budget allows; nothing was registered."""

    label = "Over budget"


class Interrupted(MaasError):
    """Stopped by the user (Ctrl-C / interrupt kernel); nothing was registered."""

    label = "Interrupted"


class ServeError(MaasError):
    """A server could not be started, found, scaled or stopped as asked."""

    label = "Serve error"


class ServerError(MaasError):
    """The server refused a request, or nothing answers at the url; ``status`` is the HTTP
    status (None when no answer came)."""

    label = "Server error"

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
