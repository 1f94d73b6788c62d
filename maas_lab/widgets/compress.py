"""The Compress tab: pick a version and a compressor, fill its form, watch it run, read
the before/after report; or compare any versions side by side.

The compressor list comes from the plugin hooks and each form from the compressor's own
parameter schema (plus the core's ``compress`` options), so a third party's compressor
appears here with no panel code.
"""

from __future__ import annotations

import html

import ipywidgets as w

from .. import api
from ..hints import command_with, prog_scope
from .form import SchemaForm
from .work import Task


class CompressPanel(w.VBox):
    """Compress one version, or compare several."""

    def __init__(self, root=None):
        self.root = root
        self.mode = w.ToggleButtons(options=["Compress", "Compare"], value="Compress")
        self.version = w.Dropdown(description="version", layout=w.Layout(width="26em"))
        self.compressor = w.Dropdown(
            description="compressor",
            tooltip="The compressors that take the chosen version's format",
            layout=w.Layout(width="26em"),
        )
        self.about = w.HTML("")
        self.form = SchemaForm()
        self.run_button = w.Button(description="Compress", button_style="primary", icon="compress")
        self.versions = w.SelectMultiple(
            description="versions", rows=6, layout=w.Layout(width="26em")
        )
        self.compare_form = SchemaForm(api.schema("compare"))
        self.compare_button = w.Button(description="Compare", button_style="primary")
        self.task = Task()
        self.line = w.Text(description="%maas line", layout=w.Layout(width="50em"))
        self.line.add_class("maas-line")
        self.report = w.HTML("")
        self.report.add_class("maas-report")
        self.compress_box = w.VBox(
            [self.version, self.compressor, self.about, self.form, self.run_button]
        )
        self.compare_box = w.VBox([self.versions, self.compare_form, self.compare_button])
        self.compare_box.layout.display = "none"
        super().__init__(
            [self.mode, self.compress_box, self.compare_box, self.task, self.line, self.report]
        )
        self.add_class("maas-compress")
        self.available: dict = {}
        self.formats: dict = {}
        self.version.observe(lambda _: self._compressors(), "value")
        self.compressor.observe(lambda _: self._form(), "value")
        self.mode.observe(self._mode, "value")
        self.run_button.on_click(lambda _: self.compress())
        self.compare_button.on_click(lambda _: self.compare())
        self.refresh()

    def __repr__(self) -> str:
        return f"Compress panel: {len(self.version.options)} version(s) to choose from"

    def refresh(self) -> None:
        """Read the versions again (and the compressors that take the chosen one)."""
        rows = api.versions(limit=500, root=self.root).rows
        refs = [r["ref"] for r in rows]
        self.formats = {r["ref"]: r["format"] for r in rows}
        keep = self.version.value
        self.version.options = refs
        self.versions.options = refs
        if refs:
            self.version.value = keep if keep in refs else refs[0]
        if not refs:
            self.about.value = "<i>No models yet: register one, then compress it here.</i>"
        self._compressors()

    def _mode(self, change) -> None:
        compare = change["new"] == "Compare"
        self.compress_box.layout.display = "none" if compare else ""
        self.compare_box.layout.display = "" if compare else "none"

    def _compressors(self) -> None:
        ref = self.version.value
        if not ref:
            self.compressor.options = []
            return
        self.available = {
            r["name"]: r for r in api.components("compressor", self.formats.get(ref)).rows
        }
        keep = self.compressor.value
        self.compressor.options = list(self.available)
        if self.available:  # the one chosen before if it takes this format, else the first
            self.compressor.value = keep if keep in self.available else next(iter(self.available))
        if not self.available:
            self.about.value = (
                f"<i>No installed compressor takes {html.escape(str(self.formats.get(ref)))} "
                "versions; export it to another format first.</i>"
            )
        self._form()

    def _form(self) -> None:
        comp = self.available.get(self.compressor.value) if self.compressor.value else None
        if comp is None:
            self.form.set_params(())
            return
        fmt = html.escape(str(self.formats.get(self.version.value)))
        self.about.value = (
            f"<i>{html.escape(comp['description'])}</i> (plugin {html.escape(comp['plugin'])})."
            f" Listed: the compressors that take {fmt} versions."
        )
        params = tuple(api.schema("compress")) + tuple(comp["params"])
        if params != self.form.params:  # a refresh keeps what the user typed
            self.form.set_params(params)

    def compress(self) -> bool:
        """Check the form and start the compression; False (nothing runs) if a field is
        wrong, each problem written beside its field."""
        ref, name = self.version.value, self.compressor.value
        if not ref or not name:
            self.task.say("Pick a version and a compressor first.", error=True)
            return False
        values = self.form.values()
        if values is None:
            self.task.say("Fix the fields marked in red; nothing ran.", error=True)
            return False
        with prog_scope("%maas"):
            line = command_with("compress", (ref,), {"with_": name, **self.form.as_typed(values)})

        def work():
            with prog_scope("%maas"):
                return api.compress(ref, name, root=self.root, **values)

        def done(report) -> None:
            self.line.value = line
            self.report.value = report._repr_html_()
            self.refresh()

        self.report.value = ""
        return self.task.run(f"compress {ref} with {name}", work, done)

    def compare(self) -> bool:
        # The first is the baseline the others are measured against: the oldest (a parent
        # before what was made from it), whatever order the page sent the selection in.
        refs = sorted(
            self.versions.value, key=lambda r: (r.rsplit("@", 1)[0], int(r.rsplit("@", 1)[1]))
        )
        if not refs:
            self.task.say("Pick versions to compare (Ctrl/Shift-click for several).", error=True)
            return False
        values = self.compare_form.values()
        if values is None:
            self.task.say("Fix the fields marked in red; nothing ran.", error=True)
            return False
        with prog_scope("%maas"):
            line = command_with("compare", refs, self.compare_form.as_typed(values))

        def work():
            with prog_scope("%maas"):
                return api.compare(*refs, root=self.root, **values)

        def done(report) -> None:
            self.line.value = line
            self.report.value = report._repr_html_()

        self.report.value = ""
        return self.task.run(f"compare {len(refs)} version(s)", work, done)
