"""Activation smoothing before int8: an fp32 graph transform that leaves the outputs unchanged
(up to float rounding) and makes the MatMul inputs easier to quantize.

Dynamic int8 quantizes each MatMul's input with one range for the whole tensor, so a few
channels far larger than the rest leave the others only a few int8 steps. On MiniLM those
channels are the [CLS] token's "massive activations": one channel of a LayerNorm output near
28 where the median channel peaks near 1.5, one GELU channel near 24. Two remedies, chosen per
MatMul input (MatMuls that share an input are treated together):

- smoothing (SmoothQuant): input channel ``j`` is divided by
  ``s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)`` and row ``j`` of the constant weight
  ``W`` ``[in, out]`` multiplied by it, so activation range moves into the weights, whose
  columns per-channel weight quantization scales separately (``max|X_j|`` over calibration
  data; MatMuls sharing the input share ``s``, from the maxima of all their weights).
- splitting off outliers (as in LLM.int8()): the few channels with the largest calibrated
  ``max|X_j|`` are zeroed in the int8 MatMul's input (and their weight rows, which then no
  longer widen every column's range) and go through a small float MatMul added back to its
  output. Smoothing cannot do this for the GELU output feeding the FFN "down" MatMul: scaling
  its one huge channel into the weights made every output column coarse (MiniLM: worst
  sentence cosine 0.9807 smoothed everywhere, 0.9942 with four of those inputs split).

Each input gets the option whose int8 simulation (activations quantized per batch as
onnxruntime's DynamicQuantizeLinear does, weights symmetric int8) errs least on the
calibration tokens: leaving it alone, smoothing, or splitting, the last only when it cuts the
error by a quarter more, as it costs a Mul and a Gather per input and a float MatMul and an
Add per MatMul. ``alpha`` itself is not chosen that way: picking it per input (0.3-0.9) by
that simulated error gave MiniLM 0.9943 / 0.934, worse than 0.7 everywhere (0.9968 / 0.981);
a local error does not see how weight error, the same for every token, survives pooling.

The ``1/s`` goes where it costs nothing when the graph allows it:

- into a ``LayerNormalization``'s scale and bias when its output feeds only these MatMuls;
- into the constant factor of a chain of ``Mul`` nodes that makes the input (the exported GELU
  ``x * (0.5 * (1 + erf(x / sqrt 2)))`` takes it in its ``0.5``), when every tensor on the chain
  feeds only the next node and the other operand has the channels as its last axis;
- else a ``Mul`` by the constant ``1/s`` is inserted before the MatMuls (a BERT LayerNorm also
  feeds the residual ``Add``, so its Q/K/V and FFN-up MatMuls get one).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

# Attention: onnxruntime's fused op (a transformer export's Q, K and V projections in one
# [in, 3 * out] weight, input 1): it can be smoothed like a MatMul, but not split, since its
# output is not linear in its input.
SMOOTHABLE = ("MatMul", "Gemm", "Attention")
FLOOR = 1e-5  # all-zero weight rows keep a finite scale
DEAD = 1e-3  # a channel whose calibrated max|x| is below this share of the largest is "dead"
SPLIT_GAIN = 0.75  # splitting must bring the simulated error below this share of the best other
SAMPLE_TOKENS = 256  # rows of a calibration batch the error is simulated on


@dataclass
class Group:
    """MatMuls (or Gemms) reading one activation tensor: they are treated together."""

    tensor: str
    nodes: list = field(default_factory=list)  # onnx NodeProto
    how: str = "left"  # "smoothed", "split" or "left"
    fold: str = ""  # smoothed: "layernorm", "mul-constant" or "inserted-mul"
    errors: dict = field(default_factory=dict)
    channels: list = field(default_factory=list)  # split: the channels kept in float
    float_nodes: list = field(default_factory=list)  # split: the float MatMuls added


def smoothable_groups(model, only: set[str] | None = None) -> list[Group]:
    """MatMul/Gemm/Attention nodes with a constant 2-D weight and a computed input, grouped by that
    input. ``only`` restricts to these node names."""
    inits = {t.name: t for t in model.graph.initializer}
    groups: dict[str, Group] = {}
    for node in model.graph.node:
        if node.op_type not in SMOOTHABLE or len(node.input) < 2 or not node.name:
            continue
        if only is not None and node.name not in only:
            continue
        x, w = node.input[0], node.input[1]
        if x in inits or w not in inits or len(inits[w].dims) != 2:
            continue
        if node.op_type == "Gemm" and _attr(node, "transA", 0):
            continue
        groups.setdefault(x, Group(x)).nodes.append(node)
    return list(groups.values())


def smooth(
    model,
    batches: list[dict],
    alpha: float,
    outliers: int = 2,
    per_channel: bool = True,
    only: set[str] | None = None,
    threads: int = 0,
):
    """A copy of ``model`` with its MatMul inputs smoothed (``alpha``) or their ``outliers``
    largest channels split off in float, calibrated on ``batches`` (feeds); and a report:
    ``alpha``, ``outliers``, ``matmuls`` changed, ``how`` (counts), ``float_nodes`` (the
    small MatMuls added for outliers: keep them out of quantization) and ``inputs`` (per
    MatMul input: what was done, and the simulated int8 error of each option)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    groups = smoothable_groups(out, only)
    inits = {t.name: t for t in graph.initializer}
    weights = {g.tensor: [_weight_rows(n, inits) for n in g.nodes] for g in groups}
    report: dict = {"alpha": alpha, "outliers": outliers, "matmuls": 0}
    if groups and batches:
        tensors = [g.tensor for g in groups]
        seen = calibrate(_probe(out, tensors, threads), tensors, batches)
        maxima = {t: c.maxima for t, c in seen.items()}
        # a weight that does not match its input's last axis is left alone
        groups = [
            g for g in groups if all(len(w) == len(maxima[g.tensor]) for w in weights[g.tensor])
        ]
        with _one_blas_thread():
            _choose(groups, weights, seen, alpha, outliers, per_channel)
        del seen
        _apply(out, groups, weights, maxima, alpha)
    changed = [g for g in groups if g.how != "left"]
    report["matmuls"] = sum(len(g.nodes) for g in changed)
    report["how"] = {
        "smoothed": sum(len(g.nodes) for g in changed if g.how == "smoothed"),
        "split": sum(len(g.nodes) for g in changed if g.how == "split"),
        "left": sum(len(g.nodes) for g in groups if g.how == "left"),
    }
    report["float_nodes"] = [name for g in changed for name in g.float_nodes]
    report["inputs"] = [_describe(g) for g in groups]
    return out, report


def max_relative_error(
    original, changed, batch: dict, threads: int = 0, reference: list | None = None
) -> float:
    """Largest ``|a - b| / max|a|`` over the outputs of two models on one batch;
    ``reference``, when given, is what ``original`` outputs for it (already computed)."""
    import onnxruntime as ort

    def run(model):
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        wanted = {i.name for i in session.get_inputs()}
        return session.run(None, {k: v for k, v in batch.items() if k in wanted})

    worst = 0.0
    expected = run(original) if reference is None else reference
    for a, b in zip(expected, run(changed), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.dtype.kind == "f" and a.size:
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    return worst


def _describe(g: Group) -> dict:
    entry = {"input": g.tensor, "matmuls": [n.name for n in g.nodes], "how": g.how}
    if g.how == "smoothed":
        entry["fold"] = g.fold
    if g.how == "split":
        entry["channels"] = g.channels
    entry["simulated_error"] = {k: round(v, 5) for k, v in g.errors.items()}
    return entry


# ---------------------------------------------------------------------- calibration


def _probe(model, tensors: list[str], threads: int = 0):
    """An onnxruntime session of a copy of ``model`` that also outputs ``tensors``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@dataclass
class Calibration:
    """What one pass over the calibration batches tells of an activation tensor."""

    maxima: np.ndarray  # per channel, max |x| over every batch
    batches: list = field(default_factory=list)  # per batch: (min, max per channel, rows)


def calibrate(session, tensors: list[str], batches: list[dict]) -> dict[str, Calibration]:
    """Per tensor: channel maxima, and per batch the channel minima and maxima (dynamic int8
    takes its range from the whole batch, padding included) with up to ``SAMPLE_TOKENS``
    real tokens' rows (padding's results are never used) for simulating int8 on."""
    rng = np.random.default_rng(0)
    wanted = {i.name for i in session.get_inputs()}
    out: dict[str, Calibration] = {}
    for batch in batches:
        values = session.run(tensors, {k: v for k, v in batch.items() if k in wanted})
        mask = batch.get("attention_mask")
        for name, value in zip(tensors, values, strict=True):
            value = np.asarray(value, dtype=np.float32)
            rows = value.reshape(-1, value.shape[-1]) if value.ndim > 1 else value[None]
            pick = np.arange(len(rows))
            if mask is not None and value.ndim == 3 and tuple(value.shape[:2]) == mask.shape:
                pick = np.flatnonzero(mask.reshape(-1))
            if len(pick) > SAMPLE_TOKENS:
                pick = np.sort(rng.choice(pick, SAMPLE_TOKENS, replace=False))
            lo, hi = rows.min(0), rows.max(0)
            top = np.maximum(np.abs(lo), np.abs(hi))
            if name not in out:
                out[name] = Calibration(top)
            out[name].maxima = np.maximum(out[name].maxima, top)
            out[name].batches.append((lo, hi, rows[pick].copy()))
    return out


def scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's ``s``. A channel (almost) never active in calibration gets the median
    ``s`` of the others: its own would be tiny, and any value it takes later would then be
    blown up past the range of every other channel (digits MLP: border pixels, always 0 in
    the training rows, took accuracy from 0.97 to 0.32)."""
    live = x_max > DEAD * x_max.max()
    x_max, w_max = np.maximum(x_max, FLOOR), np.maximum(w_max, FLOOR)
    s = np.power(x_max, alpha) / np.power(w_max, 1 - alpha)
    s[~live] = np.median(s[live]) if live.any() else 1.0
    return s.astype(np.float32)


def _weight_max(weights: list[np.ndarray]) -> np.ndarray:
    return np.max(np.stack([np.abs(w).max(1) for w in weights]), axis=0)


def _dynamic_int8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``x`` through onnxruntime's DynamicQuantizeLinear (uint8 over the batch's range
    ``lo..hi``, 0 included) and back."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255 or 1.0
    zero = np.clip(np.round(-lo / scale), 0, 255)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def _weight_int8(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """``w`` ``[in, out]`` through symmetric int8 (a scale per output column) and back."""
    top = np.abs(w).max(0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.where(top > 0, top / 127, 1.0)
    return np.round(w / scale) * scale


def _choose(groups, weights, seen, alpha, outliers, per_channel) -> None:
    """Set each group's ``how`` from the int8 error of its MatMuls simulated on the
    calibration rows: squared error over squared output per token (so that the few tokens
    with huge activations do not decide alone), summed over the group's MatMuls."""
    for g in groups:
        cal, ws = seen[g.tensor], weights[g.tensor]
        n = len(cal.maxima)
        ones = np.ones(n, np.float32)
        plans = {"left": (ones, None)}
        if alpha > 0:
            plans["smoothed"] = (scales(cal.maxima, _weight_max(ws), alpha), None)
        if outliers and 4 * outliers <= n and all(m.op_type == "MatMul" for m in g.nodes):
            plans["split"] = (ones, np.sort(np.argsort(cal.maxima)[-outliers:]))
        # each MatMul's float output and its squared size per token: the same for every plan
        exact = [
            [(y, np.maximum((y * y).sum(1), 1e-12)[:, None]) for y in (rows @ w for w in ws)]
            for _, _, rows in cal.batches
        ]
        total, count = dict.fromkeys(plans, 0.0), 0
        for name, (s, channels) in plans.items():
            quantized = _int8_plan(ws, s, channels, per_channel)
            for (lo, hi, rows), outputs in zip(cal.batches, exact, strict=True):
                lo, hi = lo / s, hi / s
                x = rows / s
                if channels is not None:
                    lo[channels] = hi[channels] = x[:, channels] = 0
                x = _dynamic_int8(x, float(lo.min()), float(hi.max()))
                for w, wq, (y, size) in zip(ws, quantized, outputs, strict=True):
                    d = x @ wq
                    d -= y
                    if channels is not None:
                        d += rows[:, channels] @ w[channels]
                    np.multiply(d, d, out=d)
                    d /= size
                    total[name] += float(d.sum())
                    count += len(rows) if name == "left" else 0
        g.errors = {k: float(np.sqrt(v / max(count, 1))) for k, v in total.items()}
        best = min([k for k in g.errors if k != "split"], key=lambda k: g.errors[k])
        if "split" in g.errors and g.errors["split"] < SPLIT_GAIN * g.errors[best]:
            best = "split"
            g.channels = [int(c) for c in plans["split"][1]]
        g.how = best


def _one_blas_thread():
    """The simulation's small matrix products on one BLAS thread. Beside onnxruntime's
    sessions (whose threads spin between runs), OpenBLAS's threads mostly waited for each
    other: MiniLM's choice took 15 s of wall time on 2 cores, 4 s on one thread. Where
    threadpoolctl is missing (it comes with scikit-learn) numpy keeps its default."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _int8_plan(weights, s, channels, per_channel) -> list[np.ndarray]:
    out = []
    for w in weights:
        w = w * s[:, None]
        if channels is not None:
            w[channels] = 0
        out.append(_weight_int8(w, per_channel))
    return out


# ---------------------------------------------------------------------- graph surgery


def _apply(model, groups, weights, maxima, alpha) -> None:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    shapes = _last_dims(model)
    names = _Names(graph)
    before: dict[str, list] = {}  # node name -> new nodes to place just before it
    after: dict[str, list] = {}  # node name -> new nodes to place just after it
    replaced: set[str] = set()
    for g in groups:
        if g.how == "left":
            continue
        uses = _consumers(graph)
        dtype = _array(inits[g.nodes[0].input[1]]).dtype  # constants added take the weight's
        if g.how == "split":
            before[g.nodes[0].name] = _split(
                graph, inits, uses, g, weights[g.tensor], names, after, dtype
            )
            continue
        s = scales(maxima[g.tensor], _weight_max(weights[g.tensor]), alpha)
        for node, rows in zip(g.nodes, weights[g.tensor], strict=True):
            _set_weight(graph, inits, uses, node, rows * s[:, None], names)
        inverse = (1.0 / s).astype(dtype)
        members = {n.name for n in g.nodes}
        sole = g.tensor not in outputs and all(r.name in members for r in uses.get(g.tensor, []))
        producer = producers.get(g.tensor)
        if sole and _fold_layernorm(graph, inits, producer, inverse, names, replaced):
            g.fold = "layernorm"
        elif sole and _fold_mul_chain(
            graph, inits, uses, producers, shapes, producer, inverse, names, replaced
        ):
            g.fold = "mul-constant"
        else:
            before[g.nodes[0].name] = [_insert_mul(graph, g, inverse, names)]
            g.fold = "inserted-mul"
    if before or after:
        order = []
        for node in graph.node:
            order += before.get(node.name, [])
            order.append(node)
            order += after.get(node.name, [])
        _replace(graph.node, order)
    _drop_unused(graph, replaced)


def _split(graph, inits, uses, g: Group, weights, names, after, dtype) -> list:
    """Zero the outlier channels in the int8 path (input and weight rows) and add them back
    through a float MatMul per member; returns the nodes to put before the first member."""
    from onnx import helper, numpy_helper

    channels = np.asarray(g.channels, np.int64)
    mask = np.ones(len(weights[0]), dtype)
    mask[channels] = 0
    mask_name, index_name = names(f"{g.tensor}_int8_mask"), names(f"{g.tensor}_outlier_channels")
    graph.initializer.extend(
        [numpy_helper.from_array(mask, mask_name), numpy_helper.from_array(channels, index_name)]
    )
    masked, picked = names(f"{g.tensor}_int8_part"), names(f"{g.tensor}_outliers")
    nodes = [
        helper.make_node("Mul", [g.tensor, mask_name], [masked], name=names(f"{g.tensor}_Mul")),
        helper.make_node(
            "Gather", [g.tensor, index_name], [picked], name=names(f"{g.tensor}_Gather"), axis=-1
        ),
    ]
    for node, rows in zip(g.nodes, weights, strict=True):
        kept = rows.copy()
        kept[channels] = 0
        _set_weight(graph, inits, uses, node, kept, names)
        small = names(f"{node.name}_outlier_rows")
        graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(rows[channels].astype(dtype)), small)
        )
        result, part, extra = node.output[0], names(f"{node.output[0]}_int8"), names(node.output[0])
        node.input[0] = masked
        node.output[0] = part
        g.float_nodes.append(names(f"{node.name}_outliers"))
        after[node.name] = [
            helper.make_node("MatMul", [picked, small], [extra], name=g.float_nodes[-1]),
            helper.make_node("Add", [part, extra], [result], name=names(f"{node.name}_Add")),
        ]
    return nodes


class _Names:
    """Fresh tensor, node and initializer names."""

    def __init__(self, graph):
        self.taken = {t.name for t in graph.initializer}
        self.taken |= {o for n in graph.node for o in (*n.input, *n.output)}
        self.taken |= {n.name for n in graph.node} | {i.name for i in graph.input}

    def __call__(self, base: str) -> str:
        name, i = f"{base}_smooth", 1
        while name in self.taken:
            i += 1
            name = f"{base}_smooth{i}"
        self.taken.add(name)
        return name


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            out.setdefault(i, []).append(node)
    return out


def _array(tensor) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _weight_rows(node, inits) -> np.ndarray:
    """The weight as ``[in, out]`` (a Gemm with transB stores it ``[out, in]``)."""
    w = _array(inits[node.input[1]]).astype(np.float32)
    if node.op_type == "Gemm" and _attr(node, "transB", 0):
        w = w.T
    return w


def _new_initializer(graph, inits, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(value, name)
    graph.initializer.append(tensor)
    inits[name] = tensor


def _set_weight(graph, inits, uses, node, rows: np.ndarray, names) -> None:
    from onnx import numpy_helper

    old = inits[node.input[1]]
    value = rows.T if node.op_type == "Gemm" and _attr(node, "transB", 0) else rows
    value = np.ascontiguousarray(value.astype(_array(old).dtype))
    if len(uses.get(old.name, [])) == 1:  # only this node reads it: replace in place
        old.CopyFrom(numpy_helper.from_array(value, old.name))
        return
    name = names(old.name)
    _new_initializer(graph, inits, name, value)
    node.input[1] = name


def _fold_layernorm(graph, inits, producer, inverse, names, replaced) -> bool:
    """Divide a LayerNormalization's scale and bias (constants of the channel count)."""
    if producer is None or producer.op_type != "LayerNormalization":
        return False
    if _attr(producer, "axis", -1) != -1 or any(producer.output[1:]):
        return False
    indices = [i for i in (1, 2) if len(producer.input) > i and producer.input[i]]
    for i in indices:
        name = producer.input[i]
        if name not in inits or tuple(inits[name].dims) != inverse.shape:
            return False
    for i in indices:
        value = _array(inits[producer.input[i]])
        replaced.add(producer.input[i])
        name = names(producer.input[i])
        _new_initializer(graph, inits, name, (value * inverse).astype(value.dtype))
        producer.input[i] = name
    return True


def _fold_mul_chain(graph, inits, uses, producers, shapes, producer, inverse, names, replaced):
    """Scale a constant factor of the product of Mul nodes that makes the input. Every tensor
    on the way must feed only the next Mul, and the factor's other operand must have the
    channels as its last axis (so a ``[C]`` factor broadcasts to the same shape)."""
    channels = len(inverse)
    node, seen = producer, 0
    while node is not None and node.op_type == "Mul" and seen < 8:
        seen += 1
        for index, name in enumerate(node.input[:2]):
            other = node.input[1 - index]
            if name not in inits or shapes.get(other) != channels:
                continue
            value = _array(inits[name])
            if value.size == 1:
                scaled = value.reshape(-1) * inverse
            elif value.size == channels and value.shape[-1] == channels:
                scaled = (value.reshape(-1) * inverse).reshape(value.shape)
            else:
                continue
            replaced.add(name)
            new = names(name)
            _new_initializer(graph, inits, new, scaled.astype(value.dtype))
            node.input[index] = new
            return True
        up = [producers.get(n) for n in node.input[:2] if len(uses.get(n, [])) == 1]
        node = next((u for u in up if u is not None and u.op_type == "Mul"), None)
    return False


def _insert_mul(graph, g: Group, inverse: np.ndarray, names):
    from onnx import helper, numpy_helper

    factor = names(f"{g.tensor}_inverse_scale")
    graph.initializer.append(numpy_helper.from_array(inverse, factor))
    scaled = names(g.tensor)
    for node in g.nodes:
        node.input[0] = scaled
    return helper.make_node("Mul", [g.tensor, factor], [scaled], name=names(f"{g.tensor}_Mul"))


def _last_dims(model) -> dict[str, int]:
    """Static size of the last axis of every tensor that shape inference can tell."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    out = {}
    g = inferred.graph
    for info in (*g.value_info, *g.input, *g.output):
        dims = info.type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value"):
            out[info.name] = dims[-1].dim_value
    for t in g.initializer:
        if t.dims:
            out[t.name] = t.dims[-1]
    return out


def _replace(container, items: list) -> None:
    copies = [type(i)() for i in items]
    for c, i in zip(copies, items, strict=True):
        c.CopyFrom(i)
    del container[:]
    container.extend(copies)


def _drop_unused(graph, replaced: set[str]) -> None:
    """Constants that folds replaced everywhere (onnxruntime warns about each one left)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for node in graph.node:  # names read inside subgraphs count as used
        for a in node.attribute:
            for sub in (*a.graphs, *([a.g] if a.HasField("g") else [])):
                used |= {i for n in sub.node for i in n.input}
    gone = replaced - used
    if gone:
        _replace(graph.initializer, [t for t in graph.initializer if t.name not in gone])
