"""A version as a Triton model repository: ``<name>/config.pbtxt`` and ``<name>/<version>/``.

The configuration comes from the version's recorded signature, with the same datatype
mapping our own server's ``/config`` answer uses (:func:`maas_lab.serving.wire.triton_datatype`,
``BYTES`` spelt ``STRING``), and the batching defaults of ``maas serve``. Triton batches
along the first dim of every input and output at once (``max_batch_size`` > 0, ``dims``
without it), so a signature either leads every tensor with a dynamic dim or none; anything
else is refused with the reason, never written as a config Triton would reject at load.

A text model (an ONNX version carrying ``tokenizer.json``, taking ``input_ids``) becomes an
ensemble: ``<name>`` takes sentences (``text``, TYPE_STRING) and chains a Python-backend
tokenizer (``<name>_tokenizer``, the same ``tokenizers`` pipeline our server runs) into the
ONNX model (``<name>_onnx``), so clients call it as they call ``maas serve``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..errors import UsageError
from ..hints import command, option
from ..registry.refs import check_model_name
from ..schemas import SERVE
from ..serving.text import MAX_TOKENS
from ..serving.wire import ProtocolError, oip_dims
from ..serving.wire import triton_datatype as wire_triton_datatype
from .pbtxt import Enum, dumps

# format -> (Triton platform, file name Triton loads in the version folder)
PLATFORMS = {
    "onnx": ("onnxruntime_onnx", "model.onnx"),
    "torchscript": ("pytorch_libtorch", "model.pt"),
}
ONNX_ROLES = ("model", "external-data")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_LIBTORCH_NAME = re.compile(r".+__\d+\Z")
HERE = Path(__file__).parent


def triton_datatype(dtype: str) -> str:
    """``TYPE_FP32`` for ``float32``: the protocol datatype, with ``BYTES`` spelt ``STRING``
    as Triton's configuration spells it."""
    try:
        return "TYPE_" + wire_triton_datatype(dtype)
    except ProtocolError as exc:
        raise UsageError(f"{exc} Triton's config has no type for it either.") from None


def batching(ref: str, signature: dict) -> bool:
    """Whether Triton may batch this signature (every tensor leads with a dynamic dim);
    ``UsageError`` naming the tensor where Triton's config cannot say what the signature says."""
    tensors = [("input", t) for t in signature["inputs"]] + [
        ("output", t) for t in signature["outputs"]
    ]
    leading = {
        t["name"]: bool(t["shape"]) and not isinstance(t["shape"][0], int) for _, t in tensors
    }
    if not any(leading.values()):
        return False
    batch = next(t["shape"][0] for _, t in tensors if leading[t["name"]])
    for kind, t in tensors:
        if not t["shape"]:
            raise UsageError(
                f"{ref}: {kind} {t['name']!r} is a scalar (rank 0) while other tensors have a "
                "batch dim; Triton gives every tensor of a batching model that leading dim, so "
                "its config cannot describe this. Export a model whose outputs keep the batch dim."
            )
        if not leading[t["name"]]:
            raise UsageError(
                f"{ref}: {kind} {t['name']!r} has shape {t['shape']} while other tensors lead "
                f"with the dynamic dim {batch!r}; Triton batches every input and output along "
                "its first dim or none, so its config cannot describe this mix."
            )
        later = [i for i, d in enumerate(t["shape"]) if i and d == batch]
        if later:
            raise UsageError(
                f"{ref}: {kind} {t['name']!r} has the batch dim {batch!r} again at position "
                f"{later[0]} of {t['shape']}; Triton batches along the first dim only, so its "
                "config cannot tie another dim to it."
            )
    return True


def model_config(
    name: str, platform: str, signature: dict, batched: bool, version: int, rename=None
) -> dict:
    """The ``config.pbtxt`` of one model, as the dict :func:`pbtxt.dumps` writes."""
    rename = rename or {}
    max_batch = SERVE.param("max_batch").default if batched else 0

    def entry(t):
        shape = oip_dims(t["shape"])
        return {
            "name": rename.get(t["name"], t["name"]),
            "data_type": Enum(triton_datatype(t["dtype"])),
            "dims": shape[1:] if batched else shape,
        }

    config = {
        "name": name,
        "platform": platform,
        "max_batch_size": max_batch,
        "version_policy": {"specific": {"versions": [version]}},
        "input": [entry(t) for t in signature["inputs"]],
        "output": [entry(t) for t in signature["outputs"]],
    }
    if batched:
        delay_us = int(SERVE.param("max_delay_ms").default * 1000)
        config["dynamic_batching"] = {"max_queue_delay_microseconds": delay_us}
    return config


def libtorch_names(signature: dict) -> dict[str, str]:
    """TorchScript keeps no tensor names, so Triton's libtorch backend matches them by
    position with names of the form ``<name>__<index>``: our names, given that suffix."""
    out = {}
    for side in ("inputs", "outputs"):
        for i, t in enumerate(signature[side]):
            out[t["name"]] = t["name"] if _LIBTORCH_NAME.match(t["name"]) else f"{t['name']}__{i}"
    return out


def is_text(checkout) -> bool:
    names = [t["name"] for t in (checkout.signature or {}).get("inputs", [])]
    has_tokenizer = any(f["name"] == "tokenizer.json" for f in checkout.files)
    return checkout.format == "onnx" and "input_ids" in names and has_tokenizer


def pad_id(folder: Path) -> int:
    """The pad token's id, as the Hugging Face tokenizer our server uses would pad with."""
    spec = json.loads((folder / "tokenizer.json").read_text())
    if spec.get("padding") and "pad_id" in spec["padding"]:
        return int(spec["padding"]["pad_id"])
    pad = None
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            pad = json.loads((folder / name).read_text()).get("pad_token") or pad
            if pad:
                break
    pad = pad.get("content") if isinstance(pad, dict) else pad
    vocab = spec.get("model", {}).get("vocab", {})
    added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    found = added.get(pad, vocab.get(pad) if isinstance(vocab, dict) else None)
    return int(found) if found is not None else 0


def write(checkout, number: int, name: str, folder: Path, meant: dict) -> list[str]:
    """Write ``checkout`` (version ``number`` of model ``name``) as a Triton repository in
    ``folder``; return what a person should know about it (one line each). Each config
    written is added to ``meant`` (``{path: dict}``), to be read back and compared."""
    check_model_name(name)
    if checkout.signature is None:
        raise UsageError(
            f"{checkout.ref} has no recorded signature, and Triton's config needs its tensors: "
            f"register it again with {option('inputs', flag='--input')} or {option('signature')}."
        )
    platform, file_name = PLATFORMS[checkout.format]
    batched = batching(checkout.ref, checkout.signature)
    notes = []
    if is_text(checkout):
        return _write_ensemble(checkout, number, name, folder, batched, meant)
    names = [t["name"] for t in checkout.signature["inputs"]]
    if "input_ids" in names and any(f["role"] == "tokenizer" for f in checkout.files):
        notes.append(
            f"{name} takes token ids: its tokenizer has no tokenizer.json (a fast tokenizer), "
            "which the Triton tokenizer model needs, so clients tokenize themselves."
        )
    rename = libtorch_names(checkout.signature) if checkout.format == "torchscript" else {}
    model = folder / name
    _copy_model(checkout, model / str(number), file_name)
    config = model_config(name, platform, checkout.signature, batched, number, rename)
    _save(meant, model / "config.pbtxt", config)
    if rename:
        renamed = ", ".join(f"{a} -> {b}" for a, b in rename.items() if a != b)
        notes.append(f"TorchScript keeps no tensor names: Triton's are {renamed}.")
    return notes


def _save(meant: dict, path: Path, config: dict) -> None:
    path.write_text(dumps(config))
    meant[path] = config


def _copy_model(checkout, version_dir: Path, file_name: str) -> None:
    version_dir.mkdir(parents=True)
    for f in checkout.files:
        if f["role"] == "model":
            shutil.copyfile(checkout.path(f["name"]), version_dir / file_name)
        elif f["role"] in ONNX_ROLES and checkout.format == "onnx":
            target = version_dir / f["name"]  # external data: the graph names it by path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkout.path(f["name"]), target)


def _write_ensemble(
    checkout, number: int, name: str, folder: Path, batched: bool, meant: dict
) -> list[str]:
    sig = checkout.signature
    tokens = [t for t in sig["inputs"] if t["name"] in TOKEN_INPUTS]
    if len(tokens) != len(sig["inputs"]) or not batched:
        other = [t["name"] for t in sig["inputs"] if t["name"] not in TOKEN_INPUTS]
        raise UsageError(
            f"{checkout.ref} takes {', '.join(other) or 'unbatched token ids'} besides the "
            "tokenizer's output, which the tokenizer cannot feed: Triton would need a "
            "hand-written ensemble for it."
        )
    onnx_name, tok_name = check_model_name(f"{name}_onnx"), check_model_name(f"{name}_tokenizer")
    max_batch = SERVE.param("max_batch").default
    # the ONNX model, as for any ONNX version
    model = folder / onnx_name
    _copy_model(checkout, model / str(number), "model.onnx")
    config = model_config(onnx_name, "onnxruntime_onnx", sig, True, number)
    _save(meant, model / "config.pbtxt", config)
    # the tokenizer: a Python-backend model whose files are the version's tokenizer files
    tok = folder / tok_name
    (tok / "1").mkdir(parents=True)
    for f in checkout.files:
        if f["role"] == "tokenizer" and "/" not in f["name"]:
            shutil.copyfile(checkout.path(f["name"]), tok / "1" / f["name"])
    shutil.copyfile(HERE / "tokenizer_model.py", tok / "1" / "model.py")
    text = {"name": "text", "data_type": Enum("TYPE_STRING"), "dims": [1]}
    token_outputs = [
        {"name": t["name"], "data_type": Enum(triton_datatype(t["dtype"])), "dims": [-1]}
        for t in tokens
    ]
    params = {"max_length": MAX_TOKENS, "pad_id": pad_id(checkout.dir)}
    tok_config = {
        "name": tok_name,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [text],
        "output": token_outputs,
        "instance_group": [{"kind": Enum("KIND_CPU")}],
        "parameters": [{"key": k, "value": {"string_value": str(v)}} for k, v in params.items()],
    }
    _save(meant, tok / "config.pbtxt", tok_config)

    def pairs(names):
        return [{"key": n, "value": n} for n in names]

    token_names = [t["name"] for t in tokens]
    ensemble = {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [text],
        "output": config["output"],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": tok_name,
                    "model_version": -1,
                    "input_map": pairs(["text"]),
                    "output_map": pairs(token_names),
                },
                {
                    "model_name": onnx_name,
                    "model_version": number,
                    "input_map": pairs(token_names),
                    "output_map": pairs(t["name"] for t in sig["outputs"]),
                },
            ]
        },
    }
    (folder / name / str(number)).mkdir(parents=True)  # Triton wants a version folder here too
    _save(meant, folder / name / "config.pbtxt", ensemble)
    return [
        f"{name} is an ensemble: sentences ('text', TYPE_STRING [batch, 1]) go through "
        f"{tok_name} (Python backend; Triton's Python needs `pip install tokenizers`) into "
        f"{onnx_name}.",
    ]


def refuse_format(checkout, rows: list[dict], target: str) -> None:
    """Refuse a version ``target`` cannot load, naming the versions of the same model it
    can (``rows``: the model's versions), or else the export that would make one."""
    if checkout.format in PLATFORMS:
        return
    name = checkout.ref.split("@")[0]
    ok = [r["ref"] for r in rows if r["format"] in PLATFORMS]
    if ok:
        instead = f"Versions of {name} {target} can load: {', '.join(ok)}."
    else:
        instead = f"Export one first: `{command('export', checkout.ref, to='onnx')}`."
    raise UsageError(
        f"{checkout.ref} is {checkout.format}, which {target} cannot load as it is (it loads "
        f"{' and '.join(PLATFORMS)}). {instead}"
    )
