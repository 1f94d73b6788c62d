"""A form generated from a parameter schema: the Params the CLI builds its options from.

Every field is checked by its own ``Param.convert`` when the form is submitted, so a wrong
value gets the same message the CLI gives, inline beside the field, and nothing runs.
Numbers are typed into text boxes on purpose: ipywidgets' number boxes silently turn
"abc" into the last good value, which would run work the user did not ask for.
"""

from __future__ import annotations

import ipywidgets as w
from ipywidgets.widgets.widget_bool import CheckboxStyle
from ipywidgets.widgets.widget_description import DescriptionStyle
from ipywidgets.widgets.widget_string import HTMLStyle, TextStyle

from ..hints import prog_scope


class SchemaForm(w.VBox):
    """Fields for ``params`` (``Param`` objects); :meth:`values` converts and checks them."""

    def __init__(self, params=(), **kwargs):
        super().__init__(**kwargs)
        self.add_class("maas-form")
        # One layout and style per kind of widget, shared by every field: each would
        # otherwise be two more widget models, which the page creates before it draws.
        self.look = {
            "field": w.Layout(width="30em"),
            "error": w.Layout(margin="0 0 0 8px"),
            "row": w.Layout(),
            "text": TextStyle(description_width="11em"),
            "bool": CheckboxStyle(description_width="11em"),
            "choice": DescriptionStyle(description_width="11em"),
            "html": HTMLStyle(),
        }
        self.set_params(params)

    def set_params(self, params) -> None:
        """Show fields for ``params`` instead (the widgets of the old ones are closed, so a
        form rebuilt at each choice of compressor leaves nothing behind)."""
        for row in self.children:
            for widget in (*row.children, row):
                widget.close()
        self.params = tuple(params)
        self.fields: dict[str, w.Widget] = {}
        self.errors: dict[str, w.HTML] = {}
        rows = []
        for p in self.params:
            field = _field(p, self.look)
            error = w.HTML("", layout=self.look["error"], style=self.look["html"])
            error.add_class("maas-error")
            field.tooltip = p.help
            self.fields[p.name], self.errors[p.name] = field, error
            rows.append(w.HBox([field, error], layout=self.look["row"]))
        self.children = rows

    def values(self) -> dict | None:
        """The options to pass on (those that differ from their defaults), converted; or
        None after writing each field's problem beside it."""
        out, bad = {}, False
        for p in self.params:
            field, error = self.fields[p.name], self.errors[p.name]
            error.value = ""
            raw = field.value
            if p.type != "bool" and not p.choices:
                raw = raw.strip()
                if raw == "":
                    if p.required:
                        error.value = _red(f"{p.name} is required")
                        bad = True
                    continue
                if p.multiple:
                    raw = [x.strip() for x in raw.split(",") if x.strip()]
            try:
                with prog_scope("%maas"):  # spelled as on the panel's %maas line
                    value = p.convert(raw)
            except Exception as exc:  # a MaasError's message names the option and the fix
                error.value = _red(str(exc))
                bad = True
                continue
            if value != p.default:
                out[p.name] = value
        return None if bad else out

    def problem(self, name: str) -> str:
        """The message written beside field ``name`` (empty when it is fine)."""
        import html
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.errors[name].value))

    def as_typed(self, values: dict) -> dict:
        """``values`` keyed as ``hints.command`` spells them on a ``%maas`` line: a yes/no
        option that defaults to yes is ``--no-NAME``, an option with its own flag keeps it
        (``allow_hosts`` is ``--allow-host``)."""
        out = {}
        for p in self.params:
            if p.name not in values or secret(p):  # a line is kept in the notebook's output
                continue
            key = p.flag[2:].replace("-", "_") if p.flag else p.name
            value = values[p.name]
            if p.type == "bool" and p.default and not value:
                out[f"no_{key}"] = True
            else:
                out[key] = value
        return out


def _field(p, look: dict) -> w.Widget:
    label = p.name.replace("_", " ")
    if p.type == "bool":
        return w.Checkbox(
            value=bool(p.default), description=label, style=look["bool"], layout=look["field"]
        )
    if p.choices:
        value = p.default if p.default in p.choices else p.choices[0]
        return w.Dropdown(
            options=list(p.choices),
            value=value,
            description=label,
            style=look["choice"],
            layout=look["field"],
        )
    if secret(p):  # typed as dots, and never written on a %maas line
        return w.Password(
            description=label, placeholder=p.envvar or "", style=look["text"], layout=look["field"]
        )
    default = p.default
    if p.multiple:
        default = ", ".join(map(str, default or ()))
    return w.Text(
        value="" if default is None else str(default),
        description=label,
        placeholder=p.metavar or p.type,
        style=look["text"],
        layout=look["field"],
    )


def secret(p) -> bool:
    """A token or password: shown as dots, left out of the lines a panel writes."""
    return any(word in p.name for word in ("token", "password", "secret"))


def _red(text: str) -> str:
    import html

    return f'<span style="color: var(--jp-error-color1, #c62828)">{html.escape(text)}</span>'
