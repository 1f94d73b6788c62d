"""Exporters from factory-built torch models and Hugging Face encoders (``hf.py`` wraps them)
to TorchScript (trace) and torch.export (.pt2).

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

import numpy as np

from maas_lab.components import Artifact
from maas_lab.errors import UsageError

from . import signature as sig

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WHERE = re.compile(r"raised this error:\s*\n\s*(File \"[^\"]+\", line \d+, in \w+)\s*\n\s*(.+)")
_DATA_DEPENDENT = ("data-dependent", "Data dependent", "GuardOnDataDependent", "torch.cond")


def describe_failure(exc: BaseException) -> str:
    """One readable sentence from an exporter's (often page-long) exception: the underlying
    error, and the user's line of code when torch names it."""
    text = _ANSI.sub("", str(exc))
    inner = re.search(r"<class '([\w.]+)'>: (.+)", text)
    if inner:
        head = f"{inner.group(1).rsplit('.', 1)[-1]}: {inner.group(2).strip()}"
    else:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        head = f"{type(exc).__name__}: {first}"
    if len(head) > 400:
        head = head[:400] + "..."
    head = head.rstrip(". ")
    where = _WHERE.search(text)
    if where:
        head += f" (at {where.group(1)}: {where.group(2).strip()})"
    return head


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


class Checked:
    """What every torch exporter starts from: ``ref``, the eager ``model``, its ``inputs`` and
    ``outputs`` (signature entries), ``trace_args`` to export with, and check ``cases``
    (feeds at other sizes with the eager outputs for each), which :meth:`compare` runs an
    export on. ``config`` and ``keep`` (files of the parent to copy into the artifact, from
    ``dir``) say what the artifact carries besides the model."""

    ref: str
    model: object
    inputs: list
    outputs: list
    output_names: list
    trace_args: tuple
    cases: list
    config: dict
    keep: list
    dir: Path

    @property
    def signature(self) -> dict:
        return {"inputs": list(self.inputs), "outputs": list(self.outputs)}

    def compare(self, module, exporter: str, instead: str) -> float:
        """Run ``module`` on the check cases; refuse if it fails or differs from eager."""
        import torch

        from .runners import name_outputs

        worst = 0.0
        for feeds, expected in self.cases:
            sizes = sig.dim_sizes(self.inputs, feeds)
            try:
                with torch.no_grad():
                    got = name_outputs(module(*_tensors(feeds)), self.output_names)
            except Exception as exc:
                raise UsageError(
                    f"The {exporter} export of {self.ref} fails on other input sizes ({sizes}): "
                    f"{describe_failure(exc)}. The model fixes a size that the signature says "
                    f"is dynamic (shape specialisation); {instead}."
                ) from None
            diff = sig.max_abs_diff(expected, got)
            if diff > sig.tolerance(expected):
                raise UsageError(
                    f"The {exporter} export of {self.ref} gives different outputs from the "
                    f"model on other inputs ({sizes}): max abs diff {diff:.3g}. The model has "
                    "data-dependent control flow or shape specialisation that the export "
                    f"froze; {instead}."
                )
            worst = max(worst, diff)
        return worst


class Prepared(Checked):
    """A factory model with its signature, feeds to trace with, and check cases (inputs at
    other sizes, and the same negated, with the eager outputs for each). The negated case
    flips ``if x.sum() > 0`` style branches, which a trace would otherwise freeze without any
    check noticing."""

    def __init__(self, checkout, options: dict, what: str):
        import torch

        from . import load_factory_model
        from .runners import name_outputs

        spec = sig.resolve_signature(checkout, options, what)
        self.ref, self.inputs = checkout.ref, spec["inputs"]
        self.model = load_factory_model(checkout, {"device": "cpu"})
        self.trace_feeds, check, check_sizes = sig.trace_and_check_feeds(self.inputs)
        self.trace_args = tuple(torch.from_numpy(a) for a in self.trace_feeds.values())
        names = [t["name"] for t in spec["outputs"]]
        cases = [check]
        if any(np.asarray(a).dtype.kind == "f" for a in check.values()):
            cases.append({k: -a if a.dtype.kind == "f" else a for k, a in check.items()})
        with torch.no_grad():
            trace_expected = name_outputs(self.model(*self.trace_args), names)
            self.cases = [
                (feeds, name_outputs(self.model(*_tensors(feeds)), names)) for feeds in cases
            ]
        self.outputs = spec["outputs"] or sig.outputs_from_runs(
            trace_expected,
            sig.dim_sizes(self.inputs, self.trace_feeds),
            self.cases[0][1],
            check_sizes,
        )
        self.output_names = [t["name"] for t in self.outputs]
        self.config, self.keep, self.dir = {}, [], checkout.dir


def _tensors(feeds: dict) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in feeds.values())


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
    from .hf import copy_kept, prepare

    prep = prepare(checkout, options, "The torchscript exporter")
    path = Path(workdir) / "model.torchscript"
    report = trace_checked(
        prep,
        checkout.ref,
        path,
        "use --to torch-export or --to onnx, or rewrite the branch with torch.cond",
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
                check_inputs=[_tensors(feeds) for feeds, _ in prep.cases],
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

    from .hf import HFPrepared, copy_kept, prepare
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
            else "Try --to onnx --exporter torchscript or --to torchscript"
        )
        raise UsageError(
            f"torch.export could not export {checkout.ref}: {describe_failure(exc)}. {hint}."
        ) from None
    path = Path(workdir) / "model.pt2"
    torch.export.save(program, str(path))
    instead = "use --to onnx --exporter torchscript, or fix the model"
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
