"""Exporting a version to another format: the exporter plugin writes files, the core
checks parity between parent and export on the same inputs, and registers the export only
if it passes (or the user allowed a mismatch), with a lineage edge holding the figures."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import trust
from .errors import ParityError, UsageError
from .hints import option
from .intake import check
from .parity import compare, feeds_from_signature, violations
from .plugins import get_plugins
from .progress import steps
from .registering import register_derived
from .runners import staged_checkout, start_runner


def export(
    reg,
    ref: str,
    to: str,
    *,
    allow_mismatch: bool = False,
    atol: float | None = None,
    min_cosine: float | None = None,
    options: dict | None = None,
) -> dict:
    """Export ``ref`` with the exporter named (or producing) ``to``; returns the new
    version's row. Nothing is registered if the exporter fails or parity fails (unless
    ``allow_mismatch``: then it is kept, tagged ``parity=mismatch``)."""
    if atol is not None and not atol >= 0:
        raise UsageError(f"{option('atol', atol)}: the largest difference allowed is 0 or more.")
    if min_cosine is not None and not -1 <= min_cosine <= 1:
        raise UsageError(f"{option('min_cosine', min_cosine)}: a cosine is between -1 and 1.")
    row = reg.resolve(ref)
    exporter = get_plugins().exporter(to, row["format"])
    opts = trust.typed_options(exporter, exporter.options(options or {}))
    for fmt in {row["format"], exporter.produces}:  # parity runs both: say now if nothing can
        get_plugins().backend(fmt)
    with steps(f"export {row['ref']} to {to}", ["load", "export", "parity check", "register"]) as p:
        p.step("load")
        parent = reg.checkout(row["ref"])
        work = Path(tempfile.mkdtemp(prefix="export-"))
        try:
            p.step("export")
            artifact = exporter.produce(row["ref"], parent, opts, work)
            who = f"The {exporter.origin}"
            child = staged_checkout(work, artifact, parent, row["task"], who)
            p.step("parity check")
            parent_runner, child_runner = start_runner(parent, opts), start_runner(child, opts)
            if hasattr(parent_runner, "example_feeds"):
                feeds = parent_runner.example_feeds(4)
            else:
                feeds = feeds_from_signature(parent_runner.signature)
            wanted = {t["name"] for t in child_runner.signature["inputs"]}
            figures = compare(
                parent_runner.infer(feeds),
                child_runner.infer({k: v for k, v in feeds.items() if k in wanted}),
            )
            problems = violations(figures, atol, min_cosine)
            if problems and not allow_mismatch:
                raise ParityError(
                    f"The {artifact.format} export of {row['ref']} differs from it: "
                    + "; ".join(problems)
                    + f". Nothing was registered. Pass {option('allow_mismatch', True)} to keep "
                    f"it anyway, or loosen {option('atol')} / {option('min_cosine')} if the "
                    "difference is expected."
                )
            p.step("register")
            grants = check(
                reg,
                artifact.format,
                {n: work / n for n in artifact.files},
                artifact.config,
                how=f"made by exporter {exporter.name}",
            )
            worst = {
                "parity_max_abs_diff": max(f["max_abs_diff"] for f in figures.values()),
                "parity_min_cosine": min(f["min_cosine"] for f in figures.values()),
                "parity_mean_cosine": min(f["mean_cosine"] for f in figures.values()),
            }
            new = register_derived(
                reg,
                row,
                artifact,
                work,
                exporter,
                operation="export",
                signature=child_runner.signature,
                tags={"parity": "mismatch"} if problems else {},
                metrics=worst,
                grants=grants,
                params={
                    "exporter": exporter.name,
                    "options": opts,
                    "parity": figures,
                    "mismatch": problems,
                    "report": artifact.report,
                },
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        p.done(new["ref"])
    return new
