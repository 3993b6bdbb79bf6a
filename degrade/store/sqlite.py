"""The embedded experiment store: one SQLite file, one row per diagnosis (issue 17; seed 003's table
of experiments: generator + params + data -> metrics, with degrade's verdict).

Plain sqlite3 with a `schema_migrations` table: each migration runs once, in order, inside the
transaction that records it, so a store written by an older degrade is brought up to date the
first time a newer one opens it. Writes take the database lock up front (BEGIN IMMEDIATE) and wait
up to `BUSY_SECONDS` for another writer, so two diagnoses finishing at once both land; the
journal is WAL so that readers never block them. Anything the file itself gets wrong (not a
database, locked past the wait, a schema from a newer degrade) is a StoreError with one line.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from degrade.errors import InputError

BUSY_SECONDS = 30.0

# (version, what it adds, SQL). Never edit a released one: add the next.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "diagnoses", """
        CREATE TABLE diagnoses (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created TEXT NOT NULL,
            run_path TEXT NOT NULL,
            run_fingerprint TEXT NOT NULL,
            generator TEXT NOT NULL,      -- JSON: code version, dirty-diff hash
            params TEXT NOT NULL,         -- JSON
            data TEXT NOT NULL,           -- JSON: data fingerprints
            metrics TEXT NOT NULL,        -- JSON: logged and re-observed, with their CIs
            verdict_layer TEXT NOT NULL,
            verdict_confidence REAL,
            headline TEXT NOT NULL,
            degrade_version TEXT NOT NULL,
            diagnosis TEXT NOT NULL       -- the whole diagnosis JSON
        );
        CREATE INDEX diagnoses_run ON diagnoses (run_fingerprint);
    """),
    (2, "findings, one row each (queried by code and severity), backfilled from the diagnosis JSON", """
        CREATE TABLE findings (
            diagnosis_id INTEGER NOT NULL REFERENCES diagnoses (id),
            code TEXT NOT NULL,
            severity TEXT NOT NULL,
            layer TEXT NOT NULL,
            confidence REAL,
            cost TEXT                     -- JSON, or NULL when the finding has no measured cost
        );
        CREATE INDEX findings_code ON findings (code, severity);
        INSERT INTO findings (diagnosis_id, code, severity, layer, confidence, cost)
            SELECT d.id, json_extract(f.value, '$.code'), json_extract(f.value, '$.severity'),
                   json_extract(f.value, '$.layer'), json_extract(f.value, '$.confidence'),
                   json_extract(f.value, '$.cost')
            FROM diagnoses d, json_each(json_extract(d.diagnosis, '$.findings')) f;
    """),
    (3, "status and error: a run whose diagnosis crashed in a sweep is kept as failed, with why", """
        ALTER TABLE diagnoses ADD COLUMN status TEXT NOT NULL DEFAULT 'done';
        ALTER TABLE diagnoses ADD COLUMN error TEXT;
    """),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
_JSON_COLUMNS = ("generator", "params", "data", "metrics")
_SUMMARY = ("id, created, run_path, run_fingerprint, generator, params, data, metrics, verdict_layer, "
            "verdict_confidence, headline, degrade_version, status, error")


class StoreError(InputError):
    """The store file cannot be used; the message names it and says why, in one line."""


class SqliteStore:
    def __init__(self, path: Path, *, upto: int = SCHEMA_VERSION):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=BUSY_SECONDS, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL: a commit is atomic and consistent but not fsynced; a power
            # cut may lose the last diagnoses, never corrupt the store (sqlite.org/wal.html)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(upto)
        except sqlite3.Error as e:
            raise StoreError(self.path, _problem(e)) from None
        except OSError as e:
            raise StoreError(self.path, f"cannot be opened ({e.strerror or e})") from None

    def version(self) -> int:
        row = self.db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def _migrate(self, upto: int) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                        "name TEXT NOT NULL, applied TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        have = self.version()
        if have > SCHEMA_VERSION:
            raise StoreError(self.path, f"has schema version {have}, newer than this degrade's "
                                        f"{SCHEMA_VERSION}: upgrade degrade")
        for version, name, sql in MIGRATIONS:
            if have < version <= upto:
                with self._transaction():
                    for statement in sql.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name))

    @contextmanager
    def _transaction(self):
        """The write lock from the start (BEGIN IMMEDIATE): a second writer waits, never deadlocks."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def record(self, row: dict[str, Any]) -> int:
        """Store one diagnosis (row.py's row) atomically; returns its id."""
        diagnosis = row["diagnosis"]
        values = {"status": "done", "error": None, **row, "diagnosis": json.dumps(diagnosis),
                  **{k: json.dumps(row[k], sort_keys=True) for k in _JSON_COLUMNS}}
        try:
            with self._transaction():
                cur = self.db.execute(
                    "INSERT INTO diagnoses (created, run_path, run_fingerprint, generator, params, data, "
                    "metrics, verdict_layer, verdict_confidence, headline, degrade_version, diagnosis, status, "
                    "error) "
                    "VALUES (:created, :run_path, :run_fingerprint, :generator, :params, :data, :metrics, "
                    ":verdict_layer, :verdict_confidence, :headline, :degrade_version, :diagnosis, :status, "
                    ":error)", values)
                rid = int(cur.lastrowid)
                self.db.executemany(
                    "INSERT INTO findings (diagnosis_id, code, severity, layer, confidence, cost) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(rid, f["code"], f["severity"], f["layer"], f.get("confidence"),
                      json.dumps(f["cost"]) if f.get("cost") is not None else None)
                     for f in diagnosis.get("findings", [])])
        except sqlite3.Error as e:
            raise StoreError(self.path, _problem(e)) from None
        return rid

    def rows(self, *, verdict: str | None = None, code: str | None = None, severity: str | None = None,
             since: str | None = None, params: dict[str, str] | None = None,
             status: str | None = None) -> list[dict[str, Any]]:
        """Stored diagnoses, newest first, without their diagnosis JSON: with this verdict, a finding
        of this code (and severity), stored on or after `since` (an ISO date), with these params
        (a value that reads as a number is compared as one: lr=1e-3 matches 0.001), with this status
        (done, failed)."""
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if since:
            where.append("created >= ?")
            args.append(since)
        for key, value in (params or {}).items():
            where.append("json_extract(params, ?) = ?")
            args += ['$."' + key.replace('"', '') + '"', _typed(value)]
        if verdict:
            where.append("verdict_layer = ?")
            args.append(verdict)
        if code:
            where.append("id IN (SELECT diagnosis_id FROM findings WHERE code = ?"
                         + (" AND severity = ?" if severity else "") + ")")
            args += [code.upper()] + ([severity] if severity else [])
        sql = (f"SELECT {_SUMMARY} FROM diagnoses"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC")
        return [self._row(r) for r in self._query(sql, args)]

    def get(self, rid: int | str) -> dict[str, Any] | None:
        if not str(rid).isdigit():
            return None
        found = self._query(f"SELECT {_SUMMARY}, diagnosis FROM diagnoses WHERE id = ?", [int(rid)])
        if not found:
            return None
        out = self._row(found[0][:-1])
        out["diagnosis"] = json.loads(found[0][-1])
        return out

    def _query(self, sql: str, args: Iterable) -> list[tuple]:
        try:
            return self.db.execute(sql, list(args)).fetchall()
        except sqlite3.Error as e:
            raise StoreError(self.path, _problem(e)) from None

    @staticmethod
    def _row(r: tuple) -> dict[str, Any]:
        out = dict(zip(_SUMMARY.split(", "), r))
        for k in _JSON_COLUMNS:
            out[k] = json.loads(out[k])
        return out

    def close(self) -> None:
        self.db.close()


def _typed(value: str):
    try:
        return float(value)
    except ValueError:
        return {"true": 1, "false": 0}.get(value.lower(), value)


def _problem(e: sqlite3.Error) -> str:
    text = str(e)
    if "file is not a database" in text or "malformed" in text:
        return "is not a degrade store (not an SQLite database, or a damaged one)"
    if "locked" in text or "busy" in text:
        return f"is locked by another process (waited {BUSY_SECONDS:g} s)"
    return f"cannot be used as a store ({text})"
