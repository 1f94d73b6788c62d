"""The gRPC rows of ``benchmarks/serving.py``: MiniLM int8 over OIP v2 gRPC against REST on
the same server, same clients and requests.

Why one server for both: the question is what the door costs, so everything behind it
(the batcher, the model, its threads) is shared; the server runs with the batching row's
options plus ``grpc_port=0``. REST goes through wrk (the benchmark's own Lua script), gRPC
through a closed loop of grpcio clients in a process of their own (:class:`GrpcLoad`), one
call at a time per connection, as wrk's keep-alive connections are. Not h2load: the server
retires each gRPC connection after about 2 s with a GOAWAY (so clients spread over
replicas), which real gRPC clients follow by reconnecting and h2load does not.

Both rows send the same single sentence: a ``ModelInferRequest`` with the ``text`` BYTES
input as ``raw_input_contents`` (4-byte little-endian length first), as tritonclient sends
it. A gRPC run counts only when the server's own statistics grew by the calls answered
and none failed; one answer through ``tritonclient.grpc`` is compared with REST's. Latency
percentiles are exact over each call the gRPC clients timed, and from wrk's histogram
(merged as the other rows are) for REST.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import serving as base

REST, GRPC = "REST (wrk)", "gRPC (grpcio)"
SENTENCE_INDEX = 0  # which sentence of maas_lab/data/sentences.txt both rows send
MODEL = base.TEXT_MODEL
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def grpc_body(sentence: str) -> bytes:
    """One length-prefixed gRPC message: ModelInfer of one sentence, raw_input_contents."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.outputs.add(name="sentence_embedding")
    text = sentence.encode()
    request.raw_input_contents.append(struct.pack("<I", len(text)) + text)
    message = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(message)) + message


class GrpcLoad:
    """A closed loop of ``connections`` gRPC clients, each its own HTTP/2 connection, in a
    process of its own (this file, run with ``--load``), on grpcio: the C core that
    tritonclient.grpc uses. A real gRPC client follows the server's GOAWAY (it retires each
    connection after about 2 s, so clients spread over replicas) and reconnects; h2load did
    not, and counted every call after a retirement as failed."""

    def __init__(self, tmp: Path, body: bytes):
        self.tmp, self.runs = tmp, 0
        tmp.mkdir(parents=True, exist_ok=True)
        self.message = tmp / "grpc-message.bin"
        self.message.write_bytes(body[5:])  # without the frame prefix: grpcio adds its own
        self.cpu_s = 0.0

    def run(self, address: str, connections: int, requests: int, timeout_s: int) -> dict:
        import json
        import resource
        import sys
        import time

        self.runs += 1
        log_file = self.tmp / f"grpc-load{self.runs}.json"
        cmd = [sys.executable, __file__, "--load", address, str(connections), str(requests)]
        cmd += [str(self.message), str(log_file)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.cpu_s += cpu
        if proc.returncode != 0 or not log_file.exists():
            out = proc.stdout + proc.stderr
            raise RuntimeError(f"the gRPC load failed (exit {proc.returncode}): {out[-600:]}")
        rows = np.array(json.loads(log_file.read_text()), dtype=np.int64).reshape(-1, 3)
        log_file.unlink()
        starts, codes, elapsed = rows[:, 0], rows[:, 1], rows[:, 2]
        span = ((starts + elapsed).max() - starts.min()) / 1e6 if len(rows) else 0.0
        ok = int((codes == 0).sum())
        timeouts = int((codes == 4).sum())  # DEADLINE_EXCEEDED
        return {
            "done": len(rows),
            "ok": ok,
            "http_failed": len(rows) - ok,
            "timeouts": timeouts,
            "other_status": len(rows) - ok - timeouts,
            "socket_errors": int((codes == 14).sum()),  # UNAVAILABLE
            "seconds": span,
            "rps": ok / span if span else 0.0,
            "latency_ms": (elapsed / 1e3).tolist(),
            "client_cpu_s": cpu,
            "wall_s": wall,
        }


def _load(address: str, connections: int, requests: int, message_path: str, out: str) -> int:
    """The client process: ``requests`` calls in all, ``connections`` at a time; writes
    ``[[start_us, status code (0: OK), elapsed_us], ...]``."""
    import asyncio
    import json
    import time

    import grpc

    message = Path(message_path).read_bytes()
    left = [requests]
    records: list[tuple[int, int, int]] = []

    async def client() -> None:
        # A subchannel pool of its own: channels to one address otherwise share a connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            call = channel.unary_unary(METHOD)  # bytes in, bytes out
            while left[0] > 0:
                left[0] -= 1
                started = time.perf_counter_ns()
                try:
                    await call(message, timeout=60, wait_for_ready=True)
                    code = 0
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().value[0]
                took = time.perf_counter_ns() - started
                records.append((started // 1000, code, took // 1000))

    async def main() -> None:
        await asyncio.gather(*(client() for _ in range(connections)))

    asyncio.run(main())
    Path(out).write_text(json.dumps(records))
    return 0


def fail_count(url: str) -> int | None:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/stats", timeout=5) as r:
            return json.loads(r.read())["model_stats"][0]["inference_stats"]["fail"]["count"]
    except Exception:
        return None


def settled(url: str, wait_s: float = 10.0) -> tuple[dict | None, int | None]:
    """The server's counters once they stop growing: wrk stops with up to one request a
    connection in flight, which the server still answers (and counts) after wrk is gone;
    reading too early would put them in the next run."""
    import time

    last = base.model_stats(url, MODEL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = base.model_stats(url, MODEL)
        if now == last:
            break
        last = now
    return last, fail_count(url)


def compare_answers(handle, sentence: str) -> dict:
    """The same sentence through tritonclient.grpc and REST: the embeddings' largest
    difference (one request each, alone: batch 1 both times, so they should be identical)."""
    import tritonclient.grpc as grpcclient

    status, answer = base.post(f"{handle.url}/v2/models/{MODEL}/infer", base.text_body(sentence))
    base.check_text(status, answer)
    rest = np.asarray(answer["outputs"][0]["data"], dtype=np.float32)
    client = grpcclient.InferenceServerClient(handle.grpc)
    try:
        text = grpcclient.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([sentence.encode()], dtype=object))
        out = client.infer(
            MODEL, [text], outputs=[grpcclient.InferRequestedOutput("sentence_embedding")]
        )
        grpc = out.as_numpy("sentence_embedding").reshape(-1).astype(np.float32)
    finally:
        client.close()
    if grpc.shape != rest.shape:
        raise RuntimeError(f"gRPC answer shape {grpc.shape} differs from REST's {rest.shape}")
    return {"max_abs_diff": float(np.abs(grpc - rest).max()), "size": int(rest.size)}


def run(args, root: Path, ref: str, texts: list[str]) -> dict:
    """Both rows, rounds alternating which goes first; the server stopped however it ends."""
    servers = base.Servers(root)
    tmp = Path(args.tmp) / "grpc"
    tmp.mkdir(parents=True, exist_ok=True)
    wrk = base.Wrk(tmp, args.max_seconds)
    sentence = texts[SENTENCE_INDEX]
    h2 = GrpcLoad(tmp, grpc_body(sentence))
    options = {"max_batch": 8, "max_delay_ms": 5.0, "replicas": 1, "threads": base.THREADS}
    options["grpc_port"] = 0
    out = {"options": options, "sentence": sentence, "requests": args.requests, "rows": []}
    per_round = math.ceil(args.requests / args.rounds)
    path = f"/v2/models/{MODEL}/infer"
    bodies = [base.text_body(sentence)]
    try:
        base.log(f"gRPC vs REST: one server for both ({ref}, {options})")
        handle = servers.start(ref, "bench-grpc", **options)
        if not handle.grpc:
            raise RuntimeError("the server shows no gRPC address (handle.grpc is empty)")
        out["check"] = compare_answers(handle, sentence)
        base.log(f"  one answer: tritonclient.grpc vs REST, max |diff| {out['check']}")
        pids = servers.pids(handle)
        base.log(f"  warm-up: {args.warmup} requests each")
        if wrk.run(handle.url, path, bodies, base.CLIENTS, args.warmup)["ok"] == 0:
            raise RuntimeError("no successful REST answer in the warm-up")
        h2.run(handle.grpc, base.CLIENTS, args.warmup, args.max_seconds + 30)
        rest_chunks, grpc_chunks = [], []
        for rnd in range(args.rounds):
            order = (REST, GRPC) if rnd % 2 == 0 else (GRPC, REST)
            for label in order:
                stats0, fail0 = settled(handle.url)
                cpu0, busy0 = base.pid_cpu(pids), base.busy_cpu()
                if label == REST:
                    r = wrk.run(handle.url, path, bodies, base.CLIENTS, per_round, sketch=True)
                    r["client_cpu_s"] = r["wrk_all_cpu_s"]
                else:
                    r = h2.run(handle.grpc, base.CLIENTS, per_round, args.max_seconds + 30)
                stats1, fail1 = settled(handle.url)  # the CPU of the requests left in flight too
                cpu1, busy = base.pid_cpu(pids), base.busy_cpu() - busy0
                r["server_cpu_s"] = sum(cpu1[p] - cpu0.get(p, 0.0) for p in cpu1)
                r["machine_cpu_s"] = busy
                r["other_cpu_s"] = max(0.0, busy - r["server_cpu_s"] - r["client_cpu_s"])
                r["server"] = base.stats_delta(stats0, stats1)
                r["server_fail"] = None if fail0 is None or fail1 is None else fail1 - fail0
                r["round"] = rnd
                (rest_chunks if label == REST else grpc_chunks).append(r)
                p50, p99 = chunk_percentiles(r)
                base.log(
                    f"    round {rnd + 1} {label}: {r['rps']:.1f} req/s, p50 {p50:.1f} ms, p99 "
                    f"{p99:.1f} ms, server counted {r['server'].get('success')} successes, "
                    f"{r['server_fail']} failures"
                )
        out["rows"] = [merge(REST, rest_chunks), merge(GRPC, grpc_chunks)]
    except Exception as exc:
        base.log(f"  gRPC vs REST FAILED: {base.one_line(exc)[:400]}")
        out["error"] = base.one_line(exc)[:800]
    finally:
        servers.stop_all()
    return out


def chunk_percentiles(r: dict) -> tuple[float, float]:
    if "latency_ms" in r:
        return tuple(float(np.percentile(r["latency_ms"], p)) for p in (50, 99))
    return r["p50_ms"], r["p99_ms"]


def merge(label: str, chunks: list[dict]) -> dict:
    """A row over its rounds: successes / seconds, percentiles of all answers, CPU sums, and
    whether the server's own counters confirm every answer counted as a success."""
    keys = ("ok", "seconds", "server_cpu_s", "client_cpu_s", "machine_cpu_s", "wall_s")
    row = {k: sum(c[k] for c in chunks) for k in keys}
    row |= {"label": label, "rounds": len(chunks), "status": "ok"}
    row["answered"] = sum(c.get("answered", c.get("done", 0)) for c in chunks)
    # REST: wrk's non-2xx and socket errors; gRPC: the clients' failed calls and the calls
    # the server counted as failed (their HTTP status is 200, the gRPC status in trailers)
    row["errors"] = sum(
        c["errors"] if "errors" in c else c["http_failed"] + (c["server_fail"] or 0) for c in chunks
    )
    row["other_cpu_s"] = sum(c["other_cpu_s"] for c in chunks)
    row["rps"] = row["ok"] / row["seconds"] if row["seconds"] else 0.0
    row["rps_by_round"] = [c["rps"] for c in chunks]
    if label == GRPC:
        lat = [x for c in chunks for x in c["latency_ms"]]
        row["p50_ms"], row["p99_ms"] = (float(np.percentile(lat, p)) for p in (50, 99))
    else:
        runs = [(c["answered"], c["sketch_ms"]) for c in chunks]
        row["p50_ms"] = base.merged_percentile(runs, 50)
        row["p99_ms"] = base.merged_percentile(runs, 99)
    row["p99_by_round"] = [chunk_percentiles(c)[1] for c in chunks]
    success = sum(c["server"].get("success", 0) for c in chunks)
    fails = [c["server_fail"] for c in chunks]
    row["server_success"] = success
    row["server_fail"] = None if None in fails else sum(fails)
    # wrk may leave a few answers uncounted when a thread stops: at least as many successes
    row["confirmed"] = success >= row["answered"] > 0 and row["server_fail"] == 0
    srv: dict[str, int] = {}
    for c in chunks:
        for k, x in c["server"].items():
            srv[k] = srv.get(k, 0) + x
    row["server"] = base.server_figures(srv)
    return row


# ---------------------------------------------------------------------- report


def render(g: dict) -> str:
    if not g.get("rows"):
        return f"gRPC vs REST: FAILED: {g.get('error')}"
    rest = next(x for x in g["rows"] if x["label"] == REST)
    header = [
        "gRPC vs REST (same server)",
        "req/s",
        "p50 ms",
        "p99 ms",
        "requests",
        "errors",
        "vs REST",
        "mean batch",
        "server CPU ms/req",
        "client CPU ms/req",
        "others busy",
        "server counted",
    ]
    out = []
    for row in g["rows"]:
        n = max(row["answered"], 1)
        others = others_busy(row)
        out.append(
            [
                row["label"],
                base.fmt(row["rps"]),
                base.fmt(row["p50_ms"]),
                base.fmt(row["p99_ms"]),
                f"{row['answered']:,}",
                str(row["errors"]),
                base.ratio(row["rps"], rest["rps"]),
                base.fmt((row.get("server") or {}).get("mean_batch"), 2),
                base.fmt(cpu_per_request(row), 2),
                base.fmt(1e3 * row["client_cpu_s"] / n, 2),
                f"{others:.0%}",
                f"{row['server_success']:,} ok, {row['server_fail']} failed",
            ]
        )
    return base.table(header, out, 1)


def targets(g: dict) -> list[str]:
    if not g.get("rows"):
        return [f"- UNKNOWN: gRPC at least as fast as REST (the run failed: {g.get('error')})."]
    rows = {x["label"]: x for x in g["rows"]}
    rest, grpc = rows[REST], rows[GRPC]
    checks = [
        ("req/s", grpc["rps"] >= rest["rps"], f"{grpc['rps']:.1f} vs {rest['rps']:.1f}/s"),
        (
            "p99",
            grpc["p99_ms"] <= rest["p99_ms"],
            f"{grpc['p99_ms']:.1f} vs {rest['p99_ms']:.1f} ms",
        ),
        (
            "every answer a success by the server's counters",
            grpc["confirmed"] and rest["confirmed"],
            f"gRPC {grpc['server_success']:,} of {grpc['answered']:,}, REST "
            f"{rest['server_success']:,} of {rest['answered']:,}",
        ),
        (
            "same embedding as REST",
            g["check"]["max_abs_diff"] <= 1e-5,
            f"max |diff| {g['check']['max_abs_diff']:.2g}",
        ),
    ]
    met = all(c for _, c, _ in checks)
    busy = {x["label"]: others_busy(x) for x in (rest, grpc)}
    noise = ""
    if abs(busy[REST] - busy[GRPC]) > 0.15:
        noise = (
            f" Not comparable: the rest of the machine kept {busy[GRPC]:.0%} of the CPUs busy "
            f"during the gRPC runs, {busy[REST]:.0%} during REST's."
        )
    return [
        f"- {'MET' if met else 'NOT MET'}: gRPC at least as fast as REST ({base.CLIENTS} "
        "clients, the same requests): "
        + "; ".join(f"{t}: {'yes' if c else 'NO'} ({d})" for t, c, d in checks)
        + f"; server CPU a request {cpu_per_request(grpc):.2f} vs {cpu_per_request(rest):.2f} "
        "ms (informational)." + noise
    ]


def others_busy(row: dict) -> float:
    return row["other_cpu_s"] / max(row["wall_s"] * (os.cpu_count() or 1), 1e-9)


def cpu_per_request(row: dict) -> float:
    return 1e3 * row["server_cpu_s"] / max(row["server_success"], 1)


def notes(g: dict) -> list[str]:
    if not g.get("rows"):
        return []
    by_round = "; ".join(
        f"{x['label']} by round req/s {', '.join(f'{v:.0f}' for v in x['rps_by_round'])}, p99 "
        f"ms {', '.join(f'{v:.0f}' for v in x['p99_by_round'])}"
        for x in g["rows"]
    )
    return [
        f"gRPC vs REST: one server (api.serve {g['options']}) answering both; "
        f"{g['requests']} requests a row in {g['rows'][0]['rounds']} round(s), the order "
        f"alternating; both send the same sentence ({g['sentence']!r}). REST: wrk, "
        f"{base.WRK_THREADS} threads, {base.CLIENTS} keep-alive connections; gRPC: grpcio "
        f"clients in one process of their own, {base.CLIENTS} connections, one call at a "
        "time each, the ModelInfer message with raw_input_contents. p50/p99: gRPC exact over "
        "every call timed, REST from wrk's histograms merged. server counted: the "
        "server's own statistics over the runs (successes, failures), read once they stop "
        "growing (wrk leaves up to one request a connection in flight when it stops, answered "
        "but not counted by wrk); server CPU ms/req: CPU of the server's processes until then, "
        "per success the server counted; client CPU ms/req: wrk's or the gRPC clients', per "
        "answer "
        f"counted. {by_round}."
    ]


if __name__ == "__main__":  # the gRPC client process of GrpcLoad
    import sys

    if sys.argv[1:2] == ["--load"]:
        address, connections, requests, message, out = sys.argv[2:7]
        sys.exit(_load(address, int(connections), int(requests), message, out))
