"""Explain a version's answers: choose the explainer, build its inputs, keep its budget.

Integrated Gradients is the default where the version has gradients (torch and Hugging
Face versions with float weights); without them, methods that need only the runner:
occlusion for feature rows, Kernel SHAP for text (see :func:`default_name`).
Every explainer says up front how many rows it will run the model on (``passes``), so a
request over ``max_passes`` is refused before any work, in the notebook as on the server.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..hints import option
from ..plugins import get_plugins
from .build import Setup, build, gradient_module, is_text
from .result import Explanation

DEFAULT_MAX_PASSES = 200_000  # in-process: far above any tutorial, below an hour's work


class OverBudget(UsageError):
    """An explanation that would run the model on more rows than allowed."""


def explainer_names() -> list[str]:
    return sorted(get_plugins().components["explainer"])


def default_name(runner) -> str:
    """Integrated Gradients where there are gradients; without them, occlusion for feature
    rows and Kernel SHAP for text: one token occluded at a time misses words that stand in
    for each other ("eating" and "food" both say "meal": drop either and the other keeps
    the similarity), which Kernel SHAP's coalitions see."""
    if gradient_module(runner) is not None:
        return "integrated-gradients"
    return "kernel-shap" if is_text(runner) else "occlusion"


def choose(name: str | None, runner):
    """The explainer ``name``, or the default for this runner; unknown names list all."""
    plugins = get_plugins()
    known = explainer_names()
    if name is None:
        name = default_name(runner)
        if name not in known and known:
            name = "occlusion" if "occlusion" in known else known[0]
    if name not in known and plugins._named("explainer", name) is None:
        raise UsageError(
            f"No explainer named {name!r}. Installed: {', '.join(known) or 'none'} "
            f"(choose with {option('with_', 'NAME', flag='--with')})."
        )
    return plugins.explainer(name)


def select_rows(n: int, rows, what: str) -> list[int]:
    """``rows`` as indices into ``n`` rows: ``"0:4"``, ``"3"``, ``"1,5"``, an int, a list."""
    if rows is None or rows == "":
        return list(range(min(n, 1)))
    try:
        if isinstance(rows, int):
            picked = [rows]
        elif isinstance(rows, str) and ":" in rows:
            a, _, b = rows.partition(":")
            start, stop = int(a or 0), int(b) if b else n
            if start >= stop:
                raise ValueError
            picked = list(range(start, stop))
        elif isinstance(rows, str):
            picked = [int(r) for r in rows.split(",")]
        else:
            picked = [int(r) for r in rows]
    except ValueError:
        raise UsageError(
            f"{option('rows', rows)} is not a row range; write 0:4 (rows 0 to 3), 7, or 1,5."
        ) from None
    bad = [r for r in picked if not 0 <= r < n]
    if bad or not picked:
        raise UsageError(
            f"{option('rows', rows)} is out of range: {what} has {n} rows (0 to {n - 1})."
        )
    return picked


def price(comp, setup: Setup, options: dict, ref: str) -> tuple[dict, int | None]:
    """``comp``'s options resolved against its schema, and how many rows it will run the
    model on (None: the explainer does not say); refuses a version it cannot explain."""
    problem = setup.problem
    if comp.formats and problem.format not in comp.formats:
        raise UsageError(
            f"{comp.name} explains {', '.join(comp.formats)} versions, not {ref} "
            f"({problem.format}): it needs gradients. Use "
            f"{option('with_', 'occlusion', flag='--with')} or "
            f"{option('with_', 'kernel-shap', flag='--with')}, which work through any runner."
        )
    chosen = comp.options(options)
    passes = comp.extra.get("passes")
    return chosen, (int(passes(problem, chosen)) if passes else None)


def run_explainer(comp, setup: Setup, options: dict, max_passes: int | None, ref: str, **about):
    """Check the budget, run ``comp``, and make the :class:`Explanation`."""
    problem = setup.problem
    chosen, estimate = price(comp, setup, options, ref)
    if max_passes is not None and estimate is not None and estimate > max_passes:
        raise OverBudget(
            f"Explaining {problem.rows} row(s) of {ref} with {comp.name} would run the model "
            f"on {estimate} rows, over the limit of {max_passes} ({option('max_passes')}); "
            "explain fewer rows at once, or ask for fewer steps or samples."
        )
    start = problem.score(problem.x)
    problem.passes = 0
    attribution = comp.call(f"explaining {ref} with {comp.name}", problem, chosen)
    values = np.asarray(attribution.values, dtype=np.float64).reshape(problem.x.shape)
    # A feature equal to its baseline changes nothing on the way from one to the other, so
    # its share is 0 (Shapley's dummy axiom); sampling methods would report their noise.
    values = np.where(problem.x == problem.baseline, 0.0, values)
    absent = problem.score(problem.baseline)
    return Explanation(
        ref=ref,
        explainer=comp.name,
        options={k: v for k, v in chosen.items() if v is not None},
        kind=setup.kind,
        values=values,
        scores=np.asarray(start, dtype=np.float64),
        baseline_scores=np.asarray(absent, dtype=np.float64),
        delta=None if attribution.delta is None else np.asarray(attribution.delta, np.float64),
        labels=setup.labels,
        tokens=setup.tokens,
        inputs=problem.x if setup.kind == "features" else None,
        passes=problem.passes,
        notes=list(attribution.notes),
        **about,
    )


def explain(
    reg,
    ref: str,
    inputs=None,
    *,
    data=None,
    rows=None,
    target: str | None = None,
    label: int | None = None,
    explainer: str | None = None,
    max_passes: int | None = DEFAULT_MAX_PASSES,
    **options,
) -> Explanation:
    """Attributions for ``ref``'s answers on ``inputs`` (sentences, or an array of feature
    rows) or on ``rows`` of ``data`` (a dataset spec, as ``compare`` takes); see
    docs/explain.md. Options go to the explainer (``steps``, ``baseline``, ``samples``)."""
    from ..datasets import Dataset, load
    from ..evaluation import feeds as data_feeds
    from ..evaluation import tokenize
    from ..runners import data_runner

    if inputs is not None and data is not None:
        raise UsageError(
            f"Give sentences or {option('data')}, not both: explain one set of inputs at once."
        )
    if max_passes is not None and max_passes < 1:
        raise UsageError(
            f"{option('max_passes', max_passes)}: give the most rows the model may be run on, "
            "at least 1."
        )
    checkout = reg.checkout(ref)
    resolved = checkout.ref
    dataset = None
    if data is not None:
        dataset = load(data)
    elif isinstance(inputs, str):
        dataset = Dataset("the sentences", texts=[inputs])
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(s, str) for s in inputs):
        dataset = Dataset("the sentences", texts=list(inputs))
    elif inputs is not None:
        x = np.asarray(inputs)
        dataset = Dataset("the inputs", x=x if x.ndim > 1 else x[None])
    who = resolved
    try:
        runner = data_runner(checkout, dataset)
    except UsageError:
        if dataset is None or dataset.texts is None:
            raise
        # the runner asks for an input shape, an option explain does not have
        raise UsageError(
            f"{who} takes no sentences (it has no tokenizer): explain rows of its data "
            f"instead, e.g. {option('data', 'sklearn:digits')} {option('rows', '0:4')}."
        ) from None
    if dataset is None:
        raise UsageError(
            f"Nothing to explain: give {who} "
            + ("a sentence" if is_text(runner) else f"rows with {option('data')}")
            + f" ({_needs(runner)})."
        )
    _check_kind(runner, dataset, who)
    if data is None and inputs is not None and rows is None:
        picked = list(range(len(dataset)))
    else:
        picked = select_rows(len(dataset), rows, dataset.name)
    part = _subset(dataset, picked)
    feeds = data_feeds(runner, part, 0, len(picked))
    target_feeds = None
    if target is not None:
        tokenizer = getattr(runner, "tokenizer", None)
        if tokenizer is None or not is_text(runner):
            target_feeds = {}  # refused by build, naming what the model takes
        else:
            names = [t["name"] for t in runner.signature["inputs"]]
            target_feeds = tokenize(tokenizer, [str(target)], names)
    setup = build(
        runner,
        feeds,
        checkout.format,
        who,
        target_feeds=target_feeds,
        label=label,
        task=checkout.task or "",
    )
    comp = choose(explainer, runner)
    return run_explainer(
        comp,
        setup,
        options,
        max_passes,
        resolved,
        data=dataset.name if data is not None else None,
        rows=picked,
        target=target,
        grid=_grid(runner, dataset),
    )


def _needs(runner) -> str:
    first = runner.signature["inputs"][0]
    if is_text(runner):
        return "it takes sentences, tokenized by its own tokenizer"
    return f"it takes {first['name']!r} shaped {first['shape']} ({first['dtype']})"


def _check_kind(runner, dataset, who: str) -> None:
    if is_text(runner) and dataset.texts is None:
        raise UsageError(
            f"{who} takes sentences, not feature rows; give it a sentence, or "
            f"{option('data')} with sentences."
        )
    if not is_text(runner) and dataset.texts is not None:
        raise UsageError(
            f"{who} takes feature rows, not sentences ({_needs(runner)}); give "
            f"{option('data', 'sklearn:digits')} or an array of rows."
        )


def _subset(dataset, picked):
    from ..datasets import Dataset

    if dataset.texts is not None:
        return Dataset(dataset.name, texts=[dataset.texts[i] for i in picked])
    y = None if dataset.y is None else dataset.y[picked]
    return Dataset(dataset.name, dataset.x[picked], y)


def _grid(runner, dataset) -> tuple[int, int] | None:
    """How feature rows are drawn: as the input's own 2-D shape, else a square of a
    perfect-square count of 16 or more (digits' 64 pixels: 8 x 8)."""
    if dataset.x is None:
        return None
    shape = dataset.x.shape[1:]
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    n = int(np.prod(shape))
    side = int(round(n**0.5))
    return (side, side) if n >= 16 and side * side == n else None
