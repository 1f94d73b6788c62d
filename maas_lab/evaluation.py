"""Measuring versions side by side: the engine behind compression reports and ``compare``.

The evaluators themselves are plugins (``maas_evaluators``; the built-ins are in
``plugins/maas_eval``). This module gives them what they share: the versions to measure as
runners, and the data turned into model inputs, so an evaluator never needs to know whether
a version is torch, ONNX or TorchScript. All versions in one call are measured in the same
process on the same inputs, and timings are interleaved, because this machine's speed
drifts more between runs than most compressions change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .datasets import Dataset
from .errors import PluginError, UsageError
from .progress import report, steps

METRIC_ORDER = (
    "size_bytes",
    "accuracy",
    "macro_f1",
    "cosine_mean",
    "cosine_min",
    "latency_ms",
    "throughput",
)
HIGHER_IS_BETTER = {"accuracy", "macro_f1", "cosine_mean", "cosine_min", "throughput"}

_shared: ContextVar[dict | None] = ContextVar("maas_shared_loads", default=None)


@contextmanager
def sharing() -> Iterator[None]:
    """Within this block, runners opened by this thread may share what they load and only
    read, such as a tokenizer (``shared``). A budget search opens a runner for each of
    dozens of candidates that carry the same tokenizer files, and loading them took longer
    than some candidates' measurement. The runners must not outlive the block: a tokenizer
    is not safe to use from several threads at once, which a shared one could be."""
    token = _shared.set(_shared.get() if _shared.get() is not None else {})
    try:
        yield
    finally:
        _shared.reset(token)


def shared(key, load: Callable[[], Any]) -> Any:
    """``load()``, or inside ``sharing()`` what it returned for the same ``key`` (which must
    name everything the result depends on, e.g. the digests of the files it reads)."""
    cache = _shared.get()
    if cache is None:
        return load()
    if key not in cache:
        cache[key] = load()
    return cache[key]


@dataclass
class Subject:
    """One version to measure: ``ref`` names it in reports."""

    ref: str
    runner: Any
    size_bytes: int
    task: str | None = None


@dataclass
class Context:
    """What every evaluator gets besides the subjects.

    ``data`` is the dataset the user named (or ``None``); ``budget_s`` how long a timing
    evaluator may spend per version; ``max_rows`` caps rows used for accuracy and fidelity.
    """

    data: Dataset | None = None
    budget_s: float = 2.0
    max_rows: int = 512
    notes: list[str] = field(default_factory=list)

    def part(self, name: str = "test") -> Dataset | None:
        """The ``test`` rows of labelled or feature data; all of a list of sentences (they
        are inputs to compare, not examples to learn from)."""
        if self.data is None:
            return None
        if self.data.texts is not None or not self.data.labelled:
            return self.data
        return self.data.split(name)

    def feeds(self, runner, data: Dataset | None, start: int, batch: int) -> dict:
        return feeds(runner, data, start, batch)


# Instruction-set extensions that change what int8 and float kernels compute or how fast
# (onnxruntime, fbgemm and oneDNN pick kernels by them), in the order people read them.
ISA_FLAGS = (
    # x86
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    # Arm
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
)


def cpu_features() -> dict:
    """The CPU that measured a set of figures: ``{"cpu": model name, "isa": [...]}``.

    The same int8 file gives different fidelity and speed on different instruction sets
    (AVX2 only vs AVX-512 VNNI measured 0.9962 vs 0.9985 cosine on MiniLM), so figures are
    stored with this to be read, and compared, for what they are."""
    import platform

    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    name = " ".join(name.split()) or platform.processor() or platform.machine() or "unknown"
    return {"cpu": name, "isa": [f for f in ISA_FLAGS if f in flags]}


def input_specs(runner) -> list[dict]:
    return list(runner.signature["inputs"])


def feeds(runner, data: Dataset | None, start: int, batch: int) -> dict[str, np.ndarray]:
    """``batch`` rows of ``data`` from ``start`` (wrapping around) as the runner's inputs.

    Sentences go through the runner's own tokenizer; feature rows feed its first input.
    Without data, the runner's realistic ``example_feeds`` (or seeded random ones)."""
    specs = input_specs(runner)
    if data is None:
        if hasattr(runner, "example_feeds"):
            return runner.example_feeds(batch)
        from .parity import DIM_SIZES, feeds_from_signature

        return feeds_from_signature(runner.signature, {**DIM_SIZES, "batch": batch})
    n = len(data)
    rows = [(start + i) % n for i in range(batch)]
    if data.texts is not None:
        tokenizer = getattr(runner, "tokenizer", None)
        if tokenizer is None:
            raise UsageError(
                f"{data.name} holds sentences, but {_who(runner)} takes "
                f"{[t['name'] for t in specs]} and carries no tokenizer. Give it numeric "
                "inputs (.npz with x), or use a version exported with its tokenizer."
            )
        return tokenize(tokenizer, [data.texts[i] for i in rows], [t["name"] for t in specs])
    first = specs[0]
    x = data.x[rows]
    want = first["shape"][1:]
    got = list(x.shape[1:])
    fixed_mismatch = len(want) != len(got) or any(
        isinstance(w, int) and w != g for w, g in zip(want, got, strict=False)
    )
    if fixed_mismatch:
        raise UsageError(
            f"{data.name} rows are shaped {got}, but {_who(runner)} input {first['name']!r} "
            f"takes {first['shape']} ({first['dtype']}). Give data that fits the model."
        )
    return {first["name"]: x.astype(first["dtype"], copy=False)}


def _who(runner) -> str:
    return getattr(runner, "who", None) or "the model"


def tokenize(tokenizer, texts: list[str], names: list[str], max_length: int = 128) -> dict:
    """Sentences padded to the longest (at most ``max_length`` tokens) as int64 inputs."""
    encoded = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    out = {}
    for name in names:
        if name in encoded:
            out[name] = np.asarray(encoded[name], dtype=np.int64)
        elif name == "token_type_ids":
            out[name] = np.zeros_like(np.asarray(encoded["input_ids"]), dtype=np.int64)
        else:
            raise UsageError(f"The tokenizer makes no {name!r}, which the model needs.")
    return out


def main_output(outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
    """One vector per row: ``sentence_embedding`` if present, else the first output; token
    states ``[batch, seq, dim]`` are mean-pooled over the attention mask, as sentence
    embedders do, so a pooled and an unpooled version of a model compare."""
    value = outputs.get("sentence_embedding")
    if value is None:
        value = next(iter(outputs.values()))
    value = np.asarray(value, dtype=np.float64)
    mask = feeds.get("attention_mask")
    if value.ndim == 3 and mask is not None and mask.shape == value.shape[:2]:
        w = mask.astype(np.float64)[..., None]
        return (value * w).sum(1) / np.maximum(w.sum(1), 1e-9)
    return value.reshape(len(value), -1)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def evaluate(
    subjects: list[Subject], data: Dataset | None = None, budget_s: float = 2.0, only=None
) -> tuple[list[dict], list[str]]:
    """Run every evaluator plugin (or those named in ``only``) over ``subjects``.

    Returns one metrics dict per subject, and notes (evaluators that did not apply, why)."""
    from .plugins import get_plugins

    context = Context(data=data, budget_s=budget_s)
    evaluators = get_plugins().evaluators()
    if only:
        known = {e.name for e in evaluators}
        unknown = sorted(set(only) - known)
        if unknown:
            raise UsageError(
                f"No evaluator named {', '.join(unknown)}; installed: {', '.join(sorted(known))}."
            )
        evaluators = [e for e in evaluators if e.name in only]
    results: list[dict] = [{} for _ in subjects]
    for i, ev in enumerate(evaluators):
        report(i / len(evaluators), ev.name)
        got = ev.call(f"measuring {', '.join(s.ref for s in subjects)}", subjects, context)
        if not isinstance(got, list) or len(got) != len(subjects):
            raise PluginError(
                f"The {ev.origin} returned {type(got).__name__}; it must return one "
                f"dict per version ({len(subjects)})."
            )
        for mine, theirs in zip(results, got, strict=True):
            mine.update({k: float(v) for k, v in (theirs or {}).items() if v is not None})
    return results, context.notes


def ordered(metrics: set[str]) -> list[str]:
    known = [m for m in METRIC_ORDER if m in metrics]
    return known + sorted(metrics - set(known))


def measure_versions(reg, refs, data=None, budget_s: float = 2.0, log: bool = True):
    """Measure stored versions side by side, now, on this machine (``compare``); with
    ``log`` the figures become each version's metrics. Returns (registry rows, figures per
    version, notes, the dataset measured on or None)."""
    from . import datasets
    from .runners import data_runner

    if not refs:
        raise UsageError("Give at least one version to measure, e.g. minilm@4 minilm@5.")
    rows = [reg.resolve(r) for r in refs]
    dataset = datasets.load(data) if data is not None else None
    title = ("compare " if len(rows) > 1 else "measure ") + ", ".join(r["ref"] for r in rows)
    with sharing(), steps(title, [*(r["ref"] for r in rows), "measure"]) as p:
        subjects = []
        for r in rows:  # one step per version: its checkout and runner
            p.step(r["ref"])
            runner = data_runner(reg.checkout(r["ref"]), dataset)
            subjects.append(Subject(r["ref"], runner, r["size_bytes"], r["task"]))
        p.step("measure")
        if dataset is None and getattr(subjects[0].runner, "tokenizer", None) is not None:
            dataset = datasets.load("builtin:sentences")
        results, notes = evaluate(subjects, dataset, budget_s)
        if log:
            for r, m in zip(rows, results, strict=True):
                reg.log_metrics(r["ref"], m)
    return rows, results, notes, dataset
