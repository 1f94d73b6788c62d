"""Counters for one served model version, and their merge across worker processes.

Each worker keeps its own counters (no locks shared between processes) and writes them to
its snapshot every second. Counts and histogram buckets add up across workers; recent
latencies are kept as a bounded sample of the last ``WINDOW_S`` seconds so that p50/p99 and
requests/s can be computed exactly over all replicas, which summed percentiles could not.
"""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 10.0
MAX_SAMPLES = 4000
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Stats:
    def __init__(self) -> None:
        self.success = 0
        self.failure: dict[str, int] = {}  # by HTTP status
        self.inferences = 0  # rows answered
        self.executions = 0  # backend calls (batches)
        self.queue_ns = 0
        self.compute_ns = 0
        self.success_ns = 0
        self.latency_buckets = [0] * (len(BUCKETS) + 1)
        self.batch_buckets = [0] * (len(BATCH_BUCKETS) + 1)
        self.last_inference_ms = 0
        self.recent: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)
        self.recent_errors: deque[float] = deque(maxlen=MAX_SAMPLES)

    def ok(self, seconds: float, queue_s: float, rows: int) -> None:
        self.success += 1
        self.inferences += rows
        self.success_ns += int(seconds * 1e9)
        self.queue_ns += int(queue_s * 1e9)
        self.latency_buckets[_bucket(BUCKETS, seconds)] += 1
        t = time.time()
        self.last_inference_ms = int(t * 1000)
        self.recent.append((t, seconds))

    def fail(self, status: int) -> None:
        key = str(status)
        self.failure[key] = self.failure.get(key, 0) + 1
        self.recent_errors.append(time.time())

    def batch(self, rows: int, compute_s: float) -> None:
        self.executions += 1
        self.compute_ns += int(compute_s * 1e9)
        self.batch_buckets[_bucket(BATCH_BUCKETS, rows)] += 1

    def snapshot(self) -> dict:
        cutoff = time.time() - WINDOW_S
        return {
            "success": self.success,
            "failure": dict(self.failure),
            "inferences": self.inferences,
            "executions": self.executions,
            "queue_ns": self.queue_ns,
            "compute_ns": self.compute_ns,
            "success_ns": self.success_ns,
            "latency_buckets": list(self.latency_buckets),
            "batch_buckets": list(self.batch_buckets),
            "last_inference_ms": self.last_inference_ms,
            "recent": [[round(t, 3), round(s, 5)] for t, s in self.recent if t >= cutoff],
            "recent_errors": sum(1 for t in self.recent_errors if t >= cutoff),
        }


def _bucket(bounds, value) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


def merge(snapshots: list[dict]) -> dict:
    """Add several workers' snapshots of the same model version together."""
    out = Stats().snapshot()
    out["recent"] = []
    for snap in snapshots:
        for key in (
            "success",
            "inferences",
            "executions",
            "queue_ns",
            "compute_ns",
            "success_ns",
            "recent_errors",
        ):
            out[key] += snap.get(key, 0)
        for status, n in snap.get("failure", {}).items():
            out["failure"][status] = out["failure"].get(status, 0) + n
        for key in ("latency_buckets", "batch_buckets"):
            out[key] = [a + b for a, b in zip(out[key], snap.get(key, out[key]), strict=False)]
        out["last_inference_ms"] = max(out["last_inference_ms"], snap.get("last_inference_ms", 0))
        out["recent"] += snap.get("recent", [])
    return out


def summary(snap: dict, now: float | None = None) -> dict:
    """Requests/s and p50/p99 latency (ms) over the recent window of a merged snapshot."""
    now = time.time() if now is None else now
    recent = [s for t, s in snap.get("recent", []) if t >= now - WINDOW_S]
    latencies = sorted(recent)
    out = {
        "requests": snap.get("success", 0),
        "errors": sum(snap.get("failure", {}).values()),
        "rps": len(recent) / WINDOW_S if recent else 0.0,
        "p50_ms": None,
        "p99_ms": None,
        "mean_batch": snap["inferences"] / snap["executions"] if snap.get("executions") else None,
    }
    if latencies:
        out["p50_ms"] = 1000 * latencies[len(latencies) // 2]
        out["p99_ms"] = 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return out


def prometheus(models: list[dict]) -> str:
    """The text exposition format; ``models`` are ``{name, version, stats, queue}`` with
    stats merged over all workers."""

    def requests(m):
        labels = f'model="{m["name"]}",version="{m["version"]}"'
        s = m["stats"]
        out = [f'maas_requests_total{{{labels},status="200"}} {s["success"]}']
        out += [
            f'maas_requests_total{{{labels},status="{status}"}} {n}'
            for status, n in sorted(s["failure"].items())
        ]
        return out

    def sample(metric, value):
        return lambda m: [_sample(metric, m, value(m))]

    def histogram(metric, bounds, counts, total):
        return lambda m: _histogram(metric, m, bounds, counts(m), total(m))

    families = [
        ("maas_requests_total", "counter", "Inference requests answered, by outcome.", requests),
        (
            "maas_inferences_total",
            "counter",
            "Rows (batch items) inferred.",
            sample("maas_inferences_total", lambda m: m["stats"]["inferences"]),
        ),
        (
            "maas_executions_total",
            "counter",
            "Backend calls (one per formed batch).",
            sample("maas_executions_total", lambda m: m["stats"]["executions"]),
        ),
        (
            "maas_queue_size",
            "gauge",
            "Requests waiting to be batched.",
            sample("maas_queue_size", lambda m: m["queue"]),
        ),
        (
            "maas_request_duration_seconds",
            "histogram",
            "Time from arrival to answer, successful requests.",
            histogram(
                "maas_request_duration_seconds",
                BUCKETS,
                lambda m: m["stats"]["latency_buckets"],
                lambda m: m["stats"]["success_ns"] / 1e9,
            ),
        ),
        (
            "maas_batch_size",
            "histogram",
            "Rows per backend call.",
            histogram(
                "maas_batch_size",
                BATCH_BUCKETS,
                lambda m: m["stats"]["batch_buckets"],
                lambda m: m["stats"]["inferences"],
            ),
        ),
    ]
    lines = []
    for metric, kind, help_text, render in families:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for m in models:
            lines += render(m)
    return "\n".join(lines) + "\n"


def _sample(metric: str, m: dict, value) -> str:
    return f'{metric}{{model="{m["name"]}",version="{m["version"]}"}} {value}'


def _histogram(metric: str, m: dict, bounds, counts, total) -> list[str]:
    labels = f'model="{m["name"]}",version="{m["version"]}"'
    out, running = [], 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        out.append(f'{metric}_bucket{{{labels},le="{bound}"}} {running}')
    running += counts[-1]
    out.append(f'{metric}_bucket{{{labels},le="+Inf"}} {running}')
    out.append(f"{metric}_sum{{{labels}}} {total}")
    out.append(f"{metric}_count{{{labels}}} {running}")
    return out
