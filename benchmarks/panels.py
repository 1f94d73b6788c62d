"""Benchmark the widget panels in a real browser: JupyterLab in Debian's headless Chromium.

Why: the panels promise to feel instant on a big registry and never to stall the kernel;
these numbers, measured in the page, back (or refute) that. Aims from the issue: first
paint < 300 ms, search < 100 ms, the kernel's event loop never blocked > 50 ms.

1. A registry of 1,000 models / 10,000 versions: one real torch MLP and its ONNX export
   (lineage @1 -> @2, served in step 5), the rest bulk-inserted as benchmarks/registry.py
   does (one shared safetensors blob, the registry's own search index statement).
2. First paint: from executing the ``%maas panel`` cell to the Models table's rows visible
   (the previous panel closed and its output cleared before each run).
3. Search round-trip: from the last keystroke of a model's number typed into the search
   box to the table showing exactly the rows ``api.versions(search=...)`` returns. The
   panel waits its ``debounce_s`` (ModelsPanel's default) after the last key by design; it
   is included.
4. Detail: from the click on a row to the lineage graph showing that version (a 1-node
   graph for a bulk version; 2 nodes and an edge for quokka-mlp@1/@2).
5. Event-loop lag: a task on the kernel's own asyncio loop measures the overshoot of
   ``await asyncio.sleep(0.01)`` for ``--lag-s`` seconds while the kernel is idle, first with
   no panel open (baseline), then with the Serve tab's chart live on a running server that
   gets a light stream of requests.

Run: ``python benchmarks/panels.py [--repeat 10] [--plot out.png] [--json out.json]``.
Needs Debian's chromium (``apt-get install chromium``) and the dev extras (playwright).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # registry.py's seeding, the harness

import lab_browser  # noqa: E402
from registry import bulk_fill, log, write_weights  # noqa: E402

from maas_lab import api  # noqa: E402
from maas_lab.registry import Registry  # noqa: E402

os.environ["MAAS_LAB_PROGRESS"] = "0"

INPUT = ".maas-panel .maas-search input"


def _debounce_ms() -> float:
    import inspect

    from maas_lab.widgets import ModelsPanel

    return 1000 * inspect.signature(ModelsPanel).parameters["debounce_s"].default


DEBOUNCE_MS = _debounce_ms()
ROWS = ".maas-panel .maas-models tr.maas-row"
NODES = ".maas-panel .maas-detail .maas-lineage svg g.maas-node"
CHART = ".maas-panel .maas-serve .maas-chart svg"
AIMS = {"first paint": 0.300, "search": 0.100, "loop lag (chart live)": 0.050}
TINY = {"in_features": 8, "hidden": 16, "out_features": 3}

# Kernel-side cells. CLOSE stops every panel shown before (their pollers) and forgets it.
CLOSE = """for _k, _o in list(Out.items()):
    if type(_o).__name__ == "Panel":
        _o.close()
        del Out[_k]
_ = None"""
LAG = """import asyncio, time
async def _maas_lag(seconds, step=0.01):
    over, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        await asyncio.sleep(step)
        over.append(time.perf_counter() - t - step)
    return over
_maas_lag_task = asyncio.get_running_loop().create_task(_maas_lag({seconds}))"""
LAG_RESULT = """import json
_panels = [o for o in Out.values() if type(o).__name__ == "Panel"]
_chart = _panels[-1].panels["serve"].chart.points("requests/s", "req/s") if _panels else []
print(json.dumps({"done": _maas_lag_task.done(), "over": _maas_lag_task.result()
                  if _maas_lag_task.done() else [], "chart_points": len(_chart)}))"""

# Page-side timings (performance.now() in ms); window.__maasWhen comes from the harness.
PAINT_JS = """
async ([index, rows]) => {
  const nb = window.__maasNb, app = window.jupyterapp;
  nb.content.widgets[index].model.outputs.clear();
  while (document.querySelector(rows)) await new Promise(r => setTimeout(r, 20));
  const when = window.__maasWhen(() => window.__maasVisible(document.querySelector(rows)));
  nb.content.activeCellIndex = index;
  const t0 = performance.now();
  app.commands.execute('notebook:run-cell');
  return (await when) - t0;
}
"""
LISTEN_JS = """
() => {
  document.addEventListener('input', () => { window.__maasLastInput = performance.now(); },
                            true);
  document.addEventListener('click', () => { window.__maasLastClick = performance.now(); },
                            true);
}
"""
ARM_ROWS_JS = """
([rows, want]) => {
  window.__maasHit = window.__maasWhen(() => {
    const got = [...document.querySelectorAll(rows)].map(r => r.dataset.key).sort();
    return JSON.stringify(got) === JSON.stringify(want);
  });
}
"""
ARM_NODE_JS = """
([nodes, key, count]) => {
  window.__maasHit = window.__maasWhen(() => {
    const all = [...document.querySelectorAll(nodes)];
    const node = all.find(n => n.dataset.ref === key);
    const current = all.some(n => n.dataset.ref === key && n.classList.contains('maas-current'));
    return node && window.__maasVisible(node) && all.length === count &&
           (count === 1 || current);
  });
}
"""
SAME_KEYS_JS = """([rows, want]) => JSON.stringify(
  [...document.querySelectorAll(rows)].map(r => r.dataset.key).sort()) === JSON.stringify(want)"""
HIT_SINCE_JS = "async (mark) => (await window.__maasHit) - window[mark]"


def build_registry(root: Path, models: int, versions: int, seed: int) -> dict:
    """The real model and its export first (oldest), then the bulk-inserted rest."""
    import torch
    from safetensors.torch import save_file

    from maas_lab.zoo import mlp

    t = time.perf_counter()
    work = root.parent / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    weights, card = work / "tiny.safetensors", work / "tiny.md"
    save_file(mlp(**TINY).state_dict(), str(weights))
    card.write_text("# Quokka MLP\n\nThe model this benchmark serves.\n")
    api.register(
        "quokka-mlp",
        from_torch="maas_lab.zoo:mlp",
        config=TINY,
        weights=weights,
        task="classification",
        card=card,
        root=root,
    )
    api.export("quokka-mlp@1", "onnx", input_shape="batch,8", root=root)
    real_s = time.perf_counter() - t
    reg = Registry(root)
    (path,) = write_weights(work / "bulk", range(7, 8))
    digest, size, _ = reg.store.put_file(path)
    reg.close()
    fill_s = bulk_fill(root, models - 1, versions - 2, (digest, size), random.Random(seed))
    counts = api.versions(limit=1, root=root).title
    return {"real_s": real_s, "fill_s": fill_s, "counts": counts}


def search_words(root: Path, n: int, seed: int) -> list[tuple[str, list[str]]]:
    """``n`` model numbers to type, each with the keys the panel must then show (what
    ``api.versions(search=word, limit=200)``, the panel's own call, returns)."""
    rng = random.Random(seed + 1)
    names = [r["name"] for r in api.list_models(root=root).rows if r["name"][-1].isdigit()]
    out = []
    for name in rng.sample(names, min(len(names), 4 * n)):
        word = name.rsplit("-", 1)[1]
        want = sorted(r["ref"] for r in api.versions(search=word, limit=200, root=root).rows)
        if want and all(k.startswith(name + "@") for k in want):
            out.append((word, want))
        if len(out) == n:
            break
    return out


def summarize(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0, "p50": math.nan, "p90": math.nan, "max": math.nan, "samples": []}
    ordered = sorted(ms)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {
        "n": len(ms),
        "p50": statistics.median(ms) / 1e3,
        "p90": p90 / 1e3,
        "max": ordered[-1] / 1e3,
        "samples": [x / 1e3 for x in ms],
    }


def first_paint(nb, repeat: int) -> dict:
    ms = []
    for i in range(repeat):
        nb.run_cell(2)  # close the panel shown before, stop its pollers
        ms.append(nb.js(PAINT_JS, [3, ROWS], timeout=120))
        nb.wait_until("() => window.__maasNb.sessionContext.session.kernel.status === 'idle'")
        log(f"  first paint {i + 1}/{repeat}: {ms[-1]:.0f} ms")
    return summarize(ms)


def search(nb, words: list[tuple[str, list[str]]]) -> dict:
    ms = []
    for word, want in words:
        nb.type(INPUT, "")
        nb.wait_until(f"() => document.querySelectorAll('{ROWS}').length > 50", timeout=30)
        nb.js(ARM_ROWS_JS, [ROWS, want])
        nb.type(INPUT, word, clear=False)
        ms.append(nb.js(HIT_SINCE_JS, "__maasLastInput", timeout=30))
        log(f"  search {word!r} ({len(want)} rows): {ms[-1]:.0f} ms")
    nb.type(INPUT, "")
    nb.wait_until(f"() => document.querySelectorAll('{ROWS}').length > 50", timeout=30)
    return summarize(ms)


def detail(nb, keys: list[str], count: int) -> dict:
    ms = []
    for key in keys:
        nb.js(ARM_NODE_JS, [NODES, key, count])
        nb.click(f'{ROWS}[data-key="{key}"]')
        ms.append(nb.js(HIT_SINCE_JS, "__maasLastClick", timeout=30))
        log(f"  detail {key}: {ms[-1]:.0f} ms")
    return summarize(ms)


def loop_lag(nb, seconds: float) -> dict:
    """Cell 4 starts the sampling task on the kernel's loop and returns at once (the kernel
    is then idle, serving comms); cell 5 reads it after ``seconds``."""
    nb.run_cell(4)
    time.sleep(seconds + 1.0)
    (out,) = [o for o in nb.run_cell(5) if o.get("output_type") == "stream"]
    got = json.loads(out["text"].strip().splitlines()[-1])
    over = [x * 1e3 for x in got["over"]]
    result = summarize(over) | {"sleeps": len(over), "chart_points": got["chart_points"]}
    result["p99"] = sorted(over)[max(0, math.ceil(0.99 * len(over)) - 1)] / 1e3 if over else 0
    log(f"  loop lag: max {result['max'] * 1e3:.1f} ms over {len(over)} sleeps")
    return result


def load(url: str, root: Path, stop: threading.Event, rate: float = 20.0) -> None:
    """A light, steady stream of requests so the chart has something to show."""
    import numpy as np

    x = np.zeros((1, TINY["in_features"]), dtype="float32")
    while not stop.is_set():
        try:
            api.predict("quokka-mlp@2", x, url=url, root=root)
        except Exception:
            pass
        stop.wait(1 / rate)


def fmt(seconds: float) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.0f} ms"


def table(r: dict) -> list[list[str]]:
    rows = []
    for label, key in [
        ("first paint (run cell -> rows visible)", "first paint"),
        (f"search (last key -> matching rows, incl. {DEBOUNCE_MS:.0f} ms debounce)", "search"),
        ("detail, bulk version (click -> graph)", "detail"),
        ("detail with lineage, quokka-mlp@1/@2 (click -> graph)", "detail lineage"),
        ("loop lag, no panel (baseline)", "loop lag (baseline)"),
        ("loop lag, Serve chart live", "loop lag (chart live)"),
    ]:
        s = r.get(key)
        if s is None:
            rows.append([label, "0", "not measured", "", "", "", ""])
            continue
        aim = AIMS.get(key)
        if key.startswith("loop"):
            met = None if aim is None else s["max"] <= aim
            cells = [str(s["sleeps"]), fmt(s["p50"]), fmt(s["p90"]), fmt(s["max"])]
        else:
            met = None if aim is None else s["p50"] <= aim
            cells = [str(s["n"]), fmt(s["p50"]), fmt(s["p90"]), fmt(s["max"])]
        goal = "" if aim is None else ("max" if key.startswith("loop") else "median") + " < "
        rows.append([label, *cells, goal + (fmt(aim) if aim else ""), "" if met is None else "yes"])
        if met is False:
            rows[-1][-1] = "NO"
    return rows


def render(rows: list[list[str]]) -> str:
    header = ["measurement", "n", "median", "p90", "max", "aim", "met?"]
    widths = [max(len(c[i]) for c in [header, *rows]) for i in range(len(header))]
    line = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), "-+-".join("-" * w for w in widths)]
    return "\n".join(out + [line.format(*c).rstrip() for c in rows])


def write_plot(path: str, r: dict) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot written"
    ui = [k for k in ("first paint", "search", "detail", "detail lineage") if r.get(k)]
    lag = [k for k in ("loop lag (baseline)", "loop lag (chart live)") if r.get(k)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8), width_ratios=[2, 1])
    for ax, keys, title in [(a, ui, "in the page (median, p90 bar)"), (b, lag, "kernel loop")]:
        if keys == lag:
            values = [[r[k]["p50"] * 1e3, r[k]["max"] * 1e3] for k in keys]
            labels = ["median", "max"]
        else:
            values = [[r[k]["p50"] * 1e3, r[k]["p90"] * 1e3] for k in keys]
            labels = ["median", "p90"]
        for j, label in enumerate(labels):
            xs = [i + (j - 0.5) * 0.38 for i in range(len(keys))]
            ys = [v[j] for v in values]
            ax.bar(xs, ys, 0.38, label=label)
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(f"{y:.0f}", (x, y), ha="center", va="bottom", fontsize=8)
        for i, k in enumerate(keys):
            if k in AIMS:
                ax.hlines(AIMS[k] * 1e3, i - 0.45, i + 0.45, colors="red", linestyles="--")
        ax.set_xticks(range(len(keys)), [k.replace(" (", "\n(") for k in keys], fontsize=8)
        ax.set(ylabel="ms", title=title)
        ax.legend(fontsize=8)
    fig.suptitle(f"maas_lab panels, {r['counts']} (red dashes: aims)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


def run(args, tmp: Path) -> dict:
    root = tmp / "registry"
    log(f"1/5 registry: {args.models:,} models, {args.versions:,} versions")
    r = {"machine": f"{os.cpu_count()} CPUs, {platform.platform()}"} | build_registry(
        root, args.models, args.versions, args.seed
    )
    log(f"  {r['counts']}: real models {r['real_s']:.1f} s, bulk fill {r['fill_s']:.1f} s")
    words = search_words(root, args.repeat, args.seed)
    lag = LAG.format(seconds=args.lag_s)
    cells = ["%load_ext maas_lab", "import maas_lab", CLOSE, "%maas panel", lag, LAG_RESULT]
    server, stop = None, threading.Event()
    with lab_browser.Lab(home=root) as lab:
        lab_browser.write_notebook(lab.root / "bench.ipynb", cells)
        nb = lab.open("bench.ipynb", timeout=180)
        nb.run_cell(0)
        nb.run_cell(1)
        nb.install_watch()
        nb.js(LISTEN_JS)
        log("2/5 baseline loop lag (no panel)")
        r["loop lag (baseline)"] = loop_lag(nb, args.lag_s)
        log(f"3/5 first paint x {args.repeat}")
        r["first paint"] = first_paint(nb, args.repeat)
        nb.screenshot("bench-models")
        log(f"4/5 search x {len(words)}, detail x {args.repeat}")
        r["search"] = search(nb, words)
        shown = [k for k in nb.attrs(ROWS, "data-key") if not k.startswith("quokka-mlp@")]
        step = max(1, len(shown) // args.repeat)
        r["detail"] = detail(nb, shown[::step][: args.repeat], 1)
        want = sorted(r["ref"] for r in api.versions(search="quokka", root=root).rows)
        assert want == ["quokka-mlp@1", "quokka-mlp@2"], want
        nb.type(INPUT, "quokka")
        nb.wait_until(SAME_KEYS_JS, [ROWS, want])
        pairs = ["quokka-mlp@2", "quokka-mlp@1"] * math.ceil(args.repeat / 2)
        r["detail lineage"] = detail(nb, pairs[: args.repeat], 2)
        nb.screenshot("bench-detail")
        log("5/5 loop lag with the Serve chart live on a running server")
        try:
            server = api.serve("quokka-mlp@2", port=0, root=root)
            threading.Thread(target=load, args=(server.url, root, stop), daemon=True).start()
            nb.run_cell(2)
            nb.run_cell(3)
            nb.wait(ROWS, timeout=60)
            nb.click_text("Serve", within=".maas-panel")
            nb.wait(CHART)
            time.sleep(2)  # the chart's first points
            r["loop lag (chart live)"] = loop_lag(nb, args.lag_s)
            nb.screenshot("bench-serve")
        finally:
            stop.set()
            if server is not None:
                api.stop(server.name, root=root)
        nb.run_cell(2)
    return r


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1_000)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10, help="runs of each UI timing")
    parser.add_argument("--lag-s", type=float, default=10.0, help="seconds of loop sampling")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = lab_browser.missing()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="maas-bench-panels-"))
    try:
        results = run(args, tmp)
    finally:
        api.close_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    print(render(table(results)))
    print(
        f"\n{results['counts']} ({results['machine']}); bulk fill {results['fill_s']:.1f} s. "
        "Times are performance.now() in the page: from the cell's execution (first paint), "
        f"the last keystroke's input event (search: includes the panel's {DEBOUNCE_MS:.0f} ms "
        "debounce) or "
        "the click event (detail) to the first animation frame after the DOM shows the "
        "result. Loop lag: overshoot of asyncio.sleep(0.01) on the kernel's loop while idle; "
        f"the live chart had {results['loop lag (chart live)']['chart_points']} points."
    )
    print(f"Benchmark took {results['elapsed_s']:.0f} s.")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"raw numbers written to {args.json}")
    if args.plot:
        print(write_plot(args.plot, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
