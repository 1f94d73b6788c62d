"""The engine rows of ``benchmarks/serving.py``: MiniLM int8 on our server, on Ray Serve (our
``ray`` engine) and on KServe's own ``ModelServer``, same requests, same load generator.

Why: ``%maas serve --engine ray`` hands the same version to Ray Serve for when one machine is
not enough, and the same model drops into KServe. What does each door cost on one machine
against ours? Each row answers the same OIP v2 REST request (one sentence, the ``text`` BYTES
input) for the same int8 ONNX file:

- ours, 1 replica (batching defaults ``max_batch=8, max_delay_ms=5``, 2 onnxruntime
  threads), ours without batching (``max_batch=1``: the same work a request as KServe does)
  and ours, 2 replicas (batching, 1 thread each);
- Ray Serve, 1 and 2 replicas (``control.serve(..., engine="ray")``, the same options; a
  local Ray started by the server on 127.0.0.1); each compared with ours at the same count;
- KServe ``ModelServer`` 0.21 (``benchmarks/kserve_peer.py``, run by ``.venv-kserve``'s
  Python in a process group of its own, as the LitServe peer is): its built-in OIP v2 REST,
  a ``kserve.Model`` that tokenizes with the same ``tokenizer.json`` and runs the same file
  with 2 onnxruntime threads, one request at a time (KServe's Python server has no dynamic
  batching); compared with ours without batching (the same work a request) and, in the
  notes, with ours batching.

Load and order as the main rows: wrk (the benchmark's Lua script, 64 keep-alive
connections, the 200 sentences cycling), every server started and warmed up first, then
``--rounds`` rounds each give every row its share of ``--requests``, the order rotating, so
a busy spell of the machine hits all rows alike; a row merges its rounds.

Server CPU a request: CPU time (user + system, ``/proc/<pid>/stat``) of the server's processes
over each run, per answer. Ours: the supervisor and its workers. KServe: its process group.
Ray: the whole local Ray session the server started, because a request crosses Ray's HTTP
proxy actor before the replica actor, and the GCS server, raylet and agents work for it too:
every process descending from the server's own process (``ServerHandle.pid``; Ray's workers
run in process groups of their own, so a group would miss them) and from its replicas, plus
any process whose command line names the Ray session folder one of those names (Ray
processes started detached from it); the set is read again before each run. ``overhead``
columns: the row's figure divided by its ours counterpart (req/s below 1x, p99 and CPU a
request above 1x: costs more than ours). Each engine's first answer is compared with ours'
for the same sentence (cosine).

Ray's defaults are left as they are, and two of them weigh here: Ray runs its workers (the
proxy, the controller, the replicas) at nice 15 (``RAY_worker_niceness``), so on a machine
that other work keeps busy they get less of it than the other rows' servers; and an idle
local Ray session keeps using CPU (its GCS, raylet, agents, controller: ~0.25 of a core
measured here), which the other rows see as "others busy" while it waits its turn.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import serving as base

MODEL = base.TEXT_MODEL
PATH = f"/v2/models/{MODEL}/infer"
KSERVE_VENV = Path(__file__).resolve().parent.parent / ".venv-kserve"
KSERVE_PEER = Path(__file__).resolve().parent / "kserve_peer.py"

OURS_1, OURS_NB, OURS_2 = "ours 1 replica", "ours no batching", "ours 2 replicas"
RAY_1, RAY_2 = "Ray Serve 1 replica", "Ray Serve 2 replicas"
KSERVE = "KServe ModelServer"
AGAINST = {OURS_NB: OURS_1, RAY_1: OURS_1, RAY_2: OURS_2, KSERVE: OURS_NB}
KINDS = {OURS_1: "ours", OURS_NB: "ours", OURS_2: "ours", RAY_1: "ray", RAY_2: "ray"}
KINDS[KSERVE] = "kserve"


def plan() -> list[tuple[str, dict]]:
    batching = {"max_batch": 8, "max_delay_ms": 5.0}
    one = {**batching, "replicas": 1, "threads": base.THREADS}
    two = {**batching, "replicas": 2, "threads": 1}
    return [
        (OURS_1, one),
        (OURS_NB, {"max_batch": 1, "replicas": 1, "threads": base.THREADS}),
        (OURS_2, two),
        (RAY_1, one),
        (RAY_2, two),
        (KSERVE, {"threads": base.THREADS}),
    ]


# ---------------------------------------------------------------------- processes


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


SESSION = re.compile(r"(/[^\s=]*/session_\d{4}-\d\d-\d\d_[\w.-]+?)(?:/|\s|$)")


def session_pids(roots: list[int]) -> list[int]:
    """The processes a Ray-backed server runs on: every descendant of ``roots``, and every
    process naming a Ray session folder that one of those names (with its descendants)."""
    children: dict[int, list[int]] = {}
    alive = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and (fields := _stat(int(p.name))):
            alive.append(int(p.name))
            children.setdefault(int(fields[1]), []).append(int(p.name))

    def tree(starts) -> set[int]:
        seen, todo = set(), [x for x in starts if _stat(x)]
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo += children.get(pid, [])
        return seen

    found = tree(roots)
    sessions = {m.group(1) for pid in found for m in SESSION.finditer(_cmdline(pid))}
    if sessions:
        found |= tree(pid for pid in alive if any(s in _cmdline(pid) for s in sessions))
    return sorted(found)


# ---------------------------------------------------------------------- servers


class Started:
    """The servers and peer processes of this part; all stopped however it ends."""

    def __init__(self, root: Path):
        self.root, self.handles, self.procs = root, {}, {}
        self.ray_pids: dict[str, list[int]] = {}

    def serve(self, label: str, ref: str, engine: str | None, options: dict):
        from maas_lab.serving.control import serve

        name = "bench-eng-" + "".join(c if c.isalnum() else "-" for c in label.lower())[:40]
        extra = {"engine": "ray", "engine_options": {"address": None}} if engine else {}
        base.log(f"  serve {ref} as {name} ({engine or 'ours'}): {options}")
        t = time.perf_counter()
        handle = serve(ref, name=name, port=0, root=self.root, **options, **extra)
        self.handles[label] = handle
        base.log(
            f"    ready at {handle.url} in {time.perf_counter() - t:.1f} s (server process "
            f"{handle.pid}, replicas {handle.workers})"
        )
        return handle

    def stop(self, label: str) -> None:
        from maas_lab import api

        handle = self.handles.pop(label, None)
        if handle is not None:
            pids = self.ray_pids.pop(label, [])
            try:
                handle.stop()
            except Exception as exc:
                base.log(f"  stopping {handle.name} failed ({base.one_line(exc)}); api.stop")
                with contextlib.suppress(Exception):
                    api.stop(handle.name, root=self.root)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if handle.pid and not pids:
                    os.killpg(handle.pid, 0)  # still there after stop: kill its group
                    os.killpg(handle.pid, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _stat(p) and _stat(p)[0] != "Z"]
                time.sleep(0.2)
            for pid in pids:  # Ray processes of this server that outlived its stop
                base.log(f"  killing {pid} ({_cmdline(pid)[:60]}), left after {handle.name}")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        proc = self.procs.pop(label, None)
        if proc is not None:
            base.stop_group(proc)

    def stop_all(self) -> None:
        for label in [*self.handles, *self.procs]:
            self.stop(label)


def start_ours(started: Started, label: str, ref: str, options: dict, bodies) -> base.Variant:
    handle = started.serve(label, ref, None, options)

    def pids() -> list[int]:
        return base.Servers(started.root).pids(handle)

    return variant(label, handle, ref, options, pids, bodies)


def start_ray(started: Started, label: str, ref: str, options: dict, bodies) -> base.Variant:
    handle = started.serve(label, ref, "ray", options)
    roots = [x for x in [handle.pid, *handle.workers] if x]

    def pids() -> list[int]:
        found = session_pids(roots)
        started.ray_pids[label] = found
        return found

    return variant(label, handle, ref, options, pids, bodies)


def variant(label, handle, ref, options, pids, bodies: list[str]) -> base.Variant:
    """A row on one of our servers (either engine), checked on one request."""
    status, answer = base.post(handle.url + PATH, bodies[0])
    base.check_text(status, answer)
    settle = 1.2 if options.get("replicas") != 1 else 0.0  # other replicas' snapshots: 1 s
    info = {"ref": ref, "options": options, "first_answer": answer["outputs"][0]["data"]}
    v = base.Variant(
        label,
        KINDS[label],
        handle.url,
        PATH,
        bodies,
        pids(),
        lambda: base.model_stats(handle.url, MODEL),
        settle,
        info,
    )
    v.refresh = pids  # read again before each run
    return v


def kserve_version() -> str | None:
    python = KSERVE_VENV / "bin" / "python"
    if not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('kserve'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None


def start_kserve(started: Started, args, model_dir: str, options: dict, bodies) -> base.Variant:
    """KServe's ModelServer (``kserve_peer.py``) on a free port in its own process group."""
    python = KSERVE_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"{KSERVE_VENV.name} is missing: `make bench` makes it, or `python3 -m venv "
            f"{KSERVE_VENV.name} && {KSERVE_VENV.name}/bin/pip install -c constraints.txt "
            "kserve onnxruntime tokenizers numpy`"
        )
    port = base.free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = Path(args.tmp) / "kserve.log"
    cmd = [str(python), str(KSERVE_PEER), "--model-dir", model_dir, "--port", str(port)]
    cmd += ["--threads", str(options["threads"]), "--name", MODEL]
    base.log(f"  start KServe ModelServer on port {port}")
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    started.procs[KSERVE] = proc
    try:
        t = time.perf_counter()
        base.wait_http(f"{url}/v2/models/{MODEL}/ready", proc)
        base.log(f"    ready in {time.perf_counter() - t:.1f} s (process group {proc.pid})")
        status, answer = base.post(url + PATH, bodies[0])
        base.check_text(status, answer)
    except Exception as exc:
        tail = log_file.read_text(errors="replace")[-600:] if log_file.exists() else ""
        raise RuntimeError(f"{base.one_line(exc)}; KServe's log ends: {tail}") from None
    info = {"options": options, "first_answer": answer["outputs"][0]["data"]}
    v = base.Variant(KSERVE, "kserve", url, PATH, bodies, base.group_pids(proc.pid), None, 0, info)
    v.refresh = lambda: base.group_pids(proc.pid)
    return v


# ---------------------------------------------------------------------- the run


def run(args, root: Path, ref: str, texts: list[str]) -> dict:
    from maas_lab import api

    bodies = [base.text_body(s) for s in texts]
    model_dir = str(api.registry(root).checkout(ref).dir)
    tmp = Path(args.tmp) / "engines"
    tmp.mkdir(parents=True, exist_ok=True)
    wrk = base.Wrk(tmp, args.max_seconds)
    started = Started(root)
    variants: list[base.Variant] = []
    failed: dict[str, dict] = {}
    per_round = math.ceil(args.requests / args.rounds)
    steps = plan()

    def fail(label: str, exc: Exception) -> None:
        base.log(f"    {label} FAILED: {base.one_line(exc)[:400]}")
        failed[label] = {
            "label": label,
            "kind": KINDS[label],
            "status": "failed",
            "error": base.one_line(exc)[:800],
        }
        with contextlib.suppress(Exception):
            started.stop(label)

    out = {"options": dict(steps), "requests": args.requests, "rounds": args.rounds}
    out["load_before"] = base.load_avg()
    try:
        base.log(f"Engines: start every server ({ref}): Ray Serve, ours, KServe")
        # Ray first: a local Ray's start is the slowest and the most hurt by a busy machine
        for label, options in sorted(steps, key=lambda x: KINDS[x[0]] != "ray"):
            try:
                if KINDS[label] == "ours":
                    v = start_ours(started, label, ref, options, bodies)
                elif KINDS[label] == "ray":
                    v = start_ray(started, label, ref, options, bodies)
                else:
                    v = start_kserve(started, args, model_dir, options, bodies)
                variants.append(v)
            except Exception as exc:
                fail(label, exc)
        variants.sort(key=lambda v: [x for x, _ in steps].index(v.label))
        base.log(f"  warm up: {args.warmup} requests to each server")
        for v in list(variants):
            try:
                base.warm_up(v, wrk, args.warmup)
            except Exception as exc:
                fail(v.label, exc)
                variants.remove(v)
        base.log(
            f"  {args.rounds} round(s) of {per_round} requests to each server, "
            f"{base.CLIENTS} connections; the order rotates every round"
        )
        for rnd in range(args.rounds):
            turns = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
            for v in turns:
                if v.label in failed:
                    continue
                try:
                    v.pids = v.refresh()
                    base.chunk(v, wrk, per_round, rnd)
                    v.chunks[-1]["processes"] = len(v.pids)
                except Exception as exc:
                    fail(v.label, exc)
    finally:
        started.stop_all()
    out["load_after"] = base.load_avg()
    measured = {v.label: base.merge_chunks(v) for v in variants if v.label not in failed}
    first = measured.get(OURS_NB, {}).get("first_answer")
    for label, row in measured.items():
        row["processes"] = max(c.get("processes", 0) for c in variants_by(variants, label))
        if first is not None and label != OURS_NB:
            a, b = np.asarray(row["first_answer"]), np.asarray(first)
            row["cosine_vs_ours"] = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    for row in measured.values():
        row.pop("first_answer", None)
    out["rows"] = [measured.get(label) or failed[label] for label, _ in steps]
    out["versions"] = versions()
    return out


def variants_by(variants: list[base.Variant], label: str) -> list[dict]:
    return next(v.chunks for v in variants if v.label == label)


def versions() -> str:
    parts = []
    for name in ("ray", "onnxruntime", "tokenizers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            parts.append(f"{name} {importlib.metadata.version(name)}")
    parts.append(f"kserve {kserve_version() or 'missing'} (in {KSERVE_VENV.name})")
    return ", ".join(parts)


# ---------------------------------------------------------------------- report


def cpu_ms(row: dict) -> float:
    return 1e3 * row["server_cpu_s"] / max(row["answered"], 1)


def overheads(row: dict, rows: dict, against: str | None = None) -> dict | None:
    """The row's req/s, p99 and CPU a request divided by its ours counterpart's."""
    base_row = rows.get(against or AGAINST.get(row["label"], ""))
    if row.get("status") != "ok" or not base_row or base_row.get("status") != "ok":
        return None
    return {
        "against": base_row["label"],
        "rps": row["rps"] / base_row["rps"],
        "p99": row["p99_ms"] / base_row["p99_ms"],
        "cpu": cpu_ms(row) / max(cpu_ms(base_row), 1e-9),
    }


def render(e: dict) -> str:
    rows = {x["label"]: x for x in e.get("rows", [])}
    header = [
        "engines (MiniLM int8)",
        "req/s",
        "p50 ms",
        "p99 ms",
        "requests",
        "errors",
        "mean batch",
        "server CPU ms/req",
        "processes",
        "against",
        "req/s x",
        "p99 x",
        "CPU/req x",
        "others busy",
    ]
    out = []
    for row in e.get("rows", []):
        if row["status"] != "ok":
            out.append([row["label"], "FAILED"] + [""] * (len(header) - 2))
            continue
        o = overheads(row, rows) or {}
        out.append(
            [
                row["label"],
                base.fmt(row["rps"]),
                base.fmt(row["p50_ms"]),
                base.fmt(row["p99_ms"]),
                f"{row['answered']:,}",
                str(row["errors"]),
                base.fmt((row.get("server") or {}).get("mean_batch"), 2),
                base.fmt(cpu_ms(row), 2),
                str(row.get("processes", "")),
                o.get("against", ""),
                f"{o['rps']:.2f}x" if o else "",
                f"{o['p99']:.2f}x" if o else "",
                f"{o['cpu']:.2f}x" if o else "",
                f"{base.others_share(row):.0%}",
            ]
        )
    return base.table(header, out, 1)


def targets(e: dict) -> list[str]:
    """No target: the rows are measured, not promised; failures are said."""
    bad = [x["label"] for x in e.get("rows", []) if x["status"] != "ok"]
    if e.get("error") or bad:
        return [f"- UNKNOWN: engine rows that failed: {', '.join(bad) or e.get('error')}."]
    return []


def notes(e: dict) -> list[str]:
    rows = {x["label"]: x for x in e.get("rows", [])}
    lines = [
        f"Engines: {e.get('versions')}; load average (1, 5, 15 min) before "
        f"{e.get('load_before')}, after {e.get('load_after')}. {e['requests']} requests a row in "
        f"{e['rounds']} round(s), the order rotating. Options: "
        + "; ".join(f"{k}: {v}" for k, v in e["options"].items())
        + ". Ray Serve: maas_lab.serving.control.serve(engine='ray', engine_options="
        "{'address': None}) starts a local Ray on 127.0.0.1; its server CPU is every process "
        "of that Ray session (proxy, replicas, raylet, GCS, agents: 'processes'). KServe: "
        "benchmarks/kserve_peer.py, one uvicorn process, predict() on its event loop, no "
        "batching. Ray's workers (proxy, replicas) run at nice 15, Ray's default: on a busy "
        "machine they yield to everything else. 'against': the ours row each is divided by "
        "(req/s x < 1: slower; p99 x, CPU/req x > 1: costlier).",
    ]
    k = rows.get(KSERVE)
    vs_batching = overheads(k, rows, OURS_1) if k else None
    if vs_batching:
        lines.append(
            f"KServe against {OURS_1} (batching): req/s {vs_batching['rps']:.2f}x, p99 "
            f"{vs_batching['p99']:.2f}x, CPU a request {vs_batching['cpu']:.2f}x."
        )
    for row in e.get("rows", []):
        if row["status"] != "ok":
            lines.append(f"{row['label']}: FAILED: {row.get('error')}")
            continue
        parts = [
            f"{row['label']}: by round req/s "
            + ", ".join(f"{x:.0f}" for x in row["rps_by_round"])
            + ", p99 ms "
            + ", ".join(f"{x:.0f}" for x in row["p99_by_round"]),
            "server CPU by process "
            + ", ".join(f"{x:.1f}" for x in row["cpu_by_process"][:8])
            + (" ..." if len(row["cpu_by_process"]) > 8 else "")
            + " s",
        ]
        if row.get("cosine_vs_ours") is not None:
            parts.append(f"first answer cosine vs {OURS_NB} {row['cosine_vs_ours']:.6f}")
        if row.get("error_samples"):
            parts.append(f"error answers: {row['error_samples'][:200]}")
        lines.append("; ".join(parts) + ".")
    return lines


def write_plot(path: str, e: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = e.get("rows", [])
    colors = {"ours": "tab:blue", "ray": "tab:purple", "kserve": "tab:orange"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5))
    panels = (
        ("rps", "requests/s (higher is better)"),
        ("p99_ms", "p99 latency, ms (lower is better)"),
        ("cpu", "server CPU ms a request (lower is better)"),
    )
    for ax, (key, title) in zip(axes, panels, strict=True):
        ys = [
            (cpu_ms(x) if key == "cpu" else x.get(key) or 0) if x["status"] == "ok" else 0
            for x in rows
        ]
        ax.bar(range(len(rows)), ys, color=[colors.get(x["kind"], "gray") for x in rows])
        for i, (y, x) in enumerate(zip(ys, rows, strict=True)):
            text = "failed" if x["status"] != "ok" else f"{y:,.1f}" if key == "cpu" else f"{y:,.0f}"
            ax.annotate(text, (i, y), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)), [x["label"] for x in rows], rotation=30, ha="right")
        ax.set_title(title)
    fig.suptitle(
        f"MiniLM int8 ONNX: our server, Ray Serve and KServe, {base.CLIENTS} clients, "
        f"{e['requests']} requests a row, {os.cpu_count()} CPUs"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


if __name__ == "__main__":
    sys.exit("run benchmarks/serving.py --only engines")
