"""Running a version: what the API, export, compression, the server and jobs share.

A runner is what a serving backend makes of a checkout (``.signature``, ``.infer({name:
array}) -> {name: array}``). Everything that needs to run a model, stored or not yet
stored, starts one here, so the layers under the API never call back up into it.
"""

from __future__ import annotations

from pathlib import Path

from .components import Artifact
from .errors import MaasError, PluginError, UsageError
from .hints import option
from .plugins import get_plugins


def start_runner(checkout, given: dict | None = None):
    """A runner for a checkout; ``given`` options the backend does not declare are ignored,
    so an exporter's options (e.g. pooling) reach the parent's runner where they apply."""
    backend = get_plugins().backend(checkout.format)
    known = {p.name for p in backend.params}
    chosen = {k: v for k, v in (given or {}).items() if k in known}
    return backend.call(f"starting {checkout.ref}", checkout, backend.options(chosen))


def data_runner(checkout, dataset=None):
    """A runner; a version stored without a signature takes its input shape from the
    feature rows it will be fed (``batch,64`` for digits), rather than failing."""
    options = {}
    if not checkout.signature and dataset is not None and dataset.x is not None:
        dims = ",".join(["batch", *(str(d) for d in dataset.x.shape[1:])])
        options = {"input_shape": dims, "input_dtype": str(dataset.x.dtype)}
    return start_runner(checkout, options)


def staged_checkout(work: Path, artifact: Artifact, parent, task, who: str = "The plugin"):
    """A checkout of files not yet stored, so runners can open them before registering;
    ``who`` (an exporter or compressor) is named if it listed a file it did not write."""
    from .registry.refs import check_relative_file_name
    from .registry.registry import Checkout

    for name in artifact.files:
        try:
            path = work / check_relative_file_name(name)
        except UsageError as exc:  # the plugin's mistake, not the user's
            raise PluginError(f"{who} listed a file it may not write: {exc}") from None
        if path.is_symlink() or not path.resolve().is_relative_to(work.resolve()):
            raise PluginError(f"{who} wrote {name!r} as a link; write the file itself.")
        if not path.is_file():
            raise PluginError(f"{who} listed {name!r} but did not write it.")
    return Checkout(
        ref=f"(new {artifact.format} from {parent.ref})",
        format=artifact.format,
        config=artifact.config,
        task=task,
        dir=work,
        files=[{"name": n, "role": r} for n, r in artifact.files.items()],
        signature=artifact.signature,
    )


def infer_signature(source, inputs: list[dict]) -> dict:
    """A signature for files offered to register (``source``, from :mod:`maas_lab.sources`):
    ``inputs`` as given, outputs from running the model on generated inputs, before
    anything is stored."""
    import tempfile

    from .parity import output_specs
    from .registry.registry import Checkout

    with tempfile.TemporaryDirectory(prefix="maas-signature-") as tmp:
        for spec in source.files:
            link = Path(tmp) / spec.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(spec.source).resolve())
        staged = Checkout(
            ref="(new version)",
            format=source.format,
            config=source.config,
            task=None,
            dir=Path(tmp),
            files=[{"name": f.name, "role": f.role} for f in source.files],
            signature={"inputs": inputs, "outputs": []},
        )
        try:
            outputs = output_specs(inputs, start_runner(staged).infer)
        except MaasError:
            raise
        except Exception as exc:
            raise UsageError(
                f"The model failed on inputs {[t['name'] for t in inputs]} shaped as given by "
                f"{option('inputs', flag='--input')}: {type(exc).__name__}: {exc}. Check the "
                "input shapes."
            ) from None
    return {"inputs": inputs, "outputs": outputs}


def load(checkout, options: dict | None = None):
    """A version as the object its loader plugin makes of it (a torch module, a session)."""
    loader = get_plugins().loader(checkout.format)
    return loader.call(f"opening {checkout.ref}", checkout, loader.options(options or {}))
