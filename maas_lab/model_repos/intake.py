"""A Triton model repository read back into a registry, so ``maas serve`` can serve what
``export-repo`` wrote and the answers can be compared with the original's.

Only ONNX models are taken in: an ONNX file is data that onnxruntime interprets, while a
TorchScript ``model.pt`` is a program (its code runs when it is loaded), and a folder from
elsewhere is not something we may run code from. An ensemble that chains a Python-backend
tokenizer (``tokenizer.json`` beside its ``model.py``, which is never imported) into one
ONNX model comes back as one text version named after the ensemble, with the tokenizer
files attached, which is how ``maas serve`` serves sentences. Each version goes through the
checks every new version passes (:func:`maas_lab.intake.check`) before it is stored.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..intake import check
from ..registry import open as open_registry
from ..registry.refs import check_model_name
from ..registry.registry import FileSpec
from ..registry.store import check_source_file
from ..serving.wire import ProtocolError, numpy_dtype
from . import REPEATED
from .pbtxt import loads

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


# Triton configs are a few kilobytes; the parser is not meant for megabytes of them.
MAX_CONFIG_BYTES = 256 * 1024


def read_configs(folder: Path) -> dict[str, dict]:
    """``{model name: parsed config.pbtxt}`` of every model in the repository."""
    configs = {}
    for path in sorted(Path(folder).glob("*/config.pbtxt")):
        name = check_model_name(path.parent.name)
        check_source_file(path, "Model config", folder)
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(
                f"{name}/config.pbtxt is {path.stat().st_size:,} bytes; a model config past "
                f"{MAX_CONFIG_BYTES:,} is not one this command reads."
            )
        try:
            configs[name] = loads(path.read_text(), REPEATED)
        except (RecursionError, IndexError, TypeError, KeyError, ValueError) as exc:
            raise UsageError(
                f"{name}/config.pbtxt is not a Triton config this command can read "
                f"({type(exc).__name__}: {str(exc)[:120]})."
            ) from None
    if not configs:
        raise UsageError(f"{folder} holds no <model>/config.pbtxt: it is not a Triton repository.")
    return configs


def register_repository(folder, root=None) -> list[str]:
    """Register the ONNX models (and tokenizer ensembles) of the Triton repository
    ``folder`` in the registry at ``root``; returns the new versions' references. A config
    the reader cannot make sense of is refused in one line, whatever is wrong inside it."""
    folder = Path(folder).absolute()
    configs = read_configs(folder)
    try:
        plans = _plans(folder, configs)
    except (RecursionError, IndexError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{folder} holds a config.pbtxt that is not a Triton config this command can "
            f"read ({type(exc).__name__}: {str(exc)[:120]})."
        ) from None
    reg = open_registry(root)  # only now: a refused repository leaves no registry behind
    refs = []
    for name, files, number, sig in plans:
        grants = check(
            reg,
            "onnx",
            {s.name: s.source for s in files},
            {},
            how="read from a Triton repository",
        )
        row = reg.register(
            name,
            files,
            "onnx",
            config={},
            signature=sig,
            tags={"triton_version": str(number), "source": "triton-repository"},
            trusted_code=grants,
        )
        refs.append(row["ref"])
    return refs


def _plans(folder: Path, configs: dict) -> list[tuple[str, list, int, dict]]:
    """What to register, model by model, from the parsed configs."""
    plans: list[tuple[str, list[FileSpec], int, dict]] = []
    inside: set[str] = set()
    for name, config in configs.items():
        if config.get("platform") != "ensemble":
            continue
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        models = [configs.get(s["model_name"]) for s in steps]
        if len(steps) != 2 or None in models or models[0].get("backend") != "python":
            raise UsageError(
                f"{name}: only a tokenizer-into-ONNX ensemble (two steps) can be read back."
            )
        tok_name, onnx_name = (s["model_name"] for s in steps)
        number = _only_version(folder, onnx_name, models[1])
        files = _onnx_files(folder, onnx_name, models[1], number)
        tok_dir = folder / tok_name / "1"
        for f in TOKENIZER_FILES:
            if (tok_dir / f).exists():
                files.append(
                    FileSpec(check_source_file(tok_dir / f, "File", folder), f, "tokenizer")
                )
        plans.append((name, files, number, signature(models[1])))
        inside |= {tok_name, onnx_name}
    for name, config in configs.items():
        if name in inside or config.get("platform") == "ensemble":
            continue
        number = _only_version(folder, name, config)
        plans.append((name, _onnx_files(folder, name, config, number), number, signature(config)))
    return plans


def signature(config: dict) -> dict:
    """Our signature from a Triton config: its batch dim (``max_batch_size`` > 0) is
    ``batch``, other dynamic dims ``dim_<i>``. Recorded for the listing and a later export;
    the ONNX runner still reads the tensors from the model file, its authority."""
    batched = int(config.get("max_batch_size", 0)) > 0

    def entry(t):
        datatype = str(t["data_type"]).removeprefix("TYPE_")
        try:
            dtype = numpy_dtype("BYTES" if datatype == "STRING" else datatype)
        except ProtocolError:
            raise UsageError(
                f"{config.get('name')}: {t['data_type']} is no type we serve."
            ) from None
        shape = ["batch"] if batched else []
        start = len(shape)
        shape += [d if d >= 0 else f"dim_{i + start}" for i, d in enumerate(t.get("dims", []))]
        return {
            "name": t["name"],
            "dtype": "str" if dtype.kind == "O" else dtype.name,
            "shape": shape,
        }

    return {
        "inputs": [entry(t) for t in config.get("input", [])],
        "outputs": [entry(t) for t in config.get("output", [])],
    }


def _only_version(folder: Path, name: str, config: dict) -> int:
    platform = config.get("platform") or config.get("backend")
    if platform not in ("onnxruntime_onnx", "onnxruntime"):
        why = (
            "a TorchScript model.pt is a program that runs when loaded, and a folder from "
            "elsewhere is not code we run"
            if platform in ("pytorch_libtorch", "pytorch")
            else "only ONNX models are read back"
        )
        raise UsageError(f"{name} is {platform}: {why}. Register the ONNX export instead.")
    numbers = sorted(int(p.name) for p in (folder / name).iterdir() if p.name.isdigit())
    if not numbers:
        raise UsageError(f"{name} has no version folder (<name>/<number>/model.onnx).")
    return numbers[-1]


def _onnx_files(folder: Path, name: str, config: dict, number: int) -> list[FileSpec]:
    version = folder / name / str(number)
    model = config.get("default_model_filename", "model.onnx")
    files = [
        FileSpec(check_source_file(version / model, "Model file", folder), "model.onnx", "model")
    ]
    for path in sorted(version.rglob("*")):
        rel = path.relative_to(version).as_posix()
        if path.is_file() and rel != model:  # external data the graph names by path
            files.append(FileSpec(check_source_file(path, "File", folder), rel, "external-data"))
    return files
