"""The ``torch-int8`` compressor: torch dynamic int8 quantization, saved as TorchScript.

``torch.ao.quantization.quantize_dynamic`` swaps ``nn.Linear`` (and, with ``--layers
linear+lstm``, ``nn.LSTM``) for int8-weight versions that quantize activations on the fly
(Linear weights with one scale per output channel: on all-MiniLM-L6-v2, 0.971 mean cosine
against 0.936 per tensor, same speed and size);
everything else stays float, notably embedding tables (for all-MiniLM-L6-v2 the 47 MB word
embeddings, most of the file, so the size gain is limited). The quantized model is then
traced exactly as the ``torchscript`` exporter traces (same starting point from
``hf.prepare``: signature, real sentences and tokenizer files for Hugging Face encoders;
same refusal when the trace does not generalise to other sizes), and checked against the
quantized eager model before it is returned. The core measures fidelity against the parent.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from maas_lab.components import Artifact
from maas_lab.errors import UsageError
from maas_lab.hints import command, option


def _qconfig(layers: str) -> dict:
    """Module type -> qconfig: Linear weights get one scale per output channel (per-tensor
    scales cost MiniLM 3.5 points of cosine for no speed or size gain); LSTM keeps torch's
    default per-tensor dynamic qconfig."""
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    spec = {nn.Linear: per_channel_dynamic_qconfig}
    if layers == "linear+lstm":
        spec[nn.LSTM] = default_dynamic_qconfig
    return spec


def _shape_options(checkout, options: dict, context) -> dict:
    """A factory version without a stored signature takes its input shape from --data."""
    out = dict(options)
    if checkout.format == "hf" or checkout.signature:
        return out
    if context.has_data:
        data = context.data()
        if data.x is not None:
            out["input_shape"] = ",".join(["batch", *(str(d) for d in data.x.shape[1:])])
            out["input_dtype"] = str(data.x.dtype)
            return out
    raise UsageError(
        f"torch-int8 needs {checkout.ref}'s input shape to trace it: the version has no "
        f"stored signature. Give {option('data')} with rows it takes (e.g. "
        f"{option('data', 'sklearn:digits')}), or register it with "
        f"{option('inputs', flag='--input')} (e.g. input:float32:batch,64)."
    )


def _float_bytes(model) -> int:
    """Bytes of parameters and buffers still held as float tensors."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if t.is_floating_point())


def quantize(checkout, options: dict, workdir: Path, context) -> Artifact:
    import torch

    from .checked import copy_kept
    from .exporters import trace_checked
    from .hf import prepare
    from .runners import name_outputs
    from .tensors import tensors

    opts = _shape_options(checkout, options, context)
    prep = prepare(checkout, opts, "torch-int8")
    qconfig = _qconfig(options.get("layers") or "linear")
    wanted = set(qconfig)
    found = Counter(type(m).__name__ for m in prep.model.modules() if type(m) in wanted)
    if not found:
        names = " or ".join(sorted(t.__name__ for t in wanted))
        raise UsageError(
            f"{checkout.ref} has no {names} layers, which is all torch dynamic int8 quantizes. "
            f"Try ort-int8 on an ONNX export ({command('export', checkout.ref, to='onnx')}), "
            "or prune."
        )
    float_before = _float_bytes(prep.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        qmodel = torch.ao.quantization.quantize_dynamic(prep.model, qconfig, dtype=torch.qint8)
    qmodel.eval()
    names = {t.__name__ for t in wanted}
    quantized = Counter(
        type(m).__name__
        for m in qmodel.modules()
        if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")
        and type(m).__name__ in names
    )
    kept = Counter(
        type(m).__name__
        for m in qmodel.modules()
        if not list(m.children())
        and not type(m).__module__.startswith("torch.ao.nn")
        and any(True for _ in m.parameters(recurse=False))
    )
    # The checks compare the trace with the quantized eager model, not the float one: the
    # float-vs-int8 difference is fidelity, which the core measures against the parent.
    float_cases = prep.cases
    with torch.no_grad():
        prep.cases = [
            (feeds, name_outputs(qmodel(*tensors(feeds)), prep.output_names))
            for feeds, _ in float_cases
        ]
    prep.model = qmodel
    path = Path(workdir) / "model.torchscript"
    trace_report = trace_checked(
        prep, f"the int8 {checkout.ref}", path, "export it to ONNX and use ort-int8 instead"
    )
    files = {path.name: "model"}
    copy_kept(prep, workdir, files)
    report = {
        "method": "torch.ao.quantization.quantize_dynamic, qint8 weights, dynamic activations",
        "layers": options.get("layers") or "linear",
        "weight_scales": "per output channel (Linear); per tensor (LSTM)",
        "found_modules": dict(found),
        "quantized_modules": dict(quantized),
        "float_modules_kept": dict(kept),
        "float_bytes_before": float_before,
        "float_bytes_left": _float_bytes(qmodel),
        "check_cosine_vs_float": _cosine(float_cases, prep.cases),
        "quantized_engine": torch.backends.quantized.engine,
        **trace_report,
    }
    return Artifact(
        format="torchscript",
        files=files,
        signature=prep.signature,
        config=dict(prep.config),
        report=report,
    )


def _cosine(expected: list, got: list) -> float:
    """Worst row cosine between float and int8 outputs on the check cases (token states
    mean-pooled over the mask, as the fidelity evaluator does); a first look only, the
    core's fidelity figures on many more inputs are the ones that count."""
    from maas_lab.evaluation import cosines, main_output

    worst = 1.0
    for (feeds, a), (_, b) in zip(expected, got, strict=True):
        sims = cosines(main_output(a, feeds), main_output(b, feeds))
        worst = min(worst, float(sims.min()))
    return round(worst, 6)
