"""The README's notebook examples work when pasted into IPython, in order."""

import re
import time
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parent.parent / "README.md"


@pytest.mark.slow
def test_readme_notebook_blocks_run(maas_shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 9
    for block in blocks:
        result = maas_shell.run_cell(block)
        assert result.success, f"README block failed:\n{block}\n{result.error_in_exec!r}"
    assert maas_shell.user_ns["emb"].shape == (2, 384)
    assert float(maas_shell.user_ns["emb"][0] @ maas_shell.user_ns["emb"][1]) > 0.5
    assert type(maas_shell.user_ns["model"]).__name__ == "Sequential"
    rows = {r["name"]: r for r in maas_shell.run_line_magic("maas", "list")}
    assert (rows["minilm"]["versions"], rows["digits-mlp"]["versions"]) == (3, 2)
    int8 = maas_shell.user_ns["int8"]
    assert int8["ref"] == "minilm@3" and int8["after"]["cosine_mean"] > 0.98
    assert int8["after"]["size_bytes"] < 0.35 * int8["before"]["size_bytes"]
    pruned = maas_shell.run_line_magic("maas", "show digits-mlp@2")
    assert (
        pruned["size_bytes"]
        < 0.35 * maas_shell.run_line_magic("maas", "show digits-mlp@1")["size_bytes"]
    )
    vecs = maas_shell.user_ns["vecs"]["sentence_embedding"]
    np.testing.assert_allclose(vecs, maas_shell.user_ns["emb"], atol=1e-4)  # served = loaded
    assert maas_shell.run_line_magic("maas", "show minilm@prod")["ref"] == "minilm@3"
    # export-repo: a text model becomes a Triton ensemble with its tokenizer step
    ensemble = (tmp_path / "triton-repo" / "minilm" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ensemble and "minilm_tokenizer" in ensemble
    assert (tmp_path / "triton-repo" / "minilm_onnx" / "3" / "model.onnx").is_file()
    manifest = (tmp_path / "kserve-minilm" / "inferenceservice.yaml").read_text()
    assert "serving.kserve.io/v1beta1" in manifest and "InferenceService" in manifest
    assert len(maas_shell.run_line_magic("maas", "status")) == 0  # stopped
    (job,) = maas_shell.run_line_magic("maas", "jobs").rows
    assert (job["status"], job["processes"], job["registered"]) == ("succeeded", 2, "digits-ddp@1")
    trained = maas_shell.run_line_magic("maas", "show digits-ddp@1")
    assert trained["metrics"]["accuracy"] > 0.9 and trained["parents"][0]["operation"] == "train"
    exported = maas_shell.run_line_magic("maas", "show minilm@2")
    assert exported["format"] == "onnx" and exported["metrics"]["parity_min_cosine"] > 0.9999
    tuned = maas_shell.run_line_magic("maas", "show digits-tuned@1")
    assert tuned["parents"][0]["operation"] == "tune"
    assert tuned["parents"][0]["params"]["study"] == "digits-tuned"
    trials = maas_shell.run_line_magic("maas", "study digits-tuned").data["trials"]
    assert [t["trial"] for t in trials] == list(range(8))
    assert tuned["metrics"]["accuracy"] == max(
        t["value"] for t in trials if t["state"] == "complete"
    )
    words = maas_shell.user_ns["words"]  # tokens that carry the meaning matter most
    assert {token for token, _ in words.ranked(0)[:2]} == {"eating", "food"}
    panel, models = maas_shell.user_ns["panel"], maas_shell.user_ns["models"]
    try:
        assert [n["ref"] for n in models.graph.nodes] == ["minilm@1", "minilm@2", "minilm@3"]
        assert [(e["parent"], e["child"]) for e in models.graph.edges] == [
            ("minilm@1", "minilm@2"),
            ("minilm@2", "minilm@3"),
        ]
        deadline = time.monotonic() + 10  # the search runs after a short debounce
        while time.monotonic() < deadline and models.table.order()[:1] != ["minilm@3"]:
            time.sleep(0.05)
        assert set(models.table.order()) == {"minilm@1", "minilm@2", "minilm@3"}
    finally:
        panel.close()


def _launch_lines() -> list[str]:
    """Every `maas launch` command the README shows, in prose or in a shell block, with the
    line breaks of the Markdown source undone."""
    text = README.read_text()
    inline = [" ".join(m.split()) for m in re.findall(r"`(%?maas launch [^`]*)`", text)]
    shell = re.findall(r"(?m)^(maas launch .*)$", text)
    return inline + shell


def test_readme_launch_lines_keep_every_option_for_the_launcher():
    """No README launch line may hand one of its options to the script (the script gets
    only what follows `--`)."""
    from maas_lab.cli import _launch_args

    lines = _launch_lines()
    assert "%maas launch train.py --processes 2" in lines and len(lines) >= 3
    for line in lines:
        words = line.split()[2:]
        own, options, target, script_args = _launch_args(words)
        assert target == "train.py" and script_args == [], line
        given = {w[2:].replace("-", "_") for w in words if w.startswith("--")}
        assert given == set(own) - {"detach"} | set(options), line


@pytest.mark.slow
def test_readme_launch_of_a_script_runs_two_processes(maas_shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(
        "from maas_lab import training\n"
        "accelerator = training.accelerator()\n"
        "training.report(1, total=1, loss=0.5, samples=4)\n"
    )
    line = next(x for x in _launch_lines() if x.startswith("%maas launch train.py"))
    report = maas_shell.run_line_magic("maas", line.removeprefix("%maas "))
    assert (report.data["status"], report.data["world_size"]) == ("succeeded", 2)


def test_readme_says_what_it_registers_and_what_has_landed():
    text = README.read_text()
    at = text.index('save_file(mlp(hidden=256).state_dict(), "w.safetensors")')
    assert "untrained" in text[at - 400 : at + 100]  # the digits example says so
    assert "next capability on the roadmap" not in text  # distributed training landed
    assert "### Distributed training" in text


@pytest.mark.slow
def test_readme_plugin_lines_write_install_list_and_test_a_plugin(tmp_path):
    """The Plugins section's three shell lines, run as written in a fresh folder, except that
    the package is pip-installed into a folder of its own instead of this environment (the
    one change, made to the exact line the README shows)."""
    import os
    import subprocess
    import sys

    (block,) = re.findall(r"^```\n(maas plugin new .*?)^```", README.read_text(), re.M | re.S)
    lines = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert lines[0] == "maas plugin new maas-fp16 --kind compressor"
    site = tmp_path / "site"
    editable = "pip install -e ./maas-fp16"
    assert lines[1].startswith(editable + " && ")
    lines[1] = lines[1].replace(
        editable,
        f"{sys.executable} -m pip install --quiet --no-deps --no-build-isolation "
        f"--disable-pip-version-check --target {site} ./maas-fp16",
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(site),
        "MAAS_LAB_HOME": str(tmp_path / "home"),
    }
    env.pop("MAAS_LAB_LOAD_PLUGINS", None)
    ran = subprocess.run(
        ["bash", "-e", "-c", "\n".join(lines)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert re.search(r"^fp16 +maas-fp16 +0\.1\.0 +1\.0 +compressor:fp16 +ok", ran.stdout, re.M)
    assert re.search(r"\d+ passed", ran.stdout) and "failed" not in ran.stdout
