"""Replicas that follow the load: when to add a worker, when to take one away.

Two small pure classes, fed ``time.monotonic()`` values so that the policy is checked
without waiting (as :class:`~maas_lab.serving.supervisor.Backoff` is):

- :class:`Window` turns the workers' status snapshots, whose counters only ever grow, into
  figures over the last few seconds: queue depth per replica, p99 latency, requests/s and
  how busy the backends were. p99 comes from the *difference* between successive
  cumulative latency histograms, so a burst an hour ago no longer holds the figure up.
- :class:`Policy` turns those figures into decisions: one more replica when the queue or
  p99 stays over target for ``up_after_s``; one fewer when the server stays idle (nothing
  queued, p99 well under target or too few requests to judge, backends mostly idle) for
  the longer ``down_after_s``; never outside MIN..MAX; nothing for ``cooldown_s`` after
  each change, so the figures can show what the change did before the next one.

Why adding on p99 needs enough requests: a p99 over a handful of requests says nothing
about load, and a model that is slower than the target on its own gets no faster with more
replicas; only requests that wait behind others do.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass

from ..errors import UsageError
from ..hints import option
from .metrics import BUCKETS

MAX_REPLICAS = 64
IDLE_P99_FRACTION = 0.5  # "well under target": p99 under half of it
IDLE_BUSY_FRACTION = 0.5  # the replicas left after a removal would be at most half busy

# Timings, each an option of the server row (``autoscale_<name>``) so tests can shorten them.
DEFAULTS = {
    "window_s": 5.0,  # figures are taken over this much recent time
    "up_after_s": 5.0,  # over target this long: add a replica
    "down_after_s": 30.0,  # idle this long: remove one
    "cooldown_s": 10.0,  # no decision this long after a change
    "min_requests": 20,  # fewer requests than this in the window: p99 is not judged
}

_RANGE = re.compile(r"\s*([0-9]+)\s*\.\.\s*([0-9]+)\s*")


def parse_range(text) -> tuple[int, int]:
    """``"1..4"`` as ``(1, 4)``; anything else is a one-line UsageError saying the form."""
    match = _RANGE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise UsageError(
            f"{option('autoscale')} takes MIN..MAX replicas, e.g. {option('autoscale', '1..4')}; "
            f"got {text!r}."
        )
    low, high = int(match[1]), int(match[2])
    if min(low, high) < 1:
        raise UsageError(
            f"{option('autoscale')} {text!r}: MIN and MAX must be at least 1 (a server keeps "
            "one replica ready)."
        )
    if low > high:
        raise UsageError(
            f"{option('autoscale')} {text!r}: MIN is larger than MAX; write it as "
            f"{option('autoscale', f'{high}..{low}')}."
        )
    if high > MAX_REPLICAS:
        raise UsageError(
            f"{option('autoscale')} {text!r}: MAX must be at most {MAX_REPLICAS} replicas."
        )
    return low, high


def check(autoscale, target_p99_ms, replicas: int) -> tuple[int, int] | None:
    """Validate the autoscale options before anything starts; the replica count to start
    with (``replicas`` raised to MIN: the default of 1 then works with ``2..4``; above MAX
    is refused, as a contradiction of the two options), and the range, or None without
    autoscaling."""
    if not isinstance(target_p99_ms, int | float) or not 0 < target_p99_ms < math.inf:
        raise UsageError(
            f"{option('target_p99_ms')} must be a number of milliseconds above 0; got "
            f"{target_p99_ms!r}."
        )
    if autoscale is None:
        return None
    low, high = parse_range(autoscale)
    if replicas > high:
        raise UsageError(
            f"{option('replicas')} {replicas} is above the {option('autoscale')} range "
            f"{low}..{high}: start within it (it is where autoscaling starts)."
        )
    return max(low, replicas), high


def timings(options: dict) -> dict:
    """The policy's timings from a server row's options (``autoscale_window_s``...)."""
    return {k: type(v)(options.get(f"autoscale_{k}", v)) for k, v in DEFAULTS.items()}


# ---------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figures:
    queue: float  # requests waiting, per replica (latest snapshots)
    p99_ms: float | None  # over the window; None with fewer than min_requests in it
    rps: float  # requests answered per second over the window
    busy: float  # backend seconds per second, all replicas (1.0: one always computing)
    requests: int  # answered in the window

    def describe(self) -> str:
        p99 = "n/a" if self.p99_ms is None else f"{self.p99_ms:.3g} ms"
        return (
            f"queue {self.queue:.1f}/replica, p99 {p99}, {self.rps:.1f} req/s, busy {self.busy:.2f}"
        )


def quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile (seconds) of a latency histogram over :data:`metrics.BUCKETS` (the last
    count is over the largest bound), interpolated within a bucket as Prometheus's
    ``histogram_quantile`` does; None for an empty histogram."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    running = 0
    for i, count in enumerate(buckets):
        if count and running + count >= rank:
            if i >= len(BUCKETS):  # past the largest bound: all one can say is that bound
                return BUCKETS[-1]
            low = BUCKETS[i - 1] if i else 0.0
            return low + (BUCKETS[i] - low) * (rank - running) / count
        running += count
    return BUCKETS[-1]


def _counters(snapshot: dict) -> tuple[list[int], int, int, int]:
    """One worker's cumulative (latency buckets, requests, backend ns) over its models, and
    its queue depth."""
    buckets = [0] * (len(BUCKETS) + 1)
    requests = compute = queue = 0
    for m in snapshot.get("models", []):
        queue += int(m.get("queue") or 0)
        stats = m.get("stats")
        if not stats:
            continue
        buckets = [a + b for a, b in zip(buckets, stats["latency_buckets"], strict=False)]
        requests += stats["success"]
        compute += stats["compute_ns"]
    return buckets, requests, compute, queue


class Window:
    """Figures over the last ``window_s`` seconds from successive worker snapshots.

    Each worker's counters are cumulative; each call keeps the growth since that worker's
    previous snapshot, and figures are the sum of what grew within the window. A worker seen
    for the first time counts whole (it started a moment ago); one whose counters went down
    (a version switch restarts them) counts from zero again."""

    def __init__(self, window_s: float = DEFAULTS["window_s"], min_requests: int = 20):
        self.window_s, self.min_requests = window_s, min_requests
        self.last: dict[int, tuple[list[int], int, int]] = {}
        self.grew: deque[tuple[float, list[int], int]] = deque()
        self.since: float | None = None

    def add(self, now: float, snapshots: list[dict]) -> Figures:
        if self.since is None:
            self.since = now
        queue = 0
        for snap in snapshots:
            buckets, requests, compute, waiting = _counters(snap)
            queue += waiting
            before = self.last.get(snap["pid"])
            if before is None or requests < before[1] or compute < before[2]:
                before = ([0] * len(buckets), 0, 0)
            grown = [max(0, a - b) for a, b in zip(buckets, before[0], strict=False)]
            if any(grown) or compute > before[2]:
                self.grew.append((now, grown, compute - before[2]))
            self.last[snap["pid"]] = (buckets, requests, compute)
        seen = {s["pid"] for s in snapshots}
        for pid in [p for p in self.last if p not in seen]:
            del self.last[pid]  # gone (a retired worker); a pid that comes back counts anew
        while self.grew and self.grew[0][0] <= now - self.window_s:
            self.grew.popleft()
        total = [0] * (len(BUCKETS) + 1)
        busy_ns = 0
        for _, grown, ns in self.grew:
            total = [a + b for a, b in zip(total, grown, strict=False)]
            busy_ns += ns
        count = sum(total)
        span = min(self.window_s, max(1.0, now - self.since))
        p99 = quantile(total, 0.99) if count >= self.min_requests else None
        return Figures(
            queue=queue / max(1, len(snapshots)),
            p99_ms=None if p99 is None else 1000 * p99,
            rps=count / span,
            busy=busy_ns / 1e9 / span,
            requests=count,
        )


# ---------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    replicas: int  # the count wanted from now on
    before: int
    reason: str  # the figures that caused it

    @property
    def change(self) -> int:
        return self.replicas - self.before

    def line(self, clock: str) -> str:
        """``+1 replica (1 -> 2) at 12:03:04: p99 340 ms > 200 ms for 3 s``."""
        n = abs(self.change)
        what = f"{self.change:+d} replica{'s' if n > 1 else ''}"
        return f"{what} ({self.before} -> {self.replicas}) at {clock}: {self.reason}"


class Policy:
    """When to change the replica count, from :class:`Figures` and the time they were taken.

    ``queue_target`` is requests waiting per replica (the server uses its max batch size: a
    replica holding more than a full batch makes requests wait at least one batch's compute).
    Call :meth:`decide` every tick with ``settled`` False while a replica is starting or
    draining: conditions must then hold afresh once all are ready, since a worker warming
    up says nothing about the load."""

    def __init__(
        self,
        low: int,
        high: int,
        target_p99_ms: float,
        queue_target: float,
        *,
        up_after_s: float = DEFAULTS["up_after_s"],
        down_after_s: float = DEFAULTS["down_after_s"],
        cooldown_s: float = DEFAULTS["cooldown_s"],
    ):
        self.low, self.high = low, high
        self.target_p99_ms, self.queue_target = target_p99_ms, queue_target
        self.up_after_s, self.down_after_s, self.cooldown_s = up_after_s, down_after_s, cooldown_s
        self.over_since: float | None = None
        self.idle_since: float | None = None
        self.quiet_until = -math.inf

    def changed(self, now: float) -> None:
        """A change was made (by this policy or by hand): start the cool-down."""
        self.quiet_until = now + self.cooldown_s
        self.over_since = self.idle_since = None

    def decide(
        self, now: float, replicas: int, figures: Figures, settled: bool = True
    ) -> Decision | None:
        if replicas < self.low or replicas > self.high:  # set outside the range somehow
            wanted = min(self.high, max(self.low, replicas))
            self.changed(now)
            return Decision(wanted, replicas, f"outside the range {self.low}..{self.high}")
        if not settled or now < self.quiet_until:
            self.over_since = self.idle_since = None
            return None
        over = self._over(figures)
        idle = self._idle(figures, replicas)
        self.over_since = _since(self.over_since, now) if over else None
        self.idle_since = _since(self.idle_since, now) if idle else None
        if over and replicas < self.high and now - self.over_since >= self.up_after_s:
            reason = f"{'; '.join(over)} for {_s(now - self.over_since)} s"
            self.changed(now)
            return Decision(replicas + 1, replicas, f"{reason} ({figures.describe()})")
        if idle and replicas > self.low and now - self.idle_since >= self.down_after_s:
            reason = f"idle for {_s(now - self.idle_since)} s ({figures.describe()})"
            self.changed(now)
            return Decision(replicas - 1, replicas, reason)
        return None

    def _over(self, f: Figures) -> list[str]:
        over = []
        if f.p99_ms is not None and f.p99_ms > self.target_p99_ms:
            over.append(f"p99 {f.p99_ms:.3g} ms > {self.target_p99_ms:g} ms")
        if f.queue > self.queue_target:
            over.append(f"queue {f.queue:.1f}/replica > {self.queue_target:g}")
        return over

    def _idle(self, f: Figures, replicas: int) -> bool:
        calm = f.p99_ms is None or f.p99_ms < IDLE_P99_FRACTION * self.target_p99_ms
        spare = f.busy < IDLE_BUSY_FRACTION * max(0, replicas - 1)
        return f.queue == 0 and calm and spare


def _since(start: float | None, now: float) -> float:
    return now if start is None else start


def _s(seconds: float) -> str:
    return f"{round(seconds, 1):g}"
