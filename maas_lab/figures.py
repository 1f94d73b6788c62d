"""Measured figures as a person reads them: labelled columns, cells, charts, and which CPU
measured them. Compression and comparison both report through here, so a figure from one
reads like the same figure from the other."""

from __future__ import annotations

import json

from .results import BarChart, Report, Table, human_size, kv_table

# What each timing metric is, said where a person reads it. The speed evaluator measures
# both the same way everywhere (compress and compare): warm-up, then the median of
# interleaved repeats, so a figure from one run reads like one from another.
LABELS = {
    "latency_ms": "latency b1 ms (median)",
    "throughput": "throughput b32 rows/s",
}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def metric_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cpu_text(cpu: dict | None) -> str:
    """``AMD EPYC 7B13 (avx, avx2, fma)``: which CPU measured a set of figures."""
    if not cpu:
        return ""
    return f"{cpu.get('cpu', 'unknown CPU')} ({', '.join(cpu.get('isa') or ['no SIMD flags'])})"


def flat(report: dict, most: int = 6) -> dict:
    """A plugin's report as one line per field; long lists and dicts are cut to their first
    entries (the whole report stays in ``.data["report"]`` and in the lineage)."""
    out = {}
    for k, v in (report or {}).items():
        if isinstance(v, list) and len(v) > most:
            v = [*v[:most], f"... {len(v) - most} more"]
        elif isinstance(v, dict) and len(v) > most:
            v = {**dict(list(v.items())[:most]), "...": f"{len(v) - most} more"}
        out[k] = json.dumps(v, sort_keys=False) if isinstance(v, (dict, list)) else v
    return out


def chart(labels: list[str], metrics: list[dict]):
    """Bars per metric; sizes in MB, so the axis reads 12.3 rather than 1e7."""
    sizes = [x.get("size_bytes") for x in metrics]
    series = {"size MB": [None if size is None else size / 1e6 for size in sizes]}
    for m in ("latency_ms", "throughput", "accuracy", "cosine_mean"):
        series[label(m)] = [x.get(m) for x in metrics]
    return BarChart(labels, series, formatters={"size MB": lambda v: f"{v:.2f} MB"})


def ratio(a, b) -> float | None:
    return a / b if a and b else None


def compression_report(parent: str, child: str, how: str, figures: dict) -> Report:
    from .compression import change
    from .evaluation import ordered

    before, after = figures["before"], figures["after"]
    rows = [
        {
            "metric": label(m),
            parent: before.get(m),
            child: after.get(m),
            "change": change(m, before.get(m), after.get(m)),
        }
        for m in ordered(set(before) | set(after))
    ]
    table = Table(
        rows,
        ["metric", parent, child, "change"],
        formatters={parent: metric_cell, child: metric_cell},
        note="; ".join([*figures["notes"], f"measured on {cpu_text(figures['measured_on'])}"]),
    )
    return Report(
        f"{child}: {how} of {parent}",
        [
            ("Measured side by side", table),
            ("What the plugin did", kv_table(flat(figures["report"]))),
            ("", chart([parent, child], [before, after])),
        ],
        data={"ref": child, "parent": parent, **figures},
    )


def comparison_report(
    rows: list[dict],
    results: list[dict],
    notes: list[str],
    dataset_name,
    measured_on: dict,
    logged: bool,
) -> Report:
    """The side-by-side table and chart of ``compare``: one row per version (``rows`` are
    their registry rows), each speed-up beside the measurement it comes from."""
    from .evaluation import ordered

    first = results[0]
    metrics = ordered({k for m in results for k in m})
    columns, shown = ["ref", "format"], []
    for m in metrics:
        columns.append(label(m))
        if m == "latency_ms":
            columns.append("b1 speed-up")
        elif m == "throughput":
            columns.append("b32 speed-up")
    data_rows = []
    for r, m in zip(rows, results, strict=True):
        row = {"ref": r["ref"], "format": r["format"], **m}
        row["b1 speed-up"] = ratio(first.get("latency_ms"), m.get("latency_ms"))
        row["b32 speed-up"] = ratio(m.get("throughput"), first.get("throughput"))
        data_rows.append(row)
        shown.append({label(k): v for k, v in row.items()})
    times = "x" if len(rows) == 1 else "x vs the first"
    table = Table(
        shown,
        columns,
        title=f"{len(rows)} version(s), measured side by side"
        + (f" on {dataset_name}" if dataset_name is not None else ""),
        note="; ".join(
            [*notes, f"measured on {cpu_text(measured_on)}"]
            + ([] if logged else ["not recorded (log=False)"])
        ),
        formatters={
            "size_bytes": human_size,
            **{label(m): metric_cell for m in metrics if m != "size_bytes"},
            "b1 speed-up": lambda v: "" if v is None else f"{v:.2f}{times}",
            "b32 speed-up": lambda v: "" if v is None else f"{v:.2f}{times}",
        },
    )
    return Report(
        "Comparison",
        [("", table), ("", chart([r["ref"] for r in rows], results))],
        data={"rows": data_rows},
    )
