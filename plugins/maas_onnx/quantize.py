"""onnxruntime int8 quantization, and a fidelity budget met by keeping a few layers in float.

Why it is done this way (measured on this machine: MiniLM ONNX export, 200 built-in sentences):

- Weights get one scale per output channel by default: per-tensor int8 gave sentence cosine
  0.957 (worst sentence 0.78), per-channel 0.991 (worst 0.95), same size, about the same speed.
- A transformer export arrives fused (fusion.py: Attention, SkipLayerNormalization...); quantizing
  it needs ``DefaultTensorType`` (onnx cannot type the fused ops' outputs) and, for static QDQ,
  onnxruntime's own shape inference first. Its Attention becomes QAttention, whose weights
  onnxruntime quantizes with a reduced (7-bit) range, and its embedding QEmbedLayerNormalization.
  MiniLM, AVX2 only: fused int8 0.9957 / 0.9846 against unfused 0.9957 / 0.9847, 1.3x the unfused
  int8's speed at batch 32 x 128, 1.7x at 1 x 32. The graph is then smoothed (smooth.py;
  ``--smooth``, ``--outliers``), a change that leaves its float outputs as they were (checked on a
  batch; beyond ``SMOOTH_TOLERANCE`` the model is quantized unsmoothed, with a note): dynamic int8
  quantizes each activation tensor with one range, and MiniLM's few huge [CLS] channels left it at
  cosine 0.9917, worst sentence 0.957 (figures from here on: unfused, on an AVX-512 VNNI CPU).
  SmoothQuant alone (alpha 0.7, the best of 0.5-0.85) reached 0.9968 / 0.981; with the FFN "down"
  inputs' 2 largest channels split off into a float MatMul instead, 0.9985 / 0.994 (0.9985 / 0.993
  on sentences it was not calibrated on), 0.4% bigger and 1-5% slower than plain dynamic int8.
  Excluding the embedding Gathers besides moved cosine by +0.0003 for 2.5x the size, so they stay
  int8. Static QDQ gains too (0.920 / 0.686 to 0.974 / 0.847) but stays far behind dynamic. The
  budget search starts from the smoothed model: layers it keeps in float stay smoothed.
- ``extra_options`` other than ``DefaultTensorType`` are left alone: ``MatMulConstBOnly``
  produced a byte-identical graph.
- Only nodes with a constant weight are quantized (``nodes_to_quantize``), in both modes. Left
  to its defaults, static QDQ also quantizes LayerNorm, Softmax, Where... and MiniLM fell to
  cosine 0.33, slower than float; restricted to weight ops it reaches 0.92 (dynamic: 0.991,
  so static is for models whose activations calibrate well, like the digits MLP). Static
  activations are uint8: same fidelity as int8 here, and faster in both runs we timed.
- A budget is met by keeping the layers that cost most in float. Quantizing one layer at a
  time on a few rows ranks them; a first guess from those costs (as shares of the whole drop)
  then a doubling/bisecting search over how many to keep needed 3 full measurements on
  MiniLM instead of about 7 for a plain bisection. At least one layer stays quantized: an
  "int8" model with every layer in float is the parent under another name, so such a
  budget is reported unmet (the core then refuses it, saying the best reached).
- Each sensitivity candidate (one layer in int8) is the float graph with that layer's
  quantization put in its place (``_make_alone``) rather than the whole graph copied and
  quantized again for one node: on MiniLM 0.1-0.5 s a candidate instead of 1.3-2.5 s, the
  same graph and outputs to the bit. The search's candidates and the result are made by
  onnxruntime from the whole graph, as before.
- Dynamic quantization rewrites ``Gemm`` as ``MatMul`` + ``Add`` named ``<gemm>_MatMul`` before
  it quantizes, so node names given to it are mapped (torch ``Linear`` exports as ``Gemm``).
- ``quantize_static`` rewrites the model it is handed (its weights become external data in a
  temp folder it then deletes), so every call gets a copy; calibration ranges are cached so
  only the first static candidate pays for calibration.
- onnx refuses external data reached through a symlink, and checkouts are symlinks into the
  blob store, so a parent with external data is copied into the temp folder first.
- Candidates are built in a temp folder inside ``workdir`` and only the chosen one is moved
  out, so the core registers exactly the files listed and nothing half-made is left.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas_lab.components import Artifact
from maas_lab.errors import MaasError, UsageError
from maas_lab.hints import option

# Quantizable op -> index of its weight input (an initializer when quantization applies).
WEIGHT_INPUT = {
    "MatMul": 1,
    "Gemm": 1,
    "Conv": 1,
    "ConvTranspose": 1,
    "Gather": 0,
    "Attention": 1,  # fused (com.microsoft): QAttention
    "EmbedLayerNormalization": 2,  # fused: its word embedding table; QEmbedLayerNormalization
}
MODEL_ROLES = ("model", "external-data")
# Fused transformer ops (com.microsoft Attention, SkipLayerNormalization...) have no onnx
# shape inference, so the quantizer cannot tell their outputs' type; they are all float.
_EXTRA = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT
CALIBRATION_BATCH = 32
SMOOTH_TOLERANCE = 1e-3  # largest relative change of the float outputs smoothing may make


@dataclass
class Node:
    name: str
    op: str


@dataclass
class Candidate:
    """One quantized model on disk, with the side files, ready to be measured or kept."""

    folder: Path
    artifact: Artifact
    metrics: dict | None = None
    drops: dict | None = None
    within: bool = False


@dataclass
class Job:
    """Everything the candidates of one run share."""

    ref: str
    model: Any  # onnx.ModelProto, external data loaded
    model_name: str
    side_files: dict[str, Path]  # tokenizer, config...: copied unchanged
    side_roles: dict[str, str]
    static: bool
    per_channel: bool
    external: bool
    tmp: Path
    nodes: list[Node] = field(default_factory=list)
    reader: Any = None
    cache: Path | None = None
    made: int = 0
    batches: list | None = None  # calibration feeds, made once for smoothing and static
    reference: list | None = None  # the parent's outputs for batches[0]
    data_name: str = ""
    smoothing: dict | None = None  # what smoothing did, for the model's config
    notes: list[str] = field(default_factory=list)
    # dynamic mode, for _make_alone: the float model as onnxruntime quantizes it, as its
    # graph without initializers, those initializers serialized, and its tensors' types
    skeleton: Any = None
    chunks: dict[str, bytes] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)


def quantize(checkout, options: dict, workdir: Path, context) -> Artifact:
    started = time.perf_counter()
    _transformers_importable()
    workdir = Path(workdir)
    tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=workdir))
    try:
        job = _prepare(checkout, options, tmp)
        excluded = _user_excludes(job, options.get("exclude"))
        todo = [n for n in job.nodes if n.name not in excluded]
        if not todo:
            raise UsageError(
                f"Every quantizable node of {checkout.ref} is in {option('exclude')}: nothing "
                "to quantize."
            )
        smoothing = _smooth(job, options, context, todo)
        todo = [n for n in job.nodes if n.name not in excluded]
        if job.static:
            _prepare_static(job, options, context)
        full = _make(job, [n.name for n in todo])
        todo = _quantized(job, full, todo)  # what onnxruntime really quantized
        if not todo:
            raise UsageError(
                f"onnxruntime quantized none of {checkout.ref}'s MatMul, Gemm, Conv or Gather "
                "nodes; it cannot be made int8 this way."
            )
        report: dict[str, Any] = {
            "smoothing": smoothing,
            "measurements": {"full": 0, "sensitivity": 0},
        }
        kept: list[dict] = [{"node": n, "why": option("exclude")} for n in excluded]
        if context.max_drop:
            full, figures = _meet_budget(job, context, options, full, todo)
            kept += figures.pop("kept")
            report.update(figures)
        report.update(quantized_nodes=len(_quantized(job, full, todo)), kept_in_float=kept)
        final = _finish(job, full, workdir, checkout)
        final.report = _report(job, checkout, workdir, final, context, report, started)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _transformers_importable() -> None:
    """onnxruntime's quantizer imports ``onnxruntime.transformers.onnx_utils``, whose modules
    import each other as top-level names (``fusion_utils``) through a folder that the
    package's ``__init__`` appends to ``sys.path`` once. If that entry was dropped since (a
    restored ``sys.path``, as pytest's monkeypatch or a notebook's own code does), the
    quantizer fails with "No module named 'fusion_utils'": put it back."""
    import os
    import sys

    import onnxruntime.transformers as ort_transformers

    folder = os.path.dirname(ort_transformers.__file__)
    if folder not in sys.path:
        sys.path.append(folder)


def _report(
    job: Job, checkout, workdir: Path, final: Artifact, context, figures: dict, started: float
) -> dict:
    report = {
        "mode": "static" if job.static else "dynamic",
        "per_channel": job.per_channel,
        "weight_type": "int8",
        "quantizable_nodes": len(job.nodes),
        **figures,
        "bytes_before": _model_bytes(checkout.dir, {f["name"]: f["role"] for f in checkout.files}),
        "bytes_after": _model_bytes(workdir, final.files),
        "seconds": round(time.perf_counter() - started, 2),
        "onnxruntime_version": _ort_version(),
    }
    if job.static:
        report["calibration"] = job.reader.describe()
    elif context.calibration_spec is not None and not report["smoothing"]:
        report["note"] = (
            f"{option('calibration')} is used by {option('static', True)} and by smoothing "
            "only; dynamic int8 without smoothing ignored it"
        )
    if job.notes:
        report["notes"] = job.notes
    return report


# ---------------------------------------------------------------------- the parent model


def _prepare(checkout, options: dict, tmp: Path) -> Job:
    from .external import check_external_data

    roles = {f["name"]: f["role"] for f in checkout.files}
    models = [n for n, r in roles.items() if r == "model" or n.endswith(".onnx")]
    if len(models) != 1:
        raise UsageError(
            f"{checkout.ref} holds {len(models)} ONNX model files ({', '.join(models)}); "
            "ort-int8 quantizes a version with exactly one."
        )
    model_name = models[0]
    locations = check_external_data(checkout.dir / model_name, allowed=set(roles))
    model = _load(checkout, model_name, locations, tmp)
    side = {
        n: checkout.dir / n
        for n, r in roles.items()
        if n != model_name and n not in locations and r not in MODEL_ROLES
    }
    return Job(
        ref=checkout.ref,
        model=model,
        model_name=model_name,
        side_files=side,
        side_roles={n: roles[n] for n in side},
        static=bool(options.get("static")),
        per_channel=bool(options.get("per_channel", True)),
        external=bool(locations),
        tmp=tmp,
        nodes=_weight_nodes(model),
    )


def _load(checkout, model_name: str, locations: list[str], tmp: Path):
    """The model with its weights in memory; external data is read from plain copies."""
    import onnx

    path = checkout.dir / model_name
    if locations:
        folder = tmp / "parent"
        for name in [model_name, *locations]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkout.dir / name, folder / name)
        path = folder / model_name
    try:
        return onnx.load_model(str(path), load_external_data=True)
    except Exception as exc:
        data = f" with its external data ({', '.join(locations)})" if locations else ""
        raise UsageError(f"{model_name} of {checkout.ref} cannot be read{data}: {exc}.") from None


def _weight_nodes(model) -> list[Node]:
    """Named nodes of a quantizable op whose weight is a constant of the graph."""
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if index is None or not node.name or len(node.input) <= index:
            continue
        if node.input[index] in initializers:
            out.append(Node(node.name, node.op_type))
    return out


def _user_excludes(job: Job, text: str | None) -> list[str]:
    wanted = [s.strip() for s in (text or "").split(",") if s.strip()]
    unknown = [w for w in wanted if w not in {n.name for n in job.nodes}]
    if unknown:
        shown = ", ".join(n.name for n in job.nodes[:12])
        more = f" (and {len(job.nodes) - 12} more)" if len(job.nodes) > 12 else ""
        raise UsageError(
            f"{option('exclude', ', '.join(unknown))}: no quantizable node of that name in "
            f"{job.ref}. Quantizable nodes: {shown or 'none'}{more}."
        )
    return wanted


def _model_bytes(folder: Path, files: dict[str, str]) -> int:
    return sum(
        (folder / n).stat().st_size
        for n, role in files.items()
        if role in MODEL_ROLES or n.endswith(".onnx")
    )


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# ---------------------------------------------------------------------- static calibration


class _Reader:
    """Calibration batches, made once and replayed for every candidate."""

    def __init__(self, batches: list[dict], name: str, rows: int):
        self.batches, self.name, self.rows = batches, name, rows
        self._it = iter(batches)

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def describe(self) -> dict:
        return {"data": self.name, "rows": self.rows, "batches": len(self.batches)}


def _calibration_data(context, required: bool):
    """--calibration, else --data, else the built-in sentences for a text model; ``None``
    when there is none and ``required`` is false."""
    data = context.calibration
    if data is None:
        if getattr(context.parent_runner, "tokenizer", None) is None:
            if not required:
                return None
            raise UsageError(
                f"Static quantization of {context.parent.ref} needs calibration data: give "
                f"{option('calibration')} (e.g. an .npz with x rows shaped like the model's "
                "input, or sklearn:digits for a digits model), or drop "
                f"{option('static', True)} for dynamic int8."
            )
        from maas_lab import datasets

        data = datasets.load("builtin:sentences")
    if data.labelled:
        data = data.split("train")  # accuracy is measured on test rows: never calibrate on them
    return data


def _calibration_batches(job: Job, options: dict, context, required: bool) -> list | None:
    """The calibration feeds (made once, checked to run through the parent), or ``None``."""
    from maas_lab.evaluation import feeds

    if job.batches is not None:
        return job.batches
    rows = int(options.get("calibration_rows") or 0)
    if rows < 1:
        raise UsageError(f"{option('calibration_rows')} must be at least 1, got {rows}.")
    data = _calibration_data(context, required)
    if data is None:
        return None
    rows = min(rows, len(data))
    runner = context.parent_runner
    try:
        batches = [
            feeds(runner, data, start, min(CALIBRATION_BATCH, rows - start))
            for start in range(0, rows, CALIBRATION_BATCH)
        ]
    except UsageError as exc:
        raise UsageError(f"{option('calibration')} {data.name}: {exc}") from None
    # the parent's outputs stay remembered: smoothing's drift check compares against them
    job.reference = list(_check_runs(context.parent_outputs, batches[0], data.name, job.ref))
    wanted = {i.name for i in job.model.graph.input}
    job.batches = [{k: v for k, v in b.items() if k in wanted} for b in batches]
    job.data_name = data.name
    return job.batches


def _prepare_static(job: Job, options: dict, context) -> None:
    from onnxruntime.quantization import CalibrationDataReader

    batches = _calibration_batches(job, options, context, required=True)
    job.model = _with_shapes(job)

    class Reader(_Reader, CalibrationDataReader):
        pass

    job.reader = Reader(batches, job.data_name, sum(len(next(iter(b.values()))) for b in batches))
    job.cache = job.tmp / "calibration.json"


def _with_shapes(job: Job):
    """The model with onnxruntime's own shape inference written in, where it holds fused
    (com.microsoft) ops: onnx's inference does not know them, so the tensors they make have
    no type, and static quantization then calibrated none of them and quietly quantized the
    weights only (a fused 2-layer BERT: 0 QuantizeLinear; 14 with the shapes)."""
    if not any(n.domain == "com.microsoft" for n in job.model.graph.node):
        return job.model
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        return SymbolicShapeInference.infer_shapes(job.model, auto_merge=True)
    except Exception as exc:
        job.notes.append(
            f"onnxruntime's shape inference failed on the fused graph ({type(exc).__name__}); "
            "static quantization may leave some activations in float"
        )
        return job.model


# ---------------------------------------------------------------------- smoothing


def _smooth(job: Job, options: dict, context, todo: list[Node]) -> dict | None:
    """Smooth the MatMul inputs of ``job.model`` (see smooth.py) before any candidate is
    made, so the full model and every budget-search candidate start from it. Nodes the user
    keeps in float are left alone. Returns what the report says of it."""
    from .smooth import max_relative_error, smooth

    alpha = float(options.get("smooth") or 0.0)
    outliers = int(options.get("outliers") or 0)
    if not 0 <= alpha < 1:
        raise UsageError(
            f"{option('smooth')} is the migration strength alpha, in [0, 1); got {alpha}."
        )
    if outliers < 0:
        raise UsageError(f"{option('outliers')} must be 0 or more, got {outliers}.")
    if not alpha and not outliers:
        return None
    batches = _calibration_batches(job, options, context, required=job.static)
    if batches is None:
        job.notes.append(
            f"not smoothed: no calibration data (give {option('calibration')} or "
            f"{option('data')} to smooth activations before quantizing)"
        )
        return None
    try:
        with _quiet_ort():
            smoothed, done = smooth(
                job.model, batches, alpha, outliers, job.per_channel, {n.name for n in todo}
            )
            drift = (
                max_relative_error(job.model, smoothed, batches[0], reference=job.reference)
                if done["matmuls"]
                else 0
            )
    except Exception as exc:  # e.g. a graph onnxruntime cannot run with extra outputs
        text = " ".join(str(exc).split())[:200]
        job.notes.append(f"not smoothed: {type(exc).__name__}: {text}")
        return None
    if drift > SMOOTH_TOLERANCE:  # a graph the folds got wrong: never ship it
        job.notes.append(
            f"not smoothed: the smoothed float graph moved outputs by {drift:.2g} (relative), "
            "so the model was quantized as it came"
        )
        return None
    if not done["matmuls"]:
        return None
    job.model = smoothed
    floats = set(done["float_nodes"])
    job.nodes = [n for n in _weight_nodes(smoothed) if n.name not in floats]
    job.smoothing = {"alpha": alpha, "outliers": outliers}
    rows = sum(len(next(iter(b.values()))) for b in batches)
    return {
        "alpha": alpha,
        "outliers": outliers,
        "calibration": {"data": job.data_name, "rows": rows},
        "matmuls": done["matmuls"],
        **done["how"],
        "float_outlier_matmuls": len(floats),
        "float_relative_drift": float(f"{drift:.3g}"),
        "inputs": done["inputs"],
    }


def _check_runs(infer, batch: dict, name: str, ref: str) -> list:
    """Data the parent cannot run would fail deep in onnxruntime's calibrator; say so here.
    Returns the parent's outputs for ``batch``, in the order of its graph's outputs."""
    try:
        return list(infer(batch).values())
    except MaasError as exc:
        raise UsageError(f"{option('calibration')} {name} does not fit {ref}: {exc}") from None
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise UsageError(
            f"calibration data does not run through {ref}: {first}. Give "
            f"{option('calibration')} data the model accepts (token ids within its "
            "vocabulary, values of its input's type and shape), or sentences for a model "
            "exported with its tokenizer."
        ) from None


# ---------------------------------------------------------------------- making candidates


@contextmanager
def _quiet_ort():
    """onnxruntime logs a pre-processing hint on every call; we skip pre-processing on purpose."""

    class Hint(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    hint = Hint()
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


def _ort_names(job: Job, names: list[str]) -> list[str]:
    """Node names as onnxruntime sees them (dynamic mode renames ``Gemm``)."""
    ops = {n.name: n.op for n in job.nodes}
    out = []
    for name in names:
        out.append(name)
        if not job.static and ops.get(name) == "Gemm":
            out.append(f"{name}_MatMul")
    return out


def _make(job: Job, names: list[str]) -> Candidate:
    """Quantize exactly the nodes ``names`` into a new folder, beside copies of the side
    files (a text model keeps its tokenizer)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if not names:  # onnxruntime reads an empty nodes_to_quantize as "all of them"
        raise ValueError("no node to quantize")
    job.made += 1
    folder = job.tmp / f"candidate-{job.made}"
    out = folder / job.model_name
    out.parent.mkdir(parents=True)
    common = dict(
        per_channel=job.per_channel,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(WEIGHT_INPUT),
        nodes_to_quantize=_ort_names(job, names),
        use_external_data_format=job.external,
        extra_options=_EXTRA,
    )
    with _quiet_ort():
        if job.static:
            job.reader.rewind()
            quantize_static(
                copy.deepcopy(job.model),
                out,
                job.reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                calibration_cache_path=job.cache,
                **common,
            )
        else:
            quantize_dynamic(copy.deepcopy(job.model), out, **common)
    return _candidate(job, folder)


def _candidate(job: Job, folder: Path) -> Candidate:
    """The candidate whose model was just written into ``folder``, given the side files."""
    out = folder / job.model_name
    files = {job.model_name: "model"}
    for location in _locations(out) if job.external else []:
        files[location] = "external-data"
    for name, source in job.side_files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)
        files[name] = job.side_roles[name]
    return Candidate(folder, Artifact(format="onnx", files=files))


def _make_alone(job: Job, node: Node) -> Candidate:
    """The model with only ``node`` quantized: what ``_make(job, [node.name])`` makes, made
    without quantizing the whole graph again (the sensitivity pass makes one per layer).

    Dynamic quantization replaces a node by nodes computed from that node's inputs and
    weight alone, so onnxruntime quantizes a model holding just that node and its weight,
    and its nodes and initializers take the node's place in the float graph as onnxruntime
    prepares it (``job.base``). Static quantization calibrates activation ranges on the
    whole graph, so its candidates are made whole. Checked to give the same graph and the
    same outputs as ``_make`` (tests/test_compress_onnx.py)."""
    import onnx

    if job.static:
        return _make(job, [node.name])
    nodes, inits, header = _alone(job, node)
    model = onnx.ModelProto()  # the float graph without its weights: a few hundred kB
    model.CopyFrom(job.skeleton)
    graph = model.graph
    names = set(_ort_names(job, [node.name]))
    at = next(i for i, n in enumerate(graph.node) if n.name in names)
    kept = [n for n in graph.node if n.name not in names]
    graph.ClearField("node")
    graph.node.extend(kept[:at] + nodes + kept[at:])
    for name in ("ir_version", "producer_name", "producer_version"):
        setattr(model, name, getattr(header, name))
    model.ClearField("opset_import")
    model.opset_import.extend(header.opset_import)
    used = _used_names(graph)
    weights = [job.chunks[t] for t in job.chunks if t in used]  # the replaced weight goes
    weights += [_chunk(t) for t in inits if t.name not in job.chunks]
    job.made += 1
    folder = job.tmp / f"candidate-{job.made}"
    out = folder / job.model_name
    out.parent.mkdir(parents=True)
    if job.external:
        graph.initializer.extend(
            onnx.ModelProto.FromString(c).graph.initializer[0] for c in weights
        )
        external = dict(all_tensors_to_one_file=True, location=f"{out.name}.data")
        onnx.save_model(model, str(out), save_as_external_data=True, **external)
    else:
        with open(out, "wb") as f:
            f.write(model.SerializeToString())
            for weight in weights:
                f.write(weight)
    return _candidate(job, folder)


def _alone(job: Job, node: Node):
    """onnxruntime's dynamic quantization of ``node`` alone: its nodes, its initializers and
    the model header it wrote (opsets, IR version), from a model holding only that node."""
    import onnx
    from onnx import helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if job.skeleton is None:
        _prepare_skeleton(job)
    names = _ort_names(job, [node.name])
    targets = [n for n in job.skeleton.graph.node if n.name in set(names)]
    made = {o for n in targets for o in n.output}
    inputs, weights = [], []
    for n in targets:
        for name in n.input:
            if name in job.chunks and name not in weights:
                weights.append(name)
            elif name and name not in job.chunks and name not in made and name not in inputs:
                inputs.append(name)
    mini = helper.make_model(
        helper.make_graph(
            targets,
            "alone",
            [helper.make_tensor_value_info(x, job.types.get(x, 1), None) for x in inputs],
            [helper.make_tensor_value_info(o, job.types.get(o, 1), None) for o in made if o],
            [_unchunk(job.chunks[w]) for w in weights],
        ),
        opset_imports=job.skeleton.opset_import,
        ir_version=job.skeleton.ir_version,
    )
    folder = Path(tempfile.mkdtemp(prefix="alone-", dir=job.tmp))
    try:
        with _quiet_ort():
            quantize_dynamic(
                mini,
                folder / "alone.onnx",
                per_channel=job.per_channel,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(WEIGHT_INPUT),
                nodes_to_quantize=names,
                extra_options=_EXTRA,
            )
        quantized = onnx.load_model(str(folder / "alone.onnx"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return list(quantized.graph.node), list(quantized.graph.initializer), quantized


def _prepare_skeleton(job: Job) -> None:
    """The float graph as onnxruntime's dynamic quantizer starts from it (every ``Gemm``
    rewritten as ``MatMul`` + ``Add``), split into its initializers and the rest, and the
    element type of its tensors."""
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel

    base = onnx.ModelProto()
    base.CopyFrom(job.model)
    ONNXModel(base).replace_gemm_with_matmul()
    graph = onnx.shape_inference.infer_shapes(base).graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        job.types[value.name] = value.type.tensor_type.elem_type
    job.types.update({t.name: t.data_type for t in graph.initializer})
    job.chunks = {t.name: _chunk(t) for t in base.graph.initializer}
    base.graph.ClearField("initializer")
    job.skeleton = base


def _chunk(tensor) -> bytes:
    """``tensor`` as the bytes of a model holding only it. Protobuf parsers merge a message
    field that occurs twice (repeated fields are appended), so a model's bytes followed by
    such chunks read as that model with these initializers: a candidate is written without
    serializing the ~90 MB of weights it shares with the others again."""
    import onnx

    model = onnx.ModelProto()
    model.graph.initializer.add().CopyFrom(tensor)
    return model.SerializeToString()


def _unchunk(chunk: bytes):
    import onnx

    return onnx.ModelProto.FromString(chunk).graph.initializer[0]


def _used_names(graph) -> set[str]:
    """Every tensor name read by a node or a graph output, subgraphs included."""
    import onnx

    used = {o.name for o in graph.output}
    graphs = [graph]
    while graphs:
        g = graphs.pop()
        for n in g.node:
            used.update(n.input)
            for attr in n.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attr.graphs)
    return used


def _locations(path: Path) -> list[str]:
    import onnx

    from .external import external_locations

    model = onnx.load_model(str(path), load_external_data=False)
    return sorted(set(external_locations(model)))


def _quantized(job: Job, candidate: Candidate, nodes: list[Node]) -> list[Node]:
    """Those of ``nodes`` that the candidate really quantized: replaced by an integer op, or
    fed a weight that is no longer a float constant (int8 initializer, or dequantized)."""
    import onnx

    graph = onnx.load_model(str(candidate.folder / job.model_name), load_external_data=False).graph
    by_name = {n.name: n for n in graph.node}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    floats = {t.name for t in graph.initializer if t.data_type in float_types}
    out = []
    for node in nodes:
        found = [by_name[n] for n in _ort_names(job, [node.name]) if n in by_name]
        found = [f for f in found if f.op_type in WEIGHT_INPUT]
        if not found:
            out.append(node)
            continue
        index = WEIGHT_INPUT[found[-1].op_type]
        if len(found[-1].input) <= index or found[-1].input[index] not in floats:
            out.append(node)
    return out


def _finish(job: Job, candidate: Candidate, workdir: Path, checkout) -> Artifact:
    """Move the chosen candidate's files into ``workdir`` (the temp folder then goes)."""
    import onnxruntime as ort

    from .runner import describe

    for name in candidate.artifact.files:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(candidate.folder / name), workdir / name)
    session = ort.InferenceSession(
        str(workdir / job.model_name), providers=["CPUExecutionProvider"]
    )
    signature = {
        "inputs": describe(session.get_inputs()),
        "outputs": describe(session.get_outputs()),
    }
    config = dict(checkout.config or {})
    config["quantization"] = {
        "tool": "onnxruntime",
        "mode": "static" if job.static else "dynamic",
        "per_channel": job.per_channel,
        "weight_type": "int8",
    }
    if job.smoothing:
        config["quantization"]["smoothing"] = dict(job.smoothing)
    return Artifact(
        format="onnx", files=dict(candidate.artifact.files), signature=signature, config=config
    )


def _discard(candidate: Candidate) -> None:
    shutil.rmtree(candidate.folder, ignore_errors=True)


# ---------------------------------------------------------------------- the budget


def _measure(context, candidate: Candidate, rows: int | None = None) -> Candidate:
    candidate.metrics = context.measure(candidate.folder, candidate.artifact, rows=rows)
    # drops are against the parent measured on the same rows: take them before the next call
    candidate.drops = context.drops(candidate.metrics)
    candidate.within = context.within_budget(candidate.metrics)
    return candidate


def _excess(candidate: Candidate, budget: dict[str, float]) -> float:
    return max(candidate.drops[m] - allowed for m, allowed in budget.items())


def _score(drops: dict[str, float], budget: dict[str, float]) -> float:
    """How far one layer alone goes towards the budget (the worst metric decides)."""
    return max(drops[m] / max(allowed, 1e-4) for m, allowed in budget.items())


def _sensitivity(job: Job, context, nodes: list[Node], rows: int) -> list[dict]:
    """Each node quantized alone, measured on ``rows`` rows; most costly first."""
    out = []
    bar = context.progress(len(nodes), "sensitivity", unit="layers")
    try:
        for node in nodes:
            candidate = _measure(context, _make_alone(job, node), rows)
            _discard(candidate)
            drops = {k: round(v, 6) for k, v in candidate.drops.items()}
            score = _score(candidate.drops, context.max_drop)
            out.append({"node": node.name, "op": node.op, "drop_alone": drops, "score": score})
            bar.update(1)
            bar.set_postfix(node=node.name)
    finally:
        bar.close()
    out.sort(key=lambda s: -s["score"])
    return out


def _meet_budget(
    job: Job, context, options: dict, full: Candidate, nodes: list[Node]
) -> tuple[Candidate, dict]:
    """The fewest most-costly nodes kept in float that bring the result within budget; the
    best candidate reached when no number of them does."""
    budget = context.max_drop
    _measure(context, full)
    figures: dict[str, Any] = {
        "budget": dict(budget),
        "measurements": {"full": 1, "sensitivity": 0},
        "search": [_step(0, full)],
    }
    if full.within or len(nodes) < 2:
        figures.update(kept=[], budget_met=full.within)
        return full, figures
    rows = int(options.get("sensitivity_rows") or 0)
    if rows < 1:
        raise UsageError(f"{option('sensitivity_rows')} must be at least 1, got {rows}.")
    ranked = _sensitivity(job, context, nodes, rows)
    figures["measurements"]["sensitivity"] = len(ranked)
    tried = {0: full}

    def attempt(k: int) -> Candidate:
        floats = {s["node"] for s in ranked[:k]}
        tried[k] = _measure(context, _make(job, [n.name for n in nodes if n.name not in floats]))
        figures["measurements"]["full"] += 1
        figures["search"].append(_step(k, tried[k]))
        return tried[k]

    bar = context.progress(len(ranked).bit_length() + 1, "budget search", unit="measurements")
    try:
        _search(attempt, len(ranked) - 1, _guess(full, ranked, budget), bar)
    finally:
        bar.close()
    passing = [k for k, c in tried.items() if c.within]
    where = f"{rows} rows" if context.eval_data() is not None else "generated inputs"
    best = min(passing) if passing else min(tried, key=lambda k: _excess(tried[k], budget))
    for k, candidate in tried.items():
        if k != best:
            _discard(candidate)
    figures.update(
        kept=[_why(s, i, len(ranked), where) for i, s in enumerate(ranked[:best])],
        budget_met=bool(passing),
        sensitivity=[{"node": s["node"], "drop_alone": s["drop_alone"]} for s in ranked],
    )
    return tried[best], figures


def _guess(full: Candidate, ranked: list[dict], budget: dict[str, float]) -> int:
    """How many of the worst layers to keep in float if their costs alone added up. Those
    costs come from few rows, so they are used as shares of the whole drop only."""
    k = 1
    for metric, allowed in budget.items():
        need = full.drops[metric] - allowed
        costs = [max(s["drop_alone"][metric], 0.0) for s in ranked]
        total, saved = sum(costs), 0.0
        if need <= 0:
            continue
        if total <= 0:
            return len(ranked)
        for i, cost in enumerate(costs, 1):
            saved += cost
            if full.drops[metric] * saved / total >= need:
                k = max(k, i)
                break
        else:
            return len(ranked)
    return k


def _search(attempt, most: int, guess: int, bar) -> int | None:
    """The smallest k in [1, most] whose ``attempt(k)`` is within budget (k = 0 is known to
    fail), taking more layers in float never to hurt: try the guess, step away from it in
    doubling strides until the answer is bracketed, then bisect. ``None`` if ``most`` fails."""
    lo = 0
    k = min(max(guess, 1), most)
    bar.update(1)
    if attempt(k).within:
        hi, stride = k, 1
        while hi - lo > 1:
            probe = max(hi - stride, lo + 1)
            bar.update(1)
            if not attempt(probe).within:
                lo = probe
                break
            hi, stride = probe, stride * 2
    else:
        lo, stride = k, 1
        while True:
            if lo >= most:
                return None
            probe = min(lo + stride, most)
            bar.update(1)
            if attempt(probe).within:
                hi = probe
                break
            lo, stride = probe, stride * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        bar.update(1)
        if attempt(mid).within:
            hi = mid
        else:
            lo = mid
    return hi


def _step(k: int, candidate: Candidate) -> dict:
    return {
        "kept_in_float": k,
        "metrics": {m: round(v, 6) for m, v in candidate.metrics.items()},
        "within_budget": candidate.within,
    }


def _why(sensitive: dict, rank: int, total: int, where: str) -> dict:
    costs = ", ".join(f"{m} {v:.4g}" for m, v in sensitive["drop_alone"].items())
    return {
        "node": sensitive["node"],
        "op": sensitive["op"],
        "drop_alone": sensitive["drop_alone"],
        "why": f"quantized alone it costs {costs} on {where} (rank {rank + 1} of {total})",
    }
