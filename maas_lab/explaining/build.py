"""From a runner and its inputs to a :class:`~maas_lab.explaining.problem.Problem`.

Feature rows are attributed per feature (absent: 0); token inputs per token, an absent token
being the padding token in its place, attention kept, as Integrated Gradients' baseline is,
so every method measures against the same baseline. The special tokens ([CLS], [SEP]) are
always kept, so no row is ever empty. What is scored: for a sentence
embedder, the cosine similarity to the target sentence's embedding; otherwise the output of
the class asked for (``label``) or predicted, per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..evaluation import cosines, main_output
from ..hints import option
from .problem import Layer, Problem

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Setup:
    """The problem and what a reader needs to make sense of its answer."""

    problem: Problem
    kind: str  # "tokens" or "features"
    labels: list[int] | None  # the class explained per row (None: similarity)
    tokens: list[list[str]] | None = None  # per row, the tokens the mask keeps
    lengths: list[int] | None = None


def is_text(runner) -> bool:
    return "input_ids" in [t["name"] for t in runner.signature["inputs"]]


def gradient_module(runner):
    """The torch module whose gradients Integrated Gradients follows, or None: ONNX, an
    int8 module (quantized weights have no gradients), anything not a torch module."""
    module = getattr(runner, "model", None) or getattr(runner, "module", None)
    if module is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not isinstance(module, torch.nn.Module):
        return None
    for sub in module.modules():
        if "quantized" in type(sub).__module__ or "quantized" in type(sub).__name__.lower():
            return None
    params = list(module.parameters())
    if not params or not any(p.is_floating_point() for p in params):
        return None
    return module


def build(
    runner, feeds: dict, fmt: str, who: str, *, target_feeds=None, label=None, task=""
) -> Setup:
    if is_text(runner):
        return _text(runner, feeds, fmt, who, target_feeds, label, task)
    if target_feeds is not None:
        raise UsageError(
            f"{who} takes feature rows: a {option('target')} sentence compares sentence "
            f"embeddings; explain a class of it with {option('label', 'N')}, or leave both out "
            "for the predicted class."
        )
    return _features(runner, feeds, fmt, who, label)


def _labels(out: np.ndarray, label, who: str) -> list[int]:
    if out.ndim != 2 or out.shape[1] < 2:
        raise UsageError(
            f"{who} gives one value per row, not a score per class; there is no class to "
            f"explain ({option('label')} needs class outputs)."
        )
    if label is None:
        return [int(i) for i in out.argmax(1)]
    if isinstance(label, bool) or not isinstance(label, (int, np.integer, str)):
        label = None if label is None else repr(label)
    try:
        label = int(label)
    except (TypeError, ValueError):
        raise UsageError(f"{option('label', label)} is not a class number.") from None
    if not 0 <= label < out.shape[1]:
        raise UsageError(
            f"{option('label', label)} is out of range: {who} has {out.shape[1]} classes "
            f"(0 to {out.shape[1] - 1})."
        )
    return [label] * len(out)


def _pick(values, labels):
    """Column ``labels[i % rows]`` of row i: explainers batch copies of the rows."""
    idx = np.resize(np.asarray(labels), len(values))
    return values[np.arange(len(values)), idx]


def _features(runner, feeds: dict, fmt: str, who: str, label) -> Setup:
    specs = runner.signature["inputs"]
    if len(specs) != 1:
        names = [t["name"] for t in specs]
        raise UsageError(
            f"{who} takes {len(specs)} inputs ({', '.join(names)}); explaining attributes "
            "one input of feature rows, or token inputs with a tokenizer."
        )
    name, dtype = specs[0]["name"], specs[0]["dtype"]
    x0 = np.asarray(feeds[name])
    shape = x0.shape[1:]
    x = x0.reshape(len(x0), -1).astype(np.float64)
    out = main_output(runner.infer({name: x0}), {})
    labels = _labels(out, label, who)

    def score(xs):
        arr = np.asarray(xs).reshape(len(xs), *shape).astype(dtype)
        return _pick(main_output(runner.infer({name: arr}), {}), labels)

    torch_score = None
    module = gradient_module(runner)
    if module is not None:
        import torch

        tdtype = getattr(torch, np.dtype(dtype).name)

        def torch_score(xs):
            result = module(xs.reshape(len(xs), *shape).to(tdtype))
            if isinstance(result, dict):
                result = next(iter(result.values()))
            elif isinstance(result, (tuple, list)):
                result = result[0]
            result = result.reshape(len(xs), -1)
            idx = torch.from_numpy(np.resize(np.asarray(labels), len(xs)))
            return result[torch.arange(len(xs)), idx]

    problem = Problem(who, fmt, x, np.zeros_like(x), score, torch_score)
    return Setup(problem, "features", labels)


def _text(runner, feeds, fmt, who, target_feeds, label, task) -> Setup:
    tokenizer = getattr(runner, "tokenizer", None)
    names = [t["name"] for t in runner.signature["inputs"]]
    if "input_ids" not in feeds:
        raise UsageError(f"{who} takes sentences; give them as text, not {sorted(feeds)}.")
    ids = np.asarray(feeds["input_ids"], dtype=np.int64)
    mask = np.asarray(feeds.get("attention_mask", np.ones_like(ids)), dtype=np.int64)
    rows, width = ids.shape
    special = _special(tokenizer, ids)
    pad = int(getattr(tokenizer, "pad_token_id", None) or 0)

    def run(ids_, mask_):
        f = {"input_ids": ids_, "attention_mask": mask_}
        if "token_type_ids" in names:
            f["token_type_ids"] = np.zeros_like(ids_)
        f = {k: v for k, v in f.items() if k in names}
        return main_output(runner.infer(f), f)

    target_vec = None
    if target_feeds is not None:
        tids = np.asarray(target_feeds["input_ids"], dtype=np.int64)[:1]
        tmask = np.asarray(target_feeds.get("attention_mask", np.ones_like(tids)))[:1]
        target_vec = run(tids, tmask.astype(np.int64))
        labels = None
    else:
        out = run(ids, mask)
        if "embedding" in (task or "") or out.shape[1] > 64 and label is None:
            raise UsageError(
                f"{who} embeds sentences: say what the similarity is to, e.g. "
                f"{option('target', 'Someone has a meal.')}"
            )
        labels = _labels(out, label, who)

    def score(presence):
        presence = np.asarray(presence)
        n = len(presence)
        keep = (presence >= 0.5) | np.resize(special, (n, width))
        ids_n, mask_n = np.resize(ids, (n, width)), np.resize(mask, (n, width))
        out = run(np.where(keep, ids_n, pad), mask_n)
        if target_vec is not None:
            return cosines(out, np.repeat(target_vec, n, 0))
        return _pick(out, labels)

    x = np.ones((rows, width))
    x[mask == 0] = 0.0  # padding stays absent: its attribution is 0
    baseline = np.zeros_like(x)
    baseline[special & (mask > 0)] = 1.0  # [CLS], [SEP] are never taken away
    problem = Problem(who, fmt, x, baseline, score)
    module = gradient_module(runner)
    if module is not None and target_vec is not None and hasattr(module, "get_input_embeddings"):
        problem.layer = _layer(module, ids, mask, special, pad, names, target_vec)
    tokens = None
    if tokenizer is not None:
        tokens = [tokenizer.convert_ids_to_tokens(list(ids[i][mask[i] > 0])) for i in range(rows)]
    return Setup(problem, "tokens", labels, tokens, [int(m.sum()) for m in mask])


def _special(tokenizer, ids: np.ndarray) -> np.ndarray:
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    specials.discard(getattr(tokenizer, "unk_token_id", None))
    return np.isin(ids, list(specials))


def _layer(module, ids, mask, special, pad, names, target_vec) -> Layer:
    import torch

    t_ids = torch.from_numpy(ids)
    t_mask = torch.from_numpy(mask)
    t_target = torch.from_numpy(np.asarray(target_vec, dtype=np.float32))
    baseline = torch.from_numpy(np.where(special | (mask == 0), ids, pad))

    def score(ids_):
        n = len(ids_)
        m = t_mask.repeat((n + len(t_mask) - 1) // len(t_mask), 1)[:n]
        kwargs = {"input_ids": ids_, "attention_mask": m}
        if "token_type_ids" in names:
            kwargs["token_type_ids"] = torch.zeros_like(ids_)
        hidden = module(**kwargs).last_hidden_state
        w = m.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
        return torch.nn.functional.cosine_similarity(pooled, t_target.expand_as(pooled), dim=1)

    return Layer(t_ids, baseline, module.get_input_embeddings(), score)
