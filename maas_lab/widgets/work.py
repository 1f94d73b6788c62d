"""Work a panel runs without blocking the kernel: one background task at a time with a
progress bar, and pollers that refresh live views at a bounded rate.

The notebook keeps running cells while a compression or a server start runs: the work is
in a thread, its named steps arrive through :func:`maas_lab.api.reporting_to` and move the
bar, and the result or a one-line error (never a traceback) is shown when it ends.
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as w

from .. import api


def one_line(exc: BaseException) -> str:
    """How an error reads in a panel: a MaasError's label and message, else its type."""
    label = getattr(exc, "label", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{label}: {text}" if label else f"{type(exc).__name__}: {text}"


class Task(w.VBox):
    """A progress bar and a message line for one piece of background work at a time."""

    def __init__(self, **kwargs):
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="24em"))
        self.bar.add_class("maas-progress")
        self.message = w.HTML("")
        self.message.add_class("maas-message")
        super().__init__([w.HBox([self.bar, self.message])], **kwargs)
        self.bar.layout.visibility = "hidden"
        self.thread: threading.Thread | None = None
        self.last_error = ""

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def say(self, text: str, error: bool = False) -> None:
        """Show ``text`` (escaped) as the task's message; errors in red."""
        color = "var(--jp-error-color1, #c62828)" if error else "inherit"
        self.message.value = f'<span style="color: {color}">{html.escape(text)}</span>'

    @property
    def text(self) -> str:
        """The message as the page shows it (unescaped, without markup)."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.message.value))

    def run(self, what: str, work, done=None, failed=None) -> bool:
        """Start ``work()`` in a thread, unless a task runs already (then say so and return
        False). ``done(result)`` runs after it succeeds, ``failed(message)`` after it fails."""
        if self.busy:
            self.say("Busy: wait for the running task to finish.", error=True)
            return False
        self.last_error = ""
        self.bar.value = 0.0
        self.bar.bar_style = ""
        self.bar.layout.visibility = "visible"
        self.say(f"{what}...")
        started = time.monotonic()

        def step(event: dict) -> None:
            self.bar.value = min(1.0, max(self.bar.value, float(event.get("fraction") or 0.0)))
            if event.get("state") == "running" and event.get("step"):
                self.say(f"{what}: {event['step']} ({event['index']}/{event['total']})")

        def target() -> None:
            try:
                with api.reporting_to(step):
                    result = work()
            except BaseException as exc:  # shown, not raised: nobody is there to catch it
                self.last_error = one_line(exc)
                self.bar.bar_style = "danger"
                self.say(self.last_error, error=True)
                if failed is not None:
                    try:
                        failed(self.last_error)
                    except Exception as also:
                        self.say(f"{self.last_error}; then {one_line(also)}", error=True)
                return
            self.bar.value = 1.0
            self.bar.bar_style = "success"
            self.say(f"{what}: done in {time.monotonic() - started:.1f} s")
            if done is not None:
                try:
                    done(result)
                except Exception as exc:
                    self.last_error = one_line(exc)
                    self.bar.bar_style = "danger"
                    self.say(self.last_error, error=True)

        self.thread = threading.Thread(target=target, name=f"maas-panel: {what}", daemon=True)
        self.thread.start()
        return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running task (tests and scripts; a notebook need not wait)."""
        if self.thread is not None:
            self.thread.join(timeout)


class Poller:
    """Calls ``tick()`` every ``interval_s`` in a daemon thread until :meth:`stop`, until
    ``tick`` returns False, or until ``owner`` (a widget) is closed; while every view of
    ``owner`` is gone (its cell re-run or cleared) ticks are skipped. A tick that raises is
    shown through ``on_error`` and polling goes on (a registry briefly locked is no reason
    to stop a chart)."""

    def __init__(
        self, interval_s: float, tick, on_error=None, name: str = "maas-poller", owner=None
    ):
        self.interval_s, self.tick, self.on_error = max(0.2, interval_s), tick, on_error
        self.alive, self.shown = views(owner) if owner is not None else (None, None)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval_s):
            if self.alive is not None and not self.alive():
                break
            if self.shown is not None and not self.shown():
                continue
            try:
                if self.tick() is False:
                    break
            except Exception as exc:
                if self.on_error is not None:
                    try:
                        self.on_error(one_line(exc))
                    except Exception:
                        pass  # nowhere left to show it; polling goes on
        self.stopped.set()

    @property
    def running(self) -> bool:
        return not self.stopped.is_set()

    def stop(self) -> None:
        self.stopped.set()


def views(widget):
    """Two tests for a poller: is ``widget`` still open, and is it shown somewhere? Until a
    page has shown it (or with no page at all, as in a script), it counts as shown."""
    seen = {"views": False}
    if widget._view_count is None:
        widget._view_count = 0  # ipywidgets counts views from here on

    def counted(change) -> None:
        if change["new"]:
            seen["views"] = True

    widget.observe(counted, "_view_count")

    def alive() -> bool:
        return widget.comm is not None

    def shown() -> bool:
        return not seen["views"] or bool(widget._view_count)

    return alive, shown
