"""What runs inside a trial's job (see :mod:`.jobtrials`): the cell's ``train(params,
report)`` with the trial's parameters, ``report`` wired to the study's pruner, and the
result left in the job's folder for the kernel to read."""

from __future__ import annotations

import json
import os
from pathlib import Path


def run_trial(user_train) -> None:
    from .. import training
    from ..launching.jobs import ENV_DIR, write_json
    from . import studies
    from .trials import split_result

    spec = training.current_job()
    if spec is None:
        raise RuntimeError("run_trial runs inside a job started by maas tune")
    arg = json.loads(spec["args"][0])
    folder = Path(os.environ[ENV_DIR])
    root = folder.parents[1]  # <root>/jobs/<id>
    rank, world = spec["rank"], spec["world_size"]
    opt = studies.optuna()
    trial = None
    if rank == 0:
        store = studies.storage(root)
        study = opt.load_study(
            study_name=arg["study"], storage=store, pruner=studies.pruner(arg["pruner"])
        )
        trial_id = store.get_trial_id_from_study_id_trial_number(
            store.get_study_id_from_name(arg["study"]), arg["trial"]
        )
        trial = opt.trial.Trial(study, trial_id)

    def report(step, value):
        prune = False
        if trial is not None:
            trial.report(float(value), int(step))
            prune = trial.should_prune()
            training.report(int(step), **{arg["metric"]: float(value)})
        if world > 1:
            prune = _broadcast(prune)
        if prune:
            raise opt.TrialPruned(f"pruned at step {step}")

    metrics, model, config = split_result(user_train(dict(arg["params"]), report))
    if rank != 0:
        return
    if model is not None and hasattr(model, "state_dict"):
        from safetensors.torch import save_file

        try:
            from accelerate.utils import extract_model_from_parallel

            model = extract_model_from_parallel(model)
        except ImportError:
            model = getattr(model, "module", model)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "trial-model.safetensors"))
    write_json(folder / "trial.json", {"metrics": metrics, "config": config})


def _broadcast(value: bool) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])
