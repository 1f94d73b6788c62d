"""Runner for ONNX versions: an onnxruntime session whose signature is read from the model.

The model file is the authority on its tensors, so nothing stored beside it is trusted for
names, types or dims. An export of a text model carries its tokenizer; the runner then
offers real sentences as example inputs, as the Hugging Face runner does.
"""

from __future__ import annotations

import numpy as np

from maas_lab.components import tensor

ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


def describe(args) -> list[dict]:
    """Signature entries from onnxruntime ``NodeArg``s; an unnamed dynamic dim is ``dim_<i>``."""
    out = []
    for arg in args:
        dims = [
            d if isinstance(d, (int, str)) and d != "" else f"dim_{i}"
            for i, d in enumerate(arg.shape or [])
        ]
        out.append(tensor(arg.name, ORT_TYPES.get(arg.type, arg.type), dims))
    return out


class OnnxRunner:
    def __init__(self, session, who: str):
        self.session, self.who = session, who
        self.signature = {
            "inputs": describe(session.get_inputs()),
            "outputs": describe(session.get_outputs()),
        }

    def __repr__(self) -> str:
        return f"<OnnxRunner {self.who}: {[t['name'] for t in self.signature['inputs']]}>"

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from maas_torch.signature import check_feeds

        arrays = check_feeds(self.signature["inputs"], feeds, self.who)
        names = [t["name"] for t in self.signature["outputs"]]
        return dict(zip(names, self.session.run(names, arrays), strict=True))


class TextOnnxRunner(OnnxRunner):
    """An ONNX text model shipped with its tokenizer."""

    def __init__(self, session, who: str, tokenizer):
        super().__init__(session, who)
        self.tokenizer = tokenizer

    def example_feeds(self, batch: int) -> dict[str, np.ndarray]:
        from maas_hf.text import tokenize

        return tokenize(self.tokenizer, batch, [t["name"] for t in self.signature["inputs"]])


def run_onnx(checkout, options: dict) -> OnnxRunner:
    from .loaders import load_onnx

    session = load_onnx(
        checkout, {"threads": options.get("threads") or 0, "spin": options.get("spin", True)}
    )
    runner = OnnxRunner(session, checkout.ref)
    takes_ids = "input_ids" in [t["name"] for t in runner.signature["inputs"]]
    if takes_ids and any(f["role"] == "tokenizer" for f in checkout.files):
        from maas_hf.text import load_tokenizer

        from maas_lab.evaluation import shared

        key = ("tokenizer", _side_digest(checkout))
        tokenizer = shared(key, lambda: load_tokenizer(checkout.dir))
        if tokenizer is not None:
            return TextOnnxRunner(session, checkout.ref, tokenizer)
    return runner


def _side_digest(checkout) -> str:
    """The digest of every file but the model's own: what its tokenizer is loaded from."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(checkout.files, key=lambda f: f["name"]):
        if f["role"] in ("model", "external-data", "weights") or f["name"].endswith(".onnx"):
            continue
        h.update(f["name"].encode() + b"\0")
        h.update(hashlib.sha256((checkout.dir / f["name"]).read_bytes()).digest())
    return h.hexdigest()
