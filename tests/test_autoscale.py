"""The autoscaling policy, checked without waiting: times are passed in, figures are made
from worker snapshots shaped as ``app.Server.snapshot()`` writes them. Bad options are
refused before anything starts. (The real server that follows a load is in
tests/test_serving_control.py.)"""

from __future__ import annotations

import pytest

from maas_lab.errors import UsageError
from maas_lab.serving.autoscale import Figures, Policy, Window, check, parse_range, quantile
from maas_lab.serving.metrics import BUCKETS

TARGET = 200.0
BUSY = Figures(queue=0.0, p99_ms=340.0, rps=50.0, busy=0.9, requests=250)
QUEUED = Figures(queue=12.0, p99_ms=None, rps=2.0, busy=0.9, requests=10)
IDLE = Figures(queue=0.0, p99_ms=None, rps=0.0, busy=0.0, requests=0)
MODERATE = Figures(queue=0.0, p99_ms=150.0, rps=40.0, busy=0.3, requests=200)


def policy(low=1, high=3, **timings) -> Policy:
    timings = {"up_after_s": 3.0, "down_after_s": 10.0, "cooldown_s": 5.0, **timings}
    return Policy(low, high, TARGET, queue_target=8, **timings)


def feed(p: Policy, replicas: int, figures: Figures, start: float, end: float, step=0.5):
    """Ticks from ``start`` to ``end`` (inclusive); the decisions made, with their time."""
    out, t = [], start
    while t <= end + 1e-9:
        d = p.decide(t, replicas, figures)
        if d is not None:
            out.append((t, d))
            replicas = d.replicas
        t += step
    return out


# ---------------------------------------------------------------------- options


@pytest.mark.parametrize("text", ["1-4", "a..b", "4", "1..", "..4", "1...4", "", "-1..2"])
def test_a_malformed_range_says_the_form(text):
    with pytest.raises(UsageError, match=r"^autoscale takes MIN\.\.MAX replicas, e\.g\."):
        parse_range(text)


def test_range_bounds_and_target_are_checked():
    assert parse_range("1..4") == (1, 4) and parse_range(" 2 .. 2 ") == (2, 2)
    for low_or_high_zero in ("0..2", "1..0"):  # 1..0 was told to write 0..1, refused too
        with pytest.raises(UsageError, match="MIN and MAX must be at least 1"):
            parse_range(low_or_high_zero)
    with pytest.raises(UsageError, match=r"MIN is larger than MAX; write it as autoscale='2\.\.4'"):
        parse_range("4..2")
    with pytest.raises(UsageError, match="MAX must be at most 64"):
        parse_range("1..65")
    for bad in (0, -5.0, "200", None, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="^target_p99_ms must be a number of milliseconds"):
            check("1..4", bad, 1)
    with pytest.raises(UsageError, match=r"^replicas 5 is above the autoscale range 1\.\.4"):
        check("1..4", 200.0, 5)
    assert check("2..4", 200.0, 1) == (2, 4)  # the default of 1 starts at MIN
    assert check("1..4", 200.0, 3) == (3, 4)
    assert check(None, 200.0, 9) is None  # no autoscaling: replicas as given


# ---------------------------------------------------------------------- decisions


def test_a_replica_is_added_only_when_over_target_is_sustained():
    p = policy()
    assert feed(p, 1, BUSY, 0.0, 2.5) == []  # over, not for long enough yet
    assert p.decide(2.9, 1, MODERATE) is None  # a dip under target: the count starts over
    assert feed(p, 1, BUSY, 3.0, 5.5) == []
    [(t, d)] = feed(p, 1, BUSY, 6.0, 6.0)
    assert (t, d.before, d.replicas, d.change) == (6.0, 1, 2, 1)
    assert d.reason.startswith("p99 340 ms > 200 ms for 3 s (queue 0.0/replica, p99 340 ms")
    assert d.line("12:03:04").startswith("+1 replica (1 -> 2) at 12:03:04: p99 340 ms > 200 ms")


def test_a_deep_queue_adds_a_replica_even_with_too_few_requests_for_a_p99():
    [(t, d)] = feed(policy(), 1, QUEUED, 0.0, 10.0)
    assert t == 3.0 and d.replicas == 2 and d.reason.startswith("queue 12.0/replica > 8 for 3 s")


def test_no_decision_during_the_cool_down_and_the_sustain_starts_after_it():
    p = policy()
    [(t, d)] = feed(p, 1, BUSY, 0.0, 3.0)
    assert t == 3.0
    # Still over target: the cool-down (5 s) passes first, then 3 s sustained again.
    [(t, d)] = feed(p, 2, BUSY, 3.5, 20.0)
    assert t == 3.0 + 5.0 + 3.0 and (d.before, d.replicas) == (2, 3)


def test_a_change_by_hand_starts_the_cool_down():
    p = policy()
    assert feed(p, 1, BUSY, 0.0, 2.5) == []
    p.changed(2.6)  # `maas scale` within the range
    [(t, _)] = feed(p, 2, BUSY, 3.0, 20.0)
    assert t == 8.0 + 3.0  # quiet until 7.6; the sustain starts at the next tick (8.0)


def test_replicas_stay_within_min_and_max():
    p = policy(low=2, high=3)
    assert feed(p, 3, BUSY, 0.0, 30.0) == []  # at MAX: over target changes nothing
    assert feed(p, 2, IDLE, 0.0, 60.0) == []  # at MIN: idle changes nothing
    d = p.decide(61.0, 5, IDLE)  # a count outside the range is brought back at once
    assert (d.before, d.replicas) == (5, 3) and "outside the range 2..3" in d.reason
    assert policy(low=2, high=3).decide(0.0, 1, BUSY).replicas == 2


def test_an_idle_server_loses_a_replica_after_the_longer_idle_period():
    p = policy()
    assert feed(p, 3, IDLE, 0.0, 9.5) == []
    [(t, d)] = feed(p, 3, IDLE, 10.0, 10.0)
    assert (d.before, d.replicas) == (3, 2)
    assert d.reason.startswith("idle for 10 s (queue 0.0/replica, p99 n/a, 0.0 req/s")
    assert d.line("12:05:00").startswith("-1 replica (3 -> 2) at 12:05:00: idle for 10 s")
    # one at a time, each after its cool-down and a full idle period again
    [(t, d)] = feed(p, 2, IDLE, 10.5, 40.0)
    assert t == 10.0 + 5.0 + 10.0 and d.replicas == 1
    assert feed(p, 1, IDLE, 25.5, 90.0) == []  # MIN


def test_what_is_not_idle():
    calm_but_busy = Figures(queue=0.0, p99_ms=20.0, rps=400.0, busy=0.8, requests=2000)
    for figures in (
        MODERATE,  # p99 under target, but not well under it
        Figures(queue=1.0, p99_ms=None, rps=1.0, busy=0.0, requests=5),  # something waits
        calm_but_busy,  # with 2 replicas, one left would be 80 % busy
    ):
        assert feed(policy(), 2, figures, 0.0, 60.0) == [], figures
    # the same load on 3 replicas: two left would be 40 % busy each, so one goes
    assert [d.replicas for _, d in feed(policy(), 3, calm_but_busy, 0.0, 10.0)] == [2]


def test_nothing_counts_while_a_replica_starts_or_drains():
    p = policy()
    assert feed(p, 1, BUSY, 0.0, 2.5) == []
    assert p.decide(2.8, 1, BUSY, settled=False) is None
    [(t, _)] = feed(p, 1, BUSY, 3.0, 10.0)
    assert t == 6.0  # sustained from 3.0, not from 0.0


# ---------------------------------------------------------------------- figures


def snap(pid: int, fast=0, slow=0, queue=0, compute_s=0.0, ready=True) -> dict:
    """A worker snapshot with ``fast`` requests of ~1 ms and ``slow`` ones of ~400 ms,
    cumulative, as app.Server.snapshot() writes it."""
    buckets = [0] * (len(BUCKETS) + 1)
    buckets[BUCKETS.index(0.001)] += fast
    buckets[BUCKETS.index(0.5)] += slow
    stats = {
        "success": fast + slow,
        "latency_buckets": buckets,
        "compute_ns": int(compute_s * 1e9),
    }
    return {"pid": pid, "ready": ready, "models": [{"queue": queue, "stats": stats}]}


def test_quantile_interpolates_within_a_bucket_as_prometheus_does():
    buckets = [0] * (len(BUCKETS) + 1)
    assert quantile(buckets, 0.99) is None
    buckets[BUCKETS.index(0.5)] = 100  # all between 0.25 and 0.5 s
    assert quantile(buckets, 0.5) == pytest.approx(0.375)
    buckets[-1] = 1000  # most past the largest bound: that bound is all one can say
    assert quantile(buckets, 0.99) == BUCKETS[-1]


def test_p99_is_over_the_window_so_old_traffic_does_not_hold_it_up():
    w = Window(window_s=5.0, min_requests=20)
    assert w.add(0.0, [snap(1, slow=500)]).p99_ms > 250  # a new worker counts whole
    f = w.add(1.0, [snap(1, slow=500, fast=1000)])
    assert f.p99_ms > 250 and f.requests == 1500
    f = w.add(5.5, [snap(1, slow=500, fast=2000)])  # the slow burst left the window
    assert f.p99_ms <= 1.0 and f.requests == 2000  # 1000 fast at t=1.0, 1000 at t=5.5
    assert f.rps == pytest.approx(2000 / 5.0)
    f = w.add(5.7, [snap(1, slow=500, fast=2000)])  # the same snapshot read again
    assert f.requests == 2000
    f = w.add(20.0, [snap(1, slow=500, fast=2005)])  # a trickle: too few to judge
    assert f.p99_ms is None and f.requests == 5


def test_window_figures_across_workers_restarts_and_retirement():
    w = Window(window_s=5.0, min_requests=1)
    w.add(0.0, [snap(1, fast=100, compute_s=1.0), snap(2, fast=100, compute_s=1.0)])
    f = w.add(
        1.0, [snap(1, fast=100, queue=6, compute_s=2.0), snap(2, fast=100, queue=2, compute_s=1.0)]
    )
    assert f.queue == 4.0 and f.requests == 200 and f.busy == pytest.approx(3.0 / 1.0)
    # worker 2 retires; worker 1 switched versions (its counters start from zero)
    f = w.add(2.0, [snap(1, fast=10, compute_s=0.1)])
    assert f.requests == 210 and f.queue == 0.0
    assert w.last.keys() == {1}
    f = w.add(2.5, [snap(1, fast=10, compute_s=0.1), snap(3, slow=50)])  # a new worker
    assert f.requests == 260 and f.p99_ms > 250
