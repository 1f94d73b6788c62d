"""What the ``onnxruntime`` loader does: check an ONNX version (the model, and its external
data files, which must be files of the version) before it is stored, and open it as an
onnxruntime ``InferenceSession`` on CPU.

onnx and onnxruntime are imported only when a version is checked or loaded.
"""

from __future__ import annotations

from pathlib import Path

from maas_lab.errors import BackendUnavailable, UsageError


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
    from .external import check_external_data

    try:
        onnx.load_model(str(models[0]), load_external_data=False)
    except Exception as exc:
        raise UsageError(f"{models[0].name} is not a valid ONNX model: {exc}.") from None
    check_external_data(models[0], allowed=set(files))  # before anything reads the data
    try:
        # By path, so external data resolves beside the model (and models over 2 GB work).
        onnx.checker.check_model(str(models[0]))
    except Exception as exc:
        raise UsageError(f"{models[0].name} is not a valid ONNX model: {exc}.") from None


def load_onnx(checkout, options: dict):
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable(
            "Running ONNX models needs `pip install 'maas-lab[onnx]'`."
        ) from None
    from .external import check_external_data

    (path,) = [checkout.dir / f["name"] for f in checkout.files if f["name"].endswith(".onnx")]
    check_external_data(path, allowed={f["name"] for f in checkout.files})  # before any session
    so = ort.SessionOptions()
    if options["threads"]:
        so.intra_op_num_threads = options["threads"]
    if not options.get("spin", True):
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
