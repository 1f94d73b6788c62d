"""Widget panels: the registry, compression, serving and jobs as things to look at and click.

``%maas panel`` shows them all as tabs, ``%maas panel models`` one alone; in Python,
``maas_lab.widgets.Panel()`` or ``ModelsPanel()``, ``CompressPanel()``, ``ServePanel()``,
``JobsPanel()`` (each takes ``root=`` for another registry). Panels call ``maas_lab.api``
only, run long work in a thread with a progress bar, and poll live views at a bounded rate
until closed. Built on ipywidgets; the table, lineage graph and charts are anywidgets.
"""

from .compress import CompressPanel
from .jobs import JobsPanel
from .models import ModelsPanel
from .panel import Panel, panel
from .serve import ServePanel

__all__ = ["CompressPanel", "JobsPanel", "ModelsPanel", "Panel", "ServePanel", "panel"]
