"""Progress for long work: named steps, counting bars and byte bars.

Shown by default, off with ``MAAS_LAB_PROGRESS=0`` (one switch for ours and for the
libraries plugins call, so a person can silence all of them and saved notebook outputs stay
stable). Where it shows:

- in a notebook (an IPython kernel): one display, updated in place through its display
  handle, as ``text/html`` and ``text/plain`` only, never an ipywidget, so a saved notebook
  holds no widget that is gone when it is reopened, and its last update is the truthful
  final line (``export minilm@1 to onnx: done in 14.2 s (load 2.1 s, ...)``);
- in a terminal: one line on stderr per step and the final line (counting bars are tqdm's,
  on stderr too); nothing on stdout;
- to a listener (:func:`listening`): every event as a dict, and nothing else is shown. The
  panels draw their own bar this way, from the thread that runs the work.

::

    with progress.steps("export minilm@1 to onnx", ["load", "export", "register"]) as p:
        p.step("load")      # each step ends the one before
        ...
        p.done("minilm@2")  # optional final words; leaving the block also ends it

A ``bar`` or ``byte_bar`` made inside a step reports into it (the step's share of the
fraction) instead of showing a bar of its own, and libraries' own bars (transformers,
huggingface_hub) are silenced while a ``steps`` block runs.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

log = logging.getLogger(__name__)

# Display updates (and listener events) between step changes, at most this often.
MIN_INTERVAL_S = 0.2

_listener: ContextVar[Callable[[dict], None] | None] = ContextVar("maas_progress_listener")
_current: ContextVar[Steps | None] = ContextVar("maas_progress_steps")


def enabled() -> bool:
    """Whether progress is shown (``MAAS_LAB_PROGRESS`` is not ``0``). Listeners hear events
    either way."""
    return os.environ.get("MAAS_LAB_PROGRESS", "1") != "0"


def libraries_quiet() -> bool:
    """Whether libraries' own bars should be off: progress is off, a listener draws it, or
    a ``steps`` block shows it (plugins that call transformers check this)."""
    return not enabled() or _listener.get(None) is not None or _current.get(None) is not None


@contextlib.contextmanager
def listening(callback: Callable[[dict], None]) -> Iterator[None]:
    """Send every progress event in this thread (context) to ``callback(event)`` while the
    block runs, instead of showing anything. An event has ``title``, ``step``, ``index``
    (1-based), ``total`` (steps), ``elapsed_s``, ``state`` (``running``, ``done``,
    ``failed``, ``interrupted``), ``fraction`` (0..1), ``detail`` (an inner bar's words or
    None) and ``summary`` (the final line, once it ends; else None). A callback that raises
    is logged and ignored: the work goes on."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def in_notebook() -> bool:
    """Whether this runs in an IPython kernel with a frontend (as tqdm.auto decides)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    if shell is None:
        return False
    if getattr(shell, "kernel", None) is not None:
        return True
    try:
        return "IPKernelApp" in shell.config
    except Exception:
        return False


def seconds(s: float) -> str:
    return f"{s:.1f} s"


# ---------------------------------------------------------------------- where it shows


class _Listener:
    def __init__(self, callback):
        self.callback, self.warned = callback, False

    def show(self, event: dict, changed: bool) -> None:
        try:
            self.callback(dict(event))
        except Exception:
            if not self.warned:
                self.warned = True
                log.warning("A progress listener raised; its events are ignored", exc_info=True)


class _Terminal:
    """A line on stderr per step and the final line."""

    def show(self, event: dict, changed: bool) -> None:
        if event["summary"] is not None:
            line = event["summary"]
        elif changed and event["step"] is not None:
            line = f"{event['title']}: {event['index']}/{event['total']} {event['step']}"
        else:
            return
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


class View:
    """What a notebook shows: ``_repr_html_`` and a plain repr of one event."""

    def __init__(self, event: dict):
        self.event = event

    def _bar_text(self, width: int = 20) -> str:
        filled = int(round(self.event["fraction"] * width))
        return "[" + "#" * filled + "." * (width - filled) + "]"

    def _where(self) -> str:
        e = self.event
        parts = []
        if e["step"] is not None and e["total"] > 1:
            parts.append(f"{e['index']}/{e['total']} {e['step']}")
        elif e["step"] is not None and e["step"] != e["title"]:
            parts.append(e["step"])
        if e.get("detail"):
            parts.append(e["detail"])
        parts.append(seconds(e["elapsed_s"]))
        return " · ".join(parts)

    def __repr__(self) -> str:
        e = self.event
        if e["summary"] is not None:
            return e["summary"]
        return f"{e['title']} {self._bar_text()} {self._where()}"

    def _repr_html_(self) -> str:
        e = self.event
        if e["summary"] is not None:
            mark = "✓" if e["state"] == "done" else "✗"
            return f'<div class="maas-progress">{mark} {html.escape(e["summary"])}</div>'
        return (
            '<div class="maas-progress">'
            f'<progress value="{e["fraction"]:.3f}" max="1" style="width:12em;'
            'vertical-align:middle"></progress> '
            f"<b>{html.escape(e['title'])}</b> {html.escape(self._where())}</div>"
        )


class _Notebook:
    """One display, updated in place through its handle."""

    def __init__(self):
        self.handle = None

    def show(self, event: dict, changed: bool) -> None:
        try:
            from IPython.display import display

            if self.handle is None:
                self.handle = display(View(event), display_id=True)
            elif self.handle is not None:
                self.handle.update(View(event))
        except Exception:
            log.debug("progress display failed", exc_info=True)


def _sink():
    """Where a new top-level progress shows: a listener, a notebook, stderr, or nowhere."""
    callback = _listener.get(None)
    if callback is not None:
        return _Listener(callback)
    if not enabled():
        return None
    return _Notebook() if in_notebook() else _Terminal()


# ---------------------------------------------------------------------- named steps


class Steps:
    """Named steps of one long operation (see :func:`steps`)."""

    def __init__(self, title: str, names, sink):
        self.title = title
        self.names = list(names)
        self.sink = sink
        self.start = time.monotonic()
        self.step_name: str | None = None
        self.step_start = self.start
        self.times: list[tuple[str, float]] = []
        self.inner: object | None = None  # the bar that reports into the current step
        self.inner_fraction = 0.0
        self.detail: str | None = None
        self.words: str | None = None
        self.state = "running"
        self.summary: str | None = None
        self.last_emit = 0.0
        self.parent: Steps | None = None

    # what the work calls

    def step(self, name: str) -> None:
        """End the current step (if any) and start ``name``."""
        self._end_step()
        if name not in self.names:
            self.names.append(name)
        self.step_name, self.step_start = name, time.monotonic()
        self.inner, self.inner_fraction, self.detail = None, 0.0, None
        self._emit(changed=True)

    def done(self, words: str | None = None) -> None:
        """End the last step and the whole block; ``words`` join the final line."""
        if self.state != "running":
            return
        self.words = words
        self._finish("done")

    def report(self, fraction: float, detail: str | None = None, who=None) -> None:
        """How far the current step has got (0..1), with words (an inner bar's)."""
        if self.state != "running":
            return
        if who is not None:
            if self.inner is None:
                self.inner = who
            elif self.inner is not who:
                return  # an inner bar of an inner bar: the outer one speaks for both
        elif self.inner is not None:
            return
        self.inner_fraction = min(max(float(fraction), 0.0), 1.0)
        self.detail = detail
        self._emit(changed=False)

    def release(self, who) -> None:
        if self.inner is who:
            self.inner = None

    # state

    @property
    def index(self) -> int:
        return self.names.index(self.step_name) + 1 if self.step_name is not None else 0

    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        total = len(self.names) or 1
        finished = max(self.index - 1, 0)
        return min((finished + self.inner_fraction) / total, 1.0)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def event(self) -> dict:
        return {
            "title": self.title,
            "step": self.step_name,
            "index": self.index,
            "total": len(self.names),
            "elapsed_s": round(self.elapsed(), 3),
            "state": self.state,
            "fraction": self.fraction(),
            "detail": self.detail,
            "summary": self.summary,
        }

    def _end_step(self) -> None:
        if self.step_name is not None:
            self.times.append((self.step_name, time.monotonic() - self.step_start))

    def _finish(self, state: str) -> None:
        if self.state != "running":
            return
        where = self.step_name
        self._end_step()
        self.state = state
        took = seconds(self.elapsed())
        if state == "done":
            parts = ", ".join(f"{n} {seconds(t)}" for n, t in self.times)
            line = f"{self.title}: done in {took}" + (f" ({parts})" if parts else "")
            if self.words:
                line += f": {self.words}"
        else:
            verb = "failed" if state == "failed" else "interrupted"
            at = f" at {where}" if where is not None else ""
            line = f"{self.title}: {verb}{at} after {took}"
        self.summary = line
        self.detail = None
        self._emit(changed=True)

    def _emit(self, changed: bool) -> None:
        if self.parent is not None:  # a block inside another: a detail of its step
            if self.summary is None:
                where = f"{self.step_name}" if self.step_name else self.title
                self.parent.report(self.fraction(), where, who=self)
            else:
                self.parent.release(self)
            return
        if self.sink is None:
            return
        now = time.monotonic()
        if not changed and now - self.last_emit < MIN_INTERVAL_S:
            return
        self.last_emit = now
        self.sink.show(self.event(), changed)


def _interrupted(exc: BaseException) -> bool:
    from .errors import Interrupted

    return isinstance(exc, (KeyboardInterrupt, Interrupted))


@contextlib.contextmanager
def _libraries_silenced() -> Iterator[None]:
    """transformers' and huggingface_hub's bars off while the block runs (those already
    imported), then as they were."""
    restore = []
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        with contextlib.suppress(Exception):
            if hf_logging.is_progress_bar_enabled():
                hf_logging.disable_progress_bar()
                restore.append(hf_logging.enable_progress_bar)
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        with contextlib.suppress(Exception):
            if not hub.are_progress_bars_disabled():
                hub.disable_progress_bars()
                restore.append(hub.enable_progress_bars)
    try:
        yield
    finally:
        for undo in reversed(restore):
            with contextlib.suppress(Exception):
                undo()


@contextlib.contextmanager
def steps(title: str, names=()) -> Iterator[Steps]:
    """Show ``title``'s named steps (``names``, in order) while the block runs; see the
    module's docstring. The final line says how long each step took, or at which step it
    failed (the exception passes through unchanged)."""
    parent = _current.get(None)
    tracker = Steps(title, names, None if parent is not None else _sink())
    tracker.parent = parent
    token = _current.set(tracker)
    try:
        with _libraries_silenced():
            yield tracker
    except BaseException as exc:
        tracker._finish("interrupted" if _interrupted(exc) else "failed")
        raise
    else:
        tracker.done()
    finally:
        _current.reset(token)


def report(fraction: float, detail: str | None = None) -> None:
    """Tell the enclosing step how far it has got; nothing outside a ``steps`` block, or
    while a bar inside the step reports."""
    tracker = _current.get(None)
    if tracker is not None:
        tracker.report(fraction, detail)


# ---------------------------------------------------------------------- bars


def _human_bytes(n: float) -> str:
    from .results import human_size

    return human_size(n)


class Bar:
    """A counting bar (``update``, ``set_postfix``, ``close``): inside a step it reports into
    the step; alone, in a notebook, it is one display updated in place that ends in a
    truthful line (``registering: 90.9 MB in 1.2 s``); in a terminal, tqdm's bar on stderr."""

    def __init__(self, total: int, desc: str, unit: str = "it", as_bytes: bool = False):
        self.total, self.desc, self.unit, self.as_bytes = total, desc, unit, as_bytes
        self.n = 0
        self.postfix = ""
        self.closed = False
        self.start = time.monotonic()
        self.tqdm = None
        self.owner = _current.get(None)
        self.own: Steps | None = None  # alone (not in a step): a one-step block of its own
        if self.owner is None:
            sink = _sink()
            if isinstance(sink, _Terminal):
                sink = None  # tqdm draws it
            self.own = Steps(desc, [desc], sink)
            self.own.step_name = desc
        if _listener.get(None) is None and enabled() and not in_notebook():
            from tqdm import tqdm

            kwargs = {"unit": "B", "unit_scale": True} if as_bytes else {"unit": unit}
            self.tqdm = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, **kwargs)

    def _count(self, n: float) -> str:
        if self.as_bytes:
            return _human_bytes(n)
        return f"{n:g} {self.unit}"

    def _words(self) -> str:
        if self.as_bytes:
            done = f"{_human_bytes(self.n)} of {_human_bytes(self.total)}"
        else:
            done = f"{self.n:g}/{self.total:g} {self.unit}"
        words = done if self.owner is None else f"{self.desc} {done}"
        return f"{words} ({self.postfix})" if self.postfix else words

    def _fraction(self) -> float:
        return min(self.n / self.total, 1.0) if self.total else 0.0

    def _tell(self) -> None:
        if self.owner is not None:
            self.owner.report(self._fraction(), self._words(), who=self)
        elif self.own is not None:
            self.own.inner_fraction, self.own.detail = self._fraction(), self._words()
            self.own._emit(changed=False)

    def update(self, n: float = 1) -> None:
        if self.closed:
            return
        self.n += n
        if self.tqdm is not None:
            self.tqdm.update(n)
        self._tell()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())
        if self.tqdm is not None:
            self.tqdm.set_postfix(items, refresh=refresh)
        self._tell()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.tqdm is not None:
            self.tqdm.close()
        if self.owner is not None:
            self.owner.release(self)
            return
        own = self.own
        took = seconds(time.monotonic() - self.start)
        if self.total and self.n >= self.total:
            line = f"{self.desc}: {self._count(self.n)} in {took}"
        else:
            of = _human_bytes(self.total) if self.as_bytes else f"{self.total:g} {self.unit}"
            line = f"{self.desc}: stopped at {self._count(self.n)} of {of} after {took}"
        if self.postfix:
            line += f" ({self.postfix})"
        own.state = "done" if self.total and self.n >= self.total else "failed"
        own.inner_fraction, own.detail, own.summary = self._fraction(), None, line
        own._emit(changed=True)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shown() -> bool:
    return enabled() or _listener.get(None) is not None or _current.get(None) is not None


def byte_bar(total: int, desc: str, min_bytes: int = 32 * 1024 * 1024):
    """A bar counting bytes, or None for small work or when progress is off."""
    if total < min_bytes or not _shown():
        return None
    return Bar(total, desc, unit="B", as_bytes=True)


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
    if not _shown():
        return _Silent()
    return Bar(total, desc, unit)
