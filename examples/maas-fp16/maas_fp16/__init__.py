"""The maas_lab compressor `fp16`: float16 copies of models.

Half-precision (float16) copies of stored models:

- A torch version keeps its format: each float32 or float64 weight tensor is stored as
  float16 in its safetensors file. maas_lab's torch loader builds the model in float32 and
  copies the float16 values in, so it runs wherever its parent ran, on weights rounded to
  11 significant bits, from a file half the size.
- An ONNX version goes through onnxruntime's own float16 converter: initializers and
  computation in float16, inputs and outputs kept float32, so no client changes. Tokenizer
  and other files of the parent are carried along.

Weights beyond float16's range (65504) would become infinite: those tensors stay float32
and the report names them. The plugin only writes files; maas_lab measures the result
against its parent (cosine fidelity, or accuracy on --data), refuses it over the user's
--max-drop budget, and registers it as a new version with a lineage edge naming this plugin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from maas_lab import Component, Param, hookimpl
from maas_lab.components import Artifact
from maas_lab.errors import BackendUnavailable, UsageError

# The plugin contract this module was written for (maas_lab.hookspecs.CONTRACT).
MAAS_LAB_CONTRACT = "1.0"

FLOAT16_MAX = 65504.0
PARAMS = (
    Param(
        "keep",
        "str",
        None,
        "comma-separated names to keep in float32: weight tensors (torch, e.g. 2.weight) or "
        "graph nodes (ONNX)",
    ),
)


def compress(checkout, options: dict, workdir, context) -> Artifact:
    """Compress one stored version: the work this plugin does. Replace it with your own
    compression; write files into ``workdir`` and describe them in the Artifact."""
    workdir = Path(workdir)
    keep = {n.strip() for n in (options.get("keep") or "").split(",") if n.strip()}
    if checkout.format == "onnx":
        files, replaced, report = onnx_to_float16(checkout, keep, workdir)
    else:
        files, replaced, report = torch_to_float16(checkout, keep, workdir)
    for f in checkout.files:  # tokenizer, config...: the new version needs them as well
        if f["name"] not in files and f["name"] not in replaced:
            dest = workdir / f["name"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkout.dir / f["name"], dest)
            files[f["name"]] = f["role"]
    return Artifact(
        format=checkout.format,
        files=files,
        signature=checkout.signature,
        config=dict(checkout.config or {}),
        report=report,
    )


def torch_to_float16(checkout, keep: set[str], workdir: Path) -> tuple[dict, set, dict]:
    """Each safetensors weights file with its float tensors cast to float16, its metadata
    (e.g. a sparse layout) unchanged. Returns (files written and their roles, parent files
    they replace, report)."""
    try:
        import torch
        from safetensors import safe_open
        from safetensors.torch import save_file
    except ImportError:
        raise BackendUnavailable("Torch versions need PyTorch: pip install torch.") from None
    weights = [f for f in checkout.files if f["role"] == "weights"]
    if not weights:
        raise UsageError(f"{checkout.ref} has no weights file to convert.")
    files, cast, kept, before, after = {}, 0, [], 0, 0
    unknown = set(keep)
    for f in weights:
        with safe_open(str(checkout.dir / f["name"]), framework="pt") as src:
            metadata = src.metadata()
            state = {k: src.get_tensor(k) for k in src.keys()}
        unknown -= set(state)
        for name, value in state.items():
            before += value.numel() * value.element_size()
            if value.dtype in (torch.float32, torch.float64):
                too_big = bool(value.abs().max() > FLOAT16_MAX) if value.numel() else False
                if name in keep or too_big:
                    kept.append(name)
                else:
                    state[name] = value.to(torch.float16)
                    cast += 1
            after += state[name].numel() * state[name].element_size()
        save_file(state, str(workdir / f["name"]), metadata=metadata)
        files[f["name"]] = f["role"]
    if unknown:
        raise UsageError(
            f"--keep names {', '.join(sorted(unknown))}, which {checkout.ref} does not have; "
            f"its tensors are {', '.join(sorted(state)[:8])}."
        )
    report = {
        "precision": "float16",
        "tensors_cast": cast,
        "kept_float32": sorted(kept),
        "weight_bytes_before": before,
        "weight_bytes_after": after,
    }
    return files, set(files), report


def onnx_to_float16(checkout, keep: set[str], workdir: Path) -> tuple[dict, set, dict]:
    """The ONNX graph in float16 through onnxruntime's converter (float32 inputs and
    outputs), saved as one file, or with one external data file beyond 2 GB."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise BackendUnavailable(
            "ONNX versions need onnx and onnxruntime: pip install onnx onnxruntime."
        ) from None
    (model_file,) = [f for f in checkout.files if f["name"].endswith(".onnx")]
    path = checkout.dir / model_file["name"]
    model = onnx.load(str(path))  # external data, if any, is read from beside the model
    nodes = [n.name for n in model.graph.node]
    unknown = keep - set(nodes)
    if unknown:
        raise UsageError(
            f"--keep names {', '.join(sorted(unknown))}, which are not nodes of "
            f"{checkout.ref}; some of its nodes: {', '.join(nodes[:8])}."
        )
    external = external_data_files(onnx.load(str(path), load_external_data=False))
    before = weight_bytes(model)
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(keep))
    after = weight_bytes(half)
    sort_nodes(half.graph)
    out = workdir / model_file["name"]
    files = {model_file["name"]: model_file["role"]}
    if half.ByteSize() < 2**31 - 2**20:
        onnx.save(half, str(out))
    else:
        data = model_file["name"] + ".data"
        onnx.save(half, str(out), save_as_external_data=True, location=data)
        files[data] = "external-data"
    onnx.checker.check_model(str(out))
    report = {
        "precision": "float16",
        "converter": "onnxruntime.transformers.float16",
        "kept_float32": sorted(keep),
        "weight_bytes_before": before,
        "weight_bytes_after": after,
    }
    return files, {model_file["name"], *external}, report


def sort_nodes(graph) -> None:
    """Put the graph's nodes in an order where each comes after what it reads: the converter
    appends the casts of float32 inputs at the end, which onnx's checker refuses."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = [copy_node(n) for n in graph.node], []
    while pending:
        runnable = [n for n in pending if all(i in ready for i in n.input)]
        if not runnable:
            raise ValueError(f"the float16 graph has a cycle at {pending[0].name!r}")
        for node in runnable:
            ordered.append(node)
            ready.update(node.output)
        placed = {id(n) for n in runnable}
        pending = [n for n in pending if id(n) not in placed]
    del graph.node[:]
    graph.node.extend(ordered)


def copy_node(node):
    copied = type(node)()
    copied.CopyFrom(node)
    return copied


def weight_bytes(model) -> int:
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def external_data_files(model) -> set[str]:
    """The files the graph's weights were stored in beside the model (now written anew)."""
    from onnx.external_data_helper import uses_external_data

    return {
        entry.value
        for t in model.graph.initializer
        if uses_external_data(t)
        for entry in t.external_data
        if entry.key == "location"
    }


@hookimpl
def maas_compressors(register):
    register(
        Component(
            name="fp16",
            description="Half precision: float16 weights (torch) or graph (ONNX), half the size",
            formats=("torch", "onnx"),
            run=compress,
            params=PARAMS,
        )
    )
