"""A version as a KServe ``InferenceService`` (serving.kserve.io/v1beta1) and its storage.

The runtime is KServe's Triton one (``kserve-tritonserver``), so the storage is the very
Triton repository :mod:`.triton` writes, and the service answers the same Open Inference
Protocol v2 as ``maas serve``. It is also the runtime KServe's own ``ClusterServingRuntime``
list gives ``modelFormat: onnx`` (KServe has no separate ONNX Runtime server any more), and
it loads TorchScript (``pytorch``, named explicitly: not auto-selected) and the tokenizer
ensemble of a text model (``triton``, since the repository then holds a Python model too).

The manifest is YAML written here (no YAML library needed): block mappings whose strings
are JSON-quoted, which YAML reads as the same strings.
"""

from __future__ import annotations

import json
import re

RUNTIME = "kserve-tritonserver"
MODEL_FORMATS = {
    "onnx": ("onnx", "1"),
    "torchscript": ("pytorch", "1"),
    "ensemble": ("triton", "2"),
}
STORAGE_FOLDER = "repository"  # beside the manifest: what storageUri must hold
MANIFEST = "inferenceservice.yaml"


def service_name(model: str) -> str:
    """A Kubernetes name (DNS-1035 label) for the model's service: lower case letters,
    digits and '-', starting with a letter; short enough for KServe's derived host names."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "m-" + name
    return name[:45].rstrip("-")


def default_storage_uri(model: str) -> str:
    return f"pvc://maas-models/{service_name(model)}"


def manifest(model: str, kind: str, storage_uri: str) -> dict:
    """The InferenceService for ``model`` (``kind``: onnx, torchscript or ensemble)."""
    fmt, version = MODEL_FORMATS[kind]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": service_name(model),
            "labels": {"app.kubernetes.io/managed-by": "maas_lab"},
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {
                    "modelFormat": {"name": fmt, "version": version},
                    "runtime": RUNTIME,
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                },
            }
        },
    }


def to_yaml(value, depth: int = 0) -> str:
    """Block-style YAML for dicts, lists, strings, numbers and booleans."""
    pad = "  " * depth
    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = k if re.fullmatch(r"[A-Za-z0-9_./-]+", k) else json.dumps(k)
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(v, depth + 1).rstrip("\n"))
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
    elif isinstance(value, list):
        for v in value:
            body = to_yaml(v, depth + 1).lstrip() if isinstance(v, (dict, list)) else _scalar(v)
            lines.append(f"{pad}- {body.rstrip()}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines) + "\n"


def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, (bool, int, float)):
        return json.dumps(v)
    if isinstance(v, (dict, list)):
        return "{}" if isinstance(v, dict) else "[]"
    return json.dumps(str(v))
