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
from maas_lab.hints import option
from maas_lab.parsing import parse_config

from .loaders import build


def teacher_logits(runner, data, batch: int = 256) -> np.ndarray:
    out = []
    for start in range(0, len(data), batch):
        n = min(batch, len(data) - start)
        result = runner.infer(feeds(runner, data, start, n))
        out.append(np.asarray(next(iter(result.values())), dtype=np.float32))
    return np.concatenate(out)


def _check(options: dict) -> dict:
    if options["epochs"] < 1:
        raise UsageError(f"{option('epochs')} must be at least 1, got {options['epochs']}.")
    if not 0 <= options["alpha"] <= 1:
        raise UsageError(
            f"{option('alpha')} must be in [0, 1] (share of the teacher), got {options['alpha']}."
        )
    if options["temperature"] <= 0:
        raise UsageError(f"{option('temperature')} must be positive, got {options['temperature']}.")
    if options["processes"] < 1:
        raise UsageError(f"{option('processes')} must be at least 1, got {options['processes']}.")
    if options["batch_size"] < 1 or options["lr"] <= 0:
        raise UsageError(f"{option('batch_size')} must be at least 1 and {option('lr')} positive.")
    return parse_config(options["config"])


def distill(checkout, options: dict, workdir, context) -> Artifact:
    import torch

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
    started = time.perf_counter()
    if options["processes"] > 1:
        best, history, job = _data_parallel(context, options, spec, train, val, t_train)
        samples_per_s = job["progress"].get("samples_per_s")
    else:
        best, history = _train_here(
            student, options, context, x_train, y_train, x_val, val, t_train
        )
        samples_per_s = None
    student.load_state_dict(best[2])
    return _artifact(
        workdir,
        student,
        best,
        history,
        options,
        kwargs,
        spec,
        teacher,
        train,
        t_train,
        val_teacher_acc,
        samples_per_s=samples_per_s,
        seconds=time.perf_counter() - started,
    )


def _train_here(student, options, context, x_train, y_train, x_val, val, t_train):
    """Distil in this process, with a progress bar and early stopping; returns the best
    (val accuracy, epoch, weights) and the accuracy of every epoch."""
    import torch

    soft = torch.from_numpy(t_train)
    T, alpha = options["temperature"], options["alpha"]
    opt = torch.optim.Adam(student.parameters(), lr=options["lr"])
    gen = torch.Generator().manual_seed(options["seed"])
    best = (-1.0, 0, copy.deepcopy(student.state_dict()))
    history: list[float] = []
    stale = 0
    bar = context.progress(options["epochs"], "distilling", "epoch")
    try:
        for epoch in range(options["epochs"]):
            student.train()
            order = torch.randperm(len(x_train), generator=gen)
            total = 0.0
            for i in range(0, len(order), options["batch_size"]):
                idx = order[i : i + options["batch_size"]]
                loss = kd_loss(student(x_train[idx]), y_train[idx], soft[idx], T, alpha)
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
    return best, history


def kd_loss(logits, labels, soft, T: float, alpha: float):
    """Cross-entropy on the labels, plus (weight ``alpha``) the KL divergence from the
    teacher's outputs softened by ``T`` (scaled by T^2 so its gradients keep their size)."""
    import torch.nn.functional as F

    loss = (1 - alpha) * F.cross_entropy(logits, labels)
    if alpha:
        kd = F.kl_div(
            F.log_softmax(logits / T, dim=1), F.softmax(soft / T, dim=1), reduction="batchmean"
        )
        loss = loss + alpha * T * T * kd
    return loss


def _artifact(
    workdir,
    student,
    best,
    history,
    options,
    kwargs,
    spec,
    teacher,
    train,
    t_train,
    val_teacher_acc,
    samples_per_s,
    seconds,
) -> Artifact:
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
            "processes": options["processes"],
            **({"samples_per_s": samples_per_s} if samples_per_s else {}),
            "seconds": round(seconds, 2),
        },
    )


def _data_parallel(context, options: dict, spec: dict, train, val, t_train):
    """Train on ``processes`` processes as a job (``train_data_parallel`` below); the
    teacher's logits, computed once here, travel with the data in an .npz file."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(tempfile.mkdtemp(prefix="maas-distill-"))
    try:
        np.savez(
            folder / "data.npz",
            x_train=train.x,
            y_train=train.y,
            x_val=val.x,
            y_val=val.y,
            soft=t_train,
        )
        keys = ("epochs", "temperature", "alpha", "lr", "batch_size", "patience", "seed")
        (folder / "options.json").write_text(
            json.dumps({"spec": spec, **{k: options[k] for k in keys}})
        )
        job = context.launch(
            "maas_torch.distill:train_data_parallel",
            args=[str(folder)],
            processes=options["processes"],
        )
        result = json.loads((folder / "result.json").read_text())
        state = load_file(str(folder / "weights.safetensors"))
        best = (max(result["history"]), result["best_epoch"], state)
        return best, result["history"], job
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def train_data_parallel(accelerator, registry) -> None:
    """One process of a data-parallel distillation: the global batch is split across the
    processes and their gradients averaged, so every process holds the same student; each
    measures validation accuracy on all of it, so all stop at the same epoch."""
    import json
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from maas_lab.training import report

    folder = Path(sys.argv[1])
    opts = json.loads((folder / "options.json").read_text())
    arrays = np.load(folder / "data.npz")
    torch.manual_seed(opts["seed"])
    student = build(opts["spec"])
    rows = torch.utils.data.TensorDataset(
        *(torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "soft"))
    )
    per_process = max(1, opts["batch_size"] // accelerator.num_processes)
    loader = torch.utils.data.DataLoader(
        rows,
        batch_size=per_process,
        shuffle=True,
        generator=torch.Generator().manual_seed(opts["seed"]),
    )
    opt = torch.optim.Adam(student.parameters(), lr=opts["lr"])
    model, opt, loader = accelerator.prepare(student, opt, loader)
    x_val, y_val = torch.from_numpy(arrays["x_val"]), arrays["y_val"]
    T, alpha = opts["temperature"], opts["alpha"]
    best: tuple = (-1.0, 0, None)
    history: list[float] = []
    stale = 0
    for epoch in range(opts["epochs"]):
        model.train()
        total, seen = 0.0, 0
        for x, y, soft in loader:
            loss = kd_loss(model(x), y, soft, T, alpha)
            opt.zero_grad()
            accelerator.backward(loss)
            opt.step()
            total += loss.item() * len(x)
            seen += len(x)
        inner = accelerator.unwrap_model(model).eval()
        with torch.no_grad():
            acc = float((inner(x_val).argmax(1).numpy() == y_val).mean())
        history.append(round(acc, 4))
        report(
            epoch + 1, total=opts["epochs"], loss=total / max(seen, 1), samples=seen, val_acc=acc
        )
        if acc > best[0]:
            state = {k: v.detach().clone() for k, v in inner.state_dict().items()}
            best, stale = (acc, epoch + 1, state), 0
        else:
            stale += 1
            if stale >= opts["patience"]:
                break
    if accelerator.is_main_process:
        save_file(
            {k: v.contiguous() for k, v in best[2].items()}, str(folder / "weights.safetensors")
        )
        (folder / "result.json").write_text(json.dumps({"history": history, "best_epoch": best[1]}))
