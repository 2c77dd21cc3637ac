"""The activity history's SQLite database: schema, writes, pruning and the API's reads.

Why plain synchronous code: one process (store_process.py) owns the one connection and
calls these in turn, so nothing here knows about the event loop, and the functions are
tested directly against a real database.  File databases use WAL (readers never block
the writer; a crash loses at most the last unfinished transaction) and a busy timeout
instead of failing at once when an outside reader holds a lock.

Rows keep the API's figures: unknown token counts and speeds are -1, the timestamp is
unix seconds (fractions kept), the scheduler's notes are JSON text.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from llama_swap.runtime.core import json_codec
from llama_swap.runtime.http.observe.activity_query import (
    SORT_COLUMNS,
    ActivityQuery,
    histogram,
    total_pages,
)
from llama_swap.runtime.http.observe.token_parse import (
    TOKEN_FIELDS,
    has_markers,
    merge_document,
    with_rates,
)

MEMORY = ":memory:"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

_COLUMNS = (
    "id", "ts_created", "model_id", "req_path", "resp_content_type", "resp_status_code",
    *TOKEN_FIELDS, "duration_ms", "error_msg", "metadata_json",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_created REAL NOT NULL,
    model_id TEXT NOT NULL,
    req_path TEXT NOT NULL,
    resp_content_type TEXT NOT NULL DEFAULT '',
    resp_status_code INTEGER NOT NULL DEFAULT 0,
    cache_tokens INTEGER NOT NULL DEFAULT -1,
    draft_tokens INTEGER NOT NULL DEFAULT -1,
    draft_acc_tokens INTEGER NOT NULL DEFAULT -1,
    input_tokens INTEGER NOT NULL DEFAULT -1,
    output_tokens INTEGER NOT NULL DEFAULT -1,
    prompt_per_second REAL NOT NULL DEFAULT -1,
    tokens_per_second REAL NOT NULL DEFAULT -1,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    error_msg TEXT NOT NULL DEFAULT '',
    metadata_json TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS activity_time ON activity (ts_created DESC, id DESC);
CREATE INDEX IF NOT EXISTS activity_model ON activity (model_id, ts_created DESC, id DESC);
"""

_INSERT = (
    f"INSERT OR REPLACE INTO activity ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)

Row = tuple[Any, ...]
# An entry as the proxy hands it to the writer (see `row_of_raw`): id, unix time, model,
# request path, response content type, status, duration in ms, the answer's JSON body still
# to parse for token figures (or None), the figures already known, the processing time
# already known (or None), the error message ("" for none), the scheduler's notes (or None).
RawEntry = tuple[
    int, float, str, str, str, int, float, bytes | None, dict[str, Any], float | None, str,
    dict[str, Any] | None,
]


class StoreError(Exception):
    """The database cannot be used (corrupt, locked, unreadable); the message says why."""


def connect(path: str, busy_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open (creating if needed) and check the database; StoreError if it is unusable."""
    try:
        conn = sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        if path != MEMORY:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot use WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"{path}: database is corrupt: {check}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path}: written by a newer llama-swap (schema {version})")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")  # can we write? (not if another writer holds it)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: {exc}") from exc
    except StoreError:
        conn.close()
        raise
    return conn


def last_id(conn: sqlite3.Connection) -> int:
    """The highest id ever given (kept by AUTOINCREMENT even when its row was pruned)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'activity'").fetchone()
    top = conn.execute("SELECT MAX(id) FROM activity").fetchone()[0]
    return max(int(row[0]) if row else 0, int(top or 0))


def _text(value: Any) -> str:
    """A string SQLite can store: lone surrogates (a client may send them escaped in
    JSON) become "?" instead of failing the whole batch."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _figures(tokens: Mapping[str, Any]) -> list[float | int]:
    """The token counts and rates as stored, in TOKEN_FIELDS order: unknown,
    non-numeric (booleans included) or non-finite is -1."""
    out: list[float | int] = []
    for key in TOKEN_FIELDS:
        value = tokens.get(key, -1)
        kind = type(value)
        if kind is not int and (kind is not float or not math.isfinite(value)):
            value = -1
        out.append(value)
    return out


def row(
    *, id: int, ts: float, model: str, req_path: str, content_type: str, status: int,
    tokens: Mapping[str, Any], duration_ms: int, error_msg: str,
    metadata: Mapping[str, Any] | None,
) -> Row:
    """One table row, in `_COLUMNS` order, every value one SQLite takes (see `_text`)."""
    return (
        id, ts, _text(model), _text(req_path), _text(content_type), status,
        *_figures(tokens), duration_ms, _text(error_msg),
        json_codec.dumps(metadata, sort_keys=True) if metadata else "",
    )


def row_of(entry: Mapping[str, Any]) -> Row:
    """An API entry (as the in-memory log renders it) as a table row."""
    return row_of_raw(raw_of(entry))[0]


def raw_of(entry: Mapping[str, Any]) -> RawEntry:
    """An API entry (as the in-memory log renders it) in the writer's form."""
    started = entry["timestamp"]
    ts = datetime.fromisoformat(started).timestamp() if isinstance(started, str) else started
    return (
        entry["id"], ts, entry["model"], entry["req_path"], entry["resp_content_type"],
        entry["resp_status_code"], entry["duration_ms"], None, dict(entry.get("tokens") or {}),
        None, entry.get("error_msg") or "", entry.get("metadata"),
    )


def row_of_raw(raw: RawEntry) -> tuple[Row, str, dict[str, Any]]:
    """The table row of an entry in the writer's form, its model and its token figures
    (the answer's body parsed here, as the in-memory log would)."""
    (id, ts, model, req_path, ctype, status, duration_ms, body, found, timing, error_msg,
     metadata) = raw
    if body is not None and has_markers(body):
        ms = merge_document(found, body)
        if ms is not None:
            timing = ms
    tokens = with_rates(found)
    return row(
        id=id, ts=ts, model=model, req_path=req_path, content_type=ctype, status=status,
        tokens=tokens, duration_ms=int(timing if timing is not None else duration_ms),
        error_msg=error_msg, metadata=metadata,
    ), model, tokens


def insert(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Write rows in one transaction."""
    with conn:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, rows)


def prune(conn: sqlite3.Connection, max_rows: int, older_than: float | None) -> int:
    """Delete rows beyond the newest `max_rows` and rows created before `older_than`
    (unix seconds; None: no age limit).  Returns how many went."""
    with conn:
        conn.execute("BEGIN")
        cur = conn.execute(
            "DELETE FROM activity WHERE id <= (SELECT MAX(id) FROM activity) - ?", (max_rows,)
        )
        gone = cur.rowcount
        if older_than is not None:
            gone += conn.execute("DELETE FROM activity WHERE ts_created < ?",
                                 (older_than,)).rowcount
    return max(gone, 0)


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM activity").fetchone()[0])


def _where(models: tuple[str, ...], query: ActivityQuery | None = None) -> tuple[str, list[Any]]:
    conds: list[str] = []
    args: list[Any] = []
    if models:
        conds.append(f"model_id IN ({', '.join('?' for _ in models)})")
        args.extend(models)
    if query is not None:
        if query.start is not None:
            conds.append("ts_created >= ?")
            args.append(query.start)
        if query.end is not None:  # inclusive at second precision
            conds.append("ts_created < ?")
            args.append(query.end + 1)
        if query.min_id:
            conds.append("id >= ?")
            args.append(query.min_id)
        if query.max_id:
            conds.append("id <= ?")
            args.append(query.max_id)
    return (" WHERE " + " AND ".join(conds) if conds else ""), args


def _entry(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    values = dict(zip(_COLUMNS, row, strict=True))
    entry: dict[str, Any] = {
        "id": values["id"],
        "timestamp": datetime.fromtimestamp(values["ts_created"]).astimezone().isoformat(),
        "model": values["model_id"],
        "req_path": values["req_path"],
        "resp_content_type": values["resp_content_type"],
        "resp_status_code": values["resp_status_code"],
        "tokens": {k: values[k] for k in TOKEN_FIELDS},
        "duration_ms": values["duration_ms"],
        "has_capture": False,
    }
    if values["error_msg"]:
        entry["error_msg"] = values["error_msg"]
    if values["metadata_json"]:
        try:
            entry["metadata"] = json.loads(values["metadata_json"])
        except ValueError:
            pass
    return entry


def list_page(conn: sqlite3.Connection, query: ActivityQuery) -> dict[str, Any]:
    """One page of entries with the totals, in the API's shape (`has_capture` false)."""
    where, args = _where(query.models, query)
    total = int(conn.execute(f"SELECT COUNT(*) FROM activity{where}", args).fetchone()[0])
    direction = "DESC" if query.descending else "ASC"
    column = SORT_COLUMNS[query.sort]
    order = f"id {direction}" if column == "id" else f"{column} {direction}, id {direction}"
    rows = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM activity{where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*args, query.limit, query.offset],
    ).fetchall()
    return {
        "data": [_entry(r) for r in rows],
        "page": query.page,
        "limit": query.limit,
        "total": total,
        "total_pages": total_pages(total, query.limit),
    }


def stats(conn: sqlite3.Connection, model: str) -> dict[str, Any]:
    """Totals and speed histograms over every row (of one model when `model` is set).
    Token totals add known (positive) counts only: unknown counts are stored as -1."""
    where, args = _where((model,) if model else ())
    requests, inputs, outputs, cached = conn.execute(
        "SELECT COUNT(*), "
        "COALESCE(SUM(CASE WHEN input_tokens > 0 THEN input_tokens END), 0), "
        "COALESCE(SUM(CASE WHEN output_tokens > 0 THEN output_tokens END), 0), "
        "COALESCE(SUM(CASE WHEN cache_tokens > 0 THEN cache_tokens END), 0) "
        f"FROM activity{where}", args,
    ).fetchone()
    speed = " AND " if where else " WHERE "
    prompt: list[float] = []
    gen: list[float] = []
    for p, g in conn.execute(
        f"SELECT prompt_per_second, tokens_per_second FROM activity{where}{speed}"
        "(prompt_per_second > 0 OR tokens_per_second > 0)", args,
    ):
        if p > 0:
            prompt.append(float(p))
        if g > 0:
            gen.append(float(g))
    return {
        "total_requests": requests,
        "total_input_tokens": inputs,
        "total_output_tokens": outputs,
        "total_cache_tokens": cached,
        "prompt_histogram": histogram(prompt),
        "gen_histogram": histogram(gen),
    }
