"""One tabbed panel (Models | Compress | Serve | Jobs), what ``%maas panel`` shows."""

from __future__ import annotations

import ipywidgets as w

from ..errors import UsageError
from .compress import CompressPanel
from .jobs import JobsPanel
from .models import ModelsPanel
from .serve import ServePanel

TABS = {"models": ModelsPanel, "compress": CompressPanel, "serve": ServePanel, "jobs": JobsPanel}


class Panel(w.Tab):
    """Every panel in one set of tabs, on the registry at ``root``."""

    def __init__(self, root=None, tab: str | None = None):
        self.panels = {name: cls(root=root) for name, cls in TABS.items()}
        super().__init__(list(self.panels.values()))
        self.titles = tuple(name.capitalize() for name in TABS)
        self.add_class("maas-panel")
        if tab is not None:
            self.selected_index = list(TABS).index(check_tab(tab))

    def __repr__(self) -> str:
        return "maas panel: " + "; ".join(repr(p) for p in self.panels.values())

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
