"""Built-in plugin: the measurements a compression is judged by.

- ``size``: bytes on disk, as stored (a sparse or int8 file counts at its real size);
- ``classification``: accuracy and macro-F1 on the held-out rows of labelled data;
- ``fidelity``: mean and worst cosine of each version's outputs against the first version's
  (sentence embeddings are mean-pooled first), on the data given or realistic examples;
- ``speed``: median latency at batch 1 and throughput at batch 32, versions interleaved
  round by round so that a busy moment slows all of them, not one.

Third-party evaluators use the same ``maas_evaluators`` hook (see docs/plugins.md).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from maas_lab import Component, hookimpl
from maas_lab.datasets import Dataset
from maas_lab.evaluation import cosines, main_output
from maas_lab.hints import option

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"

__version__ = "0.1.0"
BATCH_ROWS = 256


def size(subjects, context) -> list[dict]:
    return [{"size_bytes": s.size_bytes} for s in subjects]


def _logits(subject, context, data) -> np.ndarray:
    out = []
    for start in range(0, len(data), BATCH_ROWS):
        n = min(BATCH_ROWS, len(data) - start)
        feeds = context.feeds(subject.runner, data, start, n)
        outputs = subject.runner.infer(feeds)
        out.append(np.asarray(next(iter(outputs.values()))))
    return np.concatenate(out)


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    scores = []
    for label in np.unique(y):
        tp = np.sum((pred == label) & (y == label))
        fp = np.sum((pred == label) & (y != label))
        fn = np.sum((pred != label) & (y == label))
        scores.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(scores))


def classification(subjects, context) -> list[dict]:
    data = context.part("test")
    if data is None or not data.labelled:
        if any("classif" in (s.task or "") for s in subjects):
            context.notes.append(
                f"accuracy: no labelled data given ({option('data', 'sklearn:digits')}, ...)"
            )
        return [{} for _ in subjects]
    out = []
    for s in subjects:
        logits = _logits(s, context, data)
        if logits.ndim != 2 or logits.shape[1] <= int(data.y.max()):
            context.notes.append(
                f"accuracy: {s.ref} gives outputs shaped {list(logits.shape)}, not one score "
                f"per class for {int(data.y.max()) + 1} classes"
            )
            out.append({})
            continue
        pred = logits.argmax(1)
        out.append({"accuracy": float(np.mean(pred == data.y)), "macro_f1": macro_f1(data.y, pred)})
    return out


def fidelity(subjects, context) -> list[dict]:
    """Cosine against the first version: meaningful for embedders, or when no labels say
    more. With labelled data, accuracy is the measure that counts, so this stays quiet."""
    if len(subjects) < 2 or (context.data is not None and context.data.labelled):
        return [{} for _ in subjects]
    data = context.part("test")
    if data is not None and data.texts is not None:
        # similar lengths together: a batch is padded to its longest sentence
        data = Dataset(data.name, texts=sorted(data.texts, key=len))
    rows = context.max_rows if data is None else min(len(data), context.max_rows)
    if data is None:
        rows = 64
    batch = 32
    sims: list[list[np.ndarray]] = [[] for _ in subjects]
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        shared = _shared(subjects, context, data, start, n)
        full = _feeds(subjects[0], context, data, start, n)  # the mask pools every version
        reference = main_output(subjects[0].runner.infer(shared[0]), full)
        for i, s in enumerate(subjects[1:], 1):
            feeds = shared[i]
            value = main_output(s.runner.infer(feeds), full)
            if value.shape != reference.shape:
                context.notes.append(
                    f"fidelity: {s.ref} gives {list(value.shape)}, {subjects[0].ref} "
                    f"{list(reference.shape)}; not comparable"
                )
                sims[i] = []
                break
            sims[i].append(cosines(reference, value))
    out: list[dict] = [{}]
    for per in sims[1:]:
        if not per:
            out.append({})
            continue
        c = np.concatenate(per)
        out.append({"cosine_mean": float(c.mean()), "cosine_min": float(c.min())})
    return out


def _feeds(subject, context, data, start, n):
    if data is None and hasattr(subject.runner, "example_feeds"):
        feeds = subject.runner.example_feeds(start + n)  # the same sentences for every version
        return {k: v[start : start + n] for k, v in feeds.items()}
    return context.feeds(subject.runner, data, start, n)


def _shared(subjects, context, data, start, n) -> list[dict]:
    """The reference's inputs, given to every version (each takes the names it has), so
    all of them see exactly the same rows whatever their format."""
    feeds = _feeds(subjects[0], context, data, start, n)
    out = []
    for s in subjects:
        names = {t["name"] for t in s.runner.signature["inputs"]}
        out.append({k: v for k, v in feeds.items() if k in names})
    return out


def speed(subjects, context) -> list[dict]:
    """Median batch-1 latency (ms) and batch-32 throughput (rows/s), interleaved rounds."""
    data = context.part("test")
    one = _shared(subjects, context, data, 0, 1)
    many = _shared(subjects, context, data, 0, 32)
    lat = _timed(subjects, one, context.budget_s * 0.4)
    thr = _timed(subjects, many, context.budget_s * 0.6)
    return [
        {"latency_ms": statistics.median(a) * 1000, "throughput": 32 / statistics.median(b)}
        for a, b in zip(lat, thr, strict=True)
    ]


def _timed(subjects, feeds, budget_s: float, min_rounds: int = 3, max_rounds: int = 5000):
    for s, f in zip(subjects, feeds, strict=True):  # warm up: first calls allocate
        s.runner.infer(f)
    times: list[list[float]] = [[] for _ in subjects]
    deadline = time.perf_counter() + budget_s * len(subjects)
    for r in range(max_rounds):
        for i, (s, f) in enumerate(zip(subjects, feeds, strict=True)):
            t = time.perf_counter()
            s.runner.infer(f)
            times[i].append(time.perf_counter() - t)
        if r + 1 >= min_rounds and time.perf_counter() > deadline:
            break
    return times


@hookimpl
def maas_evaluators(register):
    register(Component("size", "Bytes on disk as stored", run=size))
    register(
        Component(
            "classification",
            "Accuracy and macro-F1 on the held-out quarter of labelled data",
            run=classification,
        )
    )
    register(
        Component(
            "fidelity",
            "Mean and worst cosine of outputs (pooled embeddings) against the first version",
            run=fidelity,
        )
    )
    register(
        Component(
            "speed",
            "Median latency at batch 1 and throughput at batch 32, versions interleaved",
            run=speed,
        )
    )
