"""The results table: one SQLite file per sweep (`results.sqlite`), written in transactions.

Tables (see docs/sweeps.md):

* `runs`: one row per planned run: its place in the sweep (backbone, condition, prompt, seed),
  one column per intervention parameter (`relax_beta`, `decay_p`, ...), every config field,
  and its state (`planned`, `complete`, `failed`).
* `metrics`: one row per (run, metric value): `metric`, `metric_key`, `value_name`, `value`
  (REAL: numbers and booleans) or `value_text` (strings), `metric_params` (JSON).
* `results` (a view): `runs` joined with `metrics` for complete runs of the current plan: one
  row per (run, metric value) with every config field as a column. `pandas.read_sql("select *
  from results", sqlite3.connect(path))` reads it; so do DuckDB and the sqlite3 shell.
* `skipped`: conditions a backbone could not run (with `unsupported: skip`); `meta`: the sweep.

A run's row and all its metric rows are written in one transaction, after its record is
complete on disk; a kill at any moment leaves either all of them or none. The run records on
disk are the source of truth: at start-up every complete record missing from (or different in)
the table is loaded into it, so the table never lags behind the files.

`load_report_data` reads the table for `inertia report` through a read-only connection.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InertiaError, WriteFault
from ..core.records import RECORD_NAME
from ..scoring import metric_rows
from .plan import RUNS_DIR, SweepPlan, SweepRun
from .stats import Observation

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 1
#: SQLite primary result codes of a machine fault: SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL.
SQLITE_WRITE_FAULTS = frozenset({8, 10, 13})
#: Seconds a write waits for another process's transaction before "database is locked". Shards of one
#: sweep share the table; 16-32 shard processes on one GPU host queue their writes behind each other.
BUSY_TIMEOUT_S = 600.0

#: Run columns before the parameter columns (name, SQL type).
RUN_COLUMNS: list[tuple[str, str]] = [
    ("run_hash", "TEXT PRIMARY KEY"),
    ("status", "TEXT"),  # planned | complete | failed
    ("in_plan", "INTEGER"),  # 1 when the latest sweep plan includes the run
    ("plan_index", "INTEGER"),
    ("sweep", "TEXT"),
    ("backbone", "TEXT"),  # the label in the sweep
    ("backbone_plugin", "TEXT"),
    ("condition", "TEXT"),
    ("family", "TEXT"),  # interventions joined by '+', or 'baseline'
    ("is_baseline", "INTEGER"),
    ("prompt_id", "TEXT"),
    ("seed", "INTEGER"),
    ("mode", "TEXT"),
]
#: Resolved config fields stored as columns (after the parameter columns).
CONFIG_COLUMNS: list[tuple[str, str]] = [
    ("model", "TEXT"), ("prompt", "TEXT"), ("negative_prompt", "TEXT"), ("image", "TEXT"),
    ("height", "INTEGER"), ("width", "INTEGER"), ("num_frames", "INTEGER"), ("steps", "INTEGER"),
    ("guidance_scale", "REAL"), ("guidance_scale_2", "REAL"), ("embedded_guidance_scale", "REAL"),
    ("latent_window_size", "INTEGER"), ("fps", "INTEGER"),
    ("dtype", "TEXT"), ("device", "TEXT"), ("attention", "TEXT"),
    # performance and memory options: part of the run's identity (float8, compiled kernels and tiling change pixels)
    ("attention_kernel", "TEXT"), ("performance", "TEXT"), ("offload", "TEXT"), ("vae_tiling", "TEXT"),
    ("interventions", "TEXT"),  # JSON list of {name, params} with every parameter
    ("config", "TEXT"),  # the whole resolved RunConfig as JSON (without out_dir)
    ("run_dir", "TEXT"),  # relative to the sweep directory: runs/BACKBONE-HASH
]
#: Outcome columns; the first four change from one execution to the next (see VOLATILE_COLUMNS).
OUTCOME_COLUMNS: list[tuple[str, str]] = [
    ("created", "TEXT"), ("wall_time_s", "REAL"), ("record_sha256", "TEXT"), ("host", "TEXT"),
    ("smoke_test", "INTEGER"), ("attempts", "INTEGER"), ("error", "TEXT"),
]
VOLATILE_COLUMNS = ("created", "wall_time_s", "record_sha256", "host", "attempts")


def _sql_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return int(value) if isinstance(value, bool) else value
    return json.dumps(value, sort_keys=True)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fetch_rows(con: sqlite3.Connection, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    """The result rows as dicts by column name."""
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


class ResultStore:
    """The sweep's SQLite file. One writer (the sweep driver); any number of readers."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        self.con.execute("PRAGMA foreign_keys = ON")
        if not self._is_current():
            self._create()

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A full or failing disk becomes a WriteFault naming the file (SQLite may
        have rolled back already: a second rollback would hide the cause behind "no transaction is active")."""
        try:
            self.con.execute("BEGIN IMMEDIATE")
            try:
                yield self.con
                self.con.execute("COMMIT")
            except BaseException:
                if self.con.in_transaction:
                    self.con.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF in SQLITE_WRITE_FAULTS:
                raise WriteFault(f"{self.path}: cannot write: {error}") from error
            raise

    # ----- schema ----------------------------------------------------------------------------
    def _is_current(self) -> bool:
        """Whether the schema is already complete, so opening the table needs no write lock (every shard
        opens it while the others write)."""
        names = {row[0] for row in self.con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        return {"meta", "runs", "metrics", "skipped", "results"} <= names and \
            {n for n, _ in CONFIG_COLUMNS} <= set(self.columns())

    def _create(self) -> None:
        with self.transaction() as con:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            columns = ", ".join(f"{quote(n)} {t}" for n, t in RUN_COLUMNS + CONFIG_COLUMNS + OUTCOME_COLUMNS)
            con.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
            self._add_later_columns(con)
            con.execute(
                "CREATE TABLE IF NOT EXISTS metrics (run_hash TEXT NOT NULL REFERENCES runs(run_hash) ON DELETE CASCADE, "
                "metric TEXT, metric_key TEXT, value_name TEXT, value REAL, value_text TEXT, metric_params TEXT, "
                "PRIMARY KEY (run_hash, metric_key, value_name))")
            con.execute("CREATE TABLE IF NOT EXISTS skipped (backbone TEXT, condition TEXT, reason TEXT, runs INTEGER)")
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._create_view(con)

    def _add_later_columns(self, con: sqlite3.Connection) -> None:
        """Config columns added after sweep tables were first written (guidance_scale_2, performance, ...), so that
        an older sweep directory resumes; its rows read NULL there until re-planned."""
        existing = set(self.columns())
        for name, sql_type in CONFIG_COLUMNS:
            if name not in existing:
                con.execute(f"ALTER TABLE runs ADD COLUMN {quote(name)} {sql_type}")
                con.execute("DELETE FROM meta WHERE key = 'plan_digest'")  # the plan's rows fill the new column

    @staticmethod
    def _create_view(con: sqlite3.Connection) -> None:
        con.execute("DROP VIEW IF EXISTS results")
        con.execute(
            "CREATE VIEW results AS SELECT r.*, m.metric, m.metric_key, m.value_name, m.value, m.value_text, "
            "m.metric_params FROM runs r JOIN metrics m ON m.run_hash = r.run_hash "
            "WHERE r.status = 'complete' AND r.in_plan = 1")

    def columns(self, table: str = "runs") -> list[str]:
        return [row[1] for row in self.con.execute(f"PRAGMA table_info({quote(table)})")]

    # ----- the plan ----------------------------------------------------------------------------
    def register_plan(self, plan: SweepPlan) -> None:
        """Add parameter columns, upsert one `planned` row per run (keeping outcomes), mark the plan.

        A plan the table already holds (same rows, skips and description: its digest in `meta`) is not
        written again: each shard of a sweep registers the same plan, and 16 shards each rewriting
        32,000 rows in one transaction kept the others waiting past the lock timeout (16 shards of the
        test-bed rivals sweep on one GPU host: one died of "database is locked").
        """
        params = plan.param_columns()
        reserved = {n for n, _ in RUN_COLUMNS + CONFIG_COLUMNS + OUTCOME_COLUMNS}
        clash = sorted(set(params) & reserved)
        if clash:
            raise ValueError(f"intervention parameter columns {clash} clash with run columns")
        rows = [self._plan_row(run, params, plan.sweep.spec.name) for run in plan.runs]
        skipped = [(s.backbone, s.condition, s.reason, s.runs) for s in plan.skipped]
        meta = {
            "sweep": json.dumps(plan.sweep.spec.model_dump(mode="json")),
            "source": str(plan.sweep.source or ""),
            "conditions": json.dumps([c.label for c in plan.sweep.conditions]),
            "swept": json.dumps({c.label: list(c.swept) for c in plan.sweep.conditions}),
            "prompts": json.dumps([{"id": p.id, "text": p.text} for p in plan.sweep.prompts]),
            "backbones": json.dumps([b.name for b in plan.sweep.spec.backbones]),
            "param_columns": json.dumps(params),
        }
        digest = hashlib.sha256(json.dumps([rows, skipped, meta], sort_keys=True).encode()).hexdigest()
        if self.meta().get("plan_digest") == digest:  # no lock taken at all: a resumed shard
            return
        meta["plan_digest"] = digest
        with self.transaction() as con:
            if self.meta().get("plan_digest") == digest:  # shards started together: the first one wrote it
                return
            existing = set(self.columns())
            added = False
            for column in params:
                if column not in existing:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {quote(column)}")
                    added = True
            if added:
                self._create_view(con)  # re-expand r.* with the new columns
            con.execute("UPDATE runs SET in_plan = 0")
            for row in rows:
                names = list(row)
                updates = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in ("run_hash", "status"))
                con.execute(
                    f"INSERT INTO runs ({', '.join(map(quote, names))}) VALUES ({', '.join('?' * len(names))}) "
                    f"ON CONFLICT(run_hash) DO UPDATE SET {updates}",
                    [row[n] for n in names])
            con.execute("DELETE FROM skipped")
            con.executemany("INSERT INTO skipped VALUES (?, ?, ?, ?)", skipped)
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))

    @staticmethod
    def _plan_row(run: SweepRun, params: dict[str, str], sweep: str) -> dict[str, Any]:
        config = run.resolved
        row: dict[str, Any] = {
            "run_hash": run.run_hash, "status": "planned", "in_plan": 1, "plan_index": run.index,
            "sweep": sweep, "backbone": run.backbone, "backbone_plugin": run.backbone_plugin,
            "condition": run.condition, "family": run.family, "is_baseline": int(run.is_baseline),
            "prompt_id": run.prompt_id, "seed": run.seed, "mode": run.mode,
        }
        for column, key in params.items():
            row[column] = _sql_value(run.params.get(key))
        for name, _ in CONFIG_COLUMNS:
            if name == "config":  # where it was written is not what it is
                row[name] = json.dumps({k: v for k, v in config.items() if k != "out_dir"}, sort_keys=True)
            elif name == "run_dir":  # relative to the sweep directory, so the directory can move
                row[name] = f"{RUNS_DIR}/{Path(run.run_dir).name}"
            else:
                row[name] = _sql_value(config.get(name))
        return row

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta"))

    # ----- outcomes --------------------------------------------------------------------------
    def stored_sha(self) -> dict[str, str | None]:
        return dict(self.con.execute("SELECT run_hash, record_sha256 FROM runs WHERE status = 'complete'"))

    def record_complete(self, run: SweepRun, record: dict[str, Any], attempts: int = 1, host: str = "") -> None:
        """Write a complete run's outcome and every metric value in one transaction."""
        raw = (Path(run.run_dir) / RECORD_NAME).read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        wanted = set(run.metric_keys)
        rows = []
        for item in metric_rows(record):
            if item["key"] not in wanted:
                continue
            value = item["value"]
            numeric = isinstance(value, (int, float)) and not isinstance(value, str)
            params = (record["metrics"][item["key"]] or {}).get("params")
            rows.append((run.run_hash, item["metric"], item["key"], item["value_name"],
                         float(value) if numeric else None, None if numeric or value is None else str(value),
                         json.dumps(params, sort_keys=True)))
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status = 'complete', created = ?, wall_time_s = ?, record_sha256 = ?, host = ?, "
                "smoke_test = ?, attempts = ?, error = NULL WHERE run_hash = ?",
                (record.get("created"), (record.get("wall_time_s") or {}).get("total"), sha, host,
                 int(bool(record.get("smoke_test"))), attempts, run.run_hash))
            con.execute("DELETE FROM metrics WHERE run_hash = ?", (run.run_hash,))
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def record_failure(self, run: SweepRun, error: str, attempts: int) -> None:
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'failed', error = ?, attempts = ? WHERE run_hash = ?",
                        (error, attempts, run.run_hash))
            con.execute("DELETE FROM metrics WHERE run_hash = ?", (run.run_hash,))

    def mark_planned(self, run: SweepRun) -> None:
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'planned' WHERE run_hash = ?", (run.run_hash,))
            con.execute("DELETE FROM metrics WHERE run_hash = ?", (run.run_hash,))

    def status_counts(self) -> dict[str, int]:
        return dict(self.con.execute("SELECT status, COUNT(*) FROM runs WHERE in_plan = 1 GROUP BY status"))

    # ----- reading -----------------------------------------------------------------------------
    def rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        return fetch_rows(self.con, sql, params)

    def results(self, stable: bool = False) -> list[dict[str, Any]]:
        """The results view, ordered; `stable` drops the columns that differ between executions."""
        rows = self.rows("SELECT * FROM results ORDER BY plan_index, metric_key, value_name")
        if stable:
            for row in rows:
                for name in VOLATILE_COLUMNS:
                    row.pop(name, None)
        return rows


def record_sha(run: SweepRun) -> str | None:
    try:
        return hashlib.sha256((Path(run.run_dir) / RECORD_NAME).read_bytes()).hexdigest()
    except OSError:
        return None


# ----- what a report reads -------------------------------------------------------------------------
@dataclass
class ReportData:
    """A sweep's plan, outcomes and metric values as `inertia report` uses them."""

    out: Path
    name: str
    meta: dict[str, str]
    backbones: list[str]
    conditions: list[str]
    runs: list[dict[str, Any]]  # rows of `runs` in the plan
    observations: list[Observation]
    params: dict[str, dict[str, Any]]  # condition -> {"relax.beta": 0.75, ...}
    families: dict[str, str]
    skipped: list[dict[str, Any]]
    report_options: dict[str, Any]

    @property
    def complete(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "complete"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "failed"]


def load_report_data(out: Path) -> ReportData:
    """Read a sweep directory's table without writing to it (`ResultStore` would create and migrate)."""
    path = Path(out) / DB_NAME
    if not path.is_file():
        raise InertiaError(f"report: no {DB_NAME} in {out}: run `inertia sweep FILE --out {out}` first")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        runs = fetch_rows(con, "SELECT * FROM runs WHERE in_plan = 1 ORDER BY plan_index")
        values = con.execute(
            "SELECT r.backbone, r.condition, r.prompt_id, r.seed, m.metric_key, m.value_name, m.value FROM metrics m "
            "JOIN runs r ON r.run_hash = m.run_hash WHERE r.status = 'complete' AND r.in_plan = 1 AND m.value IS NOT NULL").fetchall()
        skipped = [dict(zip(("backbone", "condition", "reason", "runs"), row)) for row in con.execute("SELECT * FROM skipped")]
    finally:
        con.close()
    spec = json.loads(meta.get("sweep", "{}"))
    param_columns: dict[str, str] = json.loads(meta.get("param_columns", "{}"))
    params: dict[str, dict[str, Any]] = {}
    families: dict[str, str] = {}
    for run in runs:
        if run["condition"] not in params:
            params[run["condition"]] = {key: _decode(run.get(col)) for col, key in param_columns.items() if run.get(col) is not None}
            families[run["condition"]] = run["family"]
    observations = [Observation(b, c, p, s, f"{k}.{v}", float(x)) for b, c, p, s, k, v, x in values]
    present = {r["condition"] for r in runs}
    conditions = [c for c in json.loads(meta.get("conditions", "[]")) if c in present]
    backbones = [b for b in json.loads(meta.get("backbones", "[]")) if any(r["backbone"] == b for r in runs)]
    return ReportData(Path(out), spec.get("name", Path(out).name), meta, backbones, conditions, runs, observations,
                      params, families, skipped, spec.get("report") or {})


def _decode(value: Any) -> Any:
    """A parameter column's value: lists and mappings are stored as JSON text (`_sql_value`)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
