"""Exporters from factory-built torch models and Hugging Face encoders (``hf.py`` wraps them)
to TorchScript (trace) and torch.export (.pt2), from the starting point ``hf.prepare`` gives
(``checked.py``: the model, its signature and the check cases).

Both trace the model at one set of sizes, which is where exports go silently wrong: a trace
records one branch of an ``if`` on tensor values and may freeze sizes. So each export is run
again at other sizes (and, for the trace, on inputs of the other sign) and compared with the
eager model before anything is returned; a mismatch is refused with the reason.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

from maas_lab.components import Artifact
from maas_lab.errors import UsageError
from maas_lab.hints import option

from .checked import copy_kept, describe_failure
from .hf import HFPrepared, prepare
from .tensors import tensors

_DATA_DEPENDENT = ("data-dependent", "Data dependent", "GuardOnDataDependent", "torch.cond")


@contextlib.contextmanager
def quiet_torch():
    """Silence what exporters print while they work (graphs dumped to stderr, registry
    warnings): the outcome is reported by our own error or report, not by this noise."""
    names = ["torch", *(n for n in logging.root.manager.loggerDict if n.startswith("torch."))]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def is_data_dependent(exc: BaseException) -> bool:
    text = str(exc) + type(exc).__name__
    return any(marker in text for marker in _DATA_DEPENDENT)


def _library_warning(w, prep) -> bool:
    """A TracerWarning raised inside transformers or torch while tracing a Hugging Face model
    (whose code is transformers', never the folder's own: remote code is not run). Those
    convert shapes to Python values (is the mask shorter than the keys? is the query longer
    than one token? is padding_idx within the table?) and read tensor values only when not
    tracing, so they are reported, not refused: the check cases (other batch and sequence
    sizes, padded and not) decide whether the trace generalises."""
    if (prep.config or {}).get("exported_from") != "hf":
        return False
    import torch
    import transformers

    where = Path(w.filename).resolve()
    roots = (Path(m.__file__).resolve().parent for m in (transformers, torch))
    return any(where.is_relative_to(root) for root in roots)


def _where(w) -> str:
    return f"{Path(w.filename).name}:{w.lineno}: {str(w.message).split('.')[0]}"


def export_torchscript(checkout, options: dict, workdir: Path) -> Artifact:
    prep = prepare(checkout, options, "The torchscript exporter")
    path = Path(workdir) / "model.torchscript"
    report = trace_checked(
        prep,
        checkout.ref,
        path,
        f"use {option('to', 'torch-export')} or {option('to', 'onnx')}, or rewrite the branch "
        "with torch.cond",
    )
    report["note"] = "torch.jit is deprecated (torch 2.13 warns) in favour of torch.export"
    files = {path.name: "model"}
    copy_kept(prep, workdir, files)
    return Artifact(
        format="torchscript",
        files=files,
        signature=prep.signature,
        config=dict(prep.config),
        report=report,
    )


def _inside_torch(w) -> bool:
    """A TracerWarning from torch's own modules (``nn.LSTM`` and its dynamic int8 twin
    compare input sizes in Python to raise clear errors): reported, not refused; the check
    cases at other batch and sequence sizes decide whether the trace generalises. Warnings
    from the model's own code are still refused."""
    import torch

    return Path(w.filename).resolve().is_relative_to(Path(torch.__file__).resolve().parent)


def trace_checked(prep, what: str, path: Path, instead: str) -> dict:
    """``prep.model`` traced, refused (``UsageError`` ending with what to do ``instead``)
    where the trace would not generalise, saved to ``path``, reloaded and checked again.

    Shared by the torchscript exporter and the torch-int8 compressor: one procedure decides
    what a trustworthy trace is."""
    import torch

    with warnings.catch_warnings(record=True) as caught, quiet_torch():
        # Recorded rather than raised: raised inside Tensor.__bool__ a TracerWarning surfaces
        # as a SystemError, and a record keeps the file and line of the user's code.
        warnings.simplefilter("always")
        try:
            traced = torch.jit.trace(
                prep.model,
                prep.trace_args,
                check_trace=True,
                check_inputs=[tensors(feeds) for feeds, _ in prep.cases],
                strict=False,
            )
        except torch.jit.TracingCheckError as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.startswith("ERROR")), "")
            raise UsageError(
                f"torch.jit.trace of {what} is not the same on other inputs ({first}): the "
                f"model has data-dependent control flow, which a trace cannot keep; {instead}."
            ) from None
        except Exception as exc:
            raise UsageError(
                f"torch.jit.trace could not trace {what}: {describe_failure(exc)}; {instead}."
            ) from None
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    library = [w for w in tracer if _library_warning(w, prep) or _inside_torch(w)]
    tracer = [w for w in tracer if w not in library]
    if tracer:
        where = "; ".join(_where(w) for w in tracer[:3])
        raise UsageError(
            f"torch.jit.trace of {what} would not generalise: {where}. The model has "
            "data-dependent control flow or turns tensors into Python values, which a trace "
            f"freezes; {instead}."
        )
    diff = prep.compare(traced, "torchscript", instead)
    traced.save(str(path))
    _without_debug_records(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reloaded = torch.jit.load(str(path)).eval()
    prep.compare(reloaded, "torchscript (reloaded)", instead)
    report = {
        "exporter": "torch.jit.trace",
        "torch_version": torch.__version__,
        "check_max_abs_diff": diff,
        "bytes": path.stat().st_size,
    }
    if library:
        report["tracer_warnings"] = list(dict.fromkeys(_where(w) for w in library))[:5]
    return report


def _without_debug_records(path: Path) -> None:
    """Rewrite a TorchScript archive without its ``*.debug_pkl`` records.

    Those hold the source ranges of the trace: the file and line of every frame that called
    it, i.e. the user's notebook or script path, our install path and the virtualenv's. An
    exported model is a file people hand on, so it must not carry the exporting machine's
    file layout, and two exports of one model should not differ by where they ran. torch
    loads an archive without them (error messages then lack source lines). torch's own
    writer is used to keep the records aligned as torch's reader expects."""
    import torch

    reader = torch._C.PyTorchFileReader(str(path))
    names = reader.get_all_records()
    if not any(n.endswith(".debug_pkl") for n in names):
        return
    clean = path.with_name(path.name + ".clean")
    writer = torch._C.PyTorchFileWriter(str(clean))
    for name in names:
        if not name.endswith(".debug_pkl"):
            data = reader.get_record(name)
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    del writer, reader
    clean.replace(path)


def without_stack_traces(program) -> None:
    """Drop the ``stack_trace`` torch.export records on every node (serialized into the
    .pt2's model.json): it names the files and lines that called the export, i.e. this
    machine's install and virtualenv paths, which an exported file must not carry."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in getattr(graph, "nodes", ()):
            node.meta.pop("stack_trace", None)


def dynamic_shapes(inputs: list[dict]) -> tuple:
    """torch.export dims per input, one ``Dim`` per dim name, shared across inputs."""
    import torch

    dims: dict = {}
    shapes = []
    for spec in inputs:
        axes = {}
        for axis, d in enumerate(spec["shape"]):
            if isinstance(d, str):
                if d not in dims:
                    dims[d] = torch.export.Dim(re.sub(r"\W", "_", d))
                axes[axis] = dims[d]
        shapes.append(axes or None)
    return tuple(shapes)


def dim_ranges(program, inputs: list[dict]) -> dict[str, list]:
    """``{dim name: [min, max]}`` the program accepts (``max`` None when unbounded)."""
    import sympy
    import torch

    user = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    out: dict[str, list] = {}
    for spec, node in zip(inputs, placeholders, strict=False):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for d, size in zip(spec["shape"], val.shape, strict=False):
            if not isinstance(d, str) or d in out or isinstance(size, int):
                continue
            vr = program.range_constraints.get(size.node.expr)
            if vr is not None:  # torch's int_oo says is_finite; it is no sympy Integer
                out[d] = [
                    int(b) if isinstance(b, sympy.Integer) else None for b in (vr.lower, vr.upper)
                ]
    return out


def export_program(checkout, options: dict, workdir: Path) -> Artifact:
    import torch

    from .pt2 import load_pt2

    prep = prepare(checkout, options, "The torch-export exporter")
    if isinstance(prep, HFPrepared):
        shapes = prep.dynamic_shapes()
    else:
        shapes = dynamic_shapes(prep.inputs)
    try:
        with warnings.catch_warnings(), quiet_torch():
            warnings.simplefilter("ignore")
            program = torch.export.export(prep.model, prep.trace_args, dynamic_shapes=shapes)
    except Exception as exc:
        hint = (
            "The model branches on tensor values (data-dependent control flow): rewrite the "
            "branch with torch.cond"
            if is_data_dependent(exc)
            else f"Try {option('to', 'onnx')} {option('exporter', 'torchscript')} or "
            f"{option('to', 'torchscript')}"
        )
        raise UsageError(
            f"torch.export could not export {checkout.ref}: {describe_failure(exc)}. {hint}."
        ) from None
    path = Path(workdir) / "model.pt2"
    without_stack_traces(program)
    torch.export.save(program, str(path))
    instead = f"use {option('to', 'onnx')} {option('exporter', 'torchscript')}, or fix the model"
    diff = prep.compare(load_pt2(path).module(), "torch-export", instead)
    files = {path.name: "model"}
    copy_kept(prep, workdir, files)
    return Artifact(
        format="torch-export",
        files=files,
        signature=prep.signature,
        config=dict(prep.config),
        report={
            "exporter": "torch.export",
            "torch_version": torch.__version__,
            "check_max_abs_diff": diff,
            "bytes": path.stat().st_size,
            "dim_ranges": dim_ranges(program, prep.inputs),
        },
    )
