"""The registry as a user drives it through maas_lab.api: versions, aliases, tags, search,
recommend, integrity, bundles and fsck, each checked in the SQLite file and on disk."""

import hashlib
import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest
import sqlite_utils
import torch

from maas_lab import api
from maas_lab.errors import IntegrityError, NotFoundError, UsageError


@pytest.fixture
def mlp(tiny_torch_model):
    """Register helper: a new version of a tiny MLP with the given extras."""

    def register(name="digits-mlp", **kwargs):
        return api.register(
            name,
            from_torch=tiny_torch_model["factory"],
            config=json.dumps(tiny_torch_model["config"]),
            weights=tiny_torch_model["weights"],
            **kwargs,
        )

    return register


def test_register_show_and_load_round_trip(maas_home, mlp, tiny_torch_model):
    report = mlp(task="classification", tags=["digits", "stage=dev"], metrics=["accuracy=0.91"])
    info = report.data
    assert info["ref"] == "digits-mlp@1"
    assert info["format"] == "torch"
    assert info["tags"] == {"digits": "", "stage": "dev"}
    assert info["metrics"] == {"accuracy": 0.91}
    (weights,) = info["files"]
    assert weights["role"] == "weights" and len(weights["sha256"]) == 64
    assert weights["size"] == tiny_torch_model["weights"].stat().st_size
    # The blob sits under the root, named by its digest, read-only.
    blob = maas_home / "blobs" / "sha256" / weights["sha256"][:2] / weights["sha256"]
    assert blob.read_bytes() == tiny_torch_model["weights"].read_bytes()
    model = api.load("digits-mlp@1")
    x = torch.randn(4, 8)
    assert torch.equal(model(x), tiny_torch_model["model"](x))
    text = str(report)
    assert "digits-mlp@1" in text and weights["sha256"] in text and "accuracy" in text
    assert "<table>" in report._repr_html_()


def test_versions_number_up_and_identical_content_is_stored_once(maas_home, mlp):
    assert [mlp().data["number"] for _ in range(3)] == [1, 2, 3]
    assert len(list((maas_home / "blobs" / "sha256").glob("*/*"))) == 1
    assert api.resolve("digits-mlp") == "digits-mlp@3"
    history = api.history("digits-mlp")
    assert [v["number"] for v in history["versions"]] == [1, 2, 3]


def test_aliases_move_and_keep_history(maas_home, mlp):
    mlp(), mlp(), mlp()
    first = api.alias("digits-mlp", "prod", 1)
    assert api.resolve("digits-mlp@prod") == "digits-mlp@1"
    assert (first["ref"], first["previous"]) == ("digits-mlp@1", None)
    moved = api.alias("digits-mlp", "prod", "3")
    assert (moved["ref"], moved["previous"]) == ("digits-mlp@3", "digits-mlp@1")
    assert moved.title == "digits-mlp@prod -> digits-mlp@3"
    api.alias("digits-mlp", "staging", "digits-mlp@prod")
    assert api.resolve("digits-mlp@prod") == "digits-mlp@3"
    assert api.resolve("digits-mlp@staging") == "digits-mlp@3"
    moves = api.history("digits-mlp")["alias_moves"]
    assert [(m["alias"], m["previous"], m["version"]) for m in moves] == [
        ("prod", None, 1),
        ("prod", 1, 3),
        ("staging", None, 3),
    ]
    gone = api.alias("digits-mlp", "staging", delete=True)
    assert (gone["ref"], gone["previous"]) == (None, "digits-mlp@3") and "deleted" in gone.title
    with pytest.raises(NotFoundError, match="No alias of 'digits-mlp' named 'staging'"):
        api.resolve("digits-mlp@staging")
    assert api.show("digits-mlp@3")["aliases"] == ["prod"]


def test_tags_and_metrics_update_a_version(maas_home, mlp):
    mlp(tags=["nlp"])
    api.tag("digits-mlp@1", ["reviewed=yes"])
    api.tag("digits-mlp@1", remove=["nlp"])
    api.log_metrics("digits-mlp@1", ["latency_ms=3.5", "accuracy=0.9"])
    info = api.show("digits-mlp@1").data
    assert info["tags"] == {"reviewed": "yes"}
    assert info["metrics"] == {"accuracy": 0.9, "latency_ms": 3.5}
    assert [r["ref"] for r in api.search("reviewed")] == ["digits-mlp@1"]
    assert len(api.search("nlp")) == 0  # removed tags leave the index too


def test_search_is_ranked_and_safe_for_any_text(maas_home, mlp, tmp_path):
    card = tmp_path / "card.md"
    card.write_text("A small sentence embedding model for semantic search.")
    mlp("tiny-embedder", task="sentence-embedding", card=card, description="small embedder")
    mlp("digits-mlp", task="classification", description="handwritten digits")
    mlp("big-classifier", task="classification", description="an embedding is not this")
    hits = api.search("embedding small")
    assert [h["ref"] for h in hits][:2] == ["tiny-embedder@1", "big-classifier@1"]
    assert hits[0]["score"] > hits[1]["score"]
    assert [h["ref"] for h in api.search("digit")] == ["digits-mlp@1"]  # prefix match
    # FTS syntax in user text is just text.
    assert len(api.search('"unbalanced AND OR ( NEAR')) == 0
    with pytest.raises(UsageError, match="at least one word"):
        api.search("  --- ")


def test_recommend_filters_ranks_and_explains(maas_home, mlp):
    mlp("fast", task="sentence-embedding", metrics=["latency_ms=4", "accuracy=0.8"])
    mlp("slow", task="sentence-embedding", metrics=["latency_ms=30", "accuracy=0.9"])
    mlp("unmeasured", task="sentence-embedding")
    mlp("other", task="classification", metrics=["latency_ms=1"])
    table = api.recommend(task="sentence-embedding", sort="latency")
    assert [r["ref"] for r in table] == ["fast@1", "slow@1", "unmeasured@1"]
    assert "latency_ms 4 (#1, lowest first)" in table[0]["why"]
    assert "no latency_ms recorded, ranked last" in table[2]["why"]
    under = api.recommend(task="sentence-embedding", max_latency_ms=20, sort="accuracy")
    assert [r["ref"] for r in under] == ["fast@1"]
    assert "excluded 1 by task, 2 by latency" in under.note
    assert [r["ref"] for r in api.recommend(sort="accuracy")][:2] == ["slow@1", "fast@1"]
    assert len(api.recommend(max_size="1kB")) == 0
    empty = api.recommend(task="translation")
    assert "No model has task 'translation'" in empty.note


def test_tampered_blob_fails_to_load_naming_both_digests(maas_home, mlp):
    info = mlp().data
    digest = info["files"][0]["sha256"]
    blob = maas_home / "blobs" / "sha256" / digest[:2] / digest
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        api.load("digits-mlp@1")
    assert f"expected sha256 {digest}" in str(err.value)
    assert f"got {hashlib.sha256(bytes(data)).hexdigest()}" in str(err.value)
    problems = api.fsck(verify=True)
    assert [p["kind"] for p in problems] == ["corrupt"]


def test_bundle_round_trip_between_registries(maas_home, mlp, tmp_path, tiny_torch_model):
    mlp(task="classification", tags=["digits"], metrics=["accuracy=0.93"])
    bundle = api.bundle_export("digits-mlp@1", tmp_path)
    path = tmp_path / "digits-mlp-1.maas.tar"
    assert bundle["bundle"] == str(path) and bundle["ref"] == "digits-mlp@1"
    assert bundle["size_bytes"] == path.stat().st_size and str(path) in str(bundle)
    made = api.bundle_export("digits-mlp@1", f"{tmp_path}/new/")  # a folder, made
    assert made["bundle"] == str(tmp_path / "new" / "digits-mlp-1.maas.tar")
    with pytest.raises(UsageError, match="into .*missing: it does not exist. Give an existing"):
        api.bundle_export("digits-mlp@1", tmp_path / "missing" / "b.tar")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UsageError, match="into .*a-file: it is not a folder"):
        api.bundle_export("digits-mlp@1", tmp_path / "a-file" / "b.tar")
    if Path("/proc/self").is_dir():  # a folder nobody, root included, can write into
        with pytest.raises(UsageError, match=r"^Cannot write b.tar into /proc: "):
            api.bundle_export("digits-mlp@1", "/proc/b.tar")
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # readable by whoever receives it
    other = tmp_path / "other-registry"
    report = api.bundle_import(path, root=other)
    assert report["ref"] == "digits-mlp@1"
    assert report["metrics"] == {"accuracy": 0.93} and report["tags"] == {"digits": ""}
    assert report["parents"][0]["operation"] == "import"
    model = api.load("digits-mlp@1", root=other)
    x = torch.randn(2, 8)
    assert torch.equal(model(x), tiny_torch_model["model"](x))
    renamed = api.bundle_import(path, name="copy", root=other)
    assert renamed["ref"] == "copy@1"


def test_tampered_bundle_is_refused_and_changes_nothing(maas_home, mlp, tmp_path):
    from maas_lab.testing import registry_snapshot

    mlp()
    api.bundle_export("digits-mlp@1", tmp_path / "b.tar")
    with tarfile.open(tmp_path / "b.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name, data in members.items():
            if name.startswith("blobs/"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    other = tmp_path / "other"
    api.list_models(root=other)  # create it, then snapshot
    before = registry_snapshot(other)
    with pytest.raises(IntegrityError, match="expected sha256"):
        api.bundle_import(evil, root=other)
    assert registry_snapshot(other) == before
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello")
    with pytest.raises(UsageError, match="is not a maas bundle"):
        api.bundle_import(not_tar, root=other)
    assert registry_snapshot(other) == before


def test_fsck_finds_and_repairs_orphans(maas_home, mlp):
    mlp()
    orphan = maas_home / "blobs" / "sha256" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left by a crash")
    (maas_home / "blobs" / "tmp" / "incoming-x").write_bytes(b"half a file")
    report = api.fsck()
    assert sorted(p["kind"] for p in report) == ["orphan blob", "temp file"]
    assert "(recent: kept)" in report[0]["detail"]
    api.fsck(repair=True)  # within the grace period: kept for a writer in flight
    assert orphan.exists()
    fixed = api.fsck(repair=True, grace_seconds=0)
    assert "removed 2" in fixed.note
    assert not orphan.exists()
    assert len(api.fsck()) == 0
    assert api.load("digits-mlp@1") is not None


def test_tables_are_plain_and_migrations_run_once(maas_home, mlp):
    mlp(tags=["x"], metrics=["accuracy=1"])
    api.alias("digits-mlp", "prod", 1)
    db = sqlite_utils.Database(maas_home / "registry.db")
    names = set(db.table_names())
    assert {
        "models",
        "versions",
        "files",
        "aliases",
        "alias_history",
        "tags",
        "metrics",
        "lineage",
        "events",
        "search_docs",
    } <= names
    assert db["versions"].count == 1 and db["events"].count == 2
    assert [e["action"] for e in db["events"].rows] == ["register", "alias"]
    applied = list(db["_sqlite_migrations"].rows)
    assert [m["name"] for m in applied] == [
        "m001_initial",
        "m002_search_models",
        "m003_signatures",
        "m004_servers",
        "m005_jobs",
        "m006_trusted_code",
        "m007_lineage_distribution",
        "m008_tokens",
    ]
    api.close_all()
    api.list_models()  # reopen: nothing pending, nothing applied twice
    assert db["_sqlite_migrations"].count == 8
    conn = sqlite3.connect(maas_home / "registry.db")
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_list_shows_every_model_newest_first(maas_home, mlp):
    mlp("a"), mlp("b"), mlp("a")
    api.alias("a", "prod", 2)
    rows = api.list_models()
    assert [(r["name"], r["versions"], r["latest"]) for r in rows] == [
        ("a", 2, "@2"),
        ("b", 1, "@1"),
    ]
    assert rows[0]["aliases"] == "prod->2"
    assert "2 model(s)" in str(rows)


def test_checkout_is_rebuilt_when_edited_by_hand(maas_home, mlp, tiny_torch_model):
    mlp()
    api.load("digits-mlp@1")
    (link,) = (maas_home / "checkouts" / "digits-mlp").glob("1-*/model.safetensors")
    (blob,) = (maas_home / "blobs" / "sha256").glob("*/*")
    assert os.path.samefile(link, blob)  # a hard link: no copy
    link.unlink()
    link.write_bytes(b"swapped in by hand")
    model = api.load("digits-mlp@1")
    x = torch.randn(2, 8)
    assert torch.equal(model(x), tiny_torch_model["model"](x))
    assert os.path.samefile(link, blob)


def test_search_returns_models_and_points_at_matching_versions(maas_home, mlp):
    for _ in range(5):
        mlp("digits-mlp", task="classification", description="handwritten digits")
    api.tag("digits-mlp@2", ["reviewed=yes"])
    mlp("reviewer-bot", task="text-generation", description="writes reviews of code")
    hits = api.search("digits")
    assert [(h["ref"], h["versions"]) for h in hits] == [("digits-mlp@5", 5)]  # one row
    assert hits[0]["matched"] == "name, description"
    assert api.search("classification")[0]["matched"] == "task"
    assert hits[0]["snippet"] == "handwritten [digits]"
    tagged = {h["ref"]: h for h in api.search("reviewed")}
    assert tagged["digits-mlp@2"]["snippet"] == "reviewed=yes @2"
    assert tagged["reviewer-bot@1"]["matched"] == "name, description"
    # Models matching every word rank before models matching some.
    both = api.search("handwritten reviewed")
    assert [h["ref"] for h in both] == ["digits-mlp@5", "reviewer-bot@1"]


def test_registry_from_an_older_schema_is_migrated(maas_home):
    """A registry made before m002 (search per version) is reindexed per model on open."""
    from maas_lab.registry.db import migrations, now

    maas_home.mkdir(parents=True)
    db = sqlite_utils.Database(maas_home / "registry.db")
    migrations.apply(db, stop_before="m002_search_models")
    db["models"].insert(
        {
            "id": 1,
            "name": "old-embedder",
            "task": "sentence-embedding",
            "description": "an old model",
            "created_at": now(),
        }
    )
    for number in (1, 2):
        db["versions"].insert(
            {
                "id": number,
                "model_id": 1,
                "number": number,
                "format": "hf",
                "size_bytes": 1,
                "created_at": now(),
                "card": "Pooled tokens",
            }
        )
        db["search_docs"].insert({"version_id": number, "name": "old-embedder"})
    db["tags"].insert({"version_id": 2, "key": "reviewed", "value": "yes"})
    db.conn.close()
    hits = api.search("old embedder")
    assert [(h["ref"], h["versions"]) for h in hits] == [("old-embedder@2", 2)]
    assert api.search("pooled")[0]["matched"] == "cards"
    assert api.search("reviewed")[0]["snippet"] == "reviewed=yes @2"


def test_search_snippet_never_cuts_a_match(maas_home, mlp):
    words = "lorem ipsum dolor sit amet " * 3
    mlp("m", description=f"{words}alpha lorem ipsum dolor betagamma tail")
    (hit,) = api.search("alpha betagamma")
    assert "[alpha]" in hit["snippet"] and "[betagamma]" in hit["snippet"]


def test_a_thread_never_reads_another_threads_open_write(maas_home):
    """Panels and the lab server extension read in worker threads while others write: a read
    must see committed rows only, and a writer's rollback must not abort it (each thread has
    its own connection; on a shared one the read saw the uncommitted table)."""
    import threading

    from maas_lab.registry import open as open_registry
    from maas_lab.registry.db import write

    reg = open_registry()
    holding, done = threading.Event(), threading.Event()

    def writer():
        try:
            with write(reg.db) as db:
                db.execute("create table scratch (x)")
                db.execute("insert into scratch values (1)")
                holding.set()
                done.wait(10)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    seen = []
    reader = threading.Thread(
        target=lambda: seen.append(
            reg.db.execute("select count(*) from sqlite_master where name = 'scratch'").fetchone()
        )
    )
    reader.start()
    reader.join(10)
    done.set()
    thread.join(10)
    assert seen == [(0,)]
    assert (
        reg.db.execute("select count(*) from sqlite_master where name = 'scratch'").fetchone()[0]
        == 0
    )
