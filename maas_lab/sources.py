"""What a person offers to register, turned into a version's files, format, config and card.

Checks here run before any plugin or the registry is touched: weights must parse as
safetensors (in plain Python, so a pickle never runs), and pickle-format files are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .formats import safetensors_header
from .parsing import parse_config
from .registry.store import check_source_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


@dataclass
class Source:
    format: str
    files: list = field(default_factory=list)  # FileSpec
    config: dict = field(default_factory=dict)
    card: str | None = None


def collect(
    from_hf: str | os.PathLike | None = None,
    from_torch: str | None = None,
    weights: str | os.PathLike | None = None,
    config: str | dict | None = None,
    from_file: str | os.PathLike | None = None,
    format: str | None = None,
    card: str | os.PathLike | None = None,
) -> Source:
    """Read exactly one source; raise UsageError naming what is missing or wrong."""
    from .registry.registry import FileSpec

    given = [s for s in (from_hf, from_torch, from_file) if s]
    if len(given) != 1:
        raise UsageError(
            "Give exactly one of --from-hf DIR, --from-torch FACTORY, --from-file FILE."
        )
    stored_config = parse_config(config)
    card_text = None
    if card is not None:
        card_text = check_source_file(Path(card), "Model card").read_text(encoding="utf-8")
    if from_hf is not None:
        fmt = format or "hf"
        files = hf_files(Path(from_hf))
        readme = [s for s in files if s.role == "card"]
        if card_text is None and readme:
            card_text = readme[0].source.read_text(encoding="utf-8", errors="replace")
    elif from_torch is not None:
        fmt = format or "torch"
        if weights is None:
            raise UsageError("--from-torch needs --weights FILE.safetensors.")
        path = check_source_file(Path(weights), "Weights file")
        safetensors_header(path)
        stored_config = {"factory": from_torch, "kwargs": stored_config}
        files = [FileSpec(path, "model.safetensors", "weights")]
    else:
        # The first file is the model; any others travel with it (e.g. ONNX external data).
        paths = [from_file] if isinstance(from_file, str | os.PathLike) else list(from_file)
        paths = [check_source_file(Path(p), "File") for p in paths]
        fmt = format or {".onnx": "onnx"}.get(paths[0].suffix.lower())
        if fmt is None:
            raise UsageError(f"Cannot tell the format of {paths[0].name}; pass --format.")
        # Only the model file could be handed to an unpickler; companions are raw bytes.
        if paths[0].suffix.lower() in PICKLE_SUFFIXES and fmt != "torchscript":
            raise UsageError(f"{paths[0].name} looks like a pickle; maas_lab never unpickles.")
        files = [FileSpec(p, p.name, "model" if i == 0 else "file") for i, p in enumerate(paths)]
    return Source(fmt, files, stored_config, card_text)


def hf_role(rel: str) -> str:
    """The role of a file in a Hugging Face folder, from its path relative to the folder."""
    if rel.endswith(".safetensors"):
        return "weights"
    if rel == "config.json":
        return "config"
    if rel.startswith(("tokenizer", "vocab", "special_tokens", "merges", "spiece")):
        return "tokenizer"
    return "card" if rel == "README.md" else "file"


def hf_files(folder: Path) -> list:
    from .registry.registry import FileSpec

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--from-hf {str(folder)!r} is not a folder.")
    specs = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or any(p.startswith(".") for p in rel.split("/")):
            continue
        if path.suffix in PICKLE_SUFFIXES:
            raise UsageError(
                f"{rel} in {folder} holds pickle-format weights; maas_lab never unpickles. "
                "Remove it and keep the .safetensors weights (transformers saves them with "
                "save_pretrained(..., safe_serialization=True))."
            )
        role = hf_role(rel)
        if role == "weights":
            safetensors_header(path)
        specs.append(FileSpec(path, rel, role))
    if not any(s.role == "weights" for s in specs):
        raise UsageError(f"{folder} has no .safetensors weights; save the model with safetensors.")
    return specs
