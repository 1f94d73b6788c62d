"""Registering files a person offers: the pipeline behind ``register`` and a training job's
``registry.register``. The files are collected and checked (:mod:`maas_lab.intake`) and the
signature inferred before the registry stores anything."""

from __future__ import annotations

import os
from pathlib import Path

from .hints import option
from .intake import check
from .parsing import parse_inputs, parse_pairs, parse_signature
from .progress import byte_bar
from .runners import infer_signature
from .sources import collect


def register(
    reg,
    name: str,
    *,
    from_hf: str | os.PathLike | None = None,
    from_torch: str | None = None,
    weights: str | os.PathLike | None = None,
    config: str | dict | None = None,
    from_file: str | os.PathLike | list | None = None,
    format: str | None = None,
    task: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    card: str | os.PathLike | None = None,
    tags=None,
    metrics=None,
    inputs=None,
    signature: str | dict | None = None,
    lineage: list[dict] | None = None,
) -> dict:
    """Register a new version of ``name`` in ``reg`` from exactly one source; returns its row.

    - ``from_hf``: a Hugging Face style folder (config, safetensors, tokenizer files);
    - ``from_torch``: a factory ``module:callable`` with ``config`` (its keyword arguments)
      and ``weights`` (a safetensors file);
    - ``from_file``: a file in a format some loader opens (``.onnx``, or give ``format``),
      or a list: the model first, then files it needs (e.g. ONNX external data).

    The matching loader plugin checks the files before anything is stored. The tensor
    signature is ``signature`` (a dict or JSON), or is inferred from ``inputs``
    (``["input:float32:batch,64"]``) by running the model once on generated inputs.
    ``lineage`` lists where the version came from: ``{"operation": "train", "parent":
    REF or None, "plugin": ..., "params": {...}}`` per edge (training jobs record theirs).
    """
    source = collect(from_hf, from_torch, weights, config, from_file, format, card)
    fmt, files = source.format, source.files
    grants = check(
        reg,
        fmt,
        {s.name: s.source for s in files},
        source.config,
        how=f"given to register ({option('from_torch')})",
        typed=[from_torch] if from_torch else [],
    )
    sig = parse_signature(signature) if signature is not None else None
    if inputs:
        sig = infer_signature(source, parse_inputs(inputs))
    total = sum(s.source.stat().st_size for s in files)
    bar = byte_bar(total, f"storing {name}")
    try:
        row = reg.register(
            name,
            files,
            fmt,
            config=source.config,
            task=task,
            description=description,
            owner=owner,
            card=source.card,
            signature=sig,
            tags=parse_pairs(tags),
            metrics=parse_pairs(metrics, "metric", numeric=True),
            lineage=lineage or (),
            progress=bar.update if bar is not None else None,
            trusted_code=grants,
        )
    finally:
        if bar is not None:
            bar.close()
    return row


def register_derived(
    reg,
    parent: dict,
    artifact,
    work: Path,
    component,
    *,
    operation: str,
    signature: dict,
    tags: dict,
    metrics: dict,
    grants: list,
    params: dict,
) -> dict:
    """Store what an exporter or compressor (``component``) made from ``parent`` in ``work``
    as the model's next version, with one lineage edge: the one way a plugin's artifact
    becomes a version, after the caller has checked and measured it. ``signature`` is used
    when the artifact does not bring its own."""
    from .registry.registry import FileSpec

    files = [FileSpec(work / n, n, role) for n, role in artifact.files.items()]
    total = sum(s.source.stat().st_size for s in files if s.source.is_file())
    edge = {
        "parent": parent["ref"],
        "operation": operation,
        "plugin": component.plugin,
        "plugin_version": component.version,
        "plugin_distribution": component.distribution,
        "params": params,
    }
    bar = byte_bar(total, f"storing {parent['name']}")
    try:
        return reg.register(
            parent["name"],
            files,
            artifact.format,
            config=artifact.config,
            task=parent["task"],
            description=parent["description"],
            card=parent["card"],
            signature=artifact.signature or signature,
            tags=tags,
            metrics=metrics,
            trusted_code=grants,
            lineage=[edge],
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
