"""The Models tab: search the registry as you type, sort its versions, open one.

The detail view shows a version's summary, files, signature, metrics and tags, its model
card rendered as Markdown, and its lineage as a graph; actions move an alias, tag, and
write a bundle, and each one shows the ``%maas`` line that does the same, so a click can
become a reproducible cell. The panel polls the registry's revision (every 2 s) and
refreshes when another notebook, a terminal or a job changed it.
"""

from __future__ import annotations

import html
import re
import threading

import ipywidgets as w

from .. import api
from ..hints import command, command_with, prog_scope
from ..results import human_size
from .graph import LineageGraph
from .table import RowTable
from .work import Poller, Task, one_line

COLUMNS = [
    ("ref", "version"),
    ("aliases", "aliases"),
    ("task", "task"),
    ("format", "format"),
    ("size", "size"),
    ("metrics", "key metrics"),
    ("created", "created"),
]


def markdown(text: str) -> str:
    """A model card as HTML, with any HTML inside it escaped and unsafe links dropped: a
    card can come from a bundle someone else wrote, and the page must not run its markup."""
    import mistune

    class Renderer(mistune.HTMLRenderer):
        def image(self, text: str, url: str, title=None) -> str:
            # An image from a host would tell it that the notebook was opened: only images
            # inside the card itself are shown; the others become their address as text.
            if re.match(r"data:image/(png|gif|jpeg|webp);", url or ""):
                return super().image(text, url, title)
            return html.escape(f"[image: {text or ''} {url or ''}]".replace("  ", " "))

        def link(self, text: str, url: str, title=None) -> str:
            out = super().link(text, url, title)
            return out.replace("<a ", '<a rel="noopener noreferrer" target="_blank" ', 1)

    render = mistune.create_markdown(
        escape=True, renderer=Renderer(escape=True), plugins=["table", "strikethrough"]
    )
    return render(text)


def _rows(table) -> list[dict]:
    rows = []
    for r in table.rows:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in (r["metrics"] or {}).items())
        rows.append(
            {
                "key": r["ref"],
                "cells": {
                    "ref": r["ref"],
                    "aliases": r["aliases"] or "",
                    "task": r["task"] or "",
                    "format": r["format"],
                    "size": human_size(r["size_bytes"]),
                    "metrics": metrics,
                    "created": (r["created_at"] or "")[:19].replace("T", " "),
                },
                "sort": {
                    "ref": [r["name"], r["number"]],
                    "aliases": r["aliases"] or "",
                    "task": r["task"] or "",
                    "format": r["format"],
                    "size": r["size_bytes"],
                    "metrics": metrics,
                    "created": r["created_at"] or "",
                },
            }
        )
    return rows


# The detail's tables, compact and ruled like the version table above them.
DETAIL_STYLE = """<style>
.maas-detail table.maas-kv th { text-align: left; padding: 1px 12px 1px 0; font-weight: 600; }
.maas-detail table.maas-kv td { padding: 1px 0; }
.maas-detail table.maas-files, .maas-detail table.maas-signature,
.maas-detail table.maas-metrics { border-collapse: collapse; font-size: 12px; }
.maas-detail table.maas-files th, .maas-detail table.maas-signature th,
.maas-detail table.maas-metrics th { text-align: left; padding: 2px 10px 2px 0;
  background: var(--jp-layout-color2, #eee); }
.maas-detail table.maas-files td, .maas-detail table.maas-signature td,
.maas-detail table.maas-metrics td { padding: 1px 10px 1px 0;
  font-family: var(--jp-code-font-family, monospace);
  border-top: 1px solid var(--jp-border-color2, #ddd); }
.maas-detail h4 { margin: 10px 0 4px; }
</style>"""


def _kv(pairs: dict) -> str:
    e = html.escape
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in pairs.items() if v)
    return f'<table class="maas-kv">{body}</table>'


def _grid(rows: list[dict], columns: list[str], cls: str) -> str:
    e = html.escape
    if not rows:
        return "<p><i>(none)</i></p>"
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


class ModelsPanel(w.VBox):
    """Search, a sortable table of versions, and the detail view of the one clicked."""

    def __init__(self, root=None, debounce_s: float = 0.03, poll_s: float = 2.0, limit=200):
        self.root, self.debounce_s, self.limit = root, debounce_s, limit
        self.status_text = ""
        self.search = w.Text(
            placeholder="Search: a name, task, tag or words of a model card",
            continuous_update=True,
            layout=w.Layout(width="32em"),
        )
        self.search.add_class("maas-search")
        self.status = w.HTML("")
        self.status.add_class("maas-status")
        self.table = RowTable(empty="No versions match.")
        self.task = Task()
        # The detail view is built when a version is first opened: half the panel's widget
        # models, which the page would otherwise create before it paints the table.
        self.graph: LineageGraph | None = None
        self.detail = w.VBox()
        self.detail.add_class("maas-detail")
        self.detail.layout.display = "none"
        super().__init__(
            [w.HBox([self.search, self.status]), self.table, self.detail],
        )
        self.add_class("maas-models")
        self.selected = ""
        self.lock = threading.RLock()
        self.timer: threading.Timer | None = None
        self.seen = ""
        self.search.observe(self._typed, "value")
        self.table.observe(self._clicked, "selected")
        self.refresh()
        self.poller = Poller(
            poll_s, self._poll, self._poll_error, name="maas-models-poll", owner=self
        )

    def __repr__(self) -> str:
        return f"Models panel: {self.status_text}"

    def _build_detail(self) -> None:
        self.graph = LineageGraph()
        self.title = w.HTML("")
        self.summary = w.HTML("")
        self.card = w.HTML("")
        self.card.add_class("maas-card")
        self.alias_name = w.Text(placeholder="alias, e.g. prod", layout=w.Layout(width="12em"))
        self.move_alias = w.Button(description="Point alias here", icon="tag")
        self.tag_text = w.Text(placeholder="key=value", layout=w.Layout(width="12em"))
        self.add_tag = w.Button(description="Tag")
        self.bundle_path = w.Text(
            placeholder="folder/ or file.maas.tar", layout=w.Layout(width="16em")
        )
        self.bundle = w.Button(description="Export bundle", icon="download")
        self.line = w.Text(
            description="%maas line",
            placeholder="the line for what you just did appears here",
            layout=w.Layout(width="50em"),
        )
        self.line.add_class("maas-line")
        actions = w.VBox(
            [
                w.HBox([self.alias_name, self.move_alias, self.tag_text, self.add_tag]),
                w.HBox([self.bundle_path, self.bundle]),
                self.line,
                self.task,
            ]
        )
        self.detail.children = (self.title, self.graph, actions, self.summary, self.card)
        self.graph.observe(self._clicked, "clicked")
        self.move_alias.on_click(lambda _: self._alias())
        self.add_tag.on_click(lambda _: self._tag())
        self.bundle.on_click(lambda _: self._bundle())

    def _clicked(self, change) -> None:
        if change["new"] and change["new"] != self.selected:
            self.show_version(change["new"])
        if change["owner"] is self.graph and change["new"]:
            self.graph.clicked = ""  # so a second click on the same node is heard

    # ------------------------------------------------------------------ the list

    def _typed(self, change) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.debounce_s <= 0:
            self.refresh()
            return
        self.timer = threading.Timer(self.debounce_s, self.refresh)
        self.timer.daemon = True
        self.timer.start()

    def refresh(self) -> None:
        """Read the table again (for the search text as it is now), and the open version
        if the registry changed since it was read."""
        with self.lock:
            typed = self.search.value
            text = typed.strip()
            wordless = bool(text) and not re.search(r"\w", text)
            if wordless:  # "*" or "-": nothing to search for, so everything matches
                text = ""
            before = self.seen
            try:
                self.seen = api.revision(root=self.root)
                table = api.versions(search=text or None, limit=self.limit, root=self.root)
            except Exception as exc:
                self._say(one_line(exc), error=True)
                return
            if self.search.value != typed and self.timer is not None and self.timer.is_alive():
                return  # typed on meanwhile: the refresh already waiting shows the newer rows
            counts = table.title
            if not table.rows and not text:
                self.status_text = "No models yet"
                self.table.empty = (
                    "No models yet. Register one: "
                    + _in_notebook(lambda: command("register", "NAME", from_hf="FOLDER"))
                    + ", then search and open it here."
                )
            else:
                self.status_text = counts + (f"; {table.note}" if table.note else "")
                self.table.empty = f"No model matches {text!r}." if text else "(none)"
            if wordless:
                self.status_text += f"; {self.search.value.strip()!r} has no words to search for"
            self._say(self.status_text)
            self.table.show(COLUMNS, _rows(table))
            if self.selected and self.seen != before:  # typing a search changes no version
                self.show_version(self.selected, quiet=True)

    def _say(self, text: str, error: bool = False) -> None:
        color = "var(--jp-error-color1, #c62828)" if error else "var(--jp-ui-font-color2, #555)"
        self.status.value = f'<span style="color: {color}">{html.escape(text)}</span>'

    def _poll(self):
        token = api.revision(root=self.root)
        if token != self.seen:
            before = self.task.message.value
            self.refresh()
            if self.selected and self.task.message.value == before and not self.task.busy:
                self.task.say("The registry changed elsewhere; refreshed.")
        return True

    def _poll_error(self, message: str) -> None:
        self._say(message, error=True)

    # ------------------------------------------------------------------ one version

    def show_version(self, ref: str, quiet: bool = False) -> None:
        """Show version ``ref`` in the detail view (what clicking its row does)."""
        with self.lock:
            if self.graph is None:
                self._build_detail()
            try:
                info = api.show(ref, root=self.root)
                graph = api.lineage(ref, root=self.root)
            except Exception as exc:
                if quiet:
                    self.task.say(f"{ref} is gone: {one_line(exc)}", error=True)
                    self.selected = ""
                    self.detail.layout.display = "none"
                    self.table.selected = ""
                    return
                self.task.say(one_line(exc), error=True)
                return
            old = self.selected
            self.selected = info["ref"]
            if quiet and old == info["ref"] and self.title.value:
                aliases = ", ".join(info["aliases"])
                if aliases != getattr(self, "shown_aliases", aliases):
                    self.task.say(
                        f"Aliases of {info['ref']} changed elsewhere: now {aliases or 'none'}."
                    )
            self.shown_aliases = ", ".join(info["aliases"])
            self.title.value = (
                f"<h3>{html.escape(info['ref'])}"
                + (
                    f" <small>({html.escape(self.shown_aliases)})</small>"
                    if info["aliases"]
                    else ""
                )
                + "</h3>"
            )
            self.graph.draw(graph.data, sizes=human_size)
            self.summary.value = self._summary(info.data)
            self.card.value = (
                markdown(info["card"]) if info["card"] else "<p><i>No model card.</i></p>"
            )
            self.detail.layout.display = ""
            if self.table.selected != info["ref"]:
                self.table.selected = info["ref"]

    def _summary(self, info: dict) -> str:
        sig = info["signature"] or {}
        signature = [
            {"io": io[:-1], "name": t["name"], "dtype": t["dtype"], "shape": t["shape"]}
            for io in ("inputs", "outputs")
            for t in sig.get(io, [])
        ]
        files = [
            {
                "name": f["name"],
                "role": f["role"],
                "size": human_size(f["size"]),
                "sha256": f["sha256"],
            }
            for f in info["files"]
        ]
        summary = {
            "task": info["task"],
            "format": info["format"],
            "size": human_size(info["size_bytes"]),
            "description": info["description"],
            "created": f"{(info['created_at'] or '')[:19]} by {info['created_by']}",
            "tags": ", ".join(f"{k}={v}" if v else k for k, v in info["tags"].items()),
        }
        metrics = [{"metric": k, "value": f"{v:.6g}"} for k, v in info["metrics"].items()]
        return (
            DETAIL_STYLE
            + _kv(summary)
            + "<h4>Files</h4>"
            + _grid(files, ["name", "role", "size", "sha256"], "maas-files")
            + "<h4>Signature</h4>"
            + _grid(signature, ["io", "name", "dtype", "shape"], "maas-signature")
            + "<h4>Metrics</h4>"
            + _grid(metrics, ["metric", "value"], "maas-metrics")
        )

    # ------------------------------------------------------------------ actions

    def _refuse(self, message: str) -> None:
        """A click that cannot run: say why; the box holds no line for it."""
        self.line.value = ""
        self.task.say(message, error=True)

    def _act(self, what: str, line: str, work, result_words=None) -> None:
        if not self.selected:
            self._refuse("Open a version first: click its row.")
            return

        def done(result) -> None:
            self.line.value = line
            self.refresh()  # first: the change is this panel's own, not news from elsewhere
            words = f" ({result_words(result)})" if result_words else ""
            self.task.say(f"{what}: done{words}. The same as a cell: {line}")

        def failed(message: str) -> None:
            self.line.value = ""

        def run():
            with prog_scope("%maas"):
                return work()

        self.task.run(what, run, done, failed)

    def _alias(self) -> None:
        name, number = self.selected.rsplit("@", 1)
        alias = self.alias_name.value.strip()
        if not alias:
            self._refuse("Type the alias to point here, e.g. prod.")
            return
        line = _in_notebook(lambda: command("alias", name, alias, number))
        self._act(
            f"{name}@{alias} -> @{number}",
            line,
            lambda: api.alias(name, alias, number, root=self.root),
        )

    def _tag(self) -> None:
        tags = [t for t in self.tag_text.value.split() if t]
        if not tags:
            self._refuse("Type a tag: key=value, or a word.")
            return
        ref = self.selected
        line = _in_notebook(lambda: command_with("tag", (ref, *tags)))
        self._act(f"tag {ref}", line, lambda: api.tag(ref, tags, root=self.root))

    def _bundle(self) -> None:
        out = self.bundle_path.value.strip()
        if not out:
            self._refuse("Type where to write the bundle: a folder/ or a .maas.tar file.")
            return
        ref = self.selected
        line = _in_notebook(lambda: command("bundle export", ref, out))
        self._act(
            f"bundle of {ref}",
            line,
            lambda: api.bundle_export(ref, out, root=self.root),
            result_words=lambda report: f"wrote {report['bundle']}",
        )

    def close(self) -> None:
        """Stop polling, then close the widgets."""
        if getattr(self, "poller", None) is not None:
            self.poller.stop()
        if getattr(self, "timer", None) is not None:
            self.timer.cancel()
        super().close()


def _in_notebook(make) -> str:
    """A command line as typed in a notebook (``%maas ...``): ``make()`` builds it."""
    with prog_scope("%maas"):
        return make()
