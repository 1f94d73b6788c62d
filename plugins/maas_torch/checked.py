"""What every torch exporter (and the ``torch-int8`` compressor) starts from: a model with its
signature, arguments to export with, and check cases at other sizes with the eager outputs,
which an export must reproduce before anything is returned.

:class:`Checked` is the interface and the check; :class:`Prepared` fills it for a factory
model, ``hf.HFPrepared`` for a Hugging Face encoder (``hf.prepare`` picks one).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from maas_lab.errors import UsageError

from . import signature as sig
from .tensors import tensors

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WHERE = re.compile(r"raised this error:\s*\n\s*(File \"[^\"]+\", line \d+, in \w+)\s*\n\s*(.+)")


def describe_failure(exc: BaseException) -> str:
    """One readable sentence from an exporter's (often page-long) exception: the underlying
    error, and the user's line of code when torch names it."""
    text = _ANSI.sub("", str(exc))
    inner = re.search(r"<class '([\w.]+)'>: (.+)", text)
    if inner:
        head = f"{inner.group(1).rsplit('.', 1)[-1]}: {inner.group(2).strip()}"
    else:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        head = f"{type(exc).__name__}: {first}"
    if len(head) > 400:
        head = head[:400] + "..."
    head = head.rstrip(". ")
    where = _WHERE.search(text)
    if where:
        head += f" (at {where.group(1)}: {where.group(2).strip()})"
    return head


class Checked:
    """What every torch exporter starts from: ``ref``, the eager ``model``, its ``inputs`` and
    ``outputs`` (signature entries), ``trace_args`` to export with, and check ``cases``
    (feeds at other sizes with the eager outputs for each), which :meth:`compare` runs an
    export on. ``config`` and ``keep`` (files of the parent to copy into the artifact, from
    ``dir``) say what the artifact carries besides the model."""

    ref: str
    model: object
    inputs: list
    outputs: list
    output_names: list
    trace_args: tuple
    cases: list
    config: dict
    keep: list
    dir: Path

    @property
    def signature(self) -> dict:
        return {"inputs": list(self.inputs), "outputs": list(self.outputs)}

    def compare(self, module, exporter: str, instead: str) -> float:
        """Run ``module`` on the check cases; refuse if it fails or differs from eager."""
        import torch

        from .runners import name_outputs

        worst = 0.0
        for feeds, expected in self.cases:
            sizes = sig.dim_sizes(self.inputs, feeds)
            try:
                with torch.no_grad():
                    got = name_outputs(module(*tensors(feeds)), self.output_names)
            except Exception as exc:
                raise UsageError(
                    f"The {exporter} export of {self.ref} fails on other input sizes ({sizes}): "
                    f"{describe_failure(exc)}. The model fixes a size that the signature says "
                    f"is dynamic (shape specialisation); {instead}."
                ) from None
            diff = sig.max_abs_diff(expected, got)
            if diff > sig.tolerance(expected):
                raise UsageError(
                    f"The {exporter} export of {self.ref} gives different outputs from the "
                    f"model on other inputs ({sizes}): max abs diff {diff:.3g}. The model has "
                    "data-dependent control flow or shape specialisation that the export "
                    f"froze; {instead}."
                )
            worst = max(worst, diff)
        return worst


class Prepared(Checked):
    """A factory model with its signature, feeds to trace with, and check cases (inputs at
    other sizes, and the same negated, with the eager outputs for each). The negated case
    flips ``if x.sum() > 0`` style branches, which a trace would otherwise freeze without any
    check noticing."""

    def __init__(self, checkout, options: dict, what: str):
        import torch

        from .loaders import load_factory_model
        from .runners import name_outputs

        spec = sig.resolve_signature(checkout, options, what)
        self.ref, self.inputs = checkout.ref, spec["inputs"]
        self.model = load_factory_model(checkout, {"device": "cpu"})
        self.trace_feeds, check, check_sizes = sig.trace_and_check_feeds(self.inputs)
        self.trace_args = tuple(torch.from_numpy(a) for a in self.trace_feeds.values())
        names = [t["name"] for t in spec["outputs"]]
        cases = [check]
        if any(np.asarray(a).dtype.kind == "f" for a in check.values()):
            cases.append({k: -a if a.dtype.kind == "f" else a for k, a in check.items()})
        with torch.no_grad():
            trace_expected = name_outputs(self.model(*self.trace_args), names)
            self.cases = [
                (feeds, name_outputs(self.model(*tensors(feeds)), names)) for feeds in cases
            ]
        self.outputs = spec["outputs"] or sig.outputs_from_runs(
            trace_expected,
            sig.dim_sizes(self.inputs, self.trace_feeds),
            self.cases[0][1],
            check_sizes,
        )
        self.output_names = [t["name"] for t in self.outputs]
        self.config, self.keep, self.dir = {}, [], checkout.dir


def copy_kept(prep, workdir: Path, files: dict[str, str]) -> None:
    """Copy the parent's files an export carries (tokenizer, config) into ``workdir``."""
    for f in prep.keep:
        target = Path(workdir) / f["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(prep.dir) / f["name"], target)
        files[f["name"]] = f["role"]
