"""Benchmark maas_lab's training jobs: samples/s on 1 and 2 processes, the speed-up, the launch
overhead, and the time from ``%maas launch`` to the first training step.

Why: ``maas launch`` / ``%maas launch`` promises that a ``train(accelerator, registry)``
function runs on N processes through accelerate without the user touching ``accelerate
launch``. This checks what that buys and costs in one run, through the public API
(``api.launch``, what the magic calls): a compute-bound loop, a ``maas_lab.zoo:mlp`` (64 ->
512 x 3 -> 10, 0.56 M parameters) trained with SGD on 4,096 synthetic rows for a fixed number
of steps at a fixed global batch (256), each process taking ``batch / processes`` rows a step,
so every variant does the same total work (DDP averages the gradients: the 2-process run
follows the 1-process one up to rounding, which the full-data loss column checks). The
variants, the same loop (this file's ``loop``) in each:

1. in-process 1 thread: plain Python, no launcher, no accelerate (``torch.set_num_threads(1)``,
   its own subprocess so the thread setting is clean): the single-core reference.
2. in-process 2 threads: what one process gets from the 2 cores.
3. in-process 1 thread, batch/2: one rank's share of the 2-process run, alone; twice its rate
   is what 2 processes could reach with no gradient all-reduce and no contention.
4. ``api.launch`` 1 process (``threads=1``): the same loop as a job (accelerate, no DDP).
5. ``api.launch`` 2 processes (``threads=1`` each): DDP over gloo. On 2 cores the limit is
   2x the reference.

Every run is timed from outside (spawn or ``launch()`` call to return) and from inside (each
rank writes its own timings: the steady rate from the end of step 1 to the last step, the
median forward / backward / optimizer time of a step, the end of its first step, and a
gradient-sized all-reduce timed alone after training). The job row's own timeline
(``launched``, ``launcher_started``, ``rank0_started``, ``rank0_ready``, ``first_step``,
``ended``) splits the time before the first step; its ``samples_per_s`` is shown beside ours.
A warm-up (one short in-process run and one short 2-process job, not counted) fills the file
cache, then ``--rounds`` rounds (3) each run every variant once, the order rotating, so a busy
spell of the machine hits all variants alike; figures are medians over rounds, speed-ups
ratios of medians. The share of CPU used by other processes meanwhile is reported: above
~10% the numbers are not to be quoted.

Run: ``python benchmarks/launch.py [--quick] [--rounds N] [--steps N] [--plot out.png]
[--json out.json] [--home DIR]``. ``--quick``: 150 steps, 1 round (under a minute; a smoke
run, not for quoting); the default (600 steps, 3 rounds) takes 2-3 minutes on 2 cores. Jobs
are recorded in a temporary registry (``$MAAS_LAB_HOME``) unless ``--home`` is given. Needs
torch, accelerate and matplotlib (for --plot). This file is also the jobs' target: it
defines ``train(accelerator, registry)`` and keeps its top-level imports to the standard
library, so a rank pays nothing for loading it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LOADED = time.time()  # in a worker: just after the interpreter started
os.environ["MAAS_LAB_PROGRESS"] = "0"

SELF = Path(__file__).resolve()
IN_FEATURES, CLASSES, ROW_BATCHES = 64, 10, 16  # rows = 16 global batches
HIDDEN, LAYERS, BATCH, LR = 512, 3, 256, 0.01
WARMUP_STEPS, ALLREDUCE_REPEATS = 20, 20
LIMIT = 2.0  # 2 processes on 2 cores: at best twice one core
BUSY_WARNING = 0.10

REF = "in-process 1 thread"
THREADS2 = "in-process 2 threads"
HALF = "in-process 1 thread, batch/2"
LAUNCH1 = "api.launch 1 process"
LAUNCH2 = "api.launch 2 processes"
VARIANTS = {  # name -> how it runs
    REF: {"kind": "process", "processes": 1, "threads": 1, "batch_div": 1},
    THREADS2: {"kind": "process", "processes": 1, "threads": 2, "batch_div": 1},
    HALF: {"kind": "process", "processes": 1, "threads": 1, "batch_div": 2},
    LAUNCH1: {"kind": "launch", "processes": 1, "threads": 1, "batch_div": 1},
    LAUNCH2: {"kind": "launch", "processes": 2, "threads": 1, "batch_div": 1},
}
JOBS = (LAUNCH1, LAUNCH2)
# the time before the first step, in the order it is spent (both kinds of run)
SEGMENTS = (
    ("to launcher", "launch() -> monitor started `accelerate launch`"),
    ("to rank 0 python", "-> rank 0's Python running (in-process: spawn -> Python running)"),
    ("imports + group", "-> torch, accelerate, Accelerator + process group (in-process: torch)"),
    ("data + model", "-> data, model, accelerator.prepare (DDP) done"),
    ("first step", "-> rank 0's first step done"),
)
PHASES = ("forward", "backward", "optimizer", "other")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# ---------------------------------------------------------------------- what every run runs


def parse_job(argv: list[str]) -> argparse.Namespace:
    """A run's own options (a worker's command line, a job's ``args``)."""
    p = argparse.ArgumentParser(prog="launch.py train")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True, help="global batch (all processes)")
    p.add_argument("--hidden", type=int, default=HIDDEN)
    p.add_argument("--layers", type=int, default=LAYERS)
    p.add_argument("--threads", type=int, default=1, help="in-process runs only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for each rank's stats-rank<N>.json")
    return p.parse_args(argv)


def build(cfg: argparse.Namespace):
    """Synthetic rows labelled by a random linear teacher, the MLP and its optimizer (the same
    on every rank and in every variant: seeded)."""
    import torch

    from maas_lab.zoo import mlp

    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(ROW_BATCHES * cfg.batch, IN_FEATURES, generator=g)
    y = (x @ torch.randn(IN_FEATURES, CLASSES, generator=g)).argmax(1)
    torch.manual_seed(cfg.seed)
    model = mlp(in_features=IN_FEATURES, hidden=cfg.hidden, out_features=CLASSES, layers=cfg.layers)
    return x, y, model, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def loop(cfg, x, y, model, opt, backward, rank: int, world: int, report) -> dict:
    """``cfg.steps`` steps; step s takes global rows [s * batch, (s + 1) * batch) (cycling),
    of which this rank takes its ``batch / world``. Times each phase of each step."""
    import torch

    per = cfg.batch // world
    times = {k: [] for k in (*PHASES, "step")}
    started = time.perf_counter()
    first_end = first_wall = None
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        lo = (step - 1) * cfg.batch % len(x) + rank * per
        xb, yb = x[lo : lo + per], y[lo : lo + per]
        t1 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        backward(loss)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step == 1:
            first_wall = time.time()
        report(step, total=cfg.steps, loss=loss.item(), samples=len(xb))
        t5 = time.perf_counter()
        if step == 1:
            first_end = t5
            continue  # the first step (allocations, DDP's first-iteration set-up) stays out
        phases = (t2 - t1, t3 - t2, t4 - t3, t1 - t0 + t5 - t4, t5 - t0)
        for k, d in zip((*PHASES, "step"), phases, strict=True):
            times[k].append(d)
    ended = time.perf_counter()
    steady = ended - first_end
    return {
        "rank": rank,
        "world": world,
        "threads": torch.get_num_threads(),
        "batch_per_rank": per,
        "steps": cfg.steps,
        "rate": (cfg.steps - 1) * cfg.batch / steady if steady > 0 else None,
        "loop_s": ended - started,
        "first_step_s": first_end - started,
        "first_step_end": first_wall,
        "last_step_end": time.time() - (time.perf_counter() - ended),
        "ms": {k: statistics.median(v) * 1e3 if v else None for k, v in times.items()},
        "last_loss": loss.item(),
        "params": sum(p.numel() for p in model.parameters()),
    }


def full_loss(model, x, y) -> float:
    """The trained model's loss on all rows: the same in every variant up to rounding."""
    import torch

    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y).item()


def write_stats(cfg, stats: dict) -> None:
    path = Path(cfg.out) / f"stats-rank{stats['rank']}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, path)


def train(accelerator, registry):
    """What each process of a job runs (``api.launch(this file, args=[...])``)."""
    entered = time.time()
    import torch
    import torch.distributed as dist

    from maas_lab.training import report

    cfg = parse_job(sys.argv[1:])
    x, y, model, opt = build(cfg)
    built = time.time()
    model, opt = accelerator.prepare(model, opt)
    prepared = time.time()
    rank, world = accelerator.process_index, accelerator.num_processes
    stats = loop(cfg, x, y, model, opt, accelerator.backward, rank, world, report)
    allreduce = []
    if world > 1:  # the gradients' all-reduce alone: what DDP adds to each backward, at least
        flat = torch.ones(stats["params"])
        for i in range(3 + ALLREDUCE_REPEATS):
            t = time.perf_counter()
            dist.all_reduce(flat)
            if i >= 3:
                allreduce.append(time.perf_counter() - t)
    stats |= {
        "stamps": {"entered": entered, "built": built, "prepared": prepared},
        "allreduce_ms": statistics.median(allreduce) * 1e3 if allreduce else None,
        "full_loss": full_loss(accelerator.unwrap_model(model), x, y),
        "backend": str(accelerator.distributed_type),
    }
    write_stats(cfg, stats)


def worker(argv: list[str]) -> int:
    """An in-process run: the same loop in this plain Python process, no launcher."""
    cfg = parse_job(argv)
    import torch
    import torch._dynamo  # noqa: F401  (1.2 s; the first optimizer made would import it)

    import maas_lab.zoo  # noqa: F401  (a job's rank has maas_lab imported before it is ready)

    torch.set_num_threads(cfg.threads)
    imported = time.time()
    x, y, model, opt = build(cfg)
    built = time.time()
    stats = loop(cfg, x, y, model, opt, lambda loss: loss.backward(), 0, 1, lambda *a, **k: None)
    stats |= {
        "stamps": {"loaded": LOADED, "imported": imported, "built": built},
        "full_loss": full_loss(model, x, y),
    }
    write_stats(cfg, stats)
    return 0


# ---------------------------------------------------------------------- running the variants


def job_args(args: argparse.Namespace, v: dict, out: Path, steps: int) -> list[str]:
    return [
        "--steps",
        str(steps),
        "--batch",
        str(args.batch // v["batch_div"]),
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--threads",
        str(v["threads"]),
        "--out",
        str(out),
    ]


def read_ranks(out: Path, world: int) -> list[dict]:
    ranks = []
    for r in range(world):
        try:
            ranks.append(json.loads((out / f"stats-rank{r}.json").read_text()))
        except (OSError, ValueError):
            ranks.append({})
    return ranks


def run_process(args, v: dict, out: Path, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(v["threads"]), "MKL_NUM_THREADS": str(v["threads"])}
    cmd = [sys.executable, str(SELF), "--worker", *job_args(args, v, out, steps)]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout_s)
    returned = time.time()
    if proc.returncode:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        return {"status": "failed", "error": f"exit code {proc.returncode}: {tail}"}
    (r0,) = read_ranks(out, 1)
    st = r0["stamps"]
    segments = [
        None,
        st["loaded"] - t0,
        st["imported"] - st["loaded"],
        st["built"] - st["imported"],
        r0["first_step_end"] - st["built"],
    ]
    return {"status": "ok", "t0": t0, "returned": returned, "ranks": [r0], "segments": segments}


def run_launch(args, v: dict, out: Path, steps: int, home: Path) -> dict:
    import _thread

    from maas_lab import api
    from maas_lab.launching.jobs import job_dir

    # A job that hangs is cancelled as Ctrl-C would (follow() cancels it and returns)
    timer = threading.Timer(args.timeout_s, _thread.interrupt_main)
    timer.start()
    t0 = time.time()
    try:
        report = api.launch(
            str(SELF),
            args=job_args(args, v, out, steps),
            root=home,
            processes=v["processes"],
            threads=v["threads"],
        )
        returned = time.time()
    except KeyboardInterrupt:
        return {"status": "failed", "error": f"no answer in {args.timeout_s} s"}
    except Exception as exc:  # JobFailed and anything a half-written launcher raises
        return {"status": "failed", "error": one_line(exc)[:400]}
    finally:
        timer.cancel()
    row = report.data
    if row["status"] != "succeeded":
        return {"status": "failed", "error": f"job {row['id']} {row['status']}: {row['error']}"}
    ranks = read_ranks(out, v["processes"])
    r0, line = ranks[0], row["timeline"]
    if not r0 or not all(ranks):
        return {"status": "failed", "error": f"job {row['id']}: a rank wrote no stats"}
    first_report = None
    progress = job_dir(api.registry(home).root, row["id"]) / "progress.jsonl"
    try:
        first_report = json.loads(progress.read_text().splitlines()[0])["t"]
    except (OSError, ValueError, IndexError, KeyError):
        pass
    st = r0["stamps"]
    segments = [
        line["launcher_started"] - line["launched"],
        line["rank0_started"] - line["launcher_started"],
        line["rank0_ready"] - line["rank0_started"],
        st["prepared"] - line["rank0_ready"],
        r0["first_step_end"] - st["prepared"],
    ]
    return {
        "status": "ok",
        "t0": t0,
        "returned": returned,
        "ranks": ranks,
        "segments": segments,
        "job": {
            "id": row["id"],
            "world_size": row["world_size"],
            "timeline": line,
            "progress": row["progress"],
            "command": row["command"],
            "first_report": first_report,
        },
        "launch_call_lag_s": line["launched"] - t0,
    }


def run_one(args, name: str, out: Path, steps: int, home: Path) -> dict:
    v = VARIANTS[name]
    out.mkdir(parents=True)
    try:
        if v["kind"] == "process":
            res = run_process(args, v, out, steps)
        else:
            res = run_launch(args, v, out, steps, home)
    except Exception as exc:
        res = {"status": "failed", "error": one_line(exc)[:400]}
    if res["status"] != "ok":
        log(f"    {name}: FAILED: {res['error']}")
        return res
    r0 = res["ranks"][0]
    res["wall_s"] = res["returned"] - res["t0"]
    res["rate"] = r0["rate"]
    res["to_first_step_s"] = r0["first_step_end"] - res["t0"]
    res["overhead_s"] = res["wall_s"] - r0["loop_s"]
    res["after_s"] = res["returned"] - max(r["last_step_end"] for r in res["ranks"])
    if "job" in res:
        res["job_rate"] = res["job"]["progress"].get("samples_per_s")
        line = res["job"]["timeline"]
        res["ended_s"] = line["ended"] - max(r["last_step_end"] for r in res["ranks"])
        if "first_step" in line and res["job"]["first_report"]:
            res["first_step_lag_s"] = line["first_step"] - res["job"]["first_report"]
    log(
        f"    {name}: {res['rate']:,.0f} samples/s, wall {res['wall_s']:.1f} s, first step "
        f"after {res['to_first_step_s']:.1f} s, threads "
        f"{'/'.join(str(r['threads']) for r in res['ranks'])}"
    )
    return res


class CpuMeter:
    """CPU seconds spent by processes other than this one and its children (Linux), as a
    share of all CPUs over the wall time between ``start`` and ``stop``."""

    def __init__(self):
        self.start_at = None

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        t = os.times()
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        ours = t.user + t.system + t.children_user + t.children_system
        return busy, ours, time.perf_counter()

    def start(self) -> None:
        reap()
        self.start_at = self._read()

    def stop(self) -> dict:
        reap()
        end = self._read()
        if self.start_at is None or end is None:
            return {"others": None, "ours": None}
        busy, ours, wall = (b - a for a, b in zip(self.start_at, end, strict=True))
        cpus = os.cpu_count() or 1
        return {"others": max(0.0, busy - ours) / wall / cpus, "ours": ours / wall / cpus}


def reap(wait_s: float = 5.0) -> None:
    """Wait for the jobs' monitor processes (our children, which ``api.launch`` does not wait
    for) so their CPU time, and their ranks', counts as ours."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)


def bench(args: argparse.Namespace, home: Path, tmp: Path) -> dict:
    names = list(VARIANTS)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    log(f"warm-up: {REF} and {LAUNCH2}, {WARMUP_STEPS} steps each (not counted)")
    warm = [
        run_one(args, n, tmp / f"warmup-{i}", WARMUP_STEPS, home)
        for i, n in enumerate((REF, LAUNCH2))
    ]
    meter = CpuMeter()
    meter.start()
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        log(f"round {rnd + 1}/{args.rounds}: {args.steps} steps each")
        for name in order:
            res = run_one(args, name, tmp / f"round{rnd}-{names.index(name)}", args.steps, home)
            runs[name].append({"round": rnd, **res})
    cpu = meter.stop()
    return {"runs": runs, "warmup": warm, "cpu": cpu}


# ---------------------------------------------------------------------- summary


def med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for name, rs in runs.items():
        ok = [r for r in rs if r["status"] == "ok"]
        s = {"ok": len(ok), "runs": len(rs), "errors": [r["error"] for r in rs if r not in ok]}
        for key in (
            "rate",
            "job_rate",
            "wall_s",
            "overhead_s",
            "to_first_step_s",
            "after_s",
            "ended_s",
            "first_step_lag_s",
            "launch_call_lag_s",
        ):
            s[key] = med(r.get(key) for r in ok)
        s["loop_s"] = med(r["ranks"][0]["loop_s"] for r in ok)
        s["segments"] = [med(r["segments"][i] for r in ok) for i in range(len(SEGMENTS))]
        s["full_loss"] = med(r["ranks"][0]["full_loss"] for r in ok)
        s["ms"] = [
            {k: med(r["ranks"][i]["ms"][k] for r in ok) for k in (*PHASES, "step")}
            for i in range(VARIANTS[name]["processes"])
        ]
        s["allreduce_ms"] = med(r["ranks"][0].get("allreduce_ms") for r in ok)
        s["threads"] = sorted({t for r in ok for t in (x["threads"] for x in r["ranks"])})
        out[name] = s
    ref = out[REF]["rate"]
    for s in out.values():
        s["speedup"] = s["rate"] / ref if s["rate"] and ref else None
    return out


def num(x: float | None, fmt: str = ".1f") -> str:
    return "" if x is None else format(x, fmt)


def table(header: list[str], rows: list[list[str]], left: int) -> str:
    cells = [header] + rows
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    pads = [str.ljust] * left + [str.rjust] * (len(header) - left)
    lines = [" | ".join(p(x, w) for p, x, w in zip(pads, c, widths, strict=True)) for c in cells]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def shape(name: str) -> str:
    v = VARIANTS[name]
    return f"{v['processes']} x {v['threads']}"


def throughput_table(s: dict, args, failures: list[str]) -> str:
    header = [
        "variant",
        "procs x threads",
        "batch/proc",
        "samples/s",
        "speed-up",
        f"of {LIMIT:g}x",
        "job row samples/s",
        "full-data loss",
        "wall s",
        "loop s",
        "overhead s",
        "to 1st step s",
    ]
    rows = []
    for name, x in s.items():
        v = VARIANTS[name]
        if x["errors"]:
            failures.append(
                f"[{len(failures) + 1}] {name}: {len(x['errors'])} of {x['runs']} "
                f"runs failed: {x['errors'][0]}"
            )
        rows.append(
            [
                name + (f" (FAILED [{len(failures)}])" if x["errors"] else ""),
                shape(name),
                str(args.batch // v["batch_div"] // v["processes"]),
                num(x["rate"], ",.0f"),
                num(x["speedup"], ".2f") + ("x" if x["speedup"] else ""),
                num(x["speedup"] and x["speedup"] / LIMIT * 100, ".0f")
                + ("%" if x["speedup"] else ""),
                num(x["job_rate"], ",.0f"),
                num(x["full_loss"], ".5f"),
                num(x["wall_s"]),
                num(x["loop_s"]),
                num(x["overhead_s"]),
                num(x["to_first_step_s"]),
            ]
        )
    return table(header, rows, 1)


def startup_table(s: dict) -> str:
    header = [
        "variant",
        *(label for label, _ in SEGMENTS),
        "= to 1st step",
        "last step -> returned",
    ]
    rows = []
    for name, x in s.items():
        segs = x["segments"]
        rows.append(
            [
                name,
                *(num(v, ".2f") if v is not None else "-" for v in segs),
                num(x["to_first_step_s"], ".2f"),
                num(x["after_s"], ".2f"),
            ]
        )
    return table(header, rows, 1)


def step_table(s: dict, args) -> str:
    header = [
        "variant",
        "rank",
        "batch/proc",
        *(f"{p} ms" for p in PHASES),
        "step ms",
        "all-reduce alone ms",
    ]
    rows = []
    for name, x in s.items():
        v = VARIANTS[name]
        for rank, m in enumerate(x["ms"]):
            rows.append(
                [
                    name,
                    str(rank),
                    str(args.batch // v["batch_div"] // v["processes"]),
                    *(num(m[p], ".2f") for p in PHASES),
                    num(m["step"], ".2f"),
                    num(x["allreduce_ms"], ".2f") if rank == 0 else "",
                ]
            )
    return table(header, rows, 1)


def where_time_goes(s: dict) -> list[str]:
    """The 2-process run against its limits, and the launch's costs, in sentences."""
    ref, half, two, thr = s[REF], s[HALF], s[LAUNCH2], s[THREADS2]
    one = s[LAUNCH1]
    lines = []
    if ref["rate"]:
        limit = LIMIT * ref["rate"]
        lines.append(f"- Limit: {LIMIT:g} x {REF} = {limit:,.0f} samples/s.")
        if half["rate"]:
            ceil = LIMIT * half["rate"]
            lines.append(
                f"- Each rank computes batch/2 per step: at that batch one core does "
                f"{half['rate']:,.0f} samples/s, so 2 ranks with no all-reduce would reach "
                f"{ceil:,.0f} ({ceil / limit:.0%} of the limit): halving the batch per process "
                f"costs {1 - ceil / limit:.0%}."
            )
        if two["rate"]:
            lines.append(
                f"- Measured on 2 processes: {two['rate']:,.0f} samples/s = "
                f"{two['speedup']:.2f}x, {two['rate'] / limit:.0%} of the limit."
            )
        if two["rate"] and half["rate"]:
            b2, bh = two["ms"][0]["backward"], half["ms"][0]["backward"]
            s2, sh = two["ms"][0]["step"], half["ms"][0]["step"]
            rest = (LIMIT * half["rate"] - two["rate"]) / limit
            what = (
                f"The rest ({rest:.0%} of the limit) is synchronisation and contention"
                if rest > 0
                else "Nothing measurable is lost to synchronisation (the 2 processes reach the "
                "no-all-reduce figure, within noise)"
            )
            lines.append(
                f"- {what}: a step takes {s2:.2f} ms on rank 0 vs "
                f"{sh:.2f} ms alone at the same batch; backward (which holds DDP's gradient "
                f"all-reduce) {b2:.2f} vs {bh:.2f} ms; an all-reduce of the gradients' size "
                f"alone takes {num(two['allreduce_ms'], '.2f')} ms."
            )
        if thr["rate"]:
            lines.append(
                f"- For comparison, one process with 2 threads: {thr['speedup']:.2f}x "
                f"({thr['rate'] / limit:.0%} of the limit)."
            )
        if one["rate"]:
            lines.append(
                f"- {LAUNCH1} vs the plain loop: {one['speedup']:.2f}x (accelerate's cost per "
                "step, no DDP with one process)."
            )
    for name in JOBS:
        x = s[name]
        if x["wall_s"] is None or ref["overhead_s"] is None:
            continue
        parts = [
            f"{label} {v:.2f} s" for (label, _), v in zip(SEGMENTS, x["segments"], strict=True)
        ]
        lines.append(f"- {name}, before its first step: {', '.join(parts)}.")
        lines.append(
            f"- {name}: {x['overhead_s']:.1f} s of its {x['wall_s']:.1f} s are not training "
            f"({ref['overhead_s']:.1f} s for the plain Python process: the launch adds "
            f"{x['overhead_s'] - ref['overhead_s']:.1f} s); launch() to the end of the first "
            f"step {x['to_first_step_s']:.1f} s (plain Python process: "
            f"{ref['to_first_step_s']:.1f} s)."
        )
    return lines


def notes(r: dict) -> list[str]:
    cfg, s, cpu = r["config"], r["summary"], r["cpu"]
    others = cpu.get("others")
    busy = "unknown" if others is None else f"{others:.0%}"
    warn = (
        " (too busy: re-run on a quiet machine before quoting)"
        if (others or 0) > BUSY_WARNING
        else ""
    )
    lines = [
        f"Machine: {r['machine']}. Other processes kept {busy} of the CPUs busy during the "
        f"rounds{warn}; this benchmark {num(cpu.get('ours') and cpu['ours'] * 100, '.0f')}%.",
        f"Work: mlp 64 -> {cfg['hidden']} x {cfg['layers']} -> 10 "
        f"({r['params']:,} parameters), SGD (momentum 0.9), {cfg['steps']} steps at a global "
        f"batch of {cfg['batch']} on {ROW_BATCHES * cfg['batch']:,} synthetic rows; medians of "
        f"{cfg['rounds']} round(s), variants in rotating order.",
        "samples/s: global samples from the end of rank 0's first step to its last, over that "
        "time (measured in the loop; the first step stays out). job row samples/s: what the "
        "job's record says (the monitor's own measure). full-data loss: the trained model on "
        "all rows (the same work gives the same model, up to rounding).",
        "wall: spawn (in-process) or the launch() call (jobs) to its return; loop: rank 0's "
        "training loop; overhead = wall - loop (start-up, imports, data, model, shutdown).",
        "Start-up columns (s, medians; each from the end of the previous): "
        + "; ".join(f"{label}: {what}" for label, what in SEGMENTS)
        + ". A job's are from its timeline (launched, launcher_started, rank0_started, "
        "rank0_ready) and rank 0's own stamps. last step -> returned: the launcher, ranks and "
        "monitor exiting, and launch() noticing.",
        "Step columns: rank 0's (and rank 1's) median per step after the first, ms; other = "
        "taking the batch + report(); all-reduce alone: a flat tensor the size of the "
        "gradients, gloo, after training.",
        "`%maas launch` calls api.launch: its time to the first step is the jobs' column "
        "plus the magic's argument parsing.",
    ]
    lag = [s[n].get("first_step_lag_s") for n in JOBS]
    if any(x is not None for x in lag):
        lines.append(
            "The job row's timeline first_step minus rank 0's first line in progress.jsonl: "
            + ", ".join(f"{n} {num(x, '.2f')} s" for n, x in zip(JOBS, lag, strict=True))
            + " (medians; the monitor records the newest line it sees at its first poll, "
            "every 0.2 s, so this can reach a few tenths). The tables use rank 0's own stamps."
        )
    ended = [s[n].get("ended_s") for n in JOBS]
    if any(x is not None for x in ended):
        lines.append(
            "Last step to the job's recorded end (ranks exit, launcher exits, monitor polls): "
            + ", ".join(f"{n} {num(x, '.2f')} s" for n, x in zip(JOBS, ended, strict=True))
            + "."
        )
    lines.append(
        "`accelerate launch` (python -m accelerate.commands.launch) imports accelerate and "
        "torch itself before it starts the ranks, which import them again: most of 'to rank "
        "0 python'."
    )
    lines.append(
        "The first optimizer a process makes imports torch._dynamo (~1 s): in a job this "
        "falls in 'data + model'; the in-process runs import it up front, in 'imports'."
    )
    threads = ", ".join(f"{n} {'/'.join(map(str, x['threads']))}" for n, x in s.items())
    lines.append(f"torch threads seen in each run: {threads}.")
    return lines


# ---------------------------------------------------------------------- plot


def write_plot(path: str, r: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r["summary"]
    names = list(s)
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.5))
    ax = axes[0]
    rates = [s[n]["rate"] or 0 for n in names]
    colors = ["tab:blue" if VARIANTS[n]["kind"] == "launch" else "tab:gray" for n in names]
    ax.bar(range(len(names)), rates, color=colors)
    for i, n in enumerate(names):
        if s[n]["speedup"]:
            ax.annotate(f"{s[n]['speedup']:.2f}x", (i, rates[i]), ha="center", va="bottom")
    if s[REF]["rate"]:
        ax.axhline(LIMIT * s[REF]["rate"], color="red", ls="--", lw=1, label=f"{LIMIT:g}x limit")
        ax.axhline(s[REF]["rate"], color="black", lw=1, label="1 core")
    if s[HALF]["rate"]:
        ax.axhline(
            LIMIT * s[HALF]["rate"],
            color="orange",
            ls=":",
            lw=1.5,
            label="2 x batch/2, no all-reduce",
        )
    ax.set(title="training throughput (higher is better)", ylabel="samples/s")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.legend(fontsize=8, loc="center right")
    ax = axes[1]
    left = [0.0] * len(names)
    for k, (label, _) in enumerate(SEGMENTS):
        w = [s[n]["segments"][k] or 0 for n in names]
        ax.barh(range(len(names)), w, left=left, label=label, color=f"C{k}")
        left = [a + b for a, b in zip(left, w, strict=True)]
    for i, n in enumerate(names):
        if s[n]["to_first_step_s"]:
            ax.annotate(
                f"{s[n]['to_first_step_s']:.1f} s",
                (left[i], i),
                va="center",
                fontsize=8,
                xytext=(3, 0),
                textcoords="offset points",
            )
    ax.set(title="start to the end of the first step (medians)", xlabel="s")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left + [1.0]) * 1.15)
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    labels, bottoms = [], []
    for n in names:
        for rank in range(len(s[n]["ms"])):
            labels.append(n if len(s[n]["ms"]) == 1 else f"{n}\nrank {rank}")
            bottoms.append(s[n]["ms"][rank])
    base = [0.0] * len(labels)
    for k, p in enumerate(PHASES):
        h = [m[p] or 0 for m in bottoms]
        ax.bar(range(len(labels)), h, bottom=base, label=p, color=f"C{k + 5}")
        base = [a + b for a, b in zip(base, h, strict=True)]
    ar = s[LAUNCH2]["allreduce_ms"]
    if ar:
        ax.axhline(ar, color="red", ls=":", lw=1, label=f"all-reduce alone {ar:.2f} ms")
    ax.set(title="one training step (medians; batch per process differs)", ylabel="ms")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=7)
    ax.legend(fontsize=8)
    fig.suptitle(f"maas_lab training jobs through accelerate, CPU ({os.cpu_count()} cores)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="150 steps, 1 round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds of every variant (default 3)")
    parser.add_argument("--steps", type=int, help="training steps a run (default 600)")
    parser.add_argument("--batch", type=int, default=BATCH, help="global batch (even)")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="MLP width")
    parser.add_argument("--layers", type=int, default=LAYERS, help="MLP hidden layers")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per run")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of bar charts (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="registry for the jobs (default: a temporary one, removed afterwards)",
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.steps = args.steps or (150 if args.quick else 600)
    if args.batch % 4 or args.steps < 2:
        parser.error(
            "--batch must be a multiple of 4 (halved, then split over 2 processes) "
            "and --steps at least 2"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(argv[1:])
    args = parse_args(argv)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="maas-bench-launch-"))
    home = Path(args.home).expanduser().resolve() if args.home else tmp / "home"
    os.environ["MAAS_LAB_HOME"] = str(home)
    from maas_lab import api

    try:
        raw = bench(args, home, tmp)
    finally:
        api.close_all()
        shutil.rmtree(tmp, ignore_errors=True)
    import accelerate
    import torch

    params = next(
        (r["ranks"][0]["params"] for rs in raw["runs"].values() for r in rs if r["status"] == "ok"),
        0,
    )
    machine = (
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, accelerate "
        f"{accelerate.__version__}"
    )
    results = {
        "config": {k: v for k, v in vars(args).items() if k not in ("plot", "json")},
        "machine": machine,
        "params": params,
        "summary": summarize(raw["runs"]),
        **raw,
        "elapsed_s": time.perf_counter() - started,
    }
    failures: list[str] = []
    print(
        f"Training throughput: {args.steps} steps at global batch {args.batch}, medians of "
        f"{args.rounds} round(s); speed-up vs {REF}"
    )
    print(throughput_table(results["summary"], args, failures), "", sep="\n")
    print("Start to the end of the first step, s (medians)")
    print(startup_table(results["summary"]), "", sep="\n")
    print("One training step, ms (medians, steps after the first)")
    print(step_table(results["summary"], args), "", sep="\n")
    print("Where the time goes:", *where_time_goes(results["summary"]), "", sep="\n")
    if failures:
        print("Failures:", *failures, "", sep="\n")
    print("Notes:", *notes(results), sep="\n")
    print(f"Benchmark took {results['elapsed_s']:.0f} s.")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
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
