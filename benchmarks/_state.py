"""Realistic checkpoint state, as lists (or lazy streams) of bytes chunks.

Two shapes that real stream processors checkpoint:

* ``records``: pickled lists of event records (int ids, short categorical strings, a
  formatted user id, float amounts, increasing timestamps) - what a Python operator's keyed
  state looks like once pickled;
* ``columns``: int64 columns as a columnar engine holds them - sorted ids, timestamps and a
  random-walk measure (cumulative sums of small steps) and a low-cardinality code column.

Both compress like real data (about 3.8x and 7x at zstd level 3), neither is random noise
nor zeros. Generation is seeded, so every run measures the same bytes.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import numpy as np

__all__ = ["CHUNK_BYTES", "STATES", "column_chunks", "make_state", "record_chunks"]

CHUNK_BYTES = 8 * 1024 * 1024
"""Target size of one chunk (one operator's state, one zstd frame)."""

_EVENTS = ["click", "view", "purchase", "refund", "login", "logout", "search", "add_to_cart"]
_COUNTRIES = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL", "ES", "IT"]
_RECORDS_PER_CHUNK = 150_000  # about 8 MiB pickled


def record_chunks(total: int, *, seed: int = 0) -> Iterator[bytes]:
    """Pickled record batches until at least ``total`` bytes have been produced."""
    rng = np.random.default_rng(seed)
    produced = 0
    next_id = 0
    timestamp = 1_700_000_000_000
    while produced < total:
        n = _RECORDS_PER_CHUNK
        users = rng.integers(0, 1_000_000, n).tolist()
        events = rng.integers(0, len(_EVENTS), n).tolist()
        countries = rng.integers(0, len(_COUNTRIES), n).tolist()
        amounts = np.round(rng.gamma(2.0, 20.0, n), 2).tolist()
        stamps = (timestamp + np.cumsum(rng.integers(0, 50, n))).tolist()
        timestamp = stamps[-1]
        records = [
            {
                "id": next_id + i,
                "user": f"user-{users[i]:07d}",
                "event": _EVENTS[events[i]],
                "country": _COUNTRIES[countries[i]],
                "amount": amounts[i],
                "ts": stamps[i],
            }
            for i in range(n)
        ]
        next_id += n
        chunk = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        produced += len(chunk)
        yield chunk


def column_chunks(total: int, *, seed: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """int64 column slices of ``chunk_bytes`` each until ``total`` bytes, generated lazily
    (so a 1 GiB stream never exists at once)."""
    rng = np.random.default_rng(seed)
    n = chunk_bytes // 8
    ids, stamps, level = 0, 1_700_000_000_000, 10_000
    produced = 0
    kind = 0
    while produced < total:
        if kind == 0:  # sorted ids with small gaps
            column = ids + np.cumsum(rng.integers(1, 4, n, dtype=np.int64))
            ids = int(column[-1])
        elif kind == 1:  # event-time timestamps in ms
            column = stamps + np.cumsum(rng.integers(0, 20, n, dtype=np.int64))
            stamps = int(column[-1])
        elif kind == 2:  # low-cardinality codes
            column = rng.integers(0, 200, n, dtype=np.int64)
        else:  # a measure drifting as a random walk
            column = level + np.cumsum(rng.integers(-50, 51, n, dtype=np.int64))
            level = int(column[-1])
        kind = (kind + 1) % 4
        chunk = column.tobytes()
        produced += len(chunk)
        yield chunk


STATES = ("records", "columns")


def make_state(kind: str, total: int, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """All chunks of a ``kind`` state of about ``total`` bytes, held in memory, in chunks of
    about ``chunk_bytes`` (record batches are joined until a chunk reaches it)."""
    if kind == "records" and chunk_bytes == CHUNK_BYTES:
        return list(record_chunks(total))
    if kind == "records":
        chunks: list[bytes] = []
        group: list[bytes] = []
        for batch in record_chunks(total):
            group.append(batch)
            if sum(map(len, group)) >= chunk_bytes - CHUNK_BYTES // 2:
                chunks.append(b"".join(group))
                group = []
        if group:
            chunks.append(b"".join(group))
        return chunks
    if kind == "columns":
        return list(column_chunks(total, chunk_bytes=chunk_bytes))
    raise ValueError(f"unknown state kind {kind!r}")
