"""The Jobs tab: training jobs with their status, a live loss and throughput chart, the
end of the log, and cancel.

The chart is drawn from the progress reports rank 0 writes (``maas_lab.training.report``),
read once a second in a thread while the chosen job runs; nothing is asked of the job
itself, so watching never slows training.
"""

from __future__ import annotations

import html

import ipywidgets as w

from .. import api
from ..hints import command, prog_scope
from .chart import LineChart
from .table import RowTable
from .work import Poller, Task

COLUMNS = [
    ("job", "job"),
    ("status", "status"),
    ("target", "target"),
    ("processes", "processes"),
    ("step", "step"),
    ("loss", "loss"),
    ("took", "took"),
    ("registered", "registered"),
]
CHART = {"loss": ["loss"], "samples/s": ["samples/s"]}
RUNNING = ("starting", "running")


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _numbers(row: dict) -> dict:
    """What "95/380" and "46.8 s" sort by: the step and the seconds, not the text."""
    out = {}
    for key, text in (("step", row.get("step")), ("took", row.get("took"))):
        try:
            out[key] = float(str(text).split("/")[0].split()[0]) if text else None
        except ValueError:
            out[key] = None
    return out


class JobsPanel(w.VBox):
    """The newest jobs; click one to follow it."""

    def __init__(self, root=None, poll_s: float = 1.0, limit: int = 50):
        self.root, self.limit = root, limit
        self.table = RowTable(empty="No jobs yet. Start one with %%maas launch or maas launch.")
        self.title = w.HTML("")
        self.chart = LineChart(CHART, window=2000, x_unit="steps")
        self.log_view = w.HTML("")
        self.log_view.add_class("maas-log")
        self.cancel_button = w.Button(description="Cancel job", button_style="danger", icon="stop")
        self.task = Task()
        self.line = w.Text(description="%maas line", layout=w.Layout(width="50em"))
        self.line.add_class("maas-line")
        actions = w.HBox([self.cancel_button, self.task])
        self.detail = w.VBox([self.title, self.chart, actions, self.line, self.log_view])
        self.detail.layout.display = "none"
        super().__init__([self.table, self.detail])
        self.add_class("maas-jobs")
        self.selected: int | None = None
        self.ticks = 0
        self.table.observe(self._clicked, "selected")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.refresh()
        self.poller = Poller(
            poll_s, self._tick, lambda m: self.task.say(m, error=True), "maas-jobs-poll", self
        )

    def __repr__(self) -> str:
        return f"Jobs panel: {len(self.table.rows)} job(s)"

    def _clicked(self, change) -> None:
        if change["new"]:
            self.follow(int(change["new"]))

    def refresh(self) -> None:
        """Read the job list again, and the chosen job's chart and log."""
        table = api.jobs(limit=self.limit, root=self.root)
        self.statuses = {str(r["job"]): r["status"] for r in table.rows}
        rows = [
            {
                "key": str(r["job"]),
                "cells": {k: _cell(r.get(k)) for k, _ in COLUMNS},
                "sort": {**{k: r.get(k) for k, _ in COLUMNS}, **_numbers(r)},
            }
            for r in table.rows
        ]
        self.table.show(COLUMNS, rows)
        if self.selected is not None:
            self._detail()

    def follow(self, job_id: int) -> None:
        """Follow job ``job_id`` (what clicking its row does)."""
        self.selected = job_id
        self.detail.layout.display = ""
        self._detail()

    def _detail(self) -> str:
        """Draw the followed job's title, charts and log; returns its status."""
        job = api.job(self.selected, root=self.root)
        report = job.report  # the record, read once (each of the handle's fields reads it)
        record = report.data
        self.title.value = f"<h4>{html.escape(report.title)}</h4>"
        history = job.history()
        self.chart.set_series(
            "loss", "loss", [[h["step"], h["loss"]] for h in history if h.get("loss") is not None]
        )
        rates = []
        for a, b in zip(history, history[1:], strict=False):
            if b.get("t", 0) > a.get("t", 0) and "samples" in b and "samples" in a:
                rates.append([b["step"], (b["samples"] - a["samples"]) / (b["t"] - a["t"])])
        self.chart.set_series("samples/s", "samples/s", rates)
        tail = str(api.logs(self.selected, lines=15, root=self.root))
        self.log_view.value = f"<pre>{html.escape(tail)}</pre>"
        self.cancel_button.disabled = record["status"] not in RUNNING
        return record["status"]

    def _tick(self):
        # The followed job every tick while it runs; the whole list (each row's processes
        # and progress file read) every fifth tick, and once more when the followed job ends.
        self.ticks += 1
        if self.ticks % 5 == 0:
            self.refresh()
        elif self.selected is not None and self.statuses.get(str(self.selected)) in RUNNING:
            if self._detail() not in RUNNING:
                self.refresh()
        return True

    def cancel(self) -> bool:
        if self.selected is None:
            self.task.say("Click a job first.", error=True)
            return False
        job_id = self.selected
        with prog_scope("%maas"):
            line = command("cancel", job_id)

        def done(_):
            self.line.value = line
            self.refresh()

        return self.task.run(
            f"cancel job {job_id}", lambda: api.cancel(job_id, root=self.root), done
        )

    def close(self) -> None:
        if getattr(self, "poller", None) is not None:
            self.poller.stop()
        super().close()
