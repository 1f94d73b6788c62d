"""Dynamic batching for one served model version: a bounded queue, a batch former, one
backend call at a time in a worker thread.

Requests are validated before they get here, so a batch holds only well-formed requests and
a malformed one can never change another's output. A batch is formed as soon as the backend
is free: at once when ``max_batch`` rows wait, otherwise when the oldest request has waited
``max_delay`` -- and it only waits at all if, within the last second, a request arrived
to find others queued or the backend busy: a lone client is never delayed for company that
will not come (a sequential client would otherwise pay ``max_delay`` on every call).
While the backend runs, new requests queue up, so under load batches fill by themselves.

Text models get batched by length. Padding a short sentence to the longest in a batch of 32
doubled the compute in our measurements, which made plain batching slower than none; here
a batch starts from the oldest request (fairness) and takes the queued requests whose length
is closest to it while the padded size stays within ``PAD_WASTE`` of the real tokens.
Padding is only done where it is known to be harmless: the model takes an ``attention_mask``
and every output axis of that length is named like the input's, so it can be cut back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

PAD_WASTE = 0.3  # padded tokens may exceed real tokens by this fraction
FAIR_WINDOW = 3  # a batch is chosen among the oldest FAIR_WINDOW * max_batch requests


class Overloaded(Exception):
    """The queue is full: answer 503 with Retry-After rather than queue without bound."""


class RequestTimeout(Exception):
    pass


class BackendFailed(Exception):
    """The backend raised on this request (alone, so it was this request's fault or luck)."""


@dataclass(eq=False)
class Pending:
    feeds: dict
    rows: int
    length: int
    key: tuple
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    future: asyncio.Future | None = None
    request: int = 0  # the request this is (a part of): parts of one share it


@dataclass
class Plan:
    """How requests of one model combine: along the batch axis, and (text) padded to the
    longest sequence on ``pad_dim`` with outputs cut back to each request's length."""

    batchable: bool
    pad_dim: str | None = None
    pad_axes: dict = field(default_factory=dict)  # input name -> axis
    out_axes: dict = field(default_factory=dict)  # output name -> axes to cut back

    @classmethod
    def from_signature(cls, signature: dict) -> Plan:
        inputs, outputs = signature.get("inputs", []), signature.get("outputs", [])
        first = [t["shape"][0] if t["shape"] else None for t in inputs + outputs]
        batch_name = first[0] if first else None
        batchable = bool(inputs) and all(isinstance(d, str) and d == batch_name for d in first)
        plan = cls(batchable=batchable)
        mask = next((t for t in inputs if t["name"] == "attention_mask"), None)
        if not batchable or mask is None or len(mask["shape"]) != 2:
            return plan
        pad_dim = mask["shape"][1]
        if not isinstance(pad_dim, str):
            return plan
        pad_axes = {}
        for t in inputs:
            axes = [i for i, d in enumerate(t["shape"]) if d == pad_dim]
            if len(axes) > 1:
                return plan
            if axes:
                pad_axes[t["name"]] = axes[0]
        out_axes = {}
        for t in outputs:
            for d in t["shape"][1:]:
                if isinstance(d, str) and d != pad_dim:
                    return plan  # an axis we could not cut back: no padding
            out_axes[t["name"]] = [i for i, d in enumerate(t["shape"]) if d == pad_dim]
        plan.pad_dim, plan.pad_axes, plan.out_axes = pad_dim, pad_axes, out_axes
        return plan

    def describe(self, feeds: dict) -> tuple[tuple, int]:
        """The grouping key (shapes that must match exactly) and the padded length."""
        length = 0
        key = []
        for name in sorted(feeds):
            shape = list(feeds[name].shape[1:])
            axis = self.pad_axes.get(name)
            if axis is not None:
                length = max(length, shape[axis - 1])
                shape[axis - 1] = -1
            key.append((name, tuple(shape), feeds[name].dtype.str))
        return tuple(key), length


class Batcher:
    def __init__(
        self,
        runner,
        plan: Plan,
        *,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        stats,
        log=None,
    ):
        self.runner, self.plan, self.stats = runner, plan, stats
        self.max_batch = max(1, int(max_batch)) if plan.batchable else 1
        self.max_delay_s, self.max_queue = max(0.0, float(max_delay_s)), max(1, int(max_queue))
        self.queue: deque[Pending] = deque()
        self.queued_rows = 0
        # Requests with parts still queued -> how many: --max-queue counts requests, not the
        # parts a large request is cut into (two requests of 1024 rows are 256 parts of 8).
        self._parts_queued: dict[int, int] = {}
        self._requests = itertools.count(1)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="maas-infer")
        self.log = log or (lambda msg: None)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.busy = False
        self._crowded_until = 0.0  # until then, requests have been meeting others here

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def depth(self) -> int:
        """Requests waiting (a request cut into parts counts once)."""
        return len(self._parts_queued)

    def idle(self) -> bool:
        return not self.queue and not self.busy

    async def close(self) -> None:
        """Stop once everything queued has been answered (old versions after a switch)."""
        while not self.idle():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=False)

    def submit(self, feeds: dict, timeout_s: float) -> Pending:
        """Queue a request; one of more than ``max_batch`` rows is queued as parts of at
        most ``max_batch`` rows, so no backend call is larger than the model's batch size
        and other requests' batches run between the parts. The returned item's future gives
        the whole request's outputs."""
        if self.depth >= self.max_queue:
            raise Overloaded()
        rows = int(next(iter(feeds.values())).shape[0])
        request = next(self._requests)
        if rows > self.max_batch and self.plan.batchable:
            step = self.max_batch
            parts = [
                self._submit({k: v[i : i + step] for k, v in feeds.items()}, timeout_s, request)
                for i in range(0, rows, step)
            ]
            return _joined(parts, rows, timeout_s)
        return self._submit(feeds, timeout_s, request)

    def _submit(self, feeds: dict, timeout_s: float, request: int) -> Pending:
        rows = int(next(iter(feeds.values())).shape[0])
        key, length = self.plan.describe(feeds)
        now = time.monotonic()
        if self.queue or self.busy:
            self._crowded_until = now + 1.0
        item = Pending(feeds, rows, length, key, now + timeout_s, request=request)
        item.future = asyncio.get_running_loop().create_future()
        self._parts_queued[request] = self._parts_queued.get(request, 0) + 1
        self.queue.append(item)
        self.queued_rows += rows
        self._wake.set()
        return item

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self.queue[0].enqueued + self.max_delay_s - time.monotonic()
            # Wait for company only if requests arrive often enough for some to come in time:
            # a lone request under light load goes at once instead of paying max_delay.
            crowded = time.monotonic() < self._crowded_until
            if self.queued_rows < self.max_batch and wait > 0 and crowded:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            batch = self._take()
            if not batch:
                continue
            self.busy = True
            try:
                started = time.monotonic()
                results, compute_s = await loop.run_in_executor(self.executor, self._run, batch)
                self.stats.batch(sum(p.rows for p in batch), compute_s)
                for item, result in zip(batch, results, strict=True):
                    if item.future.done():
                        continue
                    if isinstance(result, Exception):
                        item.future.set_exception(result)
                    else:
                        item.future.set_result((result, started - item.enqueued))
            except Exception as exc:  # a bug here must not stop the queue
                self.log(f"batcher error: {exc!r}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(BackendFailed(f"internal error ({exc!r})"))
            finally:
                self.busy = False

    def _take(self) -> list[Pending]:
        """The next batch: the oldest live request and the closest compatible ones."""
        now = time.monotonic()
        while self.queue and (self.queue[0].future.done() or self.queue[0].deadline < now):
            self._drop(self.queue.popleft())
        if not self.queue:
            return []
        first = self.queue[0]
        chosen, rows = [first], first.rows
        if self.max_batch > 1 and first.rows < self.max_batch:
            # Only the oldest few may join: a request can be overtaken by a better length
            # match a bounded number of times, which keeps the latency tail short.
            window = list(itertools.islice(self.queue, 1, 1 + FAIR_WINDOW * self.max_batch))
            candidates = [
                p
                for p in window
                if p.key == first.key and not p.future.done() and p.deadline >= now
            ]
            if self.plan.pad_dim is not None:
                candidates.sort(key=lambda p: abs(p.length - first.length))
            longest, real = first.length, first.rows * first.length
            for p in candidates:
                if rows + p.rows > self.max_batch:
                    continue
                if self.plan.pad_dim is not None:
                    top = max(longest, p.length)
                    if top * (rows + p.rows) > (1 + PAD_WASTE) * (real + p.rows * p.length):
                        continue
                    longest, real = top, real + p.rows * p.length
                chosen.append(p)
                rows += p.rows
                if rows >= self.max_batch:
                    break
        picked = set(map(id, chosen))
        self.queue = deque(p for p in self.queue if id(p) not in picked)
        self.queued_rows = sum(p.rows for p in self.queue)
        for item in chosen:
            self._dequeued(item)
        return chosen

    def _dequeued(self, item: Pending) -> None:
        left = self._parts_queued.get(item.request, 0) - 1
        if left > 0:
            self._parts_queued[item.request] = left
        else:
            self._parts_queued.pop(item.request, None)

    def _drop(self, item: Pending) -> None:
        self.queued_rows -= item.rows
        self._dequeued(item)
        if not item.future.done():
            item.future.set_exception(RequestTimeout())

    # ---------------------------------------------------------------- in the worker thread

    def _run(self, batch: list[Pending]) -> tuple[list, float]:
        started = time.perf_counter()
        try:
            outputs = self.runner.infer(self._join(batch))
            results = self._split(batch, outputs)
        except Exception as exc:
            if len(batch) == 1:
                results = [BackendFailed(_describe(exc))]
            else:  # find the request that fails; the others still get answers
                results = []
                for item in batch:
                    try:
                        results.append(self._split([item], self.runner.infer(item.feeds))[0])
                    except Exception as one:
                        results.append(BackendFailed(_describe(one)))
        return results, time.perf_counter() - started

    def _join(self, batch: list[Pending]) -> dict:
        if len(batch) == 1:
            return batch[0].feeds
        longest = max(p.length for p in batch)
        joined = {}
        for name in batch[0].feeds:
            axis = self.plan.pad_axes.get(name)
            parts = []
            for p in batch:
                arr = p.feeds[name]
                if axis is not None and arr.shape[axis] < longest:
                    widths = [(0, 0)] * arr.ndim
                    widths[axis] = (0, longest - arr.shape[axis])
                    arr = np.pad(arr, widths)
                parts.append(arr)
            joined[name] = np.concatenate(parts, axis=0)
        return joined

    def _split(self, batch: list[Pending], outputs: dict) -> list[dict]:
        total = sum(p.rows for p in batch)
        for name, arr in outputs.items():
            if np.ndim(arr) == 0 or arr.shape[0] != total:
                raise ValueError(
                    f"output {name!r} has {np.shape(arr)[:1]} rows for {total} input rows"
                )
        results, start = [], 0
        for p in batch:
            one = {}
            for name, arr in outputs.items():
                part = arr[start : start + p.rows]
                for axis in self.plan.out_axes.get(name, ()):
                    if part.shape[axis] > p.length:
                        part = part.take(range(p.length), axis=axis)
                one[name] = part
            results.append(one)
            start += p.rows
        return results


def _joined(parts: list[Pending], rows: int, timeout_s: float) -> Pending:
    """One item whose future completes when every part has: outputs joined along the batch
    axis, queueing time that of the first part; the first failure fails it, and cancelling
    it cancels the parts still queued."""
    loop = asyncio.get_running_loop()
    whole = Pending({}, rows, parts[0].length, parts[0].key, parts[0].deadline)
    whole.future = loop.create_future()
    gathered = asyncio.gather(*(p.future for p in parts))

    def finish(done: asyncio.Future) -> None:
        if whole.future.done():
            return
        if done.cancelled():
            whole.future.cancel()
        elif done.exception() is not None:
            whole.future.set_exception(done.exception())
        else:
            results = done.result()
            outputs = {
                name: np.concatenate([r[0][name] for r in results], axis=0)
                for name in results[0][0]
            }
            whole.future.set_result((outputs, results[0][1]))

    def cancel_parts(done: asyncio.Future) -> None:
        if done.cancelled():
            for p in parts:
                p.future.cancel()

    gathered.add_done_callback(finish)
    whole.future.add_done_callback(cancel_parts)
    return whole


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
