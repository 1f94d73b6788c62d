"""The autoscaling rows of ``benchmarks/serving.py``: a load that ramps up and back down,
against a fixed 1 replica, a fixed 2 replicas and ``autoscale="1..2"``, one after another.

Why a ramp against fixed counts: autoscaling is worth having when it tracks the best fixed
count at every load without anyone choosing it, and it must not drop a request while
workers come and go. So each server gets the same schedule (``LEVELS`` clients, a step of
``--ramp-step-s`` each), and each step's p99 and requests/s are compared; the autoscaled
server's requests must all succeed (no non-2xx answer, no socket error) across every change.

Load: wrk (the benchmark's Lua script, the 200 sentences cycling) run in time-bounded
slices (``--ramp-slice-s``, several a step), so p99 is known every few seconds for the plot;
a step's p99 merges its slices' histograms. The three servers are started and warmed up
first, then ``--ramp-rounds`` rounds each run the whole ramp against each server in turn,
the order rotating (as the main rows' rounds do: a busy spell of this shared machine then
hits all three alike); a step's figures merge its rounds. A sampler thread reads the
server's registry row (the replica count wanted, the workers) and the workers' snapshots
(how many are ready) four times a second. The autoscaled server runs with shortened policy
timings (``TIMINGS``, through ``maas_lab.serving.control.serve``'s ``autoscale_timings``)
so that its decisions fit steps of 15 s, and starts each ramp at one replica; the decisions
it logged are shown.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import serving as base

LEVELS = (8, 32, 64, 128, 64, 32, 8)
TIMINGS = {"window_s": 3.0, "up_after_s": 3.0, "down_after_s": 8.0, "cooldown_s": 4.0}
P99_RATIO_TARGET = 1.2
NOISE_GAP = 0.15  # others' share of the CPUs differing more than this: a step is not comparable
FIXED_1, FIXED_2, AUTO = "fixed 1 replica", "fixed 2 replicas", "autoscale 1..2"
SAMPLE_S = 0.25
MODEL = base.TEXT_MODEL
PATH = f"/v2/models/{MODEL}/infer"


def plan(args) -> list[tuple[str, dict]]:
    batching = {"max_batch": 8, "max_delay_ms": 5.0}
    return [
        (FIXED_1, {**batching, "replicas": 1, "threads": base.THREADS}),
        (FIXED_2, {**batching, "replicas": 2}),  # 1 thread each (cores / replicas)
        (
            AUTO,
            {
                **batching,
                "threads": args.autoscale_threads,
                "autoscale": "1..2",
                "target_p99_ms": args.target_p99_ms,
                "autoscale_timings": dict(TIMINGS),
            },
        ),
    ]


def levels(text: str) -> tuple[int, ...]:
    """``--ramp-levels 8,32,64``: clients a step, each at least wrk's thread count."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < base.WRK_THREADS:
        raise argparse.ArgumentTypeError(
            f"--ramp-levels takes client counts >= {base.WRK_THREADS}, e.g. 8,32,8"
        )
    return values


# ---------------------------------------------------------------------- measuring


class Sampler(threading.Thread):
    """Replicas over time: (seconds since ``t0``, wanted, workers, ready) every SAMPLE_S."""

    def __init__(self, root: Path, name: str, t0: float):
        super().__init__(daemon=True)
        self.root, self.name, self.t0 = root, name, t0
        self.samples: list[tuple[float, int, int, int]] = []
        self.halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        from maas_lab.registry import open as open_registry
        from maas_lab.serving import state

        reg = open_registry(self.root)  # its own connection: this thread's
        folder = state.run_dir(reg.root, self.name) / "workers"
        while not self.halt.is_set():
            try:
                row = state.get(reg.db, self.name)
                if row is not None:
                    snaps = state.read_snapshots(folder, row["workers"])
                    self.samples.append(
                        (
                            time.perf_counter() - self.t0,
                            int(row["replicas"]),
                            len(row["workers"]),
                            sum(1 for s in snaps if s["ready"]),
                        )
                    )
            except Exception as exc:  # a busy registry: note it, keep sampling
                self.error = base.one_line(exc)
            self.halt.wait(SAMPLE_S)


def start(servers, warm: base.Wrk, args, label: str, ref: str, options: dict, bodies) -> dict:
    """One of the three servers, checked on one request and warmed up at the first level."""
    name = "bench-" + "".join(c if c.isalnum() else "-" for c in label.lower())
    handle = servers.start(ref, name, **options)
    base.check_text(*base.post(f"{handle.url}{PATH}", bodies[0]))
    base.log(f"  {label}: warm-up {args.warmup} requests at {args.levels[0]} clients")
    if warm.run(handle.url, PATH, bodies, args.levels[0], args.warmup)["ok"] == 0:
        raise RuntimeError("no successful answer in the warm-up")
    return {
        "label": label,
        "name": name,
        "options": options,
        "handle": handle,
        "slices": [],
        "samples": [],
        "rounds": [],
        "status": "ok",
    }


def ramp_once(wrk: base.Wrk, args, root: Path, server: dict, rnd: int, bodies) -> None:
    """One pass of the whole ramp against one server: its slices (each with the CPU the
    rest of the machine used meanwhile) and replica samples, tagged with the round."""
    handle, name = server["handle"], server["name"]
    if server["options"].get("autoscale"):  # each ramp starts from MIN, as a quiet server is
        wait_replicas(root, name, 1, 90)
    slices = max(1, round(args.ramp_step_s / args.ramp_slice_s))
    load_before = base.load_avg()
    t0 = time.perf_counter()
    sampler = Sampler(root, name, t0)
    sampler.start()
    try:
        for step, clients in enumerate(args.levels):
            for _ in range(slices):
                start_s = time.perf_counter() - t0
                pids = base.group_pids(handle.pid)  # supervisor and its workers, as they are
                cpu0, busy0 = base.pid_cpu(pids), base.busy_cpu()
                r = wrk.run(handle.url, PATH, bodies, clients, 10**9, sketch=True)
                # a worker started meanwhile is the server's too (all its CPU is this slice's)
                pids = sorted(set(pids) | set(base.group_pids(handle.pid)))
                cpu1, busy = base.pid_cpu(pids), base.busy_cpu() - busy0
                server_cpu = sum(cpu1[p] - cpu0.get(p, 0.0) for p in cpu1)
                others = max(0.0, busy - server_cpu - r["wrk_all_cpu_s"])
                r.pop("error_samples", None)
                r |= {
                    "round": rnd,
                    "step": step,
                    "clients": clients,
                    "t_start": start_s,
                    "t_end": time.perf_counter() - t0,
                    "failed": r["errors"],  # non-2xx (503/429 too) and socket errors
                    "others_busy": others / max(r["wall_s"] * (os.cpu_count() or 1), 1e-9),
                }
                server["slices"].append(r)
            mine = [x for x in server["slices"] if x["round"] == rnd]
            base.log(
                f"    round {rnd + 1} {server['label']} step {step + 1} ({clients} clients): "
                + step_line(summarise(mine, step))
            )
    finally:
        sampler.halt.set()
        sampler.join(5)
    server["samples"] += [(rnd, *x) for x in sampler.samples]
    server["rounds"].append(
        {"round": rnd, "load_before": load_before, "load_after": base.load_avg()}
    )
    if sampler.error:
        server["sampler_error"] = sampler.error


def wait_replicas(root: Path, name: str, want: int, wait_s: float) -> None:
    from maas_lab import api
    from maas_lab.serving import state

    db = api.registry(root).db
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        row = state.get(db, name)
        if row and row["replicas"] == want and len(row["workers"]) == want:
            return
        time.sleep(0.25)
    raise RuntimeError(f"{name} did not settle at {want} replica(s) in {wait_s:g} s")


def summarise(slices: list[dict], step: int) -> dict:
    """A step over the slices given (one round's or all): successes / seconds, percentiles
    of the slices' histograms merged, failures, and how busy the rest of the machine was."""
    mine = [s for s in slices if s["step"] == step]
    if not mine:
        return {"step": step, "status": "missing"}
    runs = [(s["answered"], s["sketch_ms"]) for s in mine]
    seconds = sum(s["seconds"] for s in mine)
    wall = sum(s["wall_s"] for s in mine)
    return {
        "step": step,
        "clients": mine[0]["clients"],
        "status": "ok",
        "ok": sum(s["ok"] for s in mine),
        "answered": sum(s["answered"] for s in mine),
        "failed": sum(s["failed"] for s in mine),
        "rps": sum(s["ok"] for s in mine) / seconds if seconds else 0.0,
        "p50_ms": base.merged_percentile(runs, 50),
        "p99_ms": base.merged_percentile(runs, 99),
        "others_busy": sum(s["others_busy"] * s["wall_s"] for s in mine) / max(wall, 1e-9),
        "windows": [(s["round"], s["t_start"], s["t_end"]) for s in mine],
    }


def step_line(s: dict) -> str:
    return (
        f"{s['rps']:.1f} req/s, p50 {base.fmt(s['p50_ms'])} ms, p99 {base.fmt(s['p99_ms'])} "
        f"ms, failed {s['failed']}, others kept {s['others_busy']:.0%} of the CPUs busy"
    )


def run(args, root: Path, ref: str, texts: list[str]) -> dict:
    """All three servers started and warmed up first (an idle one costs next to nothing),
    then the rounds; every server stopped however it ends."""
    from maas_lab.serving import state

    servers = base.Servers(root)
    tmp = Path(args.tmp) / "ramp"
    (tmp / "warm").mkdir(parents=True, exist_ok=True)
    wrk = base.Wrk(tmp, args.ramp_slice_s)
    warm = base.Wrk(tmp / "warm", args.max_seconds)
    bodies = [base.text_body(s) for s in texts]
    out = {
        "levels": list(args.levels),
        "step_s": args.ramp_step_s,
        "slice_s": args.ramp_slice_s,
        "rounds": args.ramp_rounds,
        "timings": dict(TIMINGS),
        "target_p99_ms": args.target_p99_ms,
        "threads": args.autoscale_threads,
        "servers": [],
    }
    base.log(
        f"autoscale ramp: {' -> '.join(map(str, args.levels))} clients, {args.ramp_step_s} s "
        f"a step in {args.ramp_slice_s} s slices, {args.ramp_rounds} round(s)"
    )
    live: list[dict] = []
    try:
        for label, options in plan(args):
            try:
                live.append(start(servers, warm, args, label, ref, options, bodies))
            except Exception as exc:
                base.log(f"    {label} FAILED: {base.one_line(exc)[:400]}")
                failed = {"status": "failed", "error": base.one_line(exc)[:800]}
                out["servers"].append({"label": label, "options": options, **failed})
        for rnd in range(args.ramp_rounds):
            turn = rnd % max(len(live), 1)
            for server in live[turn:] + live[:turn]:
                if server["status"] != "ok":
                    continue
                try:
                    ramp_once(wrk, args, root, server, rnd, bodies)
                except Exception as exc:
                    base.log(f"    {server['label']} FAILED: {base.one_line(exc)[:400]}")
                    server |= {"status": "failed", "error": base.one_line(exc)[:800]}
        for server in live:
            scaling = server["options"].get("autoscale")
            server["decisions"] = state.decisions(root, server["name"]) if scaling else []
    finally:
        servers.stop_all()
    for server in live:
        server.pop("handle")
        server["steps"] = [summarise(server["slices"], i) for i in range(len(args.levels))]
        out["servers"].append(server)
    order = [label for label, _ in plan(args)]
    out["servers"].sort(key=lambda x: order.index(x["label"]))
    return out


# ---------------------------------------------------------------------- report


def _servers(a: dict) -> dict[str, dict]:
    return {s["label"]: s for s in a.get("servers", [])}


def _step(a: dict, label: str, i: int) -> dict | None:
    server = _servers(a).get(label, {})
    steps = server.get("steps", []) if server.get("status") == "ok" else []
    return steps[i] if i < len(steps) and steps[i].get("status") == "ok" else None


def step_ratio(a: dict, i: int) -> float | None:
    """The autoscaled server's p99 at step ``i`` over the best (lowest) fixed count's."""
    auto = _step(a, AUTO, i)
    fixed = [x["p99_ms"] for x in (_step(a, FIXED_1, i), _step(a, FIXED_2, i)) if x]
    if not auto or not fixed or not auto["p99_ms"] or not min(fixed):
        return None
    return auto["p99_ms"] / min(fixed)


def noisy_steps(a: dict) -> list[str]:
    """Steps where the rest of the machine was busier for one server than for the best fixed
    one by more than NOISE_GAP: their ratio says more about the machine than the servers."""
    out = []
    for i, clients in enumerate(a["levels"]):
        auto = _step(a, AUTO, i)
        fixed = [x for x in (_step(a, FIXED_1, i), _step(a, FIXED_2, i)) if x and x["p99_ms"]]
        if not auto or not fixed:
            continue
        best = min(fixed, key=lambda x: x["p99_ms"])
        if abs(auto["others_busy"] - best["others_busy"]) > NOISE_GAP:
            out.append(
                f"step {i + 1} ({clients} clients: others busy {auto['others_busy']:.0%} for "
                f"the autoscaled server, {best['others_busy']:.0%} for the best fixed)"
            )
    return out


def replicas_during(server: dict, step: dict) -> str:
    """The ready replicas seen during a step (any round): "1", or "1-2" when it changed."""
    seen = [
        ready
        for rnd, t, _, _, ready in server.get("samples", [])
        for r, a, b in step["windows"]
        if r == rnd and a <= t <= b
    ]
    if not seen:
        return ""
    return str(min(seen)) if min(seen) == max(seen) else f"{min(seen)}-{max(seen)}"


def ready_after(samples: list) -> list[float | None]:
    """For each rise of the wanted count within a ramp: seconds until as many replicas were
    ready (None: not before the ramp ended)."""
    out: list[float | None] = []
    for rnd in sorted({x[0] for x in samples}):
        mine = [x for x in samples if x[0] == rnd]
        for i in range(1, len(mine)):
            _, t, wanted, _, _ = mine[i]
            if wanted > mine[i - 1][2]:
                done = next((x[1] for x in mine[i:] if x[4] >= wanted), None)
                out.append(None if done is None else done - t)
    return out


def render(a: dict) -> str:
    labels = [FIXED_1, FIXED_2, AUTO]
    header = ["step (clients)"]
    for label in labels:
        header += [f"{label}: req/s", "p99 ms"]
    header += ["auto replicas", "auto p99 / best fixed", "auto failed", "others busy (1/2/auto)"]
    out = []
    for i, clients in enumerate(a["levels"]):
        line = [f"{i + 1} ({clients})"]
        busy = []
        for label in labels:
            s = _step(a, label, i)
            line += [base.fmt(s["rps"]), base.fmt(s["p99_ms"])] if s else ["FAILED", ""]
            busy.append(f"{s['others_busy']:.0%}" if s else "-")
        auto, ratio = _step(a, AUTO, i), step_ratio(a, i)
        line += [
            replicas_during(_servers(a)[AUTO], auto) if auto else "",
            "" if ratio is None else f"{ratio:.2f}x",
            str(auto["failed"]) if auto else "",
            "/".join(busy),
        ]
        out.append(line)
    return base.table(header, out, 1)


def targets(a: dict) -> list[str]:
    by = _servers(a)
    failed = [x["label"] for x in a.get("servers", []) if x.get("status") != "ok"]
    if failed or AUTO not in by:
        return [
            f"- UNKNOWN: autoscaled p99 within {P99_RATIO_TARGET:g}x of the best fixed count "
            f"(failed: {', '.join(failed) or 'no autoscaled server'})."
        ]
    ratios = [step_ratio(a, i) for i in range(len(a["levels"]))]
    within = [r is not None and r <= P99_RATIO_TARGET for r in ratios]
    auto = by[AUTO]
    auto_failed = sum(s["failed"] for s in auto["slices"])
    worst = max((r for r in ratios if r is not None), default=None)
    return [
        f"- {'MET' if all(within) else 'NOT MET'}: autoscaled p99 within "
        f"{P99_RATIO_TARGET:g}x of the best fixed replica count at each load level: "
        f"{sum(within)} of {len(within)} steps (ratios "
        + ", ".join("n/a" if r is None else f"{r:.2f}" for r in ratios)
        + (f"; worst {worst:.2f}x" if worst is not None else "")
        + ")."
        + (
            f" Not comparable, the rest of the machine far busier for one than the other: "
            f"{'; '.join(noisy)}."
            if (noisy := noisy_steps(a))
            else ""
        ),
        f"- {'MET' if auto_failed == 0 else 'NOT MET'}: no failed request for the autoscaled "
        f"server across every change: {auto_failed} failed (non-2xx or socket errors) of "
        f"{sum(s['answered'] for s in auto['slices']):,} answered, "
        f"{len(auto['decisions'])} scaling decision(s) in {a['rounds']} round(s).",
    ]


def _threads(given) -> str:
    if given:
        return f"{given} thread(s)"
    return f"serve's default: {max(1, (os.cpu_count() or 1) // 2)} thread(s), the cores / MAX"


def notes(a: dict) -> list[str]:
    lines = [
        f"Autoscale ramp: {' -> '.join(map(str, a['levels']))} clients (wrk, "
        f"{base.WRK_THREADS} threads, the 200 sentences cycling), {a['step_s']} s a step in "
        f"{a['slice_s']} s slices, {a['rounds']} round(s), each the whole ramp against each "
        f"server in turn, the order rotating: fixed 1 replica ({base.THREADS} threads), fixed "
        f"2 replicas (1 thread each), autoscale 1..2 ({_threads(a.get('threads'))} a "
        "replica, from "
        f"1 replica each ramp; target p99 {a['target_p99_ms']:g} ms, queue target max_batch 8 "
        "a replica; policy timings shortened for the steps: "
        + ", ".join(f"{k} {v:g} s" for k, v in a["timings"].items())
        + "; the defaults are maas_lab.serving.autoscale.DEFAULTS). Batching defaults "
        "(max_batch 8, max_delay_ms 5) everywhere. A step's req/s and p99 merge its slices' "
        "over all rounds; failed: non-2xx (503/429 included) and socket errors; others busy: "
        "CPU the rest of the machine used (not the server, not wrk), share of all CPUs."
    ]
    for s in a.get("servers", []):
        if s.get("status") != "ok":
            lines.append(f"{s['label']}: FAILED: {s.get('error')}")
            continue
        counts = [x[4] for x in s["samples"]]
        loads = "; ".join(
            f"round {r['round'] + 1} {r['load_before']} -> {r['load_after']}" for r in s["rounds"]
        )
        text = (
            f"{s['label']}: ready replicas seen {min(counts, default=0)}.."
            f"{max(counts, default=0)}; load average (1, 5, 15 min) {loads}"
        )
        waits = ready_after(s["samples"])
        if waits:
            text += "; a replica added under load was ready after " + ", ".join(
                f"{w:.1f} s" if w is not None else "not within the ramp" for w in waits
            )
        if s["decisions"]:
            text += "; its decisions (the latest kept by the server): " + "; ".join(s["decisions"])
        elif s["options"].get("autoscale"):
            text += "; no scaling decision"
        if s.get("sampler_error"):
            text += f"; sampler error {s['sampler_error']}"
        lines.append(text + ".")
    return lines


def write_plot(path: str, a: dict) -> str:
    """Replicas (ready, and wanted for the autoscaled server) and p99 a slice over time, the
    load level behind both; one line per server and round (later rounds fainter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {FIXED_1: "tab:blue", FIXED_2: "tab:green", AUTO: "tab:red"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    for s in a.get("servers", []):
        if s.get("status") != "ok":
            continue
        c = colors.get(s["label"], "black")
        for rnd in range(a["rounds"]):
            alpha = 1.0 if rnd == 0 else 0.45
            name = s["label"] + (f" (round {rnd + 1})" if a["rounds"] > 1 else "")
            samples = [x for x in s["samples"] if x[0] == rnd]
            t = [x[1] for x in samples]
            top.step(t, [x[4] for x in samples], where="post", color=c, alpha=alpha, label=name)
            if s["options"].get("autoscale"):
                top.step(
                    t,
                    [x[2] for x in samples],
                    where="post",
                    color=c,
                    alpha=alpha,
                    ls=":",
                    label=f"{name}: wanted",
                )
            xs, ys = [], []
            for sl in (x for x in s["slices"] if x["round"] == rnd):
                xs += [sl["t_start"], sl["t_end"]]
                ys += [sl["p99_ms"], sl["p99_ms"]]
            bottom.plot(xs, ys, color=c, alpha=alpha, label=name)
    step_s = a["step_s"]
    for ax in (top, bottom):
        load = ax.twinx()
        xs = [i * step_s for i in range(len(a["levels"]) + 1)]
        load.step(xs, [*a["levels"], a["levels"][-1]], where="post", color="gray", ls="--", lw=1)
        load.set_ylabel("clients (dashed gray)", color="gray")
        load.set_ylim(0, max(a["levels"]) * 1.15)
    top.set_ylabel("replicas (ready; dotted: wanted)")
    top.set_ylim(0, 2.8)
    top.set_yticks([0, 1, 2])
    top.legend(loc="upper left", fontsize=7, ncol=2)
    top.set_title("replicas over time")
    bottom.set_ylabel(f"p99 latency, ms (each {a['slice_s']} s slice)")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds since the ramp started (each server and round its own run)")
    bottom.legend(loc="upper left", fontsize=7, ncol=2)
    bottom.set_title("p99 over time")
    timings = ", ".join(f"{k} {v:g} s" for k, v in a["timings"].items())
    fig.suptitle(
        f"maas_lab autoscaling 1..2 vs fixed replicas, MiniLM int8, {os.cpu_count()} CPUs "
        f"(target p99 {a['target_p99_ms']:g} ms; {timings})",
        fontsize=10,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"autoscale plot written to {path}"
