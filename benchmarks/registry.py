"""Benchmark the maas_lab registry against its targets and against MLflow's model registry.

Why: the registry promises MLflow-class registration cost, much faster search, a light import
and safe concurrent writers; these numbers, all from one run, back (or refute) that.

1. Registration, real on both sides: P processes x N versions (default 4 x 250) of 10 model
   names shared by all, each a real safetensors file hashed, fsynced and stored; all must be
   present, numbered 1..N per model, with no "database is locked". Also one process alone.
2. Search at equal size: our ~1,000 registered versions, then the same registry bulk-filled to
   100,000; at both sizes MLflow's own SQLite schema holds the same models and versions (bulk
   INSERT). Then our search per query, ``show`` and ``list``.
3. Import time and time to first answer in fresh interpreters; no heavy ML framework imported.

Run: ``python benchmarks/registry.py [--quick] [--plot out.png] [--json out.json]``. MLflow is
optional (``pip install 'maas-lab[bench]'``); without it the MLflow column says so.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from maas_lab import api
from maas_lab.registry import FileSpec, Registry
from maas_lab.registry.db import INDEX_MODELS, write
from maas_lab.registry.search import fts_query

# Inherited by the worker processes and the fresh interpreters.
os.environ["MAAS_LAB_PROGRESS"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no background network attempts

FAMILIES = [
    tuple(pair.split(":"))
    for pair in """minilm-embed:sentence-embedding mpnet-embed:sentence-embedding
    bge-embed:sentence-embedding resnet-cls:image-classification vit-cls:image-classification
    bert-cls:text-classification digits-mlp:image-classification yolo-det:object-detection
    detr-det:object-detection whisper-asr:speech-recognition""".split()
]
SIZES = ["tiny", "small", "base", "large"]
WORDS = """fast multilingual distilled quantized pruned baseline finetuned english retrieval
semantic similarity mnist digits imagenet coco robust compact student teacher int8 fp16 export
experimental production accurate lightweight mobile edge server batch streaming cased uncased
augmented calibrated sparse dense legacy nightly reviewed""".split()
RARE, RARE_EVERY = "bioacoustic", 250  # in one version of every 250th bulk-filled model
NAMES = [f"{family}-{SIZES[i % len(SIZES)]}" for i, (family, _) in enumerate(FAMILIES)]
TASK_OF = {name: task for name, (_, task) in zip(NAMES, FAMILIES, strict=True)}
QUERIES = ["embedding small", "classification", "digits mlp", RARE]
HEAVY = ("torch", "onnxruntime", "transformers", "accelerate")
NOTABLE = ("pandas", "pyarrow", "numpy")  # not forbidden, but worth knowing about
HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None
MLFLOW_FILTER = "name LIKE '%embed%'"
MLFLOW_SEARCHES = {"models": "search_registered_models", "versions": "search_model_versions"}
SOURCE = "file:///tmp/x"
NOT_INSTALLED = "mlflow not installed"
WAIT_S = 600  # no phase may hang the benchmark for longer than this
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
PRESET_KEYS = "versions procs per_proc mlflow_per_proc sequential repeat calls runs models"
FULL, QUICK = (100_000, 4, 250, 50, 200, 3, 200, 5, 1_000), (5_000, 4, 25, 10, 50, 2, 50, 3, 100)

TIMED = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
CODE = {
    "load_ext": "import IPython.core.magic, maas_lab; from maas_lab.magics import MaasMagics",
    "api": "import maas_lab.api",
    "mlflow": "import mlflow",
    "first_ours": "import maas_lab.api; maas_lab.api.list_models(root={root!r})",
    "first_mlflow": "import mlflow; mlflow.MlflowClient({uri!r}).search_registered_models("
    "max_results=20)",
    "loaded": "import sys, maas_lab; from maas_lab import api, magics, cli; "
    f"print(','.join(m for m in {HEAVY + NOTABLE!r} if m in sys.modules) or '-')",
}
# Our bulk-filled tables in insertion order (foreign keys are on), and their columns; the
# search documents are then built by the registry's own statement (what Registry._index runs).
TABLES = {
    "models": "id name task description owner created_at",
    "versions": "id model_id number format description config size_bytes created_at created_by",
    "files": "version_id name role sha256 size",
    "aliases": "model_id alias version_id updated_at",
}
# Our models and versions copied into MLflow's tables: same names, descriptions and times.
MS = "cast((julianday({}) - 2440587.5) * 86400000 as integer)"
MIRROR_SQL = [
    f"""insert into registered_models (name, creation_time, last_updated_time, description)
        select m.name, {MS.format("m.created_at")}, {MS.format("max(v.created_at)")},
               m.description
          from ours.models m join ours.versions v on v.model_id = m.id group by m.id""",
    f"""insert into model_versions (name, version, creation_time, last_updated_time,
               description, current_stage, source, status, storage_location)
        select m.name, v.number, {MS.format("v.created_at")}, {MS.format("v.created_at")},
               v.description, 'None', '{SOURCE}', 'READY', '{SOURCE}'
          from ours.versions v join ours.models m on m.id = v.model_id""",
]


def summarize(samples: list[float]) -> dict:
    """Median and nearest-rank p99; the samples are kept so repetitions can be pooled."""
    if not samples:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "samples": []}
    p99 = sorted(samples)[max(0, math.ceil(0.99 * len(samples)) - 1)]
    return {"n": len(samples), "p50": statistics.median(samples), "p99": p99, "samples": samples}


def time_each(calls: Iterable[Callable], errors: list | None = None) -> list[float]:
    """Seconds per call. With ``errors``, a failing call is recorded there and skipped (a
    concurrent writer must report its errors, not die); without, it raises."""
    out = []
    for call in calls:
        t = time.perf_counter()
        try:
            call()
            out.append(time.perf_counter() - t)
        except Exception as exc:
            if errors is None:
                raise
            errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
    return out


def timed_calls(fn: Callable[[], object], calls: int, warmup: int = 3) -> dict:
    """Latency of ``calls`` calls after ``warmup`` untimed ones (caches, connections, imports)."""
    return summarize(time_each([fn] * (warmup + calls))[warmup:])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_weights(folder: Path, seeds: range) -> list[Path]:
    """One small safetensors file per seed; distinct seeds give distinct blobs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"w{seed}.safetensors" for seed in seeds]
    for seed, path in zip(seeds, paths, strict=True):
        save_file({"w": np.random.default_rng(seed).random((64, 16)).astype("float32")}, str(path))
    return paths


def register_one(reg: Registry, path: Path, i: int, name: str | None = None) -> None:
    """Version ``i`` of the i-th of NAMES (writers cycle over the same names, so collide)."""
    name = name or NAMES[i % len(NAMES)]
    files, metrics = (
        [FileSpec(path, "model.safetensors", "weights")],
        {"accuracy": 0.8 + i % 20 / 100},
    )
    words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(4))
    config, task = {"hidden": 16, "layers": 2}, TASK_OF.get(name)
    reg.register(name, files, "torch", config=config, task=task, description=words, metrics=metrics)


def mlflow_versions(client, count: int, offset: int = 0) -> list[Callable]:
    """MLflow's equivalent: create_model_version calls (metadata only, no file stored)."""
    names = [NAMES[(i + offset) % len(NAMES)] for i in range(count)]
    return [partial(client.create_model_version, name, source=SOURCE) for name in names]


def mlflow_client(uri: str):
    """A client on ``uri``, its INFO logs (schema creation, migrations) silenced."""
    from mlflow import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def writer(kind: str, target: str, index: int, spec, barrier, queue) -> None:
    """One concurrent writer process. Only the writes are timed: its files are written and
    its registry opened (migrated), or its MLflow client connected, before the barrier."""
    errors, calls = [], []
    try:
        if kind == "ours":
            reg, paths = Registry(target), write_weights(Path(f"{target}-w{index}"), spec)
            reg.db.execute("select 1")
            calls = [partial(register_one, reg, p, i + index) for i, p in enumerate(paths)]
        else:
            client = mlflow_client(target)
            client.get_registered_model(NAMES[0])
            calls = mlflow_versions(client, spec, index)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    barrier.wait(timeout=WAIT_S)
    latencies = time_each(calls, errors)
    queue.put({"latencies": latencies, "errors": errors})


def run_writers(kind: str, target: str, specs: list) -> dict:
    """Spawn one writer per spec, release them together, time until the last one reports."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(len(specs) + 1), ctx.Queue()
    args = [(kind, target, i, spec, barrier, queue) for i, spec in enumerate(specs)]
    procs = [ctx.Process(target=writer, args=a) for a in args]
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
    log(f"  {kind}: {wall:.2f} s, {len(latencies)} written, {len(errors)} errors")
    return {"wall_s": wall, "ok": len(latencies), "latencies": latencies, "errors": errors}


def combine_reps(reps: list[dict]) -> dict:
    errors = [e for r in reps for e in r["errors"]]
    return {
        "wall_s": statistics.median(r["wall_s"] for r in reps),
        "per_s": statistics.median(r["ok"] / r["wall_s"] for r in reps),
        "latency": summarize([x for r in reps for x in r["latencies"]]),
        "errors": len(errors),
        "locked": sum("database is locked" in e for e in errors),
        "error_kinds": Counter(errors).most_common(5),
        "reps": [{"wall_s": r["wall_s"], "ok": r["ok"]} for r in reps],
    }


def check_numbering(db_path: Path, sql: str, expected: int | None = None) -> tuple[int, str]:
    """Versions present, and 'ok' when every model is numbered exactly 1..N, else what is
    wrong: numbers are allocated under concurrency, so this is where races would show."""
    numbers, conn = defaultdict(list), sqlite3.connect(db_path)
    for name, number in conn.execute(sql):
        numbers[name].append(number)
    conn.close()
    total = sum(map(len, numbers.values()))
    bad = [name for name, ns in numbers.items() if sorted(ns) != list(range(1, len(ns) + 1))]
    if bad:
        return total, f"gaps or duplicates in {', '.join(bad)}"
    return total, "ok" if expected in (None, total) else f"{total} of {expected} present"


def bench_concurrent(tmp: Path, procs: int, per_proc: int, repeat: int) -> dict:
    """Concurrent registration into fresh roots; the first root is kept for the searches."""
    reps, checks, n = [], set(), procs * per_proc
    sql = "select m.name, v.number from versions v join models m on m.id = v.model_id"
    for rep in range(repeat):
        root = tmp / f"concurrent-{rep}"
        seeds = [range(s, s + per_proc) for s in range(rep * n, (rep + 1) * n, per_proc)]
        reps.append(run_writers("ours", str(root), seeds))
        _, check = check_numbering(root / "registry.db", sql, n)
        blobs = len(Registry(root).store.digests())
        checks.add(check if blobs == n else f"{check}; {blobs} blobs for {n} files")
        log(f"  numbering: {check}")
        for w in range(procs):
            shutil.rmtree(f"{root}-w{w}")
        if rep:
            shutil.rmtree(root)
    return combine_reps(reps) | {"check": "; ".join(sorted(checks))}


def bench_sequential(tmp: Path, n: int, repeat: int) -> dict:
    """``n * repeat`` registrations one after another into one root, the first excluded."""
    reg = Registry(tmp / "sequential")
    paths = write_weights(tmp / "weights-seq", range(10**6, 10**6 + n * repeat + 1))
    register_one(reg, paths.pop(), 0, "warmup")  # opens and migrates
    return summarize(time_each(partial(register_one, reg, p, i) for i, p in enumerate(paths)))


def bench_mlflow(tmp: Path, n: int, procs: int, per_proc: int, repeat: int) -> dict:
    """MLflow's registration on SQLite through its API, measured like ours."""
    db_path = tmp / "mlflow-api.db"
    uri = f"sqlite:///{db_path}"
    t = time.perf_counter()
    client = mlflow_client(uri)
    client.create_registered_model("warmup")  # creates the schema (alembic); excluded
    client.create_model_version("warmup", source=SOURCE)
    first_call_s = time.perf_counter() - t
    create_model = time_each(partial(client.create_registered_model, name) for name in NAMES)
    sequential = time_each(mlflow_versions(client, n * repeat))
    reps = [run_writers("mlflow", uri, [per_proc] * procs) for _ in range(repeat)]
    sql = "select name, version from model_versions where name != 'warmup'"
    size, numbering = check_numbering(db_path, sql)
    return {
        "first_call_s": first_call_s,
        "create_registered_model": summarize(create_model),
        "sequential": summarize(sequential),
        "concurrent": combine_reps(reps) | {"check": numbering},
        "size": size,
    }


def stamp(seconds: int) -> str:
    return (START + timedelta(seconds=seconds)).isoformat()


def bulk_rows(db, n_models: int, n_versions: int, blob: tuple, rng) -> dict[str, list[tuple]]:
    """Rows for ``n_models`` new models sharing ``n_versions`` versions, ids after existing."""
    last = "select coalesce(max(id), 0) from {}"
    model_id, version_id = (db.execute(last.format(t)).fetchone()[0] for t in list(TABLES)[:2])
    rows: dict[str, list[tuple]] = {table: [] for table in TABLES}
    for i in range(n_models):
        family, task = FAMILIES[i % len(FAMILIES)]
        model_id += 1
        name = f"{family}-{rng.choice(SIZES)}-{model_id}"
        words = " ".join(rng.sample(WORDS, 4))
        rows["models"].append((model_id, name, task, words, "bench", stamp(version_id)))
        for number in range(1, n_versions // n_models + (i < n_versions % n_models) + 1):
            version_id += 1
            rare = [RARE] if number == 1 and i % RARE_EVERY == 0 else []
            words = " ".join(rng.sample(WORDS, 5) + rare)
            version = (version_id, model_id, number, "torch", words, "{}", blob[1])
            rows["versions"].append((*version, stamp(version_id), "bench"))
            rows["files"].append((version_id, "model.safetensors", "weights", *blob))
        rows["aliases"].append((model_id, "prod", version_id, stamp(version_id)))
    return rows


def bulk_fill(root: Path, n_models: int, n_versions: int, blob: tuple, rng) -> float:
    """Insert all rows, then the new models' search documents with the registry's own
    statement (FTS kept in step by its triggers), in one transaction; seconds taken."""
    reg = Registry(root)
    rows = bulk_rows(reg.db, n_models, n_versions, blob, rng)
    t = time.perf_counter()
    with write(reg.db):
        for table, columns in TABLES.items():
            marks = ", ".join("?" * len(columns.split()))
            sql = f"insert into {table} ({columns.replace(' ', ', ')}) values ({marks})"
            reg.db.conn.executemany(sql, rows[table])
        reg.db.execute(INDEX_MODELS.format(where="where m.id >= ?"), [rows["models"][0][0]])
    elapsed = time.perf_counter() - t
    reg.close()
    return elapsed


def mlflow_mirror(root: Path, name: str) -> tuple[str | None, float]:
    """A DB in MLflow's own schema (made by MLflow once, then copied) filled by bulk INSERT
    with our registry's models and versions: its URI and the seconds the inserts took."""
    if not HAVE_MLFLOW:
        return None, math.nan
    template = root.with_name("mlflow-template.db")
    if not template.exists():
        mlflow_client(f"sqlite:///{template}").search_registered_models(max_results=1)
    dest = root.with_name(f"mlflow-{name}.db")
    shutil.copy(template, dest)
    conn = sqlite3.connect(dest)
    conn.execute("attach database ? as ours", [str(root / "registry.db")])
    t = time.perf_counter()
    with conn:
        for sql in MIRROR_SQL:
            conn.execute(sql)
    elapsed = time.perf_counter() - t
    conn.close()
    return f"sqlite:///{dest}", elapsed


def bench_search_at(root: Path, calls: int) -> dict:
    """Our search('embed') vs MLflow's two searches on a copy of the same models/versions."""
    count = "select (select count(*) from models), (select count(*) from versions)"
    models, versions = api.registry(root).db.execute(count).fetchone()
    uri, mirror_s = mlflow_mirror(root, f"search-{versions}")
    out = {"models": models, "versions": versions, "mirror_s": mirror_s, "mlflow": None}
    out["ours"] = timed_calls(lambda: api.search("embed", root=root), calls)
    if uri:
        client, kw = mlflow_client(uri), {"filter_string": MLFLOW_FILTER, "max_results": 20}
        searches = {key: partial(getattr(client, fn), **kw) for key, fn in MLFLOW_SEARCHES.items()}
        out["mlflow"] = {key: timed_calls(fn, calls) for key, fn in searches.items()}
    return out


def bench_reads(root: Path, total: int, calls: int, rng) -> dict:
    """Fill ``root`` up to ``total`` versions, then time search per query and show."""
    db = api.registry(root).db
    have = db.execute("select count(*) from versions").fetchone()[0]
    blob = tuple(db.execute("select sha256, size from files limit 1").fetchone())
    fill = max(0, total - have)
    fill_s = bulk_fill(root, max(1, fill // 50), fill, blob, rng) if fill else 0.0
    out = {"bulk_filled": fill, "fill_s": fill_s, "search": {}}
    for query in QUERIES:
        match = "select count(*) from search_docs_fts(?)"  # models: one document each
        words = query.split()
        hits = {op: db.execute(match, [fts_query(words, op)]).fetchone()[0] for op in ("AND", "OR")}
        out["search"][query] = timed_calls(lambda q=query: api.search(q, root=root), calls) | hits
    ref = "select m.name || '@' || v.number from versions v join models m on m.id = v.model_id"
    picks = iter(rng.choices([r[0] for r in db.execute(ref)], k=calls + 3))
    return out | {"show": timed_calls(lambda: api.show(next(picks), root=root), calls)}


def bench_list(tmp: Path, n_models: int, calls: int, rng) -> dict:
    """A separate registry of ``n_models`` bulk-filled models, 5 versions and an alias each."""
    root = tmp / "list"
    reg = Registry(root)
    (path,) = write_weights(tmp / "weights-list", range(2 * 10**6, 2 * 10**6 + 1))
    digest, size, _ = reg.store.put_file(path)
    reg.close()
    bulk_fill(root, n_models, 5 * n_models, (digest, size), rng)
    result = timed_calls(lambda: api.list_models(root=root), calls)
    return result | {"models": len(api.list_models(root=root)), "versions": 5 * n_models}


def fresh(code: str, runs: int, cwd: Path) -> float:
    """Median seconds ``code`` takes inside fresh interpreters (start-up excluded); one run is
    discarded first, so every counted run finds the files in the page cache."""

    def once() -> float:
        cmd = [sys.executable, "-c", TIMED.format(code)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=cwd, timeout=300)
        return float(out.stdout.split()[-1])

    once()
    return statistics.median(once() for _ in range(runs))


def bench_imports(tmp: Path, runs: int) -> dict:
    """Import times, time to first answer (import plus one listing) and what got imported."""
    cmd = [sys.executable, "-c", CODE["loaded"]]
    loaded = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp).stdout
    uri, _ = mlflow_mirror(tmp / "list", "list")
    out = {"loaded": [m for m in loaded.split()[-1].split(",") if m != "-"]}
    out |= {"pandas": importlib.util.find_spec("pandas") is not None, "first_mlflow": None}
    for key in ["load_ext", "api", "first_ours", "mlflow", "first_mlflow"][: 5 if uri else 3]:
        out[key] = fresh(CODE[key].format(root=str(tmp / "list"), uri=uri), runs, tmp)
    return {"mlflow": None} | out


def fmt(x: float | dict | None) -> str:
    """Seconds as ms or s; a summary as 'p50 (p99 ...)'."""
    if isinstance(x, dict):
        return f"{fmt(x['p50'])} (p99 {fmt(x['p99'])})"
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:.2f} s" if x >= 1 else f"{x * 1e3:.3g} ms"


def row(label: str, ours: str, mlflow: str = "", ratio: str = "", target: str = "", met=None):
    return [label, ours, mlflow, ratio, target, "" if met is None else ("yes" if met else "NO")]


def compare(label: str, ours, theirs, target=None, ours_over=False, bar: str | None = None):
    """A compared row of seconds or summaries (p50s compared). ``ours_over``: the goal is
    ours/mlflow <= target, else mlflow/ours >= target. A ``bar`` name also plots it."""
    a, b = (x["p50"] if isinstance(x, dict) else x for x in (ours, theirs or math.nan))
    ratio, goal, met = a / b if ours_over else b / a, "", None
    if target is not None:
        goal = f"ours/mlflow <= {target}x" if ours_over else f"mlflow/ours >= {target}x"
        met = ratio <= target if ours_over else ratio >= target
    if theirs is None:
        cells = row(label, fmt(ours), NOT_INSTALLED, "n/a", goal)
    else:
        cells = row(label, fmt(ours), fmt(theirs), f"{ratio:.3g}x", goal, met)
    return cells + ([(bar, a, b)] if bar else [])


def table(r: dict) -> list[list]:
    """All rows: registration, search at both sizes and per query, show, list, imports."""
    c, m, imp, reads, lst = (r[k] for k in ("concurrent", "mlflow", "imports", "reads", "list"))
    mc, seq, big, cfg = m and m["concurrent"], r["sequential"], r["search_at"][-1], r["config"]

    def cells(x: dict) -> dict:
        rate, errors = f"{x['per_s']:.0f}/s", f"{x['errors']} ({x['locked']})"
        return {"wall": fmt(x["wall_s"]), "rate": rate, "err": errors, "check": x["check"]}

    o, t = cells(c), defaultdict(lambda: NOT_INSTALLED)
    t.update(cells(mc) | {"n": str(cfg["mlflow_per_proc"])} if mc else {})
    n, bar = f"{seq['n']} calls", "register\n1 process"
    rows = [
        row(f"concurrent register, {cfg['procs']} processes: wall", o["wall"], t["wall"]),
        row("  versions per process", str(cfg["per_proc"]), t["n"]),
        row("  throughput", o["rate"], t["rate"]),
        compare("  latency", c["latency"], mc and mc["latency"], bar="register\nconcurrent"),
        row("  errors ('database is locked')", o["err"], t["err"], "", "ours: 0", not c["errors"]),
        row(
            "  all present, 1..N per model",
            o["check"],
            t["check"],
            "",
            "ours: ok",
            c["check"] == "ok",
        ),
        compare(f"register, 1 process, {n}", seq, m and m["sequential"], 1.5, True, bar),
    ]
    bulk = f"{reads['bulk_filled']:,} filled by bulk insert"
    for s, ours in zip(r["search_at"], ("registered", bulk), strict=True):
        size, theirs = f"{s['versions']:,} versions / {s['models']:,} models", s["mlflow"] or {}
        filled = "filled by bulk insert" if theirs else NOT_INSTALLED
        rows.append(row(f"search 'embed', {size}; data:", ours, filled))
        for key, fn in MLFLOW_SEARCHES.items():
            bar = f"search 'embed'\n{s['versions']:,} versions\n(mlflow: {key})"
            rows.append(compare(f"  vs {fn}", s["ours"], theirs.get(key), 10, bar=bar))
    best = big["mlflow"] and min(big["mlflow"].values(), key=lambda x: x["p50"])
    rows.append(row(f"search at {big['versions']:,} versions, vs faster mlflow search there", ""))
    for query, s in reads["search"].items():
        hits = f"{s['AND']:,} AND / {s['OR']:,} OR" if " " in query else f"{s['AND']:,}"
        rows.append(compare(f"  {query!r} (hits {hits})", s, best, 10))
    rows.append(row(f"show at {big['versions']:,} versions", fmt(reads["show"])))
    rows.append(
        row(f"list, {lst['models']:,} models", fmt(lst), "", "", "p99 < 50 ms", lst["p99"] < 0.05)
    )
    first = f"first answer\n{lst['models']:,} models"
    for label, ours, theirs, target, bar in [
        ("%load_ext maas_lab vs import mlflow", "load_ext", "mlflow", 4, None),
        ("import maas_lab.api vs import mlflow", "api", "mlflow", 4, "import"),
        (f"{first}: import + list vs import + search", "first_ours", "first_mlflow", None, first),
    ]:
        rows.append(compare(label.replace("\n", ", "), imp[ours], imp[theirs], target, bar=bar))
    found = ", ".join(name for name in imp["loaded"] if name in HEAVY)
    verdict = f"FAIL: {found}" if found else "PASS"
    return rows + [row(f"no {'/'.join(HEAVY)} after import", verdict, "", "", "PASS", not found)]


def render(rows: list[list]) -> str:
    header = ["measurement", "ours", "mlflow", "ratio", "target", "met?"]
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    line = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [line.format(*header), "-+-".join("-" * w for w in widths)]
    return "\n".join(lines + [line.format(*cells[:6]).rstrip() for cells in rows])


def notes(r: dict) -> list[str]:
    reads, m, c, imp, lst = (r[k] for k in ("reads", "mlflow", "concurrent", "imports", "list"))
    small, big = r["search_at"]
    loaded = ", ".join(name for name in imp["loaded"] if name in NOTABLE) or "none"
    out = [
        f"Machine: {r['machine']}.",
        f"Concurrent wall and throughput: median of {r['config']['repeat']} repetitions; "
        "latencies over all calls of all repetitions. Ours stores, hashes and fsyncs a real "
        "file per version (synchronous=FULL); MLflow's create_model_version records metadata.",
        f"Search at {small['versions']:,} versions: our registry from the concurrent step, "
        f"registered for real; MLflow's copy of it filled by bulk insert "
        f"({fmt(small['mirror_s'])}). At {big['versions']:,}: ours has "
        f"{reads['bulk_filled']:,} versions filled by bulk insert ({fmt(reads['fill_s'])}, one "
        "transaction, search documents built by the registry's own statement); MLflow's copy "
        f"of all of it filled by bulk insert ({fmt(big['mirror_s'])}). Both return at most 20.",
        f"Hits count models (AND: every word, OR: any word); {RARE!r} is in one version of every "
        f"{RARE_EVERY}th bulk-filled model. List: {lst['models']:,} models / "
        f"{lst['versions']:,} versions by bulk insert; MLflow's first answer ran on a copy.",
        "Fresh-interpreter times are taken inside the process (start-up excluded).",
        f"Of {', '.join(NOTABLE)}, importing maas_lab with api, magics, cli loaded: {loaded}. "
        f"pandas is {'importable' if imp['pandas'] else 'not installed'} in this venv (mlflow "
        "brings it; sqlite-utils imports it at import time when present).",
    ]
    if c["error_kinds"]:
        out.append(f"Our errors: {c['error_kinds']}")
    if m is None:
        return [*out, "MLflow: not installed, so nothing was compared."]
    return out + [
        f"MLflow {importlib.metadata.version('mlflow')} on SQLite, telemetry off. Its first "
        f"call on a fresh DB (schema creation) took {fmt(m['first_call_s'])}; excluded, as is "
        f"our first open. create_registered_model p50: {fmt(m['create_registered_model']['p50'])}"
        f". Its API-made registration DB ({m['size']:,} versions) is not used for search.",
        f"MLflow concurrent errors: {m['concurrent']['error_kinds'] or 'none'}",
    ]


def write_plot(path: str, rows: list[list]) -> str:
    """Grouped bars of medians (log scale, each labelled) for the rows that asked to be plotted."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot written"
    bars = [cells[6] for cells in rows if len(cells) > 6]
    fig, ax = plt.subplots(figsize=(13, 5.5))
    for k, (shift, label) in enumerate(((-0.2, "maas_lab"), (0.2, "mlflow")), start=1):
        xs, ms = [i + shift for i in range(len(bars))], [b[k] * 1e3 for b in bars]
        ax.bar(xs, ms, 0.4, label=label)
        for x, v in zip(xs, ms, strict=True):
            if not math.isnan(v):
                ax.annotate(fmt(v / 1e3), (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set(
        yscale="log", ylabel="median, ms (log scale)", title="maas_lab vs MLflow (lower is better)"
    )
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, help="versions for search/show (100000)")
    split = lambda text: [int(x) for x in text.lower().split("x")]  # noqa: E731
    parser.add_argument("--concurrent", metavar="PROCSxN", type=split, help="e.g. 4x250")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = dict(zip(PRESET_KEYS.split(), QUICK if args.quick else FULL, strict=True))
    vars(args).update(sizes | {"versions": args.versions or sizes["versions"]})
    args.procs, args.per_proc = args.concurrent or (args.procs, args.per_proc)
    return args


def run_all(args: argparse.Namespace, tmp: Path) -> dict:
    rng = random.Random(args.seed)
    r = {
        "config": vars(args),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
    }
    log(f"1/7 concurrent registration {args.procs}x{args.per_proc}")
    r["concurrent"] = bench_concurrent(tmp, args.procs, args.per_proc, args.repeat)
    log(f"2/7 sequential registration, {args.sequential} x {args.repeat}")
    r["sequential"] = bench_sequential(tmp, args.sequential, args.repeat)
    log("3/7 MLflow registration" + ("" if HAVE_MLFLOW else ": not installed"))
    mlflow_args = (tmp, args.sequential, args.procs, args.mlflow_per_proc, args.repeat)
    r["mlflow"] = bench_mlflow(*mlflow_args) if HAVE_MLFLOW else None
    log("4/7 search at the registered size, ours and MLflow's copy")
    r["search_at"] = [bench_search_at(tmp / "concurrent-0", args.calls)]
    log(f"5/7 bulk fill to {args.versions:,} versions; search, show")
    r["reads"] = bench_reads(tmp / "concurrent-0", args.versions, args.calls, rng)
    r["search_at"].append(bench_search_at(tmp / "concurrent-0", args.calls))
    log(f"6/7 list with {args.models} models")
    r["list"] = bench_list(tmp, args.models, args.calls, rng)
    log("7/7 import times and time to first answer")
    r["imports"] = bench_imports(tmp, args.runs)
    return r


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
    rows = table(results)
    print(render(rows), "", *notes(results), sep="\n")
    print(f"Benchmark took {results['elapsed_s']:.0f} s.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"raw numbers written to {args.json}")
    if args.plot:
        print(write_plot(args.plot, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
