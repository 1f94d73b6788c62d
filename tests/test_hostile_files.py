"""Hostile files offered for registration: links out of a model folder, special files,
pickles behind an innocent or upper-case suffix, binary or huge model cards, names a
terminal would misread, and concurrent checkouts of one fresh version.

Each refusal names the file the user gave and leaves the registry exactly as it was.
"""

import hashlib
import multiprocessing
import os
import pickle
import re
import stat
import zipfile
from pathlib import Path

import pytest
from safetensors.numpy import save_file

from maas_lab import api
from maas_lab.cli import run
from maas_lab.errors import UsageError
from maas_lab.registry.registry import FileSpec, Registry
from maas_lab.testing import registry_snapshot

np = pytest.importorskip("numpy")


def hf_folder(path: Path) -> Path:
    """A small Hugging Face style folder: config, safetensors weights, a tokenizer."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "bert"}')
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(path / "model.safetensors"))
    (path / "vocab.txt").write_text("[PAD]\nhello\n")
    return path


@pytest.fixture
def home(maas_home, tmp_path):
    """A registry holding one HF version, and a snapshot to compare refused calls with."""
    api.register("base", from_hf=hf_folder(tmp_path / "base"))
    return {"root": maas_home, "before": registry_snapshot(maas_home)}


def refused(home, match, **kwargs):
    with pytest.raises(UsageError, match=match) as info:
        api.register("victim", **kwargs)
    assert registry_snapshot(home["root"]) == home["before"]
    return str(info.value)


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("TOKEN=hunter2\n")
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------- links and special files


def test_links_out_of_a_hf_folder_are_refused(home, tmp_path, secret):
    for name, target in (
        ("tokenizer.json", secret),
        ("README.md", secret),
        ("tokenizer_config.json", Path("/proc/self/environ")),
    ):
        hf = hf_folder(tmp_path / f"hf-{name}")
        (hf / name).symlink_to(target)
        message = refused(home, rf"{name}.* outside", from_hf=hf)
        assert "hunter2" not in message
    hf = hf_folder(tmp_path / "hf-dir")
    (hf / "extra").symlink_to(tmp_path / "base")  # a folder link out of the model
    refused(home, r"extra.* outside", from_hf=hf)


def test_links_inside_a_hf_folder_are_kept(maas_home, tmp_path):
    hf = hf_folder(tmp_path / "hf")
    (hf / "real-tokenizer.json").write_text("{}")
    (hf / "tokenizer.json").symlink_to("real-tokenizer.json")
    report = api.register("linked", from_hf=hf)
    assert "tokenizer.json" in {f["name"] for f in report["files"]}


def test_special_files_are_refused_for_every_source(home, tmp_path):
    hf = hf_folder(tmp_path / "hf-fifo")
    os.mkfifo(hf / "tokenizer.json")
    refused(home, r"tokenizer.json.* not a regular file", from_hf=hf)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    for special in (Path("/proc/self/environ"), Path("/dev/null")):
        refused(home, "not a regular file", from_hf=tmp_path / "base", card=special)
        refused(home, "not a regular file", from_torch="maas_lab.zoo:mlp", weights=special)
        refused(home, "not a regular file", from_file=[onnx_file, special])


def test_single_file_links_out_of_their_folder_are_refused(home, tmp_path, secret):
    offered = tmp_path / "offered"
    offered.mkdir()
    (offered / "card.md").symlink_to(secret)
    (offered / "model.safetensors").symlink_to(tmp_path / "base" / "model.safetensors")
    message = refused(
        home, r"card.md.* outside", from_hf=tmp_path / "base", card=offered / "card.md"
    )
    assert "hunter2" not in message
    refused(
        home,
        r"model.safetensors.* outside",
        from_torch="maas_lab.zoo:mlp",
        weights=offered / "model.safetensors",
    )


# ---------------------------------------------------------------------- pickles by content


class Canary:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_pickles_are_refused_whatever_their_suffix(home, tmp_path):
    payload = pickle.dumps(Canary(tmp_path / "canary"))
    for i, (name, data) in enumerate(
        [("evil.PT", payload), ("pytorch_model.BIN", payload), ("notes.txt", payload)]
    ):
        hf = hf_folder(tmp_path / f"hf-{i}")
        (hf / name).write_bytes(data)
        refused(home, rf"{name}.*pickle", from_hf=hf)
    archive = tmp_path / "hf-zip"
    hf_folder(archive)
    with zipfile.ZipFile(archive / "extra.zip", "w") as z:
        z.writestr("archive/data.pkl", payload)
    refused(home, r"extra.zip.*pickle", from_hf=archive)
    (tmp_path / "evil.onnx").write_bytes(payload)
    refused(home, r"evil.onnx.*pickle", from_file=tmp_path / "evil.onnx")
    assert not (tmp_path / "canary").exists()


# ---------------------------------------------------------------------- model cards


def test_binary_and_huge_cards_are_refused(home, tmp_path):
    binary = tmp_path / "card.bin.md"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    refused(home, r"card.bin.md is not UTF-8 text", from_hf=tmp_path / "base", card=binary)
    huge = tmp_path / "big.md"
    huge.write_bytes(b"# card\n" + b"x" * (2 << 20))
    refused(
        home,
        r"big.md is 2.0 MiB; a model card may be at most 1 MiB",
        card=huge,
        from_hf=tmp_path / "base",
    )
    hf = hf_folder(tmp_path / "hf-readme")
    (hf / "README.md").write_bytes(b"x" * (2 << 20))
    refused(home, r"README.md is 2.0 MiB; a model card may be at most 1 MiB", from_hf=hf)


# ---------------------------------------------------------------------- names


def test_names_ending_in_a_newline_are_refused(home):
    with pytest.raises(UsageError, match="Invalid model name"):
        api.register("evil\n", from_hf=home["root"].parent / "base")
    with pytest.raises(UsageError, match="Invalid alias"):
        api.alias("base", "prod\n", 1)
    with pytest.raises(UsageError, match="Invalid tag key"):
        api.tag("base@1", {"k\n": "v"})
    with pytest.raises(UsageError, match="Invalid metric name"):
        api.log_metrics("base@1", {"acc\n": 1.0})
    with pytest.raises(UsageError, match="Invalid model name"):
        run(["register", "evil\n", "--from-hf", str(home["root"].parent / "base")])
    with pytest.raises(UsageError, match="Invalid alias"):
        run(["alias", "base", "prod\n", "1"])
    assert registry_snapshot(home["root"]) == home["before"]


def test_file_and_folder_of_the_same_name_are_refused(maas_home, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    reg = Registry(maas_home)
    reg.register("seed", [FileSpec(a, "seed.txt")], "raw")
    before = registry_snapshot(maas_home)
    with pytest.raises(UsageError, match=r"'x' is both a file and the folder of 'x/y'"):
        reg.register("clash", [FileSpec(a, "x"), FileSpec(b, "x/y")], "raw")
    assert registry_snapshot(maas_home) == before
    reg.close()


def test_control_characters_are_escaped_in_text_tables(maas_home, tmp_path):
    evil = "\x1b]0;pwned\x07\x1b[2J red\u202e"
    api.register("shown", from_hf=hf_folder(tmp_path / "hf"), description=evil, tags=[f"k={evil}"])
    for text in (str(api.list_models()), str(api.show("shown"))):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert r"\x1b]0;pwned\x07\x1b[2J red\u202e" in str(api.show("shown"))
    assert "\x1b]0;pwned" in api.show("shown")._repr_html_()  # HTML keeps its own escaping


def test_errors_do_not_show_internal_registry_paths(tmp_path, monkeypatch):
    root = tmp_path / "my registry"
    monkeypatch.setenv("MAAS_LAB_HOME", str(root))
    monkeypatch.setenv("MAAS_LAB_PROGRESS", "0")
    try:
        api.register("m", from_hf=hf_folder(tmp_path / "hf"))
        for blob in (root / "blobs" / "sha256").glob("*/*"):
            blob.chmod(stat.S_IWUSR | stat.S_IRUSR)
            blob.unlink()
        with pytest.raises(Exception) as info:
            api.load("m")
        assert "my registry" not in str(info.value) and str(tmp_path) not in str(info.value)
    finally:
        api.close_all()


# ---------------------------------------------------------------------- ONNX external data


def _external(tensor_name: str, location: str = "stolen.bin"):
    from onnx import TensorProto, helper

    t = helper.make_tensor(tensor_name, TensorProto.FLOAT, [1], [0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    return t


def _models():
    """Models hiding external data where a check of initializers alone would not look."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])

    def model(nodes, **graph_kwargs):
        graph = helper.make_graph(nodes, "g", [x], [y], **graph_kwargs)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    sparse = helper.make_sparse_tensor(
        _external("s"), helper.make_tensor("i", TensorProto.INT64, [1], [0]), [1]
    )
    yield (
        "sparse initializer",
        model([helper.make_node("Identity", ["x"], ["y"])], sparse_initializer=[sparse]),
    )
    yield (
        "sparse attribute",
        model(
            [
                helper.make_node("Constant", [], ["c"], sparse_value=sparse),
                helper.make_node("Identity", ["x"], ["y"]),
            ]
        ),
    )
    node = helper.make_node("Constant", [], ["y"], value=_external("v"))
    fn = helper.make_function("local", "f", ["x"], ["y"], [node], [helper.make_opsetid("", 17)])
    m = model([helper.make_node("f", ["x"], ["y"], domain="local")])
    m.functions.append(fn)
    m.opset_import.append(helper.make_opsetid("local", 1))
    yield "function", m
    sub = helper.make_graph([node], "sub", [], [y])
    yield (
        "subgraph",
        model([helper.make_node("If", ["x"], ["y"], then_branch=sub, else_branch=sub)]),
    )
    del onnx


def test_external_data_anywhere_in_an_onnx_model_is_checked(home, tmp_path):
    import onnx

    for i, (where, m) in enumerate(_models()):
        path = tmp_path / f"hidden-{i}.onnx"
        onnx.save_model(m, str(path))
        message = refused(home, r"needs external data 'stolen.bin'", from_file=path)
        assert "not part of this version" in message, where


# ---------------------------------------------------------------------- concurrent checkouts


def _checkout_all(root: str, refs: list[str], barrier, results) -> None:
    reg = Registry(root)
    barrier.wait()
    problems = []
    for ref in refs:
        try:
            co = reg.checkout(ref)
            for f in co.files:
                data = co.path(f["name"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != f["sha256"]:
                    problems.append(f"{ref} {f['name']}: wrong content")
        except Exception as exc:  # reported to the parent, which fails the test
            problems.append(f"{ref}: {type(exc).__name__}: {exc}")
    results.put(problems)


def test_concurrent_checkouts_of_fresh_versions_all_succeed(maas_home, tmp_path):
    reg = Registry(maas_home)
    refs = []
    for v in range(6):
        specs = []
        for i in range(12):
            path = tmp_path / f"v{v}-f{i}"
            path.write_bytes(f"version {v} file {i}".encode() * 100)
            specs.append(FileSpec(path, f"sub{i % 3}/file{i}.bin"))
        refs.append(reg.register("fresh", specs, "raw")["ref"])
    reg.close()
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=_checkout_all, args=(str(maas_home), refs, barrier, results))
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    problems = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    assert problems == [[]] * 8
    leftovers = [p.name for p in (maas_home / "checkouts" / "fresh").iterdir()]
    laid_out = [n for n in leftovers if re.fullmatch(r"\d+-[0-9a-f]{16}", n)]
    assert len(laid_out) == 6  # one layout per version, nothing half-built left behind
    assert all(n in laid_out or n.endswith(".lock") for n in leftovers), leftovers
