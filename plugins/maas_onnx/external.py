"""External data of an ONNX model must stay inside its own folder.

An ONNX file can name other files that hold its weights (``external_data`` entries with a
``location``). onnxruntime opens whatever path is written there, so a hostile model could
make it read any file on the machine. Every location is checked here, from the model's
protobuf alone, before any session is created.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from maas_lab.errors import UsageError


def _tensors(message):
    """Every TensorProto anywhere in an ONNX message: initializers, sparse initializers,
    node attributes (single, repeated, sparse), subgraphs, functions, training info.

    Walks every message field generically, so a place added to the format later is still
    searched: a check that lists places misses the one it forgot.
    """
    from onnx import TensorProto

    if isinstance(message, TensorProto):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        for item in (value,) if hasattr(value, "ListFields") else value:  # one, or repeated
            yield from _tensors(item)


def external_locations(model) -> list[str]:
    from onnx import TensorProto

    out = []
    for t in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            out += [e.value for e in t.external_data if e.key == "location"]
    return out


def check_external_data(path: Path, allowed: set[str] | None = None) -> list[str]:
    """Refuse locations that are absolute, climb out with '..', or (when ``allowed`` is
    given) are not among the version's files. Returns the distinct locations."""
    import onnx

    if not _may_name_files(Path(path)):
        return []
    model = onnx.load_model(str(path), load_external_data=False)
    locations = sorted(set(external_locations(model)))
    for loc in locations:
        # Lexical checks only: a version's files are symlinks into the blob store, so
        # resolving them would always land "outside"; membership in ``allowed`` does the rest.
        pure = PurePosixPath(loc.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or ":" in loc or not loc:
            raise UsageError(
                f"{path.name} stores weights at {loc!r}, outside its own folder; refusing to "
                "open it. Re-export it with its external data beside the model."
            )
        if allowed is not None and pure.as_posix() not in allowed:
            raise UsageError(
                f"{path.name} needs external data {loc!r}, which is not part of this version. "
                "Register the data file with the model."
            )
    return locations


def _may_name_files(path: Path) -> bool:
    """False when no byte string ``location`` occurs in the file, so that no tensor of it can
    name an external file: the model then need not be parsed to be checked (a budget search
    opens dozens of 90 MB candidates, and parsing each took longer than this scan)."""
    import mmap

    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return True  # let the parser say what is wrong with an empty file
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(b"location") >= 0
