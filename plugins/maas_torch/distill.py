"""Knowledge distillation: a small student learns from a teacher's softened outputs.

The teacher is any version the core can run (torch, TorchScript, ONNX...): it is only ever
asked for logits through its runner, once per row, before training starts, so a slow
teacher costs one pass, not one per epoch. The student is a factory plus config, stored the
usual way (safetensors weights), so it loads, exports and serves like any torch version.

``alpha = 0`` trains the same student on the labels alone: the baseline a distillation has
to beat, measured by the same code.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from maas_lab.components import Artifact, tensor
from maas_lab.errors import UsageError
from maas_lab.evaluation import feeds
from maas_lab.parsing import parse_config

from . import build


def teacher_logits(runner, data, batch: int = 256) -> np.ndarray:
    out = []
    for start in range(0, len(data), batch):
        n = min(batch, len(data) - start)
        result = runner.infer(feeds(runner, data, start, n))
        out.append(np.asarray(next(iter(result.values())), dtype=np.float32))
    return np.concatenate(out)


def _check(options: dict) -> dict:
    if options["epochs"] < 1:
        raise UsageError(f"--epochs must be at least 1, got {options['epochs']}.")
    if not 0 <= options["alpha"] <= 1:
        raise UsageError(
            f"--alpha must be in [0, 1] (share of the teacher), got {options['alpha']}."
        )
    if options["temperature"] <= 0:
        raise UsageError(f"--temperature must be positive, got {options['temperature']}.")
    if options["batch_size"] < 1 or options["lr"] <= 0:
        raise UsageError("--batch-size must be at least 1 and --lr positive.")
    return parse_config(options["config"])


def distill(checkout, options: dict, workdir, context) -> Artifact:
    import torch
    import torch.nn.functional as F

    kwargs = _check(options)
    data = context.data(needed_by="distill")
    if not data.labelled or data.x is None:
        raise UsageError(
            f"distill needs labelled rows (x, y); {data.name} has "
            f"{'sentences' if data.texts is not None else 'no labels'}."
        )
    train, val = data.split("train"), data.split("val")
    teacher = context.parent_runner
    t_train = teacher_logits(teacher, train)
    t_val = teacher_logits(teacher, val)
    val_teacher_acc = float(np.mean(t_val.argmax(1) == val.y))

    torch.manual_seed(options["seed"])
    spec = {"factory": options["student"], "kwargs": kwargs}
    student = build(spec)
    x_train, y_train = torch.from_numpy(train.x), torch.from_numpy(train.y)
    x_val = torch.from_numpy(val.x)
    try:
        with torch.no_grad():
            probe = student(x_train[:2])
    except Exception as exc:
        raise UsageError(
            f"The student {options['student']}({kwargs}) fails on rows shaped "
            f"{list(train.x.shape[1:])}: {type(exc).__name__}: {exc}."
        ) from None
    if tuple(probe.shape[1:]) != tuple(t_train.shape[1:]):
        raise UsageError(
            f"Teacher {checkout.ref} outputs {list(t_train.shape[1:])} per row but the student "
            f"outputs {list(probe.shape[1:])}: they must match (e.g. out_features="
            f"{t_train.shape[1]})."
        )
    soft = torch.from_numpy(t_train)
    T, alpha = options["temperature"], options["alpha"]
    opt = torch.optim.Adam(student.parameters(), lr=options["lr"])
    gen = torch.Generator().manual_seed(options["seed"])
    best = (-1.0, 0, copy.deepcopy(student.state_dict()))
    history: list[float] = []
    stale, started = 0, time.perf_counter()
    bar = context.progress(options["epochs"], "distilling", "epoch")
    try:
        for epoch in range(options["epochs"]):
            student.train()
            order = torch.randperm(len(x_train), generator=gen)
            total = 0.0
            for i in range(0, len(order), options["batch_size"]):
                idx = order[i : i + options["batch_size"]]
                logits = student(x_train[idx])
                loss = (1 - alpha) * F.cross_entropy(logits, y_train[idx])
                if alpha:
                    kd = F.kl_div(
                        F.log_softmax(logits / T, dim=1),
                        F.softmax(soft[idx] / T, dim=1),
                        reduction="batchmean",
                    )
                    loss = loss + alpha * T * T * kd
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            student.eval()
            with torch.no_grad():
                acc = float((student(x_val).argmax(1).numpy() == val.y).mean())
            history.append(round(acc, 4))
            bar.update(1)
            bar.set_postfix(loss=f"{total / len(order):.4f}", val_acc=f"{acc:.3f}")
            if acc > best[0]:
                best, stale = (acc, epoch + 1, copy.deepcopy(student.state_dict())), 0
            else:
                stale += 1
                if stale >= options["patience"]:
                    break
    finally:
        bar.close()
    student.load_state_dict(best[2])
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in best[2].items()}, str(workdir / "weights.safetensors"))
    first = teacher.signature["inputs"][0]
    n_classes = int(t_train.shape[1])
    signature = {
        "inputs": [tensor(first["name"], first["dtype"], ["batch", *train.x.shape[1:]])],
        "outputs": [tensor("output", "float32", ["batch", n_classes])],
    }
    return Artifact(
        format="torch",
        files={"weights.safetensors": "weights"},
        config=spec,
        signature=signature,
        report={
            "student": f"{options['student']}({kwargs})",
            "student_parameters": sum(p.numel() for p in student.parameters()),
            "epochs_run": len(history),
            "best_epoch": best[1],
            "stopped_early": len(history) < options["epochs"],
            "val_accuracy_by_epoch": history,
            "val_accuracy_teacher": round(val_teacher_acc, 4),
            "train_rows": len(train),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
