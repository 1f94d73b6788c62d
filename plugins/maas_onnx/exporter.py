"""Export torch factory models and Hugging Face encoders to ONNX.

An exporter that returns without error has not proved anything: on torch 2.13 the dynamo
exporter wrote an invalid graph when an output was named ``embedding`` (reproduced: "Graph
must be in single static assignment (SSA) form, however 'embedding' has been used as output
names multiple times"). So every attempt is checked with ``onnx.checker``, opened by
onnxruntime and run at other batch and sequence sizes than it was traced with, against the
eager model; ``exporter=auto`` falls back from dynamo to the TorchScript-based exporter when
any of that fails, and says so in the report.

With ``fuse`` (the default) a transformer encoder the onnxruntime optimizer knows is exported
through the TorchScript path, whose graph its fusions match (fusion.py), and the fused graph
is checked like any other; a fused graph that fails the checks is dropped for the unfused
one, with the reason in the report.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

from maas_lab.components import Artifact
from maas_lab.errors import UsageError
from maas_lab.hints import option

from .fusion import fuse, hf_config, plan_for

EXTERNAL_DATA_BYTES = 1 << 30  # well under protobuf's 2 GiB limit on one file
ONNX_ROLES = ("model", "external-data")
OPSET = 18  # the default
FUSION_OPSET = 17  # onnxruntime's symbolic shape inference fails on MiniLM at 18 (TypeError)


def _param_bytes(module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _export_once(job, mode: str, folder: Path, opset: int) -> list[str]:
    """One exporter's attempt into ``folder``; returns the warnings worth keeping."""
    import torch
    from maas_torch.exporters import quiet_torch

    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    names = [t["name"] for t in job.inputs]
    with warnings.catch_warnings(record=True) as caught, quiet_torch():
        warnings.simplefilter("always")
        if mode == "dynamo":
            from maas_torch.exporters import dynamic_shapes

            extra = {
                "external_data": _param_bytes(job.model) > EXTERNAL_DATA_BYTES,
                "dynamic_shapes": dynamic_shapes(job.inputs),
                "verbose": False,
            }
        else:
            axes = {
                t["name"]: {i: d for i, d in enumerate(t["shape"]) if isinstance(d, str)}
                for t in job.inputs + job.outputs
            }
            extra = {"dynamic_axes": {k: v for k, v in axes.items() if v}}
        torch.onnx.export(
            job.model,
            job.trace_args,
            str(path),
            input_names=names,
            output_names=job.output_names,
            opset_version=opset,
            dynamo=mode == "dynamo",
            **extra,
        )
    kept = []
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            text = f"{Path(w.filename).name}:{w.lineno}: {str(w.message).split('.')[0]}"
            if text not in kept:
                kept.append(text)
    return kept[:5]


def _check(job, path: Path, threads: int = 0) -> float:
    """Refuse a file that is not valid ONNX or does not match eager at the check sizes."""
    import onnx
    import onnxruntime as ort
    from maas_torch import signature as sig

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise RuntimeError(f"onnx.checker rejects the graph: {exc}") from None
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RuntimeError(f"onnxruntime cannot open it: {exc}") from None
    wanted = [i.name for i in session.get_inputs()]
    worst = 0.0
    for feeds, expected in job.cases:
        sizes = {k: list(v.shape) for k, v in feeds.items()}
        try:
            got = session.run(job.output_names, {k: feeds[k] for k in wanted})
        except Exception as exc:
            raise RuntimeError(f"onnxruntime fails on inputs shaped {sizes}: {exc}") from None
        diff = sig.max_abs_diff(expected, dict(zip(job.output_names, got, strict=True)))
        if diff > sig.tolerance(expected):
            raise RuntimeError(
                f"its outputs differ from the model's on inputs shaped {sizes} "
                f"(max abs diff {diff:.3g}): a size or a branch was frozen at export"
            )
        worst = max(worst, diff)
    return worst


def _without_stack_traces(nodes) -> bool:
    """Drop the ``pkg.torch.onnx.stack_trace`` metadata the dynamo exporter puts on every
    node (subgraphs included): it names the files that called the export, i.e. this machine's
    install and virtualenv paths, which a file people hand on must not carry, and it made
    two exports of one model differ in size by where they ran."""
    changed = False
    for node in nodes:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
            changed = True
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                changed = _without_stack_traces(sub.node) or changed
    return changed


def _finish(path: Path, job) -> None:
    """Give the graph's inputs and outputs the signature's dims (the TorchScript-based
    exporter names fixed output dims like ``Divsentence_embedding_dim_1``) and drop the
    exporter's stack traces."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    changed = _without_stack_traces(model.graph.node)
    for function in model.functions:
        changed = _without_stack_traces(function.node) or changed
    wanted = {t["name"]: t["shape"] for t in job.inputs + job.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        shape = wanted.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if shape is None or len(dims) != len(shape):
            continue
        for dim, want in zip(dims, shape, strict=True):
            if isinstance(want, int) and dim.dim_value != want:
                dim.Clear()
                dim.dim_value, changed = want, True
            elif isinstance(want, str) and dim.dim_param != want:
                dim.Clear()
                dim.dim_param, changed = want, True
    if changed:
        onnx.save(model, str(path))


def _optimize(src: Path, folder: Path, external: bool) -> Path:
    """onnxruntime's basic (portable, standard-ops-only) offline graph optimisation."""
    import onnxruntime as ort

    folder.mkdir(parents=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(folder / "model.onnx")
    if external:
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "model.onnx.data"
        )
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return folder / "model.onnx"


def _plan(checkout, options: dict):
    """The fusion plan for this export, or ``None`` and why not; decided before the model is
    loaded, since a fused export traces another attention implementation."""
    asked = options["opset"]
    if not options["fuse"]:
        return None, option("fuse", False)
    if options["exporter"] == "dynamo":
        return None, (
            f"{option('exporter', 'dynamo')}: onnxruntime's fusions match the TorchScript-based "
            f"exporter's graph (leave {option('exporter')} out to fuse)"
        )
    plan, why_not = plan_for(hf_config(checkout))
    if plan is not None and asked is not None and asked > FUSION_OPSET:
        return None, (
            f"{option('opset', asked)}: onnxruntime's transformer optimizer cannot infer "
            f"shapes past opset {FUSION_OPSET}, so fused exports are written at "
            f"{FUSION_OPSET} (leave {option('opset')} out to fuse)"
        )
    return plan, why_not


def _fused(job, attempt: Path, folder: Path, plan, external: bool, report: dict) -> Path:
    """The fused export if it passes the checks, else ``attempt`` (and why, in the report)."""
    from maas_torch.checked import describe_failure

    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    try:
        ops = fuse(attempt / "model.onnx", folder, plan, external)
        if not ops:
            raise RuntimeError("the optimizer matched none of its patterns")
        diff = _check(job, folder / "model.onnx")
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        report["fusion"] = {"applied": False, "why": describe_failure(exc), **plan.describe()}
        return attempt
    shutil.rmtree(attempt)
    report["check_max_abs_diff"] = diff
    report["fusion"] = {
        "applied": True,
        **plan.describe(),
        "fused_ops": ops,
        "seconds": round(time.perf_counter() - started, 2),
    }
    job.config["fused_ops"] = ops
    return folder


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def export_onnx(checkout, options: dict, workdir: Path) -> Artifact:
    import onnx
    import onnxruntime as ort
    import torch
    from maas_torch.checked import describe_failure
    from maas_torch.exporters import is_data_dependent
    from maas_torch.hf import prepare

    newest = onnx.defs.onnx_opset_version()
    asked = options["opset"]
    if asked is not None and not 7 <= asked <= newest:
        raise UsageError(f"{option('opset', asked)}: this onnx writes opsets 7 to {newest}.")
    started = time.perf_counter()
    workdir = Path(workdir)
    plan, why_not = _plan(checkout, options)
    # eager attention only where the graph will be fused: the optimizer matches its ops
    job = prepare(checkout, options, "The onnx exporter", eager_attention=plan is not None)
    job.config = {"exported_from": checkout.format, "pooling": options["pooling"]}
    modes = ["dynamo", "torchscript"] if options["exporter"] == "auto" else [options["exporter"]]
    if plan is not None and options["exporter"] == "auto":
        modes.reverse()  # the optimizer's patterns match the TorchScript-based graph
    errors: dict[str, str] = {}
    data_dependent = False
    report: dict = {}
    attempt = None
    for mode in modes:
        attempt = workdir / f".attempt-{mode}"
        shutil.rmtree(attempt, ignore_errors=True)
        opset = asked or (FUSION_OPSET if plan is not None and mode == "torchscript" else OPSET)
        try:
            kept = _export_once(job, mode, attempt, opset)
            diff = _check(job, attempt / "model.onnx")
        except Exception as exc:
            errors[mode] = describe_failure(exc)
            data_dependent = data_dependent or is_data_dependent(exc)
            shutil.rmtree(attempt, ignore_errors=True)
            attempt = None
            continue
        report.update(exporter=mode, opset=opset, check_max_abs_diff=diff)
        if kept:
            report["tracer_warnings"] = kept
        break
    if attempt is None:
        tried = "; ".join(f"{m} exporter: {e}" for m, e in errors.items())
        if data_dependent:
            hint = (
                "The model branches on tensor values (data-dependent control flow), which "
                "an export cannot keep: rewrite the branch with torch.cond."
            )
        else:
            other = {"dynamo": "torchscript", "torchscript": "dynamo"}
            hints = [option("exporter", other[m]) for m in modes if len(modes) == 1]
            if checkout.format == "torch":
                hints += [option("to", "torch-export"), option("to", "torchscript")]
            hint = f"Try {' or '.join(hints)}." if hints else ""
        raise UsageError(f"ONNX export of {checkout.ref} failed. {tried}. {hint}".strip())
    if "dynamo" in errors:
        report["dynamo_error"] = errors["dynamo"]
    external = len(_files_in(attempt)) > 1
    if plan is not None and report["exporter"] != "torchscript":
        plan, why_not = (
            None,
            (
                "the TorchScript-based exporter failed (see the report), and onnxruntime's "
                "fusions match its graph, not the dynamo exporter's"
            ),
        )
    if plan is None:
        report["fusion"] = {"applied": False, "why": why_not}
    else:
        attempt = _fused(job, attempt, workdir / ".fused", plan, external, report)
    if options["optimize"]:
        before = sum(p.stat().st_size for p in _files_in(attempt))
        try:
            optimized = _optimize(attempt / "model.onnx", workdir / ".optimized", external)
            report["check_max_abs_diff"] = _check(job, optimized)
        except Exception as exc:
            shutil.rmtree(workdir / ".optimized", ignore_errors=True)
            raise UsageError(
                f"onnxruntime's optimisation broke the ONNX export of {checkout.ref}: "
                f"{describe_failure(exc)}. Export without {option('optimize', True)}."
            ) from None
        shutil.rmtree(attempt)
        attempt = optimized.parent
        report["optimize"] = {
            "level": "basic",
            "bytes_before": before,
            "bytes_after": sum(p.stat().st_size for p in _files_in(attempt)),
        }
    _finish(attempt / "model.onnx", job)
    files: dict[str, str] = {}
    for path in _files_in(attempt):
        name = path.relative_to(attempt).as_posix()
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
        files[name] = "model" if name == "model.onnx" else "external-data"
    shutil.rmtree(attempt, ignore_errors=True)
    for f in job.keep:
        target = workdir / f["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(job.dir / f["name"], target)
        files[f["name"]] = f["role"]
    from .runner import describe

    session = ort.InferenceSession(str(workdir / "model.onnx"), providers=["CPUExecutionProvider"])
    signature = {
        "inputs": describe(session.get_inputs()),
        "outputs": describe(session.get_outputs()),
    }
    report.update(
        bytes=sum((workdir / n).stat().st_size for n, r in files.items() if r in ONNX_ROLES),
        seconds=round(time.perf_counter() - started, 2),
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        onnxruntime_version=ort.__version__,
    )
    return Artifact(
        format="onnx", files=files, signature=signature, config=dict(job.config), report=report
    )
