"""The Serve tab: start, scale and stop a server for a version, watch its load live, and
try it with one request.

The chart reads the server's own statistics (what ``%maas status`` shows: requests/s,
p50/p99 latency, queue depth), which the server processes write to files; a poller reads
them once a second in a thread, so the kernel keeps running cells and the server never
answers an extra request for the chart. Polling stops when the server stops or the panel
is closed; a server that died behind the panel is shown as stopped, with its last log lines.
"""

from __future__ import annotations

import html
import json
import threading
import time

import ipywidgets as w

from .. import api
from ..hints import command, command_with, prog_scope
from .chart import LineChart
from .form import SchemaForm
from .work import Poller, Task, one_line

CHART = {"requests/s": ["req/s"], "latency ms": ["p50", "p99"], "queue": ["queue"]}


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ServePanel(w.VBox):
    """Servers for registered versions, with a live chart of the one chosen."""

    def __init__(self, root=None, poll_s: float = 1.0):
        self.root, self.poll_s = root, poll_s
        self.version = w.Dropdown(description="version", layout=w.Layout(width="26em"))
        # The serve options' fields are built when "Server options" is opened: 16 of them
        # are about 150 widget models the page need not create to show the panel.
        self.form = SchemaForm()
        options = w.Accordion([self.form], titles=("Server options",), selected_index=None)
        options.observe(self._options_opened, "selected_index")
        self.options = options
        self.start_button = w.Button(
            description="Start server", button_style="primary", icon="play"
        )
        self.server = w.Dropdown(description="server", layout=w.Layout(width="26em"))
        self.replicas = w.BoundedIntText(value=1, min=1, max=64, description="replicas")
        self.scale_button = w.Button(description="Scale")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.url = w.HTML("")
        self.url.add_class("maas-url")
        self.chart = LineChart(CHART)
        self.try_text = w.Text(
            placeholder="A sentence, or numbers as JSON: [[0.1, 0.2, ...]]",
            layout=w.Layout(width="40em"),
        )
        self.try_button = w.Button(description="Send", icon="paper-plane")
        self.answer = w.HTML("")
        self.answer.add_class("maas-answer")
        self.log_view = w.HTML("")
        self.task = Task()
        self.line = w.Text(description="%maas line", layout=w.Layout(width="50em"))
        self.line.add_class("maas-line")
        super().__init__(
            [
                w.HBox([self.version, self.start_button]),
                options,
                w.HBox([self.server, self.replicas, self.scale_button, self.stop_button]),
                self.url,
                self.chart,
                w.HBox([self.try_text, self.try_button]),
                self.answer,
                self.task,
                self.line,
                self.log_view,
            ]
        )
        self.add_class("maas-serve")
        self.poller: Poller | None = None
        self.watching = threading.RLock()
        self.generation = 0
        self.tokens: dict[str, str | None] = {}  # tokens this panel started servers with
        self.started = time.monotonic()
        self.start_button.on_click(lambda _: self.start())
        self.scale_button.on_click(lambda _: self.scale())
        self.stop_button.on_click(lambda _: self.stop())
        self.try_button.on_click(lambda _: self.try_it())
        self.server.observe(lambda _: self._watch(), "value")
        self.refresh()

    def __repr__(self) -> str:
        return f"Serve panel: {len(self.server.options)} server(s) running"

    def refresh(self) -> None:
        """Read the versions and the running servers again."""
        keep_version = self.version.value
        refs = [r["ref"] for r in api.versions(limit=500, root=self.root).rows]
        self.version.options = refs
        if keep_version in refs or refs:
            self.version.value = keep_version if keep_version in refs else refs[0]
        self.rows = api.status(root=self.root).rows
        names = sorted({r["server"] for r in self.rows})
        keep = self.server.value
        self.server.options = names
        if keep in names:
            self.server.value = keep
        elif names:
            self.server.value = names[0]
        self._watch()

    # ------------------------------------------------------------------ actions

    def start(self) -> bool:
        ref = self.version.value
        if not ref:
            self.task.say("Pick a version to serve.", error=True)
            return False
        if self.form.params:
            values = self.form.values()
            if values is None:
                self.task.say("Fix the fields marked in red; nothing ran.", error=True)
                return False
            typed = self.form.as_typed(values)
            # A typed token leaves the page at once: widget values are saved with the notebook
            self.form.fields["token"].value = ""
        else:
            values = typed = {"port": 0}  # any free port: a panel must not collide
        with prog_scope("%maas"):
            line = command_with("serve", (ref,), typed)

        def work():
            with prog_scope("%maas"):
                return api.serve(ref, root=self.root, **values)

        def done(handle) -> None:
            self.line.value = line
            self.handle = handle
            self.tokens[handle.name] = values.get("token")  # "try it" must send it
            self.refresh()
            self.server.value = handle.name

        return self.task.run(f"start a server for {ref}", work, done)

    def _options_opened(self, change) -> None:
        if change["new"] is not None and not self.form.params:
            self.show_options()

    def show_options(self) -> None:
        """Build the serve options' fields (what opening "Server options" does)."""
        if not self.form.params:
            self.form.set_params(api.schema("serve"))
            self.form.fields["port"].value = "0"  # any free port: a panel must not collide

    def scale(self) -> bool:
        name, n = self.server.value, self.replicas.value
        if not name:
            self.task.say("No server is running.", error=True)
            return False
        with prog_scope("%maas"):
            line = command("scale", name, replicas=n)

        def done(_):
            self.line.value = line

        return self.task.run(
            f"scale {name} to {n}", lambda: api.scale(name, n, root=self.root), done
        )

    def stop(self) -> bool:
        name = self.server.value
        if not name:
            self.task.say("No server is running.", error=True)
            return False
        with prog_scope("%maas"):
            line = command("stop", name)

        def done(_):
            self.line.value = line
            self.refresh()

        return self.task.run(f"stop {name}", lambda: api.stop(name, root=self.root), done)

    def try_it(self) -> bool:
        """Send the text box's sentence or JSON numbers to the chosen server's model."""
        rows = [r for r in self.rows if r["server"] == self.server.value]
        if not rows:
            self.task.say("Start a server first.", error=True)
            return False
        text = self.try_text.value.strip()
        if not text:
            self.task.say("Type a sentence or JSON numbers to send.", error=True)
            return False
        if text.startswith("["):
            import numpy as np

            try:
                inputs = np.asarray(json.loads(text), dtype="float32")
            except (ValueError, TypeError) as exc:
                self.task.say(f"Not JSON numbers: {exc}", error=True)
                return False
        else:
            inputs = [text]
        ref, url = rows[0]["model"], rows[0]["url"]

        def done(report) -> None:
            self.answer.value = report._repr_html_()

        token = self.tokens.get(self.server.value)
        return self.task.run(
            f"ask {ref}",
            lambda: api.predict(ref, inputs, url=url, token=token, root=self.root),
            done,
        )

    # ------------------------------------------------------------------ live view

    def _watch(self) -> None:
        # Called from the page (the server list) and from a task's thread (after a start or
        # stop): one poller at a time, and a tick of an earlier one adds nothing.
        with self.watching:
            name = self.server.value
            self.generation += 1
            if self.poller is not None:
                self.poller.stop()
                self.poller = None
            if not name:
                self.url.value = "<i>No server is running. Pick a version and start one.</i>"
                return
            rows = [r for r in self.rows if r["server"] == name]
            if rows:
                self.url.value = (
                    f"<b>{html.escape(name)}</b> at <code>{html.escape(rows[0]['url'])}</code>: "
                    + ", ".join(html.escape(f"{r['model']} (version {r['version']})") for r in rows)
                )
            self.chart.plots = LineChart(CHART).plots
            self.started = time.monotonic()
            generation = self.generation
            self.poller = Poller(
                self.poll_s,
                lambda: self._tick(name, generation),
                self._error,
                "maas-serve-poll",
                self,
            )

    def _tick(self, name: str, generation: int):
        try:
            rows = api.status(name, root=self.root).rows
        except api.NotFoundError:
            if generation == self.generation:
                self._stopped(name)
            return False
        x = round(time.monotonic() - self.started, 1)
        rps = sum(_number(r["req/s"]) or 0 for r in rows)
        p50 = max(
            (_number(r["p50 ms"]) for r in rows if _number(r["p50 ms"]) is not None), default=None
        )
        p99 = max(
            (_number(r["p99 ms"]) for r in rows if _number(r["p99 ms"]) is not None), default=None
        )
        queue = sum(int(r["queue"] or 0) for r in rows)
        with self.watching:  # a poller replaced meanwhile adds nothing to the new chart
            if generation != self.generation:
                return False
            self.chart.add(
                x,
                {
                    "requests/s": {"req/s": rps},
                    "latency ms": {"p50": p50, "p99": p99},
                    "queue": {"queue": queue},
                },
            )
        return True

    def _stopped(self, name: str) -> None:
        try:
            tail = str(api.logs(name, lines=8, root=self.root))
        except Exception as exc:
            tail = one_line(exc)
        self.url.value = f"<b>{html.escape(name)}</b>: stopped."
        self.log_view.value = (
            f"<details open><summary>Last lines of {html.escape(name)}'s log</summary>"
            f"<pre>{html.escape(tail)}</pre></details>"
        )
        self.rows = [r for r in self.rows if r["server"] != name]

    def _error(self, message: str) -> None:
        self.task.say(message, error=True)

    def close(self) -> None:
        if getattr(self, "poller", None) is not None:
            self.poller.stop()
        super().close()
