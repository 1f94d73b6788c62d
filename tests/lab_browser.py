"""Drive a real JupyterLab in Debian's headless Chromium (Python Playwright), for the browser
tests of the panels and for ``benchmarks/panels.py``.

``Lab`` starts ``jupyter lab`` in a subprocess of its own (own process group, free port on
127.0.0.1, no token, temporary config/data/runtime/IPython folders and notebook root, a
temporary ``MAAS_LAB_HOME`` unless one is given); the venv's ``share/jupyter/labextensions``
(ipywidgets, anywidget) is still found since it sits on Jupyter's system path, not the user's
data dir. ``lab.open(notebook)`` loads the page, opens the notebook through the exposed app
(``window.jupyterapp``), waits for the kernel itself to answer and gives a ``Notebook`` to run
cells, type, click, query and take screenshots. Every UI step is bounded by a timeout, and a
watchdog kills the browser if one blocks anyway; ``close()`` stops the lab server, its
kernels and the browser, even after a failure.

Chromium comes from ``apt-get install chromium`` (never ``playwright install``); without it
``require_browser()`` skips, or fails when ``$CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent
SCREENSHOTS = HERE / "screenshots"  # git-ignored
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
INSTALL_HINT = "Chromium not found: apt-get install chromium (Debian's; never `playwright install`)"
STEP_S = 30.0  # default limit for one UI step
WATCHDOG_S = 600.0  # no single Playwright call may block longer than this

# Lab settings written into the temporary config dir: no news or update checks (no network),
# and ipywidgets saves the widget state with the notebook (reopened outputs can render).
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
}


def chromium_path() -> str | None:
    """The Chromium to drive: ``$MAAS_CHROMIUM``, else Debian's, else whatever is on PATH."""
    for candidate in (os.environ.get("MAAS_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return INSTALL_HINT
    return None


def require_browser() -> None:
    """Skip the calling test when Chromium or Playwright is missing; fail instead under CI."""
    import pytest

    reason = missing()
    if reason and os.environ.get("CI"):
        pytest.fail(f"{reason} ($CI is set, so this is a failure, not a skip)", pytrace=False)
    if reason:
        pytest.skip(reason)


def running(home):
    """A started ``Lab`` on registry ``home`` for a module's fixture (``yield from``); skips,
    or fails under $CI, without a browser."""
    require_browser()
    with Lab(home=home, env={"MAAS_LAB_PROGRESS": "0"}) as lab:
        yield lab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: str | os.PathLike, cells: list[str]) -> Path:
    """A notebook of code cells (each a source string) for the venv's python3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path = Path(path)
    nbformat.write(nb, path)
    return path


def _tree(pid: int) -> list:
    """The process and all its descendants (psutil objects), or [] when it is gone."""
    try:
        import psutil

        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except Exception:
        return []


def _kill_all(procs: list, sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except Exception:
            pass


class UIError(AssertionError):
    """A UI step that failed or ran out of time; carries what the page showed."""


class Lab:
    """A JupyterLab server and a headless browser, both stopped by ``close()``.

    ``home``: the registry (``MAAS_LAB_HOME``) the kernels see (a temporary one if None);
    ``env``: more environment for the server and its kernels; ``settings``: more lab settings
    (file name under ``lab/user-settings`` -> JSON). Use as a context manager.
    """

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        env: dict | None = None,
        settings: dict | None = None,
        start_timeout: float = 90.0,
        screenshots: str | os.PathLike = SCREENSHOTS,
    ):
        self.tmp = Path(tempfile.mkdtemp(prefix="maas-lab-browser-"))
        self.root = self.tmp / "notebooks"
        self.home = Path(home) if home else self.tmp / "registry"
        self.screenshots = Path(screenshots)
        self.extra_env, self.start_timeout = env or {}, start_timeout
        self.settings = SETTINGS | (settings or {})
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._pw = self.browser = None
        self._log = None
        self._watch: threading.Timer | None = None
        self._pw_pids: list[int] = []
        self._depth = 0

    # ------------------------------------------------------------------ server

    def env(self) -> dict:
        env = dict(os.environ)
        for key in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH"):
            env.pop(key, None)  # only the venv's share/jupyter and our temp folders
        env.update(
            JUPYTER_CONFIG_DIR=str(self.tmp / "config"),
            JUPYTER_DATA_DIR=str(self.tmp / "data"),
            JUPYTER_RUNTIME_DIR=str(self.tmp / "runtime"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.tmp / "workspaces"),
            IPYTHONDIR=str(self.tmp / "ipython"),
            MAAS_LAB_HOME=str(self.home),
            MAAS_LAB_PROGRESS="0",
            PYTHONUNBUFFERED="1",
        )
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        return env | {k: str(v) for k, v in self.extra_env.items()}

    def start(self) -> Lab:
        self.root.mkdir(parents=True, exist_ok=True)
        for name, value in self.settings.items():
            path = self.tmp / "config" / "lab" / "user-settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabServerApp.announcements_url=",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.tmp / "lab.log", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            cmd,
            env=self.env(),
            cwd=self.root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer in {self.start_timeout:.0f} s")
            time.sleep(0.2)
        return self

    def log(self, chars: int = 4000) -> str:
        try:
            return (self.tmp / "lab.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ browser

    def launch_browser(self):
        if self.browser is None:
            reason = missing()
            if reason:
                raise RuntimeError(reason)
            from playwright.sync_api import sync_playwright

            before = {p.pid for p in _tree(os.getpid())}
            self._pw = sync_playwright().start()
            self._pw_pids = [p.pid for p in _tree(os.getpid()) if p.pid not in before]
            self.browser = self._pw.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
            )
        return self.browser

    def _arm(self, seconds: float) -> None:
        """Kill Playwright's driver (and so the browser) if a call blocks past ``seconds``:
        the blocked call then raises instead of hanging the test run. Nested steps keep the
        outermost limit."""
        self._depth += 1
        if self._depth > 1:
            return

        def fire():
            for pid in self._pw_pids:
                _kill_all(_tree(pid), signal.SIGKILL)

        self._watch = threading.Timer(seconds, fire)
        self._watch.daemon = True
        self._watch.start()

    def _disarm(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self._watch:
            self._watch.cancel()
            self._watch = None

    def open(self, notebook: str, timeout: float = 120.0, reset: bool = True) -> Notebook:
        """A new page with ``notebook`` (a path under ``self.root``) open and its kernel
        answering: the page, the app restored, the document opened, the kernel's
        ``kernel_info`` reply received."""
        browser = self.launch_browser()
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(STEP_S * 1000)
        nb = Notebook(self, page, notebook)
        page.on("console", lambda msg: nb.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: nb.console.append(f"pageerror: {err}"))
        with nb.step(f"open {notebook}", timeout):
            page.goto(f"{self.url}/lab" + ("?reset" if reset else ""), timeout=timeout * 1000)
            page.wait_for_function(
                "window.jupyterapp && window.jupyterapp.shell", timeout=timeout * 1000
            )
            nb.js(OPEN_JS, notebook, timeout=timeout)
        return nb

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        self._depth = 1
        self._disarm()
        if self.browser is not None:
            self._arm(30)  # closing must not hang either
            try:
                self.browser.close()
            except Exception:
                pass
            try:
                self._pw.stop()
            except Exception:
                pass
            self._disarm()
            self.browser = self._pw = None
        if self.proc is not None:
            # Kernels run in sessions of their own: find the whole tree before signalling.
            procs = _tree(self.proc.pid)
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # lab shuts its kernels down
            except ProcessLookupError:
                pass
            _kill_all(procs[1:], signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _kill_all(procs, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Lab:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


# Opens the notebook through the document manager, keeps the widget on window.__maasNb, and
# waits until the kernel has answered kernel_info (not merely until a label says "idle").
OPEN_JS = """
async (path) => {
  const app = window.jupyterapp;
  await app.started; await app.restored;
  const nb = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  window.__maasNb = nb;
  await nb.context.ready;
  await nb.sessionContext.ready;
  app.shell.activateById(nb.id);
  for (;;) {
    const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
    if (kernel && kernel.connectionStatus === 'connected') { await kernel.info; break; }
    await new Promise(r => setTimeout(r, 50));
  }
  return nb.sessionContext.session.kernel.id;
}
"""

RUN_JS = """
async (index) => {
  const app = window.jupyterapp, nb = window.__maasNb;
  app.shell.activateById(nb.id);
  const cells = nb.content.widgets;
  if (index === null) {
    await app.commands.execute('notebook:run-all-cells');
  } else {
    nb.content.activeCellIndex = index;
    await app.commands.execute('notebook:run-cell');
  }
  const wanted = index === null ? cells : [cells[index]];
  for (;;) {
    const kernel = nb.sessionContext.session.kernel;
    const done = wanted.every(c => c.model.type !== 'code' || c.model.executionCount !== null);
    if (done && kernel.status === 'idle') break;
    await new Promise(r => setTimeout(r, 50));
  }
  return wanted.map(c => c.model.type === 'code' ? c.model.outputs.toJSON() : []);
}
"""

# window.__maasWhen(cond): a promise of performance.now() at the first DOM change (or frame)
# where cond() is true, checked after the next animation frame so the time is a painted one.
WATCH_JS = """
() => {
  window.__maasWhen = (cond) => new Promise((resolve) => {
    let done = false;
    const check = () => {
      if (done) return;
      let ok = false;
      try { ok = cond(); } catch (e) { ok = false; }
      if (ok) {
        done = true; observer.disconnect();
        requestAnimationFrame(() => resolve(performance.now()));
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(document.body, {childList: true, subtree: true, attributes: true,
                                     characterData: true});
    const tick = () => { check(); if (!done) requestAnimationFrame(tick); };
    tick();
  });
  window.__maasVisible = (el) => !!el && el.getClientRects().length > 0 &&
    getComputedStyle(el).visibility !== 'hidden';
}
"""


class Notebook:
    """One page with one notebook open: cells, DOM queries and input, each step bounded."""

    def __init__(self, lab: Lab, page, path: str):
        self.lab, self.page, self.path = lab, page, path
        self.console: list[str] = []

    # ------------------------------------------------------------------ steps

    class _Step:
        def __init__(self, nb: Notebook, what: str, timeout: float):
            self.nb, self.what, self.timeout = nb, what, timeout

        def __enter__(self):
            self.nb.lab._arm(min(WATCHDOG_S, self.timeout + 30))

        def __exit__(self, kind, exc, tb):
            self.nb.lab._disarm()
            if exc is None or isinstance(exc, UIError):
                return False
            slug = re.sub(r"[^a-z0-9]+", "-", self.what.lower()).strip("-")[:40]
            shot = self.nb.screenshot(f"failed-{slug}")
            tail = "\n".join(self.nb.console[-15:])
            raise UIError(
                f"UI step '{self.what}' failed: {type(exc).__name__}: {exc}\n"
                f"screenshot: {shot}\nbrowser console (last lines):\n{tail}\n"
                f"lab log (tail):\n{self.nb.lab.log(1500)}"
            ) from exc

    def step(self, what: str, timeout: float = STEP_S) -> Notebook._Step:
        return Notebook._Step(self, what, timeout)

    def js(self, function: str, arg=None, timeout: float = STEP_S):
        """Evaluate an (async) arrow function in the page with ``arg``; it is raced against a
        timer in the page, so a promise that never settles raises instead of hanging."""
        wrapped = (
            "async ([arg, ms]) => { let timer; const fn = (" + function + ");"
            " const limit = new Promise((_, no) => { timer = setTimeout("
            " () => no(new Error('no answer in ' + ms + ' ms')), ms); });"
            " try { return await Promise.race([fn(arg), limit]); }"
            " finally { clearTimeout(timer); } }"
        )
        with self.step(function.strip().splitlines()[0][:60], timeout):
            return self.page.evaluate(wrapped, [arg, int(timeout * 1000)])

    # ------------------------------------------------------------------ cells

    def run_all(self, timeout: float = 120.0, allow_errors: bool = False) -> list[list[dict]]:
        """Run every cell and wait until each has an execution count and the kernel is idle;
        the cells' outputs (nbformat JSON). An error output raises unless ``allow_errors``."""
        return self._run(None, timeout, allow_errors)

    def run_cell(self, index: int, timeout: float = 60.0, allow_errors: bool = False):
        return self._run(index, timeout, allow_errors)[0]

    def _run(self, index, timeout, allow_errors):
        outputs = self.js(RUN_JS, index, timeout=timeout)
        errors = [o for cell in outputs for o in cell if o.get("output_type") == "error"]
        if errors and not allow_errors:
            self.screenshot("failed-cell")
            shown = "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)
            raise UIError(f"a cell raised:\n{shown}")
        return outputs

    def save(self, timeout: float = 30.0) -> None:
        """Save the notebook as Lab's Save does (with widget state when that setting is on)."""
        self.js(
            "async () => { window.jupyterapp.shell.activateById(window.__maasNb.id);"
            " await window.jupyterapp.commands.execute('docmanager:save'); }",
            timeout=timeout,
        )

    def shutdown_kernel(self, timeout: float = 30.0) -> None:
        """Shut the notebook's kernel down, as Kernel > Shut Down Kernel does."""
        self.js("async () => { await window.__maasNb.sessionContext.shutdown(); }", timeout=timeout)

    def close(self) -> None:
        with self.step("close page"):
            self.page.close()

    # ------------------------------------------------------------------ DOM

    def wait(self, selector: str, timeout: float = STEP_S, state: str = "visible"):
        """The first element matching ``selector`` once it is in ``state``."""
        with self.step(f"wait for {selector}", timeout):
            locator = self.page.locator(selector).first
            locator.wait_for(state=state, timeout=timeout * 1000)
            return locator

    def wait_until(self, function: str, arg=None, timeout: float = STEP_S):
        """Poll a JS predicate ``(arg) => bool`` until true; its value."""
        with self.step(f"wait until {function[:50]}", timeout):
            handle = self.page.wait_for_function(function, arg=arg, timeout=timeout * 1000)
            return handle.json_value()

    def attrs(self, selector: str, name: str) -> list[str]:
        """``name`` attribute of every element matching ``selector``, in document order."""
        with self.step(f"read {selector}[{name}]"):
            return self.page.locator(selector).evaluate_all(
                "(els, name) => els.map(e => e.getAttribute(name))", name
            )

    def texts(self, selector: str) -> list[str]:
        with self.step(f"read text of {selector}"):
            return self.page.locator(selector).all_inner_texts()

    def count(self, selector: str) -> int:
        with self.step(f"count {selector}"):
            return self.page.locator(selector).count()

    def click(self, selector: str, timeout: float = STEP_S) -> None:
        with self.step(f"click {selector}", timeout):
            self.page.locator(selector).first.click(timeout=timeout * 1000)

    def click_text(self, text: str, within: str = "body", timeout: float = STEP_S) -> None:
        """Click the element whose text is exactly ``text`` (a tab title, a button)."""
        with self.step(f"click text {text!r}", timeout):
            locator = self.page.locator(within).get_by_text(text, exact=True).first
            locator.click(timeout=timeout * 1000)

    def type(self, selector: str, text: str, clear: bool = True, delay_ms: float = 30) -> None:
        """Type into an input as a person does, key by key (``clear`` empties it first)."""
        with self.step(f"type {text!r} into {selector}"):
            box = self.page.locator(selector).first
            if clear:
                box.fill("")
            box.press_sequentially(text, delay=delay_ms)

    def screenshot(self, name: str) -> Path | None:
        """A PNG of the page under the screenshots folder (git-ignored); None if it failed."""
        self.lab.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.lab.screenshots / f"{name}.png"
        self.lab._arm(60)
        try:
            self.page.screenshot(path=str(path), full_page=True, timeout=30_000)
            return path
        except Exception:
            return None
        finally:
            self.lab._disarm()

    def install_watch(self) -> None:
        """Define ``window.__maasWhen`` and ``window.__maasVisible`` (for timings)."""
        self.js(WATCH_JS)

    def output_texts(self) -> list[str]:
        """The visible text of every output area of the notebook."""
        return self.texts(".jp-OutputArea-output")
