"""Search spaces as people type them, checked before any trial runs.

A function's space is Optuna's define-by-run ``space(trial)``; what it returns is checked
per trial (a non-empty dict with text keys). A compressor's space is ``--over``:
``smooth=0..0.9,outliers=0..4,layers=linear|linear+lstm`` — ``a..b`` is a float range, or an
int range when both ends are whole numbers and the option is an int; ``a..b:step`` a
stepped range (what ``--sampler grid`` needs); ``a|b|c`` a choice. Names are checked
against the compressor's own parameter schema. ``--keep`` states constraints on what is
measured (``cosine_min>=0.99,size_ratio<=0.5``).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from ..errors import UsageError
from ..hints import option

_RANGE = re.compile(r"^\s*([-+0-9.eE]+)\s*\.\.\s*([-+0-9.eE]+)\s*(?::\s*([-+0-9.eE]+))?\s*$")
_KEEP = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<|==)\s*([-+0-9.eE]+)\s*$")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
MAX_GRID = 10_000


@dataclass(frozen=True)
class Dimension:
    """One tuned option: a float or int range (``step`` None: continuous), or ``choices``."""

    name: str
    type: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial):
        if self.type == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1)
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step)

    def count(self) -> int | None:
        """How many values :meth:`grid` would give, counted without building them (a typo'd
        step must not exhaust memory); None for a continuous float range."""
        if self.type == "choice":
            return len(self.choices)
        if self.type == "int":
            return len(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def grid(self) -> list | None:
        """Every value, when the dimension is finite; None for a continuous float range."""
        if self.type == "choice":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        return [round(self.low + i * self.step, 12) for i in range(self.count())]

    def text(self) -> str:
        if self.type == "choice":
            return "|".join(map(str, self.choices))
        step = f":{self.step:g}" if self.step else ""
        return f"{self.low:g}..{self.high:g}{step}"


def _number(text: str, what: str, flag: str = "over") -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option(flag)} {what}: {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise UsageError(f"{option(flag)} {what}: {text!r} is not a finite number.")
    return value


def parse_over(text, params) -> list[Dimension]:
    """``"smooth=0..0.9,outliers=0..4"`` (or a dict of name -> the same right-hand sides)
    against ``params`` (the compressor's ``Param`` schema)."""
    if isinstance(text, dict):
        items = [(str(k), str(v)) for k, v in text.items()]
    else:
        parts = [p for p in str(text or "").split(",") if p.strip()]
        items = []
        for part in parts:
            name, eq, rhs = part.partition("=")
            if not eq:
                raise UsageError(
                    f"{option('over')} {part.strip()!r}: write name=low..high or name=a|b, "
                    f"e.g. {option('over', 'smooth=0..0.9,outliers=0..4')}."
                )
            items.append((name.strip(), rhs.strip()))
    if not items:
        raise UsageError(
            f"{option('over')} is empty: name at least one option to tune, e.g. "
            f"{option('over', 'sparsity=0.1..0.9')}."
        )
    known = {p.name: p for p in params}
    dims, seen = [], set()
    for name, rhs in items:
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise UsageError(
                f"{option('over')} names {name!r}, which this compressor does not take; "
                f"its options: {names}."
            )
        if name in seen:
            raise UsageError(f"{option('over')} names {name!r} twice.")
        seen.add(name)
        dims.append(_dimension(known[name], rhs))
    return dims


def _dimension(param, rhs: str) -> Dimension:
    name = param.name
    if param.type == "code":
        raise UsageError(f"{option('over')} {name}: code options cannot be tuned.")
    match = _RANGE.fullmatch(rhs)
    if match is None:
        values = [v.strip() for v in rhs.split("|")]
        if not rhs or any(not v for v in values):
            raise UsageError(
                f"{option('over')} {name}={rhs!r}: give low..high, low..high:step or a|b|c."
            )
        converted = tuple(dict.fromkeys(param.convert(v) for v in values))
        return Dimension(name, "choice", choices=converted)
    if param.type not in ("int", "float"):
        raise UsageError(
            f"{option('over')} {name} is a {param.type} option: give its choices as a|b|c."
        )
    low, high = _number(match[1], name), _number(match[2], name)
    step = _number(match[3], name) if match[3] else None
    if low > high:
        raise UsageError(
            f"{option('over')} {name}={rhs}: the low end {low:g} is above the high end {high:g}."
        )
    if step is not None and step <= 0:
        raise UsageError(f"{option('over')} {name}={rhs}: the step must be above 0.")
    if param.type == "int":
        for v in (low, high, step or 1):
            if not float(v).is_integer():
                raise UsageError(f"{option('over')} {name} takes whole numbers; got {rhs}.")
        return Dimension(name, "int", low, high, step)
    if low == high:
        return Dimension(name, "choice", choices=(low,))
    return Dimension(name, "float", low, high, step)


def grid_of(dims: list[Dimension]) -> dict:
    """The grid ``--sampler grid`` walks; a continuous range is refused with how to step it."""
    size = 1
    for d in dims:
        n = d.count()
        if n is None:
            raise UsageError(
                f"{option('sampler', 'grid')} needs a finite space: give {d.name} a step "
                f"({d.name}={d.low:g}..{d.high:g}:{(d.high - d.low) / 4:g}) or choices (a|b|c)."
            )
        size *= n
    if size > MAX_GRID:
        raise UsageError(f"The grid has {size:,} points (at most {MAX_GRID:,}): use coarser steps.")
    return {d.name: d.grid() for d in dims}


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    def holds(self, metrics: dict) -> bool:
        return self.metric in metrics and _OPS[self.op](metrics[self.metric], self.bound)

    def violation(self, metrics: dict) -> float:
        """How far outside the constraint (<= 0 inside), as Optuna's constraint functions
        take it; a metric never measured counts as far outside."""
        if self.metric not in metrics:
            return 1e9
        value = metrics[self.metric]
        if self.op in (">=", ">"):
            return self.bound - value
        if self.op in ("<=", "<"):
            return value - self.bound
        return abs(value - self.bound)

    def why(self, metrics: dict) -> str:
        if self.metric not in metrics:
            return f"{self.metric} was not measured"
        return f"{self.metric} {metrics[self.metric]:.6g} fails {self.text()}"

    def text(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_keep(keep) -> list[Constraint]:
    """``"cosine_min>=0.99,size_ratio<=0.5"`` or a list of such; empty keeps everything."""
    if not keep:
        return []
    given = [keep] if isinstance(keep, str) else list(keep)
    out = []
    for item in given:
        for part in str(item).split(","):
            if not part.strip():
                continue
            match = _KEEP.fullmatch(part)
            if match is None:
                raise UsageError(
                    f"{option('keep')} {part.strip()!r}: write metric>=value or metric<=value, "
                    f"e.g. {option('keep', 'cosine_min>=0.99')}."
                )
            out.append(Constraint(match[1], match[2], _number(match[3], match[1], "keep")))
    return out


def check_params(params, number: int) -> dict:
    """What ``space(trial)`` returned: a non-empty dict with text keys."""
    if not isinstance(params, dict):
        raise UsageError(
            f"space(trial) returned {type(params).__name__} in trial {number}; it must return "
            "a dict of the parameters it suggested, e.g. {'lr': trial.suggest_float(...)}."
        )
    if not params:
        raise UsageError(
            f"space(trial) returned an empty dict in trial {number}: an empty search space "
            "has nothing to tune; suggest at least one parameter."
        )
    bad = [k for k in params if not isinstance(k, str)]
    if bad:
        raise UsageError(f"space(trial) returned a parameter named {bad[0]!r}: names are text.")
    return params
