"""Data for evaluation, calibration and distillation, named the way a person would name it.

A spec is ``sklearn:digits`` (or ``iris``, ``wine``, ``breast_cancer``: bundled with
scikit-learn, nothing downloaded), ``builtin:sentences`` (200 varied English sentences shipped
with maas_lab), a file (``.npz`` with arrays ``x`` and optionally ``y``; ``.npy``; ``.txt``
with one sentence per line), the name of a variable in the notebook (in a ``%maas`` command
only: see :func:`notebook_scope`), or a Python object: ``(x, y)`` arrays, an array, a list
of strings, or a :class:`Dataset`.

Splits are fixed (stratified, seed 0, a quarter held out for test, a tenth of the rest for
validation) so that every version of a model is measured on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .hints import option

SKLEARN = ("digits", "iris", "wine", "breast_cancer")
_SENTENCES = Path(__file__).with_name("data") / "sentences.txt"

# The notebook's variables, which a spec may name: set by the %maas magic for one command
# (see ``notebook_scope``) and unset otherwise, so a plain Python call never reads them.
notebook_variables: ContextVar[Mapping[str, Any] | None] = ContextVar(
    "maas_lab_notebook_variables", default=None
)


@contextmanager
def notebook_scope(variables: Mapping[str, Any]) -> Iterator[None]:
    """Within this block, and nowhere else, ``--data NAME`` and ``--array NAME`` may name
    one of ``variables`` (the notebook's, in ``%maas``)."""
    token = notebook_variables.set(variables)
    try:
        yield
    finally:
        notebook_variables.reset(token)


def notebook_variable(name: str) -> tuple[bool, Any]:
    """``(True, value)`` if ``name`` is a notebook variable in the current command's scope,
    else ``(False, None)``."""
    variables = notebook_variables.get()
    if variables is None or not isinstance(name, str) or name not in variables:
        return False, None
    return True, variables[name]


@dataclass
class Dataset:
    """Rows of features ``x`` with optional labels ``y``, or sentences ``texts``."""

    name: str
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.x)

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def __repr__(self) -> str:
        if self.texts is not None:
            return f"<Dataset {self.name}: {len(self.texts)} sentences>"
        labels = f", {len(np.unique(self.y))} classes" if self.labelled else ""
        return f"<Dataset {self.name}: x {tuple(self.x.shape)} {self.x.dtype}{labels}>"

    def split(self, part: str) -> Dataset:
        """``train``, ``val`` or ``test``: the same rows every time for the same data."""
        if part not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {part!r}")
        n = len(self)
        rng = np.random.default_rng(0)
        order = rng.permutation(n)
        if self.labelled:  # stratified: each class in the same proportion in every split
            order = _stratified_order(self.y, rng)
        n_test = max(1, n // 4)
        n_val = max(1, (n - n_test) // 10)
        rows = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }[part]
        rows = np.sort(rows)
        if self.texts is not None:
            return Dataset(f"{self.name}[{part}]", texts=[self.texts[i] for i in rows])
        return Dataset(
            f"{self.name}[{part}]", self.x[rows], None if self.y is None else self.y[rows]
        )


def _stratified_order(y: np.ndarray, rng) -> np.ndarray:
    """A permutation in which every prefix holds the classes in about their proportions."""
    keys = np.empty(len(y))
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        idx = idx[rng.permutation(len(idx))]
        keys[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return np.argsort(keys, kind="stable")


def sentences() -> list[str]:
    return [s for s in _SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]


def load(spec: Any, what: str = "data") -> Dataset:
    """A :class:`Dataset` from a spec (see the module docstring); errors say what would work
    and name the option ``what`` (``data``, ``calibration``) as the person gave it."""
    what = option(what)
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, str):
        return _from_string(spec.strip(), what)
    return _from_object(spec, "(python object)", what)


def _from_string(spec: str, what: str) -> Dataset:
    kind, sep, rest = spec.partition(":")
    if sep and kind == "sklearn":
        if rest not in SKLEARN:
            raise UsageError(
                f"{what} {spec!r}: unknown scikit-learn dataset. Bundled ones: "
                + ", ".join(f"sklearn:{n}" for n in SKLEARN)
                + "."
            )
        return _sklearn(rest)
    if sep and kind == "builtin":
        if rest != "sentences":
            raise UsageError(f"{what} {spec!r}: the only builtin dataset is builtin:sentences.")
        return Dataset(spec, texts=sentences())
    found, value = notebook_variable(spec)
    if found:
        return _from_object(value, spec, what)
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_file(path, what)
    if spec in SKLEARN:
        return _sklearn(spec)
    raise UsageError(
        f"{what} {spec!r} is neither a file nor a known dataset. Give sklearn:digits, "
        "sklearn:iris, builtin:sentences, a .npz/.npy/.txt file, or the name of a notebook "
        "variable holding (x, y), an array or a list of sentences."
    )


def _sklearn(name: str) -> Dataset:
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise UsageError(f"sklearn:{name} needs scikit-learn: pip install scikit-learn.") from None
    x, y = getattr(skd, f"load_{name}")(return_X_y=True)
    if name == "digits":
        x = x / 16.0  # pixel intensities 0..16 scaled to 0..1, as models are trained on them
    return Dataset(f"sklearn:{name}", np.asarray(x, np.float32), np.asarray(y, np.int64))


def _from_file(path: Path, what: str) -> Dataset:
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
            texts = [s for s in lines if s]
            if not texts:
                raise UsageError(f"{what} {path} holds no sentences (one per line).")
            return Dataset(str(path), texts=texts)
        if suffix == ".npy":
            return _from_object(np.load(path, allow_pickle=False), str(path), what)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise UsageError(
                        f"{what} {path} has arrays {z.files}; it needs 'x' (and 'y' for labels)."
                    )
                return _from_object((z["x"], z["y"]) if "y" in z.files else z["x"], str(path), what)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path} cannot be read: {exc}.") from None
    raise UsageError(f"{what} {path}: use .npz (x, y), .npy or .txt (one sentence per line).")


def _from_object(obj: Any, name: str, what: str) -> Dataset:
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(s, str) for s in obj):
        return Dataset(name, texts=list(obj))
    if isinstance(obj, tuple) and len(obj) == 2:
        x, y = (np.asarray(a) for a in obj)
        if len(x) != len(y):
            raise UsageError(f"{what} {name}: x has {len(x)} rows but y has {len(y)}.")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"{what} {name}: y must be one integer class label per row.")
        return Dataset(name, _features(x, name, what), y.astype(np.int64))
    try:
        arr = np.asarray(obj)
    except Exception:
        arr = None
    if arr is None or arr.dtype == object or arr.ndim == 0:
        raise UsageError(
            f"{what} {name}: cannot use a {type(obj).__name__}. Give (x, y) arrays, an array "
            "of inputs, or a list of sentences."
        )
    return Dataset(name, _features(arr, name, what))


def _features(x: np.ndarray, name: str, what: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 2 or len(x) == 0:
        raise UsageError(
            f"{what} {name}: x must be a numeric array of rows (n, features...), got "
            f"shape {tuple(x.shape)} {x.dtype}."
        )
    return x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x


def describe(spec: Any) -> str:
    """How a dataset is recorded in lineage: its spec, or what a Python object was."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Dataset):
        return repr(spec)
    return f"(python {type(spec).__name__})"
