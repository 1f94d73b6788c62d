"""Built-in plugin: ONNX models opened as onnxruntime sessions (CPU by default)."""

from __future__ import annotations

from pathlib import Path

from maas_lab import Component, Param, hookimpl
from maas_lab.errors import BackendUnavailable, UsageError

__version__ = "0.1.0"


def validate_onnx(files: dict[str, Path], config: dict) -> None:
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable(
            "Checking ONNX files needs `pip install 'maas-lab[onnx]'`."
        ) from None
    models = [p for n, p in files.items() if n.endswith(".onnx")]
    if len(models) != 1:
        raise UsageError(f"An ONNX version needs exactly one .onnx file; got {len(models)}.")
    try:
        proto = onnx.load_model(str(models[0]), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise UsageError(f"{models[0].name} is not a valid ONNX model: {exc}.") from None


def load_onnx(checkout, options: dict):
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable(
            "Running ONNX models needs `pip install 'maas-lab[onnx]'`."
        ) from None
    (path,) = [checkout.dir / f["name"] for f in checkout.files if f["name"].endswith(".onnx")]
    so = ort.SessionOptions()
    if options["threads"]:
        so.intra_op_num_threads = options["threads"]
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@hookimpl
def maas_loaders(register):
    register(
        Component(
            name="onnxruntime",
            description="ONNX model as an onnxruntime InferenceSession (CPU)",
            formats=("onnx",),
            run=load_onnx,
            validate=validate_onnx,
            params=(Param("threads", "int", 0, "intra-op threads; 0 lets onnxruntime choose"),),
        )
    )
