"""Built-in plugin: ONNX models opened as onnxruntime sessions (CPU by default), their
runner, and the exporter from torch factory models and Hugging Face encoders to ONNX.

onnx, onnxruntime and torch are imported by ``loaders``, ``runner`` and ``exporter`` on use
only. This module holds only the parameter schemas, the Component declarations and the hook
implementations. Modules of this package import downward only, never this one:
``__init__ -> loaders``, and on use ``runner``, ``exporter``, ``quantize``;
``exporter -> fusion, runner``; ``quantize -> external, runner, smooth``; ``runner -> loaders``;
``loaders -> external``. Across plugins, ``exporter`` and ``runner`` use ``maas_torch``
(signatures, exporters) and ``maas_hf.text`` (tokenizers); neither imports this package.
"""

from __future__ import annotations

from pathlib import Path

from maas_lab import Component, Param, hookimpl
from maas_lab.errors import BackendUnavailable

from .loaders import load_onnx, validate_onnx

# The plugin contract this plugin was written for (docs/contract.md).
MAAS_LAB_CONTRACT = "1.0"

__version__ = "0.1.0"


def _run_onnx(checkout, options):
    from .runner import run_onnx

    return run_onnx(checkout, options)


def _export_onnx(checkout, options, workdir):
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"Exporting to ONNX needs {exc.name}: `pip install 'maas-lab[torch,onnx]'`."
        ) from None
    from .exporter import export_onnx

    return export_onnx(checkout, options, Path(workdir))


def _quantize(checkout, options, workdir, context):
    from .quantize import quantize

    return quantize(checkout, options, Path(workdir), context)


THREADS = Param("threads", "int", 0, "intra-op threads; 0 lets onnxruntime choose")
SPIN = Param(
    "spin",
    "bool",
    True,
    "idle intra-op threads busy-wait for the next call (quicker back-to-back calls; a server "
    "turns it off so they leave the cores to its event loop)",
)


@hookimpl
def maas_loaders(register):
    register(
        Component(
            name="onnxruntime",
            description="ONNX model as an onnxruntime InferenceSession (CPU)",
            formats=("onnx",),
            run=load_onnx,
            validate=validate_onnx,
            params=(THREADS,),
        )
    )


@hookimpl
def maas_serving_backends(register):
    register(
        Component(
            name="onnxruntime",
            description="onnxruntime session (CPU); signature read from the model itself",
            formats=("onnx",),
            run=_run_onnx,
            params=(THREADS, SPIN),
        )
    )


@hookimpl
def maas_exporters(register):
    from maas_torch import INPUT_DTYPE, INPUT_SHAPE

    register(
        Component(
            name="onnx",
            description="ONNX via torch.onnx (dynamo, else TorchScript-based), run-checked; "
            "transformer encoders get onnxruntime's fused ops",
            formats=("torch", "hf"),
            produces="onnx",
            run=_export_onnx,
            params=(
                Param(
                    "opset",
                    "int",
                    None,
                    "ONNX opset version to write (default 18; 17 for a fused transformer, "
                    "the newest onnxruntime's fusions handle)",
                ),
                Param(
                    "exporter",
                    "str",
                    "auto",
                    "torch.onnx path: dynamo, torchscript, or auto (dynamo, falling back to "
                    "torchscript if its graph fails the checks; torchscript first when "
                    "fusing)",
                    choices=("auto", "dynamo", "torchscript"),
                ),
                Param(
                    "pooling",
                    "str",
                    "none",
                    "hf text encoders: mean bakes mean pooling + L2 norm into the graph "
                    "(output sentence_embedding); none keeps last_hidden_state",
                    choices=("none", "mean"),
                ),
                Param(
                    "fuse",
                    "bool",
                    True,
                    "transformer encoders onnxruntime's optimizer knows (BERT, RoBERTa, "
                    "DistilBERT...): write its fused Attention, SkipLayerNormalization, "
                    "BiasGelu... ops, exported through the TorchScript path (faster on CPU, "
                    "parity checked); other models are exported as they are",
                ),
                Param(
                    "optimize",
                    "bool",
                    False,
                    "store onnxruntime's basic offline graph optimisation of the export",
                ),
                INPUT_SHAPE,
                INPUT_DTYPE,
            ),
        )
    )


@hookimpl
def maas_compressors(register):
    register(
        Component(
            name="ort-int8",
            description="onnxruntime int8: dynamic (per-channel weights) or static QDQ with "
            "calibration, after smoothing activation outliers; --max-drop keeps the most "
            "sensitive layers in float",
            formats=("onnx",),
            produces="onnx",
            run=_quantize,
            params=(
                Param(
                    "static",
                    "bool",
                    False,
                    "static QDQ quantization of weights and "
                    "activations, calibrated on --calibration (else --data, else built-in "
                    "sentences)",
                ),
                Param(
                    "per_channel",
                    "bool",
                    True,
                    "one scale per output channel of each "
                    "weight (much better fidelity than one per tensor)",
                ),
                Param(
                    "calibration_rows",
                    "int",
                    128,
                    "rows or sentences used to calibrate static activation ranges and --smooth",
                ),
                Param(
                    "smooth",
                    "float",
                    0.7,
                    "SmoothQuant alpha: before quantizing, divide MatMul "
                    "input channels by max|x|^alpha / max|w|^(1-alpha) and scale the weight "
                    "rows to match (the float model is unchanged), where that lowers the "
                    "simulated int8 error; calibrated on --calibration, else --data, else "
                    "built-in sentences (skipped, with a note, without any); 0 disables",
                ),
                Param(
                    "outliers",
                    "int",
                    2,
                    "with calibration data: a MatMul input may instead send "
                    "its N largest channels through a small float MatMul, where that "
                    "simulates far better than smoothing (MiniLM's FFN down projections); "
                    "0 disables",
                ),
                Param(
                    "exclude",
                    "str",
                    None,
                    "comma-separated node names to keep in float (the budget search adds to these)",
                ),
                Param(
                    "sensitivity_rows",
                    "int",
                    16,
                    "--max-drop: sentences or rows used to "
                    "rank layers by how much quantizing each alone costs",
                ),
            ),
        )
    )
