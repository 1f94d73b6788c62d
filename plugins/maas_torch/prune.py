"""The ``prune`` compressor: magnitude pruning of a factory-built torch model.

- Unstructured (default): ``torch.nn.utils.prune.global_unstructured`` with L1 magnitude over
  every Linear and Conv weight at once, to ``--sparsity``. Masks stay on while fine-tuning
  (so pruned weights stay zero), then ``prune.remove`` makes them permanent. Stored sparse
  (``sparse.py``: values + bitmask, about a quarter of dense at 80%) or dense (zeros in
  place: no smaller, no faster; it compresses well). Speed is unchanged either way: the
  model runs dense.
- Structured (``--structured``): each hidden layer loses ``--amount`` of its neurons or
  channels, lowest L2 norm first, and is rebuilt narrower (``structured.py``), so the
  model really is smaller and faster. Stored dense, with ``maas_torch.structured:rebuild``
  as its factory.

Fine-tuning (``--finetune-epochs``, on the train split of ``--data``; or ``--finetune
module:callable``, called ``fn(model, train_split)``) recovers accuracy. The core then
measures parent and result on the test split; what this module reports is what it did.
"""

from __future__ import annotations

import time
from pathlib import Path

from maas_lab.components import Artifact
from maas_lab.errors import UsageError
from maas_lab.hints import option

from . import sparse, structured
from .loaders import build, load_factory_model, resolve_factory, validate_factory_model

BATCH = 64


def _fraction(options: dict, name: str, what: str) -> float:
    value = options[name]
    if value is None or not 0 < float(value) < 1:
        raise UsageError(
            f"{option(name, value)}: it must be in (0, 1), exclusive: the fraction of {what}, "
            f"e.g. {option(name, 0.5)}."
        )
    return float(value)


def _check(options: dict) -> None:
    _fraction(options, "sparsity", "weights zeroed")
    _fraction(options, "amount", "each hidden layer's neurons or channels removed")
    epochs = options.get("finetune_epochs") or 0
    if epochs < 0:
        raise UsageError(
            f"{option('finetune_epochs', epochs)}: give 0 (none) or a positive number."
        )
    if options.get("finetune") and epochs:
        raise UsageError(
            f"Give {option('finetune_epochs')} (the built-in loop) or "
            f"{option('finetune', 'module:callable')} (yours), not both."
        )
    if not (options.get("lr") or 0) > 0:
        raise UsageError(f"{option('lr', options.get('lr'))}: the learning rate must be positive.")


def _finetune_data(options: dict, context):
    """The train split, fetched before any work so a missing --data fails at once."""
    if options.get("finetune"):
        resolve_factory(options["finetune"])  # a typo fails before any work
        return context.data("train", needed_by=f"prune {option('finetune')}")
    if not options.get("finetune_epochs"):
        return None
    train = context.data("train", needed_by=f"prune {option('finetune_epochs')}")
    if train.x is None or not train.labelled:
        raise UsageError(
            f"prune {option('finetune_epochs')} trains on labelled rows (x, y); {train.name} "
            f"has {'sentences' if train.texts is not None else 'no labels'}. Give labelled "
            f"{option('data')}, or your own {option('finetune', 'module:callable')}."
        )
    return train


def _accuracy(model, data) -> float | None:
    import torch

    if data is None or data.x is None or not data.labelled:
        return None
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(data.x))
    except Exception:  # data that does not fit: the fine-tuning loop says so clearly
        return None
    if logits.ndim != 2 or logits.shape[1] <= int(data.y.max()):
        return None
    return round(float((logits.argmax(1).numpy() == data.y).mean()), 4)


def finetune(model, options: dict, train, context, val=None) -> dict:
    """Fine-tune ``model`` in place: the user's function, or a plain Adam + cross-entropy
    loop over ``train`` for ``finetune_epochs`` epochs (seeded, batches of 64)."""
    import torch
    import torch.nn.functional as F

    started = time.perf_counter()
    if options.get("finetune"):
        fn = resolve_factory(options["finetune"])
        model.train()
        try:
            fn(model, train)
        except Exception as exc:
            raise UsageError(
                f"{option('finetune', options['finetune'])} failed: {type(exc).__name__}: {exc}."
            ) from None
        model.eval()
        return {"function": options["finetune"], "seconds": round(time.perf_counter() - started, 2)}
    epochs, lr = int(options["finetune_epochs"]), float(options["lr"])
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(0)
    history = []
    bar = context.progress(epochs, "fine-tuning", "epoch")
    try:
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for i in range(0, len(order), BATCH):
                idx = order[i : i + BATCH]
                try:
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                except (RuntimeError, ValueError, IndexError) as exc:
                    raise UsageError(
                        f"Fine-tuning on {train.name} failed: its rows are shaped "
                        f"{list(train.x.shape[1:])}; the model must take them and return one "
                        f"score per class ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
                        "Give data that fits the model, or your own "
                        f"{option('finetune', 'module:callable')}."
                    ) from None
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            acc = _accuracy(model, val)
            if acc is not None:
                history.append(acc)
            bar.update(1)
            bar.set_postfix(loss=f"{total / len(order):.4f}", **({"val_acc": acc} if acc else {}))
    finally:
        bar.close()
        model.eval()
    out = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": BATCH,
        "train_rows": len(x),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if history:
        out["val_accuracy_by_epoch"] = history
    return out


def prune(checkout, options: dict, workdir: Path, context) -> Artifact:
    _check(options)
    train = _finetune_data(options, context)
    val = None
    if context.has_data:  # validation rows: how much pruning cost, before the core measures
        val = context.data("val")
        val = val if val.x is not None and val.labelled else None
    model = load_factory_model(checkout, {"device": "cpu"})
    if options.get("structured"):
        return _structured(checkout, model, options, workdir, context, train, val)
    return _unstructured(checkout, model, options, workdir, context, train, val)


def _prunable(model) -> list[tuple[str, object]]:
    from torch import nn

    seen, out = set(), []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            weight = getattr(module, "weight", None)
            if weight is not None and id(weight) not in seen:  # tied weights: once
                seen.add(id(weight))
                out.append((name, module))
    return out


def _unstructured(checkout, model, options, workdir, context, train, val) -> Artifact:
    from torch.nn.utils import prune as tprune

    layers = _prunable(model)
    if not layers:
        raise UsageError(
            f"{checkout.ref} has no Linear or Conv layers, which is what prune works on."
        )
    sparsity = float(options["sparsity"])
    val_before = _accuracy(model, val)
    tprune.global_unstructured(
        [(m, "weight") for _, m in layers],
        pruning_method=tprune.L1Unstructured,
        amount=sparsity,
    )
    val_pruned = _accuracy(model, val)
    tuned = finetune(model, options, train, context, val) if train is not None else None
    for _, module in layers:
        tprune.remove(module, "weight")
    model.eval()
    per_layer, zeros, total = {}, 0, 0
    for name, module in layers:
        w = module.weight.detach()
        z = int((w == 0).sum())
        per_layer[f"{name}.weight"] = round(z / w.numel(), 4)
        zeros, total = zeros + z, total + w.numel()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = Path(workdir) / "weights.safetensors"
    config = {k: v for k, v in checkout.config.items() if k != "sparse"}
    if options["storage"] == "sparse":
        spec = sparse.save(state, list(per_layer), path)
        if spec["tensors"]:
            config["sparse"] = spec
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    _check_reload(model, config, path)
    dense_bytes = sum(v.numel() * v.element_size() for v in state.values())
    report = {
        "method": "global L1 magnitude, unstructured (torch.nn.utils.prune)",
        "sparsity_requested": sparsity,
        "sparsity": round(zeros / total, 4),
        "sparsity_by_layer": per_layer,
        "pruned_weights": total,
        "storage": options["storage"],
        "sparse_tensors": len(config.get("sparse", {}).get("tensors", {})),
        "dense_bytes": dense_bytes,
        "stored_bytes": path.stat().st_size,
        "stored_vs_dense": round(path.stat().st_size / dense_bytes, 4),
        "note": "runs dense: no speed gain; the size gain is storage only",
    }
    _val_report(report, val_before, val_pruned, tuned, model, val)
    return Artifact(
        format="torch",
        files={"weights.safetensors": "weights"},
        signature=checkout.signature,
        config=config,
        report=report,
    )


def _val_report(report, before, pruned, tuned, model, val) -> None:
    if before is not None:
        report["val_accuracy_parent"] = before
        report["val_accuracy_pruned"] = pruned
    if tuned is not None:
        report["finetune"] = tuned
        after = _accuracy(model, val)
        if after is not None:
            report["val_accuracy_finetuned"] = after


def _check_reload(model, config: dict, path: Path) -> None:
    """The saved file, loaded the way every loader will, gives the same model back."""
    import torch

    validate_factory_model({path.name: path}, config)
    again = build(config)
    again.load_state_dict(sparse.load(path, config), strict=True)
    mine, theirs = model.state_dict(), again.state_dict()
    if set(mine) != set(theirs):
        raise RuntimeError(f"reloading the pruned weights gave tensors {sorted(theirs)}")
    for name, a in mine.items():
        b = theirs[name]
        if a.shape != b.shape or not torch.equal(a, b):
            raise RuntimeError(f"reloading the pruned weights changed {name}")


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _structured(checkout, model, options, workdir, context, train, val) -> Artifact:
    base, base_kwargs, widths = structured.base_of(checkout.config)
    links, notes = structured.plan(model)
    if not links:
        raise UsageError(structured.unsupported(model, notes))
    amount = float(options["amount"])
    keep = structured.choose(model, links, amount)
    if not keep:
        raise UsageError(
            f"{option('amount', amount)} removes no neuron or channel from any layer of "
            f"{checkout.ref} (widths {', '.join(f'{p}: {lk.width}' for p, lk in links.items())}); "
            "raise it."
        )
    params_before = _parameters(model)
    val_before = _accuracy(model, val)
    structured.apply(model, links, keep, copy=True)
    model.eval()
    val_pruned = _accuracy(model, val)
    tuned = finetune(model, options, train, context, val) if train is not None else None
    new_widths = {**widths, **{p: int(k.numel()) for p, k in keep.items()}}
    config = {
        "factory": structured.FACTORY,
        "kwargs": {"base": base, "base_kwargs": base_kwargs, "widths": new_widths},
    }
    path = Path(workdir) / "weights.safetensors"
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    _check_reload(model, config, path)
    report = {
        "method": "structured: lowest L2-norm neurons/channels removed per layer, rebuilt",
        "amount": amount,
        "layers": {p: {"before": links[p].width, "after": int(k.numel())} for p, k in keep.items()},
        "kept_whole": notes,
        "parameters_before": params_before,
        "parameters_after": _parameters(model),
        "parameters_ratio": round(_parameters(model) / params_before, 4),
        "base": base,
        "stored_bytes": path.stat().st_size,
    }
    if checkout.config.get("sparse"):
        report["note"] = "the parent was stored sparse; this version is stored dense"
    _val_report(report, val_before, val_pruned, tuned, model, val)
    return Artifact(
        format="torch",
        files={"weights.safetensors": "weights"},
        signature=checkout.signature,
        config=config,
        report=report,
    )
