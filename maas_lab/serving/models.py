"""The models one worker process serves, kept in step with the server's registry row.

A manager thread polls the row and the registry: a new ref is loaded, a removed one
unloaded, and when an alias a server follows moves, the new version is loaded *beside* the
old one, warmed up on a real request, and only then swapped in; requests already queued on
the old version finish there. If the new version fails to load, the old one keeps serving
and the failure is reported in ``maas status`` and the log. Loading happens in that thread,
so the event loop keeps answering while a model loads.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field

from ..components import tensor
from ..hints import command
from .batching import Batcher, Plan
from .metrics import Stats
from .text import TextInput

POLL_S = 0.5
PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "torch": "pytorch",
    "torch-export": "pytorch_export",
    "hf": "huggingface_transformers",
}


class NotServed(Exception):
    """A model or version this server does not serve (404), or not yet (503)."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


@dataclass
class Loaded:
    """One model version loaded in this worker, with its own queue and counters."""

    name: str
    number: int
    format: str
    runner: object
    batcher: Batcher
    stats: Stats
    tokenizer: object = None
    text: object = None  # sentences -> the model's token inputs (TextInput)
    loaded_at: float = field(default_factory=time.time)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.number}"

    @property
    def inputs(self) -> list[dict]:
        """The inputs a client may send: the model's own, and ``text`` where the version
        carries its tokenizer (the server tokenizes, so a client can send sentences)."""
        own = list(self.runner.signature["inputs"])
        if self.tokenizer is not None:
            own.append(tensor("text", "str", ["batch"]))
        return own

    @property
    def outputs(self) -> list[dict]:
        return list(self.runner.signature["outputs"])

    @property
    def platform(self) -> str:
        return PLATFORMS.get(self.format, f"maas_{self.format}")


@dataclass
class Slot:
    """One ref the server was asked to serve (``minilm@prod`` follows the alias)."""

    follow: str
    name: str
    current: Loaded | None = None
    state: str = "loading"
    error: str | None = None
    failed_number: int | None = None


class ModelSet:
    def __init__(self, root, server: str, options: dict, log):
        self.root, self.server, self.options, self.log = root, server, options, log
        self.slots: dict[str, Slot] = {}
        self.aliases: dict[tuple[str, str], int] = {}  # (name, alias) -> number
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.row_seen = False

    # ------------------------------------------------------------------ event loop side

    def prepare(self) -> None:
        """Load everything before the worker accepts a connection: a replica added by
        ``scale`` must never answer "still loading" while its siblings could answer."""
        from ..registry.registry import Registry

        registry = Registry(self.root)
        try:
            self._sync(registry)
        finally:
            registry.close()

    def start(self, loop) -> None:
        self.loop = loop
        for slot in self.slots.values():
            if slot.current is not None:
                slot.current.batcher.start()
        self._thread = threading.Thread(target=self._manage, name="maas-models", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> bool:
        return bool(self.slots) and all(s.current is not None for s in self.slots.values())

    def find(self, name: str, version: str | None) -> Loaded:
        slots = [s for s in self.slots.values() if s.name == name]
        if not slots:
            served = sorted({s.name for s in self.slots.values()}) or ["none"]
            raise NotServed(
                f"This server does not serve a model named {name!r}; it serves {', '.join(served)}."
            )
        live = [s.current for s in slots if s.current is not None]
        if not live:
            errors = [s.error for s in slots if s.error]
            raise NotServed(
                f"{name} is not ready on this server: {errors[0]}"
                if errors
                else f"{name} is still loading; try again in a moment.",
                503,
            )
        if version is None:
            return live[0]
        if re.fullmatch(r"[0-9]+", version):  # not isdigit(): it takes '²', int() does not
            number = int(version)
        elif not re.fullmatch(r"latest|[A-Za-z][A-Za-z0-9._-]*", version):
            raise NotServed(
                f"{version!r} is not a version number or an alias name; use e.g. "
                f"/v2/models/{name}/versions/3 or an alias the server follows.",
                400,
            )
        else:
            follow = name if version == "latest" else f"{name}@{version}"
            for slot in slots:
                if slot.follow == follow and slot.current is not None:
                    return slot.current
            number = self.aliases.get((name, version))
            if number is None:
                raise NotServed(
                    f"{name} has no alias {version!r} on this server. Use a "
                    "version number, or an alias the server follows."
                )
        for loaded in live:
            if loaded.number == number:
                return loaded
        shown = ", ".join(str(v.number) for v in live) or "none yet"
        raise NotServed(
            f"{name}@{version} is not loaded on this server (it serves version {shown}). "
            f"Serve it with `{command('serve', f'{name}@{version}')}`, or load it through the "
            "repository API."
        )

    def loaded(self) -> list[Loaded]:
        return [s.current for s in self.slots.values() if s.current is not None]

    def _swap(self, slot: Slot, new: Loaded) -> None:
        old = slot.current
        new.batcher.start()
        slot.current, slot.state, slot.error = new, "ready", None
        if old is not None and old.number != new.number:
            self.log(f"{slot.follow}: now serving {new.ref} (was {old.ref})")
        if old is not None:
            asyncio.get_running_loop().create_task(old.batcher.close())

    def _unload(self, follow: str) -> None:
        slot = self.slots.pop(follow, None)
        if slot is not None and slot.current is not None:
            self.log(f"unloaded {slot.current.ref}")
            asyncio.get_running_loop().create_task(slot.current.batcher.close())

    # ------------------------------------------------------------------ manager thread

    def _manage(self) -> None:
        from ..registry.registry import Registry

        registry = Registry(self.root)
        try:
            while not self._stop.is_set():
                try:
                    self._sync(registry)
                except Exception as exc:  # a failed poll is retried, never fatal
                    self.log(f"registry poll failed: {exc}")
                self._stop.wait(POLL_S)
        finally:
            registry.close()

    def _sync(self, registry) -> None:
        from . import state

        row = state.get(registry.db, self.server)
        if row is None:
            return
        self.row_seen = True
        wanted = list(dict.fromkeys(row["models"]))
        for follow in list(self.slots):
            if follow not in wanted and self.loop is not None:
                self.loop.call_soon_threadsafe(self._unload, follow)
        names = {f.split("@")[0] for f in wanted}
        self.aliases = {
            (r["name"], r["alias"]): r["number"]
            for r in registry.db.query(
                "select m.name, a.alias, v.number from aliases a join models m on m.id = "
                "a.model_id join versions v on v.id = a.version_id where m.name in "
                f"({', '.join('?' * len(names))})",
                sorted(names),
            )
        }
        for follow in wanted:
            slot = self.slots.get(follow)
            if slot is None:
                slot = self.slots[follow] = Slot(follow, follow.split("@")[0])
            try:
                target = registry.resolve(follow)
            except Exception as exc:
                slot.state, slot.error = "failed", str(exc)
                continue
            have = slot.current.number if slot.current else None
            if target["number"] in (have, slot.failed_number):
                continue
            self._load(registry, slot, target)

    def _load(self, registry, slot: Slot, target: dict) -> None:
        ref = target["ref"]
        if slot.current is None:
            slot.state = "loading"
        self.log(f"{slot.follow}: loading {ref}")
        started = time.perf_counter()
        try:
            loaded = self._build(registry, ref)
        except Exception as exc:
            message = str(exc).strip() or type(exc).__name__
            slot.failed_number, slot.error = target["number"], f"{ref} failed to load: {message}"
            if slot.current is None:
                slot.state = "failed"
            kept = f"; still serving {slot.current.ref}" if slot.current else ""
            self.log(f"{slot.follow}: {slot.error}{kept}")
            return
        slot.failed_number = None
        self.log(f"{slot.follow}: {ref} ready in {time.perf_counter() - started:.1f} s")
        if self.loop is None:  # before serving: nothing to swap with
            slot.current, slot.state = loaded, "ready"
        else:
            self.loop.call_soon_threadsafe(self._swap, slot, loaded)

    def _build(self, registry, ref: str) -> Loaded:
        from ..runners import start_runner

        checkout = registry.checkout(ref)
        # Spinning threads would take the CPU from the event loop that parses the next
        # requests while a batch runs: off, it served 10-15% more requests/s (benchmarks/
        # serving.py, MiniLM int8, 2 cores). A backend without the option ignores it.
        runner = start_runner(
            checkout, {"threads": self.options.get("threads") or 0, "spin": False}
        )
        tokenizer = getattr(runner, "tokenizer", None)
        names = [t["name"] for t in runner.signature["inputs"]]
        if "input_ids" not in names:
            tokenizer = None
        warm = _example(runner)
        runner.infer(warm)  # a version that cannot answer never replaces one that can
        plan = Plan.from_signature(runner.signature)
        stats = Stats()
        batcher = Batcher(
            runner,
            plan,
            max_batch=self.options.get("max_batch", 8),
            max_delay_s=self.options.get("max_delay_ms", 5) / 1000,
            max_queue=self.options.get("max_queue", 256),
            stats=stats,
            log=self.log,
        )
        number = int(ref.rsplit("@", 1)[1])
        text = TextInput(tokenizer, names) if tokenizer is not None else None
        return Loaded(
            ref.rsplit("@", 1)[0],
            number,
            checkout.format,
            runner,
            batcher,
            stats,
            tokenizer,
            text,
        )


def _example(runner) -> dict:
    if hasattr(runner, "example_feeds"):
        return runner.example_feeds(1)
    from ..parity import DIM_SIZES, feeds_from_signature

    return feeds_from_signature(runner.signature, {**DIM_SIZES, "batch": 1})
