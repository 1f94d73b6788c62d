"""What a training job's processes call: the accelerator, the registry, progress reports.

``%maas launch`` runs a function ``train(accelerator, registry)`` (a notebook cell, a
``module:function``, or a file that defines it) on every process of the job; a plain
script gets the same objects from :func:`accelerator` and :func:`registry`. ::

    def train(accelerator, registry):
        model, opt = accelerator.prepare(mlp(hidden=64), torch.optim.Adam(...))
        for step in range(steps):
            ...
            report(step + 1, total=steps, loss=loss.item(), samples=len(batch))
        registry.register(model, factory="maas_lab.zoo:mlp", config={"hidden": 64},
                          metrics={"accuracy": acc}, inputs=["input:float32:batch,64"])

Every rank may call everything here: only rank 0 writes (progress, the registered
version), so code needs no ``if accelerator.is_main_process``. Outside a job the same
calls work in one process, which is how a ``train`` function is debugged in a notebook
before it is launched.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import UsageError
from .registry import open as open_registry

_job: _Job | None = None  # set by maas_lab.launching.rank in a job's processes
_accelerator = None
REPORT_EVERY_S = 0.25


class _Job:
    """This process's view of its job: folder, spec, rank, and progress not yet written."""

    def __init__(self, folder: Path, spec: dict, rank: int, world: int):
        self.folder, self.spec, self.rank, self.world = folder, spec, rank, world
        self.samples = 0
        self.pending: dict | None = None
        self.written_at = 0.0
        self.registered: list[str] = []

    def flush(self) -> None:
        if self.pending is not None and self.rank == 0:
            with (self.folder / "progress.jsonl").open("a") as f:
                import json

                f.write(json.dumps(self.pending) + "\n")
            self.written_at = time.time()
        self.pending = None


def current_job() -> dict | None:
    """The job this process belongs to (its id, target, options), or None outside a job."""
    return None if _job is None else {**_job.spec, "rank": _job.rank, "world_size": _job.world}


def accelerator(**kwargs):
    """The job's ``accelerate.Accelerator`` (made once): on the CPU where there is no GPU,
    so several processes form a gloo group. ``kwargs`` go to the first construction."""
    global _accelerator
    if _accelerator is None:
        import torch
        from accelerate import Accelerator

        kwargs.setdefault("cpu", not torch.cuda.is_available())
        _accelerator = Accelerator(**kwargs)
    return _accelerator


def registry(root=None) -> TrainingRegistry:
    """The registry as a training process sees it: rank 0 writes, other ranks only read."""
    return TrainingRegistry(root)


def report(
    step: int | None = None,
    *,
    total: int | None = None,
    loss=None,
    samples: int | None = None,
    **metrics,
) -> None:
    """Report progress: the notebook's bar and the job record show it.

    ``samples`` is how many samples this process handled since its last report; the job's
    throughput counts that many on every process (data-parallel loaders give each the same
    share; an uneven last batch is counted as full). ``metrics`` (``accuracy=0.97``) show beside
    the loss. Rank 0 writes at most four reports a second (and always the last step); on
    other ranks this only counts samples.
    """
    job = _job
    if job is None:
        return
    job.samples += int(samples or 0) * job.world
    record: dict[str, Any] = {"t": time.time(), "step": step, "total": total}
    if loss is not None:
        record["loss"] = float(loss)
    record["samples"] = job.samples
    record.update({k: float(v) for k, v in metrics.items()})
    job.pending = record
    last = total is not None and step is not None and step >= total
    if last or time.time() - job.written_at >= REPORT_EVERY_S:
        job.flush()


class TrainingRegistry:
    """``register`` a trained model from every rank (rank 0 writes it); ``load``, ``runner``
    and ``resolve`` read versions (a teacher, a base model) on any rank."""

    def __init__(self, root=None):
        self._root = root

    @property
    def rank(self) -> int:
        return _job.rank if _job is not None else int(os.environ.get("RANK", "0"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def load(self, ref: str, **options):
        from .runners import load

        return load(open_registry(self._root).checkout(ref), options)

    def runner(self, ref: str, **options):
        from .runners import start_runner

        return start_runner(open_registry(self._root).checkout(ref), options)

    def resolve(self, ref: str) -> str:
        return open_registry(self._root).resolve(ref)["ref"]

    def register(
        self,
        model,
        *,
        factory: str,
        config: dict | None = None,
        name: str | None = None,
        metrics: dict | None = None,
        inputs=None,
        signature=None,
        task: str | None = None,
        description: str | None = None,
        tags=None,
        data: str | None = None,
        parent: str | None = None,
    ) -> str | None:
        """Register ``model`` (a torch module, wrapped by ``accelerator.prepare`` or not) as
        a new version: its weights in safetensors, ``factory`` (``module:callable``) and
        ``config`` (its keyword arguments) to rebuild it, ``metrics``, and a lineage edge
        to ``parent`` (a teacher or base version, if any) recording the job, the launch
        options, the world size and ``data``. ``name`` defaults to ``--register``'s.

        Returns the new ``name@N`` on rank 0 and None on the other ranks, which write
        nothing (call it on every rank; it does not wait for the others).
        """
        job = _job
        spec = job.spec if job is not None else {}
        name = name or spec.get("register_as")
        if not name:
            how = _as_launched(spec, "register", "NAME")
            raise UsageError(
                f"registry.register() needs a name: pass name=..., or launch with {how}."
            )
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        wanted = spec.get("metric")
        if wanted and wanted not in metrics:
            how = _as_launched(spec, "metric", wanted)
            raise UsageError(
                f"The job was launched with {how}, but register() got metrics "
                f"{sorted(metrics) or 'none'}: pass metrics={{{wanted!r}: value}}."
            )
        if not self.is_main:
            return None
        from accelerate.utils import extract_model_from_parallel
        from safetensors.torch import save_file

        from .registering import register

        inner = extract_model_from_parallel(model)  # DistributedDataParallel, compiled...
        state = {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}
        folder = _job.folder if _job is not None else None
        with tempfile.TemporaryDirectory(dir=folder, prefix=".weights-") as tmp:
            weights = Path(tmp) / "weights.safetensors"
            save_file(state, str(weights))
            edge = {
                "operation": "train",
                "parent": parent,
                "plugin": spec.get("launcher"),
                "params": {
                    "job": spec.get("id"),
                    "target": spec.get("target"),
                    "launcher": spec.get("launcher"),
                    "options": spec.get("options"),
                    "world_size": _job.world if _job is not None else 1,
                    "host": socket.gethostname(),
                    "data": data,
                    "config": config or {},
                },
            }
            row = register(
                open_registry(self._root),
                name,
                from_torch=factory,
                weights=weights,
                config=config or {},
                metrics=metrics,
                inputs=inputs,
                signature=signature,
                task=task,
                description=description,
                tags=tags,
                lineage=[edge],
            )
        ref = row["ref"]
        if _job is not None:
            from .launching.jobs import write_json

            _job.registered.append(ref)
            write_json(_job.folder / "result.json", {"ref": ref, "metrics": metrics})
        return ref


def _as_launched(spec: dict, name: str, value) -> str:
    """Option ``name`` spelled as the job was launched (``--metric x`` or ``metric='x'``)."""
    from .hints import option, prog_scope

    with prog_scope(spec.get("prog")):
        return option(name, value)
