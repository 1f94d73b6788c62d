"""The README's notebook examples work when pasted into IPython, in order."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).parent.parent / "README.md"


@pytest.mark.slow
def test_readme_notebook_blocks_run(maas_shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 5
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
    assert len(maas_shell.run_line_magic("maas", "status")) == 0  # stopped
    (job,) = maas_shell.run_line_magic("maas", "jobs").rows
    assert (job["status"], job["processes"], job["registered"]) == ("succeeded", 2, "digits-ddp@1")
    trained = maas_shell.run_line_magic("maas", "show digits-ddp@1")
    assert trained["metrics"]["accuracy"] > 0.9 and trained["parents"][0]["operation"] == "train"
    exported = maas_shell.run_line_magic("maas", "show minilm@2")
    assert exported["format"] == "onnx" and exported["metrics"]["parity_min_cosine"] > 0.9999
