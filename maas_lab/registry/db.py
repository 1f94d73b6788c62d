"""The SQLite side of the registry: connection settings, numbered migrations, write transactions.

sqlite-utils opens plain deferred transactions; a deferred transaction that reads and then
writes can fail with "database is locked" under concurrency, so every write here starts with
``BEGIN IMMEDIATE`` (the write lock taken up front, waiting up to ``busy_timeout``). The
connection is in autocommit mode so that sqlite-utils' own ``atomic()`` blocks nest inside
ours as savepoints.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils
from sqlite_utils import Migrations

from ..errors import RegistryError

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy handler alone
    fcntl = None

BUSY_TIMEOUT_MS = 60_000
migrations = Migrations("maas_lab")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def connect(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the registry database and bring its schema up to date."""
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn, execute_plugins=False)
    if migrations.pending(db):
        with write(db):  # concurrent first opens serialize here; the loser finds nothing pending
            migrations.apply(db)
    return db


@contextmanager
def write(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction holding the write lock from its first statement."""
    with _writer_turn(db):
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.conn.execute("COMMIT")
        except BaseException as exc:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                raise RegistryError(
                    f"The registry's disk is full ({exc}); nothing was written. Free some "
                    "space, or point MAAS_LAB_HOME at a larger disk."
                ) from None
            raise


@contextmanager
def _writer_turn(db: sqlite_utils.Database) -> Iterator[None]:
    """Take turns between writing processes through a lock file beside the database.

    SQLite's busy handler sleeps in steps growing to 100 ms and does not queue waiters, so
    under contention a few writers wait far longer than the ~1 ms a registration holds the
    lock (measured: p99 over 100 ms at a 5 ms median with 4 processes). Polling a file lock
    every half millisecond lets the next writer in almost at once. Bounded like
    ``busy_timeout``, so a stuck writer gives an error, never an endless wait.
    """
    path = db.conn.execute("pragma database_list").fetchone()[2]
    if fcntl is None or not path:
        yield
        return
    try:
        fd = os.open(path + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RegistryError(
            f"Cannot write to the registry at {os.path.dirname(path)} ({exc.strerror}). Fix "
            "its permissions, or point MAAS_LAB_HOME at a folder you can write."
        ) from None
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"The registry at {os.path.dirname(path)} stayed busy for "
                        f"{BUSY_TIMEOUT_MS // 1000} s: another process holds its write lock. "
                        "Try again, or look for a stuck maas process."
                    ) from None
                time.sleep(0.0005)
        yield
    finally:
        os.close(fd)  # releases the lock


# Migrations: append new functions; never edit one that has shipped.


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            task TEXT,
            description TEXT,
            owner TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE versions (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            number INTEGER NOT NULL,
            format TEXT NOT NULL,
            description TEXT,
            card TEXT,
            config TEXT NOT NULL DEFAULT '{}',
            size_bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT,
            UNIQUE (model_id, number)
        );
        CREATE TABLE files (
            version_id INTEGER NOT NULL REFERENCES versions(id),
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (version_id, name)
        );
        CREATE INDEX files_sha256 ON files(sha256);
        CREATE TABLE aliases (
            model_id INTEGER NOT NULL REFERENCES models(id),
            alias TEXT NOT NULL,
            version_id INTEGER NOT NULL REFERENCES versions(id),
            updated_at TEXT NOT NULL,
            PRIMARY KEY (model_id, alias)
        );
        CREATE TABLE alias_history (
            id INTEGER PRIMARY KEY,
            model_id INTEGER NOT NULL REFERENCES models(id),
            alias TEXT NOT NULL,
            version_id INTEGER REFERENCES versions(id),
            previous_version_id INTEGER REFERENCES versions(id),
            moved_at TEXT NOT NULL,
            moved_by TEXT
        );
        CREATE TABLE tags (
            version_id INTEGER NOT NULL REFERENCES versions(id),
            key TEXT NOT NULL,
            value TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (version_id, key)
        );
        CREATE TABLE metrics (
            version_id INTEGER NOT NULL REFERENCES versions(id),
            name TEXT NOT NULL,
            value REAL NOT NULL,
            recorded_at TEXT NOT NULL,
            PRIMARY KEY (version_id, name)
        );
        CREATE TABLE lineage (
            id INTEGER PRIMARY KEY,
            child_id INTEGER NOT NULL REFERENCES versions(id),
            parent_id INTEGER REFERENCES versions(id),
            operation TEXT NOT NULL,
            plugin TEXT,
            plugin_version TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE INDEX lineage_child ON lineage(child_id);
        CREATE INDEX lineage_parent ON lineage(parent_id);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT,
            action TEXT NOT NULL,
            model TEXT,
            version INTEGER,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        -- One row per version, kept in step by the registry, for full-text search.
        CREATE TABLE search_docs (
            version_id INTEGER PRIMARY KEY REFERENCES versions(id),
            name TEXT,
            task TEXT,
            description TEXT,
            tags TEXT,
            card TEXT
        );
        """
    )
    db["search_docs"].enable_fts(
        ["name", "task", "description", "tags", "card"],
        fts_version="FTS5",
        create_triggers=True,
        tokenize="porter",
    )


# A model's search document, built from all its versions: its descriptions, distinct tags
# and distinct cards. ``{where}`` picks the models (one, or all in a migration).
INDEX_MODELS = """
insert into search_docs (model_id, name, task, description, tags, cards)
select m.id, m.name, m.task,
       (select group_concat(d, char(10)) from (
            select m.description as d union
            select distinct description from versions where model_id = m.id)),
       (select group_concat(t, char(10)) from (
            select distinct trim(key || ' ' || value) as t
              from tags join versions v on v.id = tags.version_id
             where v.model_id = m.id order by t)),
       (select group_concat(card, char(10) || char(10)) from (
            select distinct card from versions where model_id = m.id and card is not null))
  from models m {where}
"""


@migrations()
def m002_search_models(db: sqlite_utils.Database) -> None:
    """Search one document per model, not per version: people look for models, versions
    share most of their text, and ranking every version made search slow at 100,000."""
    db["search_docs"].disable_fts()
    db["search_docs"].drop()
    db.execute(
        """create table search_docs (
               model_id integer primary key references models(id),
               name text, task text, description text, tags text, cards text)"""
    )
    db["search_docs"].enable_fts(
        ["name", "task", "description", "tags", "cards"],
        fts_version="FTS5",
        create_triggers=True,
        tokenize="porter",
    )
    # Column weights for ranking: a word in the name counts most, in a long card least.
    db.execute(
        "insert into search_docs_fts(search_docs_fts, rank) "
        "values ('rank', 'bm25(10.0, 4.0, 2.0, 3.0, 1.0)')"
    )
    db.execute(INDEX_MODELS.format(where=""))


@migrations()
def m003_signatures(db: sqlite_utils.Database) -> None:
    """Each version's tensor signature (input and output names, dtypes, shapes), which
    exports check parity against and servers validate requests with."""
    db.execute("alter table versions add column signature text")


@migrations()
def m004_servers(db: sqlite_utils.Database) -> None:
    """Running servers: what is served where, by which processes, and how many replicas are
    wanted. The row is the control plane: a server's processes poll it, so ``maas scale``,
    a repository load and a moved alias reach every replica, from any notebook or shell."""
    db.execute(
        """create table servers (
               name text primary key,
               host text not null,
               port integer,
               pid integer,
               replicas integer not null,
               models text not null default '[]',
               options text not null default '{}',
               workers text not null default '[]',
               status text not null,
               started_at text not null,
               updated_at text not null)"""
    )


@migrations()
def m005_jobs(db: sqlite_utils.Database) -> None:
    """Training jobs started by a launcher plugin: what ran, how, and how it ended, so jobs
    can be listed, tailed and cancelled from any notebook, also after a kernel restart.
    The job's own process (``maas_lab.launching.monitor``) keeps its row up to date."""
    db.execute(
        """create table jobs (
               id integer primary key,
               launcher text not null,
               kind text not null,
               target text not null,
               options text not null default '{}',
               command text not null default '[]',
               register_as text,
               metric text,
               status text not null,
               pid integer,
               launcher_pid integer,
               world_size integer,
               progress text not null default '{}',
               timeline text not null default '{}',
               registered text,
               error text,
               exit_code integer,
               created_at text not null,
               started_at text,
               ended_at text,
               updated_at text not null)"""
    )


@migrations()
def m006_trusted_code(db: sqlite_utils.Database) -> None:
    """Code references (``module:callable``) a person trusted, with who and how: a version
    whose config names a factory is loaded only if that factory is trusted here, so a bundle
    cannot make us import and call what nobody chose to run.

    Registries made before trust was recorded keep working: the factories their versions
    already name are trusted, except those that only came in through a bundle import."""
    db.execute(
        """create table trusted_code (
               reference text primary key,
               granted_by text not null,
               granted_at text not null,
               how text not null)"""
    )
    imported = {
        r[0]
        for r in db.execute(
            "select distinct child_id from lineage where operation = 'import'"
        ).fetchall()
    }
    seen: set[str] = set()
    for version_id, config in db.execute("select id, config from versions").fetchall():
        if version_id in imported:
            continue
        try:
            data = json.loads(config or "{}")
        except ValueError:
            continue
        # The torch loader's convention, the only code reference stored before m006.
        ref = data.get("factory") if isinstance(data, dict) else None
        if isinstance(ref, str) and ref and ref not in seen:
            seen.add(ref)
            db.execute(
                "insert or ignore into trusted_code values (?, ?, ?, ?)",
                [ref, "migration", now(), "named by a version registered before m006"],
            )


@migrations()
def m007_lineage_distribution(db: sqlite_utils.Database) -> None:
    """The distribution that provided a derived version's plugin (``maas-fp16``): the
    plugin's entry-point name alone does not say which package to install to redo the
    step, once third parties write plugins. Older edges stay without one."""
    db.execute("alter table lineage add column plugin_distribution text")


@migrations()
def m008_tokens(db: sqlite_utils.Database) -> None:
    """Named access tokens for servers (see :mod:`maas_lab.tokens`): the sha256 of each,
    never the token, with its scopes, its models (an empty list: every model), who made it
    and when, and when it was revoked. Rows stay after a revoke; a name is never reused."""
    db.execute(
        """create table tokens (
               name text primary key,
               sha256 text not null unique,
               scopes text not null,
               models text not null default '[]',
               created_by text not null,
               created_at text not null,
               revoked_at text,
               revoked_by text)"""
    )
