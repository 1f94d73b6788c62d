"""One tabbed panel (Models | Compress | Serve | Jobs), what ``%maas panel`` shows.

A tab's panel is built when the tab is first opened: each panel is a few hundred widget
models (a form field is a text box, its label, layout and style), and a page that must
create all four before it draws anything paints late; a notebook saved with its widget
state also keeps only what was opened.
"""

from __future__ import annotations

import ipywidgets as w

from ..errors import UsageError
from .compress import CompressPanel
from .jobs import JobsPanel
from .models import ModelsPanel
from .serve import ServePanel

TABS = {"models": ModelsPanel, "compress": CompressPanel, "serve": ServePanel, "jobs": JobsPanel}


class Panel(w.Tab):
    """Every panel in one set of tabs, on the registry at ``root``; ``panel.tab("serve")``
    is one of them (built on first use, as opening its tab does)."""

    def __init__(self, root=None, tab: str | None = None):
        self.root = root
        self.panels: dict[str, w.Widget] = {}
        self.slots = {name: w.Box() for name in TABS}
        super().__init__(list(self.slots.values()))
        self.titles = tuple(name.capitalize() for name in TABS)
        self.add_class("maas-panel")
        first = check_tab(tab) if tab is not None else "models"
        self.tab(first)
        self.selected_index = list(TABS).index(first)
        self.observe(self._opened, "selected_index")

    def _opened(self, change) -> None:
        if change["new"] is not None:
            self.tab(list(TABS)[change["new"]])

    def tab(self, name: str):
        """The panel of tab ``name`` (models, compress, serve, jobs), built if need be."""
        name = check_tab(name)
        if name not in self.panels:
            self.panels[name] = TABS[name](root=self.root)
            self.slots[name].children = (self.panels[name],)
        return self.panels[name]

    def __repr__(self) -> str:
        shown = "; ".join(repr(self.panels[n]) for n in TABS if n in self.panels)
        return f"maas panel (Models, Compress, Serve, Jobs): {shown}"

    def close(self) -> None:
        for p in self.panels.values():
            p.close()
        super().close()


def check_tab(tab: str) -> str:
    """The panel ``tab`` names, or a usage error listing the panels."""
    name = tab.strip().lower()
    if name not in TABS:
        raise UsageError(f"No panel {tab!r}; panels: {', '.join(TABS)} (or none for all).")
    return name


def panel(tab: str | None = None, root=None):
    """The tabbed panel, or with ``tab`` (models, compress, serve, jobs) that panel alone."""
    if tab is None:
        return Panel(root=root)
    cls = TABS[check_tab(tab)]
    return cls(root=root)
