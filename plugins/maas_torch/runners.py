"""Runners for torch-family versions: a factory module, a TorchScript archive, a .pt2 program.

All three are "a callable module plus a signature", so one class serves them; they differ in
how the module is opened and where the signature comes from (stored, ``--input_shape``, or
the exported program's own placeholders). An export of a Hugging Face text encoder carries
its tokenizer; its runner then offers real sentences as example inputs, as the hf runner does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from maas_lab.components import tensor

from . import signature as sig


class TorchRunner:
    """Runs a module on numpy feeds, in inference mode, positional inputs in signature order.

    Output names come from the signature; when it lists none (a version registered before
    its outputs were known), a tensor is ``output``, a tuple ``output_<i>``, a dict keeps its
    keys, and the output shapes are found by running twice at different dim sizes.
    """

    def __init__(self, module, inputs: list[dict], outputs: list[dict], who: str, device="cpu"):
        self.module, self.inputs, self.who, self.device = module, inputs, who, device
        self._outputs = list(outputs)

    def __repr__(self) -> str:
        return f"<TorchRunner {self.who}: {[t['name'] for t in self.inputs]}>"

    @property
    def signature(self) -> dict:
        if not self._outputs:
            trace, check, check_sizes = sig.trace_and_check_feeds(self.inputs)
            first = self.infer(trace)
            second = self.infer(check)
            trace_sizes = sig.dim_sizes(self.inputs, trace)
            self._outputs = sig.outputs_from_runs(first, trace_sizes, second, check_sizes)
        return {"inputs": list(self.inputs), "outputs": list(self._outputs)}

    def example_feeds(self, batch: int) -> dict[str, np.ndarray]:
        """Seeded inputs; integer inputs are 0 or 1, valid indices into any embedding table
        (ids drawn up to 1000 would crash a model whose table is smaller)."""
        return sig.random_feeds(self.inputs, batch, {"sequence": 16}, 8, seed=0)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        arrays = sig.check_feeds(self.inputs, feeds, self.who)
        args = [torch.from_numpy(a).to(self.device) for a in arrays.values()]
        with torch.inference_mode():
            result = self.module(*args)
        return name_outputs(result, [t["name"] for t in self._outputs])


class TextTorchRunner(TorchRunner):
    """A torch export of a text model shipped with its tokenizer."""

    def __init__(self, base: TorchRunner, tokenizer):
        super().__init__(base.module, base.inputs, base._outputs, base.who, base.device)
        self.tokenizer = tokenizer

    def example_feeds(self, batch: int) -> dict[str, np.ndarray]:
        """Real sentences of varied lengths through the tokenizer, padded to the longest."""
        from maas_hf.text import tokenize

        return tokenize(self.tokenizer, batch, [t["name"] for t in self.inputs])


def with_tokenizer(runner: TorchRunner, checkout) -> TorchRunner:
    """``runner`` with real-sentence ``example_feeds`` when the version takes ``input_ids``
    and carries tokenizer files that load; else ``runner`` as it is."""
    takes_ids = "input_ids" in [t["name"] for t in runner.inputs]
    if not takes_ids or not any(f.get("role") == "tokenizer" for f in checkout.files):
        return runner
    from maas_hf.text import load_tokenizer

    tokenizer = load_tokenizer(checkout.dir)
    return runner if tokenizer is None else TextTorchRunner(runner, tokenizer)


def name_outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A module's result as ``{name: array}`` (see :class:`TorchRunner` for the names)."""
    import torch

    if isinstance(result, dict):
        values = list(result.values())
        default = [str(k) for k in result]
    elif isinstance(result, (tuple, list)):
        values = list(result)
        default = [f"output_{i}" for i in range(len(values))]
    else:
        values, default = [result], ["output"]
    if names and len(names) != len(values):
        raise ValueError(f"the model returned {len(values)} outputs; its signature names {names}")
    out = {}
    for name, value in zip(names or default, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"output {name!r} is a {type(value).__name__}, not a tensor")
        out[name] = value.detach().cpu().numpy()
    return out


def _threads(options: dict) -> None:
    """torch's thread count is per process: setting it here affects every torch model."""
    if options.get("threads"):
        import torch

        torch.set_num_threads(int(options["threads"]))


def run_factory(checkout, options: dict) -> TorchRunner:
    from .loaders import load_factory_model

    spec = sig.resolve_signature(checkout, options, "The torch runner")
    _threads(options)
    device = options.get("device") or "cpu"
    model = load_factory_model(checkout, {"device": device})
    return TorchRunner(model, spec["inputs"], spec["outputs"], checkout.ref, device)


def run_torchscript(checkout, options: dict) -> TorchRunner:
    from .loaders import load_torchscript

    spec = sig.resolve_signature(checkout, options, "The torchscript runner")
    _threads(options)
    device = options.get("device") or "cpu"
    with warnings.catch_warnings():  # torch.jit.load is deprecated, and still what opens it
        warnings.simplefilter("ignore", DeprecationWarning)
        module = load_torchscript(checkout, {"device": device})
    runner = TorchRunner(module, spec["inputs"], spec["outputs"], checkout.ref, device)
    return with_tokenizer(runner, checkout)


def run_exported(checkout, options: dict) -> TorchRunner:
    from .pt2 import load_pt2

    _threads(options)
    (path,) = [checkout.dir / f["name"] for f in checkout.files if f["name"].endswith(".pt2")]
    program = load_pt2(path)
    stored = checkout.signature or (checkout.config or {}).get("signature")
    if stored and stored.get("inputs"):
        inputs, outputs = list(stored["inputs"]), list(stored.get("outputs") or [])
    else:
        inputs, outputs = program_inputs(program), []
    return with_tokenizer(TorchRunner(program.module(), inputs, outputs, checkout.ref), checkout)


def program_inputs(program) -> list[dict]:
    """Input signature of an ``ExportedProgram`` from its placeholders: the symbol of a
    dim 0 is ``batch``, other symbols ``dim_<n>``, shared symbols share a name."""
    import torch

    user = set(program.graph_signature.user_inputs)
    names: dict[str, str] = {}
    inputs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        dims: list[Any] = []
        for axis, d in enumerate(val.shape):
            if isinstance(d, int):
                dims.append(d)
                continue
            key = str(d)
            if key not in names:
                names[key] = (
                    "batch"
                    if axis == 0 and "batch" not in names.values()
                    else (f"dim_{len(names)}")
                )
            dims.append(names[key])
        dtype = str(val.dtype).removeprefix("torch.")
        inputs.append(tensor(node.name, np.dtype(dtype).name, dims))
    return inputs
