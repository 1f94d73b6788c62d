"""What a person offers to register, turned into a version's files, format, config and card.

Checks here run before any plugin or the registry is touched: weights must parse as
safetensors (in plain Python, so a pickle never runs), and pickle-format files are refused
by suffix (any case) and by content. Every file, whatever the source, goes through
``check_source_file``: no links out of the folder it was offered from, no special files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .formats import pickle_kind, safetensors_header
from .hints import option
from .parsing import parse_config
from .registry.store import allowed_roots, check_source_file, read_card

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# Formats whose own validator opens their archives (a TorchScript zip holds data.pkl).
OWN_ARCHIVE_CHECK = ("torchscript", "torch-export")


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
            f"Give exactly one of {option('from_hf', 'DIR')}, {option('from_torch', 'FACTORY')}, "
            f"{option('from_file', 'FILE')}."
        )
    stored_config = parse_config(config)
    card_text = None
    if card is not None:
        card_text = read_card(Path(card), str(card))
    if from_hf is not None:
        fmt = format or "hf"
        files = hf_files(Path(from_hf))
        readme = [s for s in files if s.role == "card"]
        if card_text is None and readme:
            card_text = read_card(readme[0].source, readme[0].name, readme[0].source.parent)
    elif from_torch is not None:
        fmt = format or "torch"
        if weights is None:
            raise UsageError(
                f"{option('from_torch')} needs {option('weights', 'FILE.safetensors')}."
            )
        path = check_source_file(Path(weights), "Weights file")
        safetensors_header(path)
        stored_config = {"factory": from_torch, "kwargs": stored_config}
        files = [FileSpec(path, "model.safetensors", "weights")]
    else:
        # The first file is the model; any others travel with it (e.g. ONNX external data).
        given = [from_file] if isinstance(from_file, str | os.PathLike) else list(from_file)
        given = [Path(p).expanduser() for p in given]
        paths = [check_source_file(p, "File") for p in given]
        fmt = format or {".onnx": "onnx"}.get(given[0].suffix.lower())
        if fmt is None:
            raise UsageError(f"Cannot tell the format of {given[0].name}; pass {option('format')}.")
        # Only the model file could be handed to an unpickler; companions are raw bytes.
        if fmt not in OWN_ARCHIVE_CHECK:
            kind = "a pickle suffix" if given[0].suffix.lower() in PICKLE_SUFFIXES else None
            kind = kind or pickle_kind(paths[0])
            if kind:
                raise UsageError(
                    f"{given[0].name} looks like a pickle ({kind}); maas_lab never unpickles."
                )
        files = [
            FileSpec(p, g.name, "model" if i == 0 else "file")
            for i, (g, p) in enumerate(zip(given, paths, strict=True))
        ]
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


def _walk(folder: Path):
    """``(path, relative name)`` of every non-hidden entry that is not a folder, sorted.

    Links to folders are followed only where they stay inside ``folder`` (checked by
    ``check_source_file`` on each file); anything else is yielded, to be checked and refused.
    """
    seen: set[str] = set()
    stack = [(folder, "")]
    out = []
    while stack:
        current, prefix = stack.pop()
        real = os.path.realpath(current)
        if real in seen:
            continue
        seen.add(real)
        for entry in os.scandir(current):
            if entry.name.startswith("."):
                continue
            path, rel = Path(entry.path), prefix + entry.name
            if entry.is_dir():  # follows a link: where it lands is checked just below
                if not any(
                    Path(os.path.realpath(path)).is_relative_to(r) for r in allowed_roots(folder)
                ):
                    raise UsageError(
                        f"{rel} in {folder} is a link to a folder outside {str(folder)!r}; "
                        "refusing it. Copy the files themselves into the model folder."
                    )
                stack.append((path, rel + "/"))
            else:
                out.append((path, rel))
    return sorted(out, key=lambda item: item[1])


def hf_files(folder: Path) -> list:
    from .registry.registry import FileSpec

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{option('from_hf')} {str(folder)!r} is not a folder.")
    specs = []
    for path, rel in _walk(folder):
        real = check_source_file(path, "File", folder, f"{rel} in {folder}")
        kind = "a pickle suffix" if path.suffix.lower() in PICKLE_SUFFIXES else None
        if kind is None and not rel.endswith(".safetensors"):
            kind = pickle_kind(real)
        if kind:
            raise UsageError(
                f"{rel} in {folder} holds pickle-format weights ({kind}); maas_lab never "
                "unpickles. Remove it and keep the .safetensors weights (transformers saves "
                "them with save_pretrained(..., safe_serialization=True))."
            )
        role = hf_role(rel)
        if role == "weights":
            safetensors_header(real)
        specs.append(FileSpec(real, rel, role))
    if not any(s.role == "weights" for s in specs):
        raise UsageError(f"{folder} has no .safetensors weights; save the model with safetensors.")
    return specs
