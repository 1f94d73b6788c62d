"""What every process of a job runs (``python -m maas_lab.launching.rank JOB_DIR``, started
by the launcher plugin's command): it sets up :mod:`maas_lab.training`, runs the job's
target, and leaves a record of an exception for the monitor, so a failed job names the
rank that failed and why instead of "exit code 1".

Targets (``job.json``'s ``kind``):

- ``cell``: a notebook cell that defines ``train(accelerator, registry)``;
- ``function``: ``module:function`` with that signature;
- ``script``: a ``.py`` file. If it defines a top-level ``train(accelerator, registry)`` it
  is called like a cell; otherwise the file runs as ``__main__`` with its arguments, as
  under ``accelerate launch``, and uses :mod:`maas_lab.training` itself.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the imports: launch-to-first-step timings start here

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from maas_lab.launching.ending import end_now  # noqa: E402


def _function(spec: dict, folder: Path):
    kind, target = spec["kind"], spec["target"]
    if kind == "function":
        module_name, _, attr = target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    path = folder / "cell.py" if kind == "cell" else Path(target)
    namespace = runpy.run_path(str(path), run_name="__maas_train__")
    return namespace["train"]


def _record_error(folder: Path, rank: int, exc: BaseException) -> None:
    from maas_lab.launching.jobs import write_json

    write_json(
        folder / f"error-rank{rank}.json",
        {
            "rank": rank,
            "time": time.time(),
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        },
    )


def main(job_dir: str) -> None:
    folder = Path(job_dir)
    spec = json.loads((folder / "job.json").read_text())
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    os.chdir(spec["cwd"])
    sys.path.insert(0, spec["cwd"])
    from maas_lab import training
    from maas_lab.launching.jobs import write_json

    training._job = training._Job(folder, spec, rank, world)
    try:
        import torch

        if not torch.cuda.is_available():
            # `Accelerator()` in a plain script reads this: CPU ranks as a gloo group
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
        if spec["kind"] == "script" and not spec.get("calls_train"):
            if rank == 0:
                write_json(folder / "world.json", {"world_size": world, "started": STARTED})
            script = Path(spec["target"])
            sys.argv = [str(script), *spec.get("args", [])]
            sys.path.insert(0, str(script.parent))
            runpy.run_path(str(script), run_name="__main__")
        else:
            sys.argv = [spec["target"], *spec.get("args", [])]
            train = _function(spec, folder)
            accelerator = training.accelerator()
            if rank == 0:  # the world size the process group really has, not the one asked
                write_json(
                    folder / "world.json",
                    {
                        "world_size": accelerator.num_processes,
                        "started": STARTED,
                        "ready": time.time(),
                        "backend": str(accelerator.distributed_type),
                    },
                )
            train(accelerator, training.registry())
        training._job.flush()
    except SystemExit as exc:
        training._job.flush()
        if exc.code not in (0, None):
            _record_error(folder, rank, exc)
        raise
    except BaseException as exc:
        training._job.flush()
        _record_error(folder, rank, exc)
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # at once: a collective the other ranks wait in must not hold us
    _shutdown()


def _shutdown() -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise  # sys.exit(message or code): the interpreter reports it as it would
    end_now(0)
