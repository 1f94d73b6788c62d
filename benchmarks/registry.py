"""Benchmark the maas_lab registry against its targets and against MLflow's model registry.

What it measures, every number from one run (latencies are medians and p99s over many calls,
wall times and throughputs are medians over ``--repeat`` repetitions):

1. Concurrent registration: P processes x N versions (default 4 x 250) of 10 model names
   shared by all processes, against one fresh registry root, each a real safetensors file
   that is hashed, fsynced and stored. Afterwards it checks that every version is present,
   that each model's versions are numbered exactly 1..N, and counts "database is locked"
   errors (there must be none).
2. ``search`` and ``show`` latency with 100,000 versions; the versions beyond step 1 are
   filled by a bulk insert (one transaction, no per-version registration).
3. ``list`` latency with 1,000 models (also bulk-filled).
4. Import cost: ``%load_ext maas_lab`` and ``import maas_lab.api`` in fresh interpreters,
   a check that no heavy ML framework gets imported, and ``import mlflow`` for comparison.
5. MLflow (SQLite backend) in the same run: version creation in one process and in P
   concurrent processes, and its registry searches, next to ours measured the same way.

Why: the registry promises MLflow-class registration cost, much faster search and a light
import, and safe concurrent writers. These are the numbers that back (or refute) that.

Run: ``python benchmarks/registry.py [--quick] [--plot out.png] [--json out.json]``.
MLflow is optional (``pip install 'maas-lab[bench]'``); without it the MLflow column says so.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ["MAAS_LAB_PROGRESS"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no background network attempts

import numpy as np  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from maas_lab import api  # noqa: E402
from maas_lab.registry import FileSpec, Registry  # noqa: E402
from maas_lab.registry.db import write  # noqa: E402
from maas_lab.registry.search import fts_query  # noqa: E402

FAMILIES = [
    ("minilm-embed", "sentence-embedding"),
    ("mpnet-embed", "sentence-embedding"),
    ("bge-embed", "sentence-embedding"),
    ("resnet-cls", "image-classification"),
    ("vit-cls", "image-classification"),
    ("bert-cls", "text-classification"),
    ("digits-mlp", "image-classification"),
    ("yolo-det", "object-detection"),
    ("detr-det", "object-detection"),
    ("whisper-asr", "speech-recognition"),
]
SIZES = ["tiny", "small", "base", "large"]
WORDS = """fast multilingual distilled quantized pruned baseline finetuned english retrieval
semantic similarity mnist digits imagenet coco robust compact student teacher int8 fp16 export
experimental production accurate lightweight mobile edge server batch streaming cased uncased
augmented calibrated sparse dense legacy nightly reviewed""".split()
NAMES = [f"{family}-{SIZES[i % len(SIZES)]}" for i, (family, _) in enumerate(FAMILIES)]
TASK_OF = {name: task for name, (_, task) in zip(NAMES, FAMILIES, strict=True)}
QUERIES = ["embedding small", "classification", "digits mlp"]
HEAVY = ("torch", "onnxruntime", "transformers", "accelerate")
MLFLOW_FILTER = "name LIKE '%embed%'"
NOT_INSTALLED = "mlflow not installed"
WAIT_S = 600  # no phase may hang the benchmark for longer than this

CODE_LOAD_EXT = (
    "import time; t=time.perf_counter(); import IPython.core.magic, maas_lab; "
    "from maas_lab.magics import MaasMagics; print(time.perf_counter()-t)"
)
CODE_API = "import time; t=time.perf_counter(); import maas_lab.api; print(time.perf_counter()-t)"
CODE_MLFLOW = "import time; t=time.perf_counter(); import mlflow; print(time.perf_counter()-t)"
CODE_HEAVY = (
    "import sys, maas_lab; from maas_lab import api, magics, cli; "
    f"print(','.join(m for m in {HEAVY!r} if m in sys.modules) or '-')"
)


# ---------------------------------------------------------------------- statistics


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def summarize(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "samples": []}
    return {
        "n": len(samples),
        "p50": statistics.median(samples),
        "p99": percentile(samples, 99),
        "samples": [round(s, 6) for s in samples],
    }


def timed_calls(fn: Callable[[], object], calls: int, warmup: int = 3) -> dict:
    """Latency of ``calls`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return summarize(samples)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- our registrations


def write_weights(folder: Path, seeds: range) -> list[Path]:
    """One small safetensors file per seed; different seeds give different content."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"w{seed}.safetensors"
        weights = np.random.default_rng(seed).random((64, 16)).astype("float32")
        save_file({"w": weights}, str(path))
        paths.append(path)
    return paths


def register_one(reg: Registry, name: str, path: Path, i: int) -> None:
    reg.register(
        name,
        [FileSpec(path, "model.safetensors", "weights")],
        "torch",
        config={"hidden": 16, "layers": 2},
        task=TASK_OF.get(name),
        description=" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(4)),
        metrics={"accuracy": 0.8 + (i % 20) / 100},
    )


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def register_worker(root, weights_dir, worker, seeds, barrier, queue) -> None:
    """One concurrent writer: prepare and open before the barrier, register after it."""
    latencies, errors, paths = [], [], []
    try:
        paths = write_weights(Path(weights_dir), seeds)
        reg = Registry(root)
        reg.db.execute("select 1")  # open (on a fresh root: migrate) before the clock starts
    except Exception as exc:
        errors.append(error_text(exc))
        paths = []
    barrier.wait(timeout=WAIT_S)
    for i, path in enumerate(paths):
        t = time.perf_counter()
        try:
            register_one(reg, NAMES[(i + worker) % len(NAMES)], path, i)
        except Exception as exc:
            errors.append(error_text(exc))
            continue
        latencies.append(time.perf_counter() - t)
    queue.put({"latencies": latencies, "errors": errors})


def run_workers(target: Callable, worker_args: list[tuple]) -> dict:
    """Start spawned workers, release them together, time until the last one reports."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(worker_args) + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, queue)) for a in worker_args]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=WAIT_S)
        start = time.perf_counter()
        results = [queue.get(timeout=WAIT_S) for _ in procs]
        wall = time.perf_counter() - start
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    latencies = [x for r in results for x in r["latencies"]]
    errors = [e for r in results for e in r["errors"]]
    return {
        "wall_s": wall,
        "ok": len(latencies),
        "per_s": len(latencies) / wall,
        "latency": summarize(latencies),
        "errors": errors,
    }


def check_numbering(rows: list[tuple], expected: int) -> str:
    """Rows of (name, count, distinct numbers, min, max): 'ok' or what is wrong."""
    total = sum(r[1] for r in rows)
    bad = [r[0] for r in rows if not (r[1] == r[2] == r[4] and r[3] == 1)]
    if bad:
        return f"gaps or duplicates in {', '.join(bad)}"
    return "ok" if total == expected else f"{total} of {expected} present"


def check_ours(root: Path, expected: int) -> str:
    reg = Registry(root)
    rows = reg.db.execute(
        "select m.name, count(*), count(distinct v.number), min(v.number), max(v.number) "
        "from versions v join models m on m.id = v.model_id group by m.id"
    ).fetchall()
    blobs = len(reg.store.digests())
    reg.close()
    verdict = check_numbering(rows, expected)
    return verdict if blobs == expected else f"{verdict}; {blobs} blobs for {expected} files"


def bench_concurrent(tmp: Path, procs: int, per_proc: int, repeat: int) -> dict:
    """Concurrent registration into fresh roots; the first root is kept for later steps."""
    reps = []
    for rep in range(repeat):
        root = tmp / f"concurrent-{rep}"
        args = [
            (
                str(root),
                str(tmp / f"weights-{rep}-{w}"),
                w,
                range((rep * procs + w) * per_proc, (rep * procs + w + 1) * per_proc),
            )
            for w in range(procs)
        ]
        result = run_workers(register_worker, args)
        result["check"] = check_ours(root, procs * per_proc)
        reps.append(result)
        log(
            f"  rep {rep + 1}: {result['wall_s']:.2f} s, {len(result['errors'])} errors, "
            f"numbering {result['check']}"
        )
        for w in range(procs):
            shutil.rmtree(tmp / f"weights-{rep}-{w}")
        if rep:
            shutil.rmtree(root)
    checks = "; ".join(sorted({r["check"] for r in reps}))
    return combine_reps(reps) | {
        "check": checks,
        "root": str(tmp / "concurrent-0"),
        "versions": procs * per_proc,
    }


def combine_reps(reps: list[dict]) -> dict:
    errors = [e for r in reps for e in r["errors"]]
    return {
        "wall_s": statistics.median(r["wall_s"] for r in reps),
        "per_s": statistics.median(r["per_s"] for r in reps),
        "latency": summarize([x for r in reps for x in r["latency"]["samples"]]),
        "errors": len(errors),
        "locked": sum("database is locked" in e for e in errors),
        "error_kinds": Counter(errors).most_common(5),
        "reps": [{k: r[k] for k in ("wall_s", "per_s", "ok")} for r in reps],
    }


def bench_sequential(tmp: Path, n: int, repeat: int) -> dict:
    """``n`` registrations one after another, ``repeat`` times, into one root."""
    root = tmp / "sequential"
    reg = Registry(root)
    paths = write_weights(tmp / "weights-seq", range(10**6, 10**6 + n * repeat + 1))
    register_one(reg, "warmup", paths.pop(), 0)  # opens, migrates; excluded
    samples = []
    for i, path in enumerate(paths):
        t = time.perf_counter()
        register_one(reg, NAMES[i % len(NAMES)], path, i)
        samples.append(time.perf_counter() - t)
    reg.close()
    return summarize(samples) | {"check": check_ours(root, n * repeat + 1)}


# ---------------------------------------------------------------------- bulk fill and reads


def search_doc(version_id: int, name: str, task: str, description: str) -> dict:
    """The search_docs row Registry._index would write for this version."""
    return {
        "version_id": version_id,
        "name": name.replace("-", " ").replace("_", " ") + " " + name,
        "task": task.replace("-", " "),
        "description": description,
        "tags": "",
        "card": None,
    }


def bulk_rows(reg: Registry, n_models: int, n_versions: int, blob: tuple, rng) -> dict:
    """Rows for ``n_models`` new models sharing ``n_versions`` versions, ids after existing."""
    model_id = reg.db.execute("select coalesce(max(id), 0) from models").fetchone()[0]
    version_id = reg.db.execute("select coalesce(max(id), 0) from versions").fetchone()[0]
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows: dict[str, list] = {t: [] for t in ("models", "versions", "files", "search_docs")}
    rows["aliases"] = []
    for i in range(n_models):
        family, task = FAMILIES[i % len(FAMILIES)]
        model_id += 1
        name = f"{family}-{rng.choice(SIZES)}-{model_id}"
        created = (start + timedelta(seconds=version_id)).isoformat()
        rows["models"].append(
            {
                "id": model_id,
                "name": name,
                "task": task,
                "owner": "bench",
                "description": " ".join(rng.sample(WORDS, 4)),
                "created_at": created,
            }
        )
        for number in range(1, n_versions // n_models + (i < n_versions % n_models) + 1):
            version_id += 1
            created = (start + timedelta(seconds=version_id)).isoformat()
            description = " ".join(rng.sample(WORDS, 5))
            rows["versions"].append(
                {
                    "id": version_id,
                    "model_id": model_id,
                    "number": number,
                    "format": "torch",
                    "description": description,
                    "config": "{}",
                    "size_bytes": blob[1],
                    "created_at": created,
                    "created_by": "bench",
                }
            )
            rows["files"].append(
                {
                    "version_id": version_id,
                    "name": "model.safetensors",
                    "role": "weights",
                    "sha256": blob[0],
                    "size": blob[1],
                }
            )
            rows["search_docs"].append(search_doc(version_id, name, task, description))
        rows["aliases"].append(
            {"model_id": model_id, "alias": "prod", "version_id": version_id, "updated_at": created}
        )
    return rows


def bulk_fill(root: Path, n_models: int, n_versions: int, blob: tuple, rng) -> float:
    """Insert models, versions, files, search docs (FTS via its triggers), aliases at once."""
    reg = Registry(root)
    rows = bulk_rows(reg, n_models, n_versions, blob, rng)
    t = time.perf_counter()
    with write(reg.db):
        for table, table_rows in rows.items():
            reg.db[table].insert_all(table_rows)
    elapsed = time.perf_counter() - t
    reg.close()
    return elapsed


def bench_reads(root: Path, total: int, calls: int, rng) -> dict:
    """Fill ``root`` up to ``total`` versions, then time search per query and show."""
    reg = Registry(root)
    have = reg.db.execute("select count(*) from versions").fetchone()[0]
    blob = tuple(reg.db.execute("select sha256, size from files limit 1").fetchone())
    reg.close()
    fill = max(0, total - have)
    fill_s = bulk_fill(root, max(1, fill // 50), fill, blob, rng) if fill else 0.0
    reg = api.registry(root)
    size = reg.db.execute("select count(*) from versions").fetchone()[0]
    searches = {}
    for query in QUERIES:
        hits = reg.db.execute(
            "select count(*) from search_docs_fts where search_docs_fts match ?",
            [fts_query(query)],
        ).fetchone()[0]
        searches[query] = timed_calls(lambda q=query: api.search(q, root=root), calls)
        searches[query]["hits"] = hits
    refs = [
        r[0]
        for r in reg.db.execute(
            "select m.name || '@' || v.number from versions v join models m on m.id = v.model_id"
        )
    ]
    picks = iter(rng.choices(refs, k=calls + 3))
    show = timed_calls(lambda: api.show(next(picks), root=root), calls)
    return {
        "versions": size,
        "bulk_filled": fill,
        "fill_s": fill_s,
        "search": searches,
        "show": show,
    }


def bench_list(tmp: Path, n_models: int, calls: int, rng) -> dict:
    """A separate registry of ``n_models`` bulk-filled models (5 versions each, an alias)."""
    root = tmp / "list"
    reg = Registry(root)
    (path,) = write_weights(tmp / "weights-list", range(2 * 10**6, 2 * 10**6 + 1))
    digest, size, _ = reg.store.put_file(path)
    reg.close()
    bulk_fill(root, n_models, 5 * n_models, (digest, size), rng)
    result = timed_calls(lambda: api.list_models(root=root), calls)
    return result | {"models": len(api.list_models(root=root)), "versions": 5 * n_models}


def bench_imports(tmp: Path, runs: int, with_mlflow: bool) -> dict:
    def once(code: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp,
            timeout=120,
        )
        return out.stdout.split()[-1]

    def median_of(code: str, n: int) -> float:
        once(code)  # warms the page cache; excluded
        return statistics.median(float(once(code)) for _ in range(n))

    return {
        "load_ext": median_of(CODE_LOAD_EXT, runs),
        "api": median_of(CODE_API, runs),
        "heavy": [m for m in once(CODE_HEAVY).split(",") if m != "-"],
        "mlflow": median_of(CODE_MLFLOW, max(3, runs // 2 + 1)) if with_mlflow else None,
    }


# ---------------------------------------------------------------------- MLflow


def mlflow_client(uri: str):
    import logging

    import mlflow
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    return MlflowClient()


def mlflow_worker(uri, worker, count, barrier, queue) -> None:
    latencies, errors = [], []
    try:
        client = mlflow_client(uri)
        client.get_registered_model(NAMES[0])  # connects before the clock starts
    except Exception as exc:
        errors.append(error_text(exc))
        count = 0
    barrier.wait(timeout=WAIT_S)
    for i in range(count):
        t = time.perf_counter()
        try:
            client.create_model_version(NAMES[(i + worker) % len(NAMES)], source="file:///tmp/x")
        except Exception as exc:
            errors.append(error_text(exc))
            continue
        latencies.append(time.perf_counter() - t)
    queue.put({"latencies": latencies, "errors": errors})


def check_mlflow(db_path: Path) -> tuple[int, str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "select name, count(*), count(distinct version), min(version), max(version) "
            "from model_versions where name != 'warmup' group by name"
        ).fetchall()
    total = sum(r[1] for r in rows)
    return total, check_numbering(rows, total)


def bench_mlflow(tmp: Path, n: int, procs: int, per_proc: int, repeat: int, calls: int):
    """MLflow's registry on SQLite, measured like ours; None when it cannot be imported."""
    try:
        import mlflow
    except Exception as exc:
        log(f"  skipped: {error_text(exc)}")
        return None
    db_path = tmp / "mlflow" / "mlflow.db"
    db_path.parent.mkdir()
    uri = f"sqlite:///{db_path}"
    client = mlflow_client(uri)
    t = time.perf_counter()
    client.create_registered_model("warmup")  # creates the schema (alembic); excluded
    client.create_model_version("warmup", source="file:///tmp/x")
    first_call_s = time.perf_counter() - t
    create_model = []
    for name in NAMES:
        t = time.perf_counter()
        client.create_registered_model(name)
        create_model.append(time.perf_counter() - t)
    samples = []
    for i in range(n * repeat):
        t = time.perf_counter()
        client.create_model_version(NAMES[i % len(NAMES)], source="file:///tmp/x")
        samples.append(time.perf_counter() - t)
    reps = []
    for rep in range(repeat):
        reps.append(run_workers(mlflow_worker, [(uri, w, per_proc) for w in range(procs)]))
        log(
            f"  concurrent rep {rep + 1}: {reps[-1]['wall_s']:.2f} s, "
            f"{len(reps[-1]['errors'])} errors"
        )
    size, numbering = check_mlflow(db_path)
    search = {"models": client.search_registered_models, "versions": client.search_model_versions}
    return {
        "version": mlflow.__version__,
        "first_call_s": first_call_s,
        "create_registered_model": summarize(create_model),
        "sequential": summarize(samples),
        "concurrent": combine_reps(reps),
        "numbering": numbering,
        "size": size,
        "search": {
            k: timed_calls(lambda f=f: f(filter_string=MLFLOW_FILTER, max_results=20), calls)
            for k, f in search.items()
        },
    }


# ---------------------------------------------------------------------- report


def fmt_s(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "n/a"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"


def fmt_p(summary: dict) -> str:
    return f"{fmt_s(summary['p50'])} / {fmt_s(summary['p99'])}"


def ratio_row(label: str, ours: float, theirs: float | None, ours_over: bool, target: float):
    """A compared row; ``ours_over``: ratio ours/mlflow must be <= target, else mlflow/ours >=."""
    goal = f"ours/mlflow <= {target}x" if ours_over else f"mlflow/ours >= {target}x"
    if theirs is None:
        return [label, fmt_s(ours), NOT_INSTALLED, "n/a", goal, "n/a"]
    ratio = ours / theirs if ours_over else theirs / ours
    met = ratio <= target if ours_over else ratio >= target
    return [label, fmt_s(ours), fmt_s(theirs), f"{ratio:.3g}x", goal, "yes" if met else "NO"]


def table_rows(r: dict) -> list[list[str]]:
    c, m, reads, imp = r["concurrent"], r["mlflow"], r["reads"], r["imports"]
    mc = m["concurrent"] if m else None
    p, n = r["config"]["procs"], r["config"]["per_proc"]
    mp_, mn = r["config"]["mlflow_procs"], r["config"]["mlflow_per_proc"]
    rows = [
        [
            f"concurrent register, ours {p}x{n} / mlflow {mp_}x{mn}: wall",
            fmt_s(c["wall_s"]),
            fmt_s(mc["wall_s"]) if m else NOT_INSTALLED,
            "",
            "",
            "",
        ],
        [
            "  throughput (registrations/s)",
            f"{c['per_s']:.0f}/s",
            f"{mc['per_s']:.0f}/s" if m else NOT_INSTALLED,
            "",
            "",
            "",
        ],
        [
            "  latency p50 / p99",
            fmt_p(c["latency"]),
            fmt_p(mc["latency"]) if m else NOT_INSTALLED,
            "",
            "",
            "",
        ],
        [
            "  errors (of them 'database is locked')",
            f"{c['errors']} ({c['locked']})",
            f"{mc['errors']} ({mc['locked']})" if m else NOT_INSTALLED,
            "",
            "ours: 0",
            "yes" if c["errors"] == 0 else "NO",
        ],
        [
            "  all present, numbered 1..N per model",
            c["check"],
            m["numbering"] if m else NOT_INSTALLED,
            "",
            "ours: ok",
            "yes" if c["check"] == "ok" else "NO",
        ],
    ]
    seq = r["sequential"]
    rows.append(
        ratio_row(
            f"register p50, 1 process, {seq['n']} calls",
            seq["p50"],
            m["sequential"]["p50"] if m else None,
            True,
            1.5,
        )
    )
    small = r["search_small"]
    size = f"ours {small['versions']:,} / mlflow {m['size']:,} versions" if m else ""
    for key, what in (
        ("models", "search_registered_models"),
        ("versions", "search_model_versions"),
    ):
        theirs = m["search"][key]["p50"] if m else None
        rows.append(
            ratio_row(f"search p50 'embed' vs {what}, {size}", small["p50"], theirs, False, 10)
        )
    best = min(m["search"][k]["p50"] for k in m["search"]) if m else None
    for query, s in reads["search"].items():
        label = f"search at {reads['versions']:,}: {query!r} ({s['hits']:,} hits) vs best mlflow"
        rows.append(ratio_row(label, s["p50"], best, False, 10))
        rows.append(["  p50 / p99", fmt_p(s), "", "", "", ""])
    rows.append(
        [f"show p50 / p99 at {reads['versions']:,} versions", fmt_p(reads["show"]), "", "", "", ""]
    )
    lst = r["list"]
    rows.append(
        [
            f"list p50 / p99, {lst['models']:,} models",
            fmt_p(lst),
            "",
            "",
            "p99 < 50 ms",
            "yes" if lst["p99"] < 0.05 else "NO",
        ]
    )
    rows.append(
        ratio_row("%load_ext maas_lab vs import mlflow", imp["load_ext"], imp["mlflow"], False, 4)
    )
    rows.append(
        ratio_row("import maas_lab.api vs import mlflow", imp["api"], imp["mlflow"], False, 4)
    )
    heavy = "PASS" if not imp["heavy"] else "FAIL: " + ", ".join(imp["heavy"])
    rows.append(
        [
            f"no {'/'.join(HEAVY)} after import",
            heavy,
            "",
            "",
            "PASS",
            "yes" if heavy == "PASS" else "NO",
        ]
    )
    return rows


def render(rows: list[list[str]]) -> str:
    header = ["measurement", "ours", "mlflow", "ratio", "target", "met?"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), line, *(fmt.format(*row) for row in rows)])


def notes(r: dict) -> list[str]:
    reads, m, c = r["reads"], r["mlflow"], r["concurrent"]
    out = [
        f"Machine: {r['machine']}.",
        f"Concurrent/sequential wall and throughput: median of {r['config']['repeat']} "
        "repetitions; latencies: p50/p99 over all calls of all repetitions.",
        f"Search/show registry: {reads['versions']:,} versions, of which "
        f"{reads['bulk_filled']:,} filled by bulk insert ({fmt_s(reads['fill_s'])}, one "
        "transaction), the rest registered for real in step 1.",
        f"List registry: {r['list']['models']:,} models / {r['list']['versions']:,} versions, "
        "filled by bulk insert.",
        "Ours stores, hashes and fsyncs a real file per version (synchronous=FULL); MLflow "
        "create_model_version records metadata only.",
        "Import times: median of fresh interpreters after one discarded run, timed inside "
        "the process (interpreter start-up excluded, nothing subtracted).",
    ]
    if c["error_kinds"]:
        out.append(f"Our errors: {c['error_kinds']}")
    if m is None:
        return [*out, "MLflow: not installed, so nothing was compared."]
    return [
        *out,
        f"MLflow {m['version']} on SQLite, telemetry off. Its first call on a fresh DB "
        f"(schema creation/migrations) took {fmt_s(m['first_call_s'])}; excluded, as is our "
        "first open. create_registered_model p50: "
        f"{fmt_s(m['create_registered_model']['p50'])}.",
        f"MLflow was not filled to {reads['versions']:,}; its searches ran at {m['size']:,} "
        "versions (max_results=20, ours returns 20 too).",
        f"MLflow concurrent errors: {m['concurrent']['error_kinds'] or 'none'}",
    ]


def write_plot(path: str, r: dict) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot written"
    m = r["mlflow"]
    pick = (lambda f: f(m)) if m else (lambda f: math.nan)
    first = QUERIES[0]
    bars = [
        ("register (1 proc)", r["sequential"]["p50"], pick(lambda m: m["sequential"]["p50"])),
        (
            "register (concurrent)",
            r["concurrent"]["latency"]["p50"],
            pick(lambda m: m["concurrent"]["latency"]["p50"]),
        ),
        ("search, small", r["search_small"]["p50"], pick(lambda m: m["search"]["models"]["p50"])),
        (
            f"search '{first}' @{r['reads']['versions']:,}",
            r["reads"]["search"][first]["p50"],
            pick(lambda m: m["search"]["versions"]["p50"]),
        ),
        ("import", r["imports"]["api"], r["imports"]["mlflow"] or math.nan),
    ]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [b[1] * 1e3 for b in bars], 0.4, label="maas_lab")
    ax.bar([x + 0.2 for x in xs], [b[2] * 1e3 for b in bars], 0.4, label="mlflow")
    ax.set_xticks(list(xs), [b[0] for b in bars], rotation=15, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("median latency, ms (log scale)")
    ax.set_title("maas_lab registry vs MLflow (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


# ---------------------------------------------------------------------- main


def concurrency(text: str) -> tuple[int, int]:
    try:
        procs, per_proc = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"write PROCSxN, e.g. 4x250; got {text!r}") from None
    return procs, per_proc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, help="versions for search/show (100000)")
    parser.add_argument("--concurrent", type=concurrency, help="PROCSxN registrations (4x250)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    args.versions = args.versions or (5_000 if quick else 100_000)
    args.procs, args.per_proc = args.concurrent or ((4, 25) if quick else (4, 250))
    args.repeat, args.calls, args.import_runs = (2, 50, 3) if quick else (3, 200, 5)
    args.models = 100 if quick else 1_000
    args.sequential = 50 if quick else 200
    args.mlflow_per_proc = 10 if quick else 50
    return args


def run_all(args: argparse.Namespace, tmp: Path) -> dict:
    rng = random.Random(args.seed)
    log(f"1/6 concurrent registration {args.procs}x{args.per_proc}")
    concurrent = bench_concurrent(tmp, args.procs, args.per_proc, args.repeat)
    log(f"2/6 sequential registration, {args.sequential} x {args.repeat}")
    sequential = bench_sequential(tmp, args.sequential, args.repeat)
    root = Path(concurrent["root"])
    log(f"3/6 search at {concurrent['versions']:,} versions, then bulk fill and reads")
    small = timed_calls(lambda: api.search("embed", root=root), args.calls)
    reads = bench_reads(root, args.versions, args.calls, rng)
    log(f"4/6 list with {args.models} models")
    listing = bench_list(tmp, args.models, args.calls, rng)
    log("5/6 MLflow")
    mlflow = bench_mlflow(
        tmp, args.sequential, args.procs, args.mlflow_per_proc, args.repeat, args.calls
    )
    log("6/6 import times")
    imports = bench_imports(tmp, args.import_runs, mlflow is not None)
    return {
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "config": {
            "procs": args.procs,
            "per_proc": args.per_proc,
            "repeat": args.repeat,
            "calls": args.calls,
            "mlflow_procs": args.procs,
            "mlflow_per_proc": args.mlflow_per_proc,
            "quick": args.quick,
        },
        "concurrent": concurrent,
        "sequential": sequential,
        "search_small": small | {"versions": concurrent["versions"]},
        "reads": reads,
        "list": listing,
        "imports": imports,
        "mlflow": mlflow,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="maas-bench-"))
    try:
        results = run_all(args, tmp)
    finally:
        api.close_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    print(render(table_rows(results)))
    print()
    for line in notes(results):
        print(line)
    print(f"Benchmark took {results['elapsed_s']:.0f} s.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"raw numbers written to {args.json}")
    if args.plot:
        print(write_plot(args.plot, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
