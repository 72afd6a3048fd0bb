"""KV object formats and the pure decisions over them (no I/O).

Every KV object is a sealed blob (see :mod:`objstore.codec`) whose payload is::

    header length u32 LE | canonical JSON header | binary entries

Entries are ``u32 key length | key`` for a delete batch and ``u32 key length | key | u32 value
length | value`` for a put batch or a snapshot. The header carries ``format``, ``kind`` and
the object's ``sequence``, which is checked against the key it was read from.

The manifest is sealed canonical JSON. Format 2 (written since snapshots got unique keys)
adds ``snapshot_id``: the snapshot is ``snapshots/{seq:020d}-{snapshot_id}``, one object per
compaction, so no two compactors ever share one and a sweep can delete any unreferenced one
(see :func:`plan_snapshot_sweep`). Format-1 manifests (no ``snapshot_id``) name the shared
key ``snapshots/{seq:020d}`` and are still read.

Format 3 (written once a sweep has retired a snapshot; a manifest with nothing retired is
still written as format 2, so older readers keep working until then) adds ``retired``:
``[[sequence, snapshot_id], ...]``, snapshots newer than the manifest's that a sweep has
condemned and deletes only *after* recording them here with a compare-and-swap. A manifest
never moves to a retired snapshot (:meth:`KVManifest.merged`), so a compaction whose manifest
swap is held in flight past the sweep's grace loses the swap's precondition instead of
referencing a deleted snapshot — whatever the clocks or delays. Entries at or below the
manifest's snapshot are dropped (the manifest can never reference them anyway).

A pruned log object becomes a tombstone (``op`` ``"pruned"``); since tombstones carry the
pruned batch's writer ``nonce``, a writer retrying an unanswered batch still recognises it
after a prune (tombstones without one are still read).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from objstore._checks import is_int
from objstore.codec import canonical_json, open_document, open_framed, seal
from objstore.errors import CorruptionError
from objstore.kv._segment import SEGMENT_PREFIX, SegmentRef, segment_generation

__all__ = [
    "KV_FORMAT",
    "KV_MANIFEST_FORMAT",
    "KVBatch",
    "KVManifest",
    "LogStamp",
    "SnapshotSweep",
    "decode_batch",
    "decode_manifest",
    "decode_snapshot",
    "describe_log_object",
    "encode_batch",
    "encode_manifest",
    "encode_snapshot",
    "encode_tombstone",
    "commit_compaction",
    "contiguous_tail",
    "log_key",
    "parse_snapshot_key",
    "plan_merge",
    "plan_snapshot_sweep",
    "plan_sweep",
    "sequence_of",
    "snapshot_key",
]

KV_FORMAT = 1
"""Format version of KV log objects (batches, tombstones) and snapshots."""
KV_MANIFEST_FORMAT = 4
"""Format version of the KV manifest this code writes (segment runs and a generation; it
reads 1, 2, 3 and 4)."""
_MANIFEST_FORMATS = frozenset({1, 2, 3, KV_MANIFEST_FORMAT})

LOG_PREFIX = "kv/log"
SNAPSHOT_PREFIX = "kv/snapshots"
MANIFEST_KEY = "kv/manifest"
_U32 = struct.Struct("<I")
_BATCH_KIND = "objstore.kv-batch"
_SNAPSHOT_KIND = "objstore.kv-snapshot"
_MANIFEST_KIND = "objstore.kv-manifest"


def log_key(sequence: int) -> str:
    """The log object that *is* batch ``sequence`` (20 digits: list order = numeric order)."""
    return f"{LOG_PREFIX}/{sequence:020d}"


def snapshot_key(sequence: int, snapshot_id: str = "") -> str:
    """The snapshot object holding every live key after batch ``sequence``, written by the
    compaction ``snapshot_id`` (``""``: the shared key of format-1 stores)."""
    if snapshot_id:
        return f"{SNAPSHOT_PREFIX}/{sequence:020d}-{snapshot_id}"
    return f"{SNAPSHOT_PREFIX}/{sequence:020d}"


def _is_snapshot_id(text: str) -> bool:
    return text.isascii() and text.isalnum()


def parse_snapshot_key(key: str) -> tuple[int, str] | None:
    """``(sequence, snapshot_id)`` of a snapshot key (id ``""`` for a format-1 key), or
    ``None`` for a key that is not a snapshot's."""
    name = key[len(SNAPSHOT_PREFIX) + 1 :] if key.startswith(SNAPSHOT_PREFIX + "/") else ""
    digits, _, snapshot_id = name.partition("-")
    if not (digits.isascii() and digits.isdigit()):
        return None
    if "-" in name and not _is_snapshot_id(snapshot_id):
        return None
    return int(digits), snapshot_id


def sequence_of(key: str, prefix: str) -> int | None:
    """The sequence number a ``prefix/{digits}`` key names, or ``None`` for foreign keys."""
    name = key[len(prefix) + 1 :] if key.startswith(prefix + "/") else ""
    return int(name) if name.isdigit() and name.isascii() else None


def contiguous_tail(after: int, sequences: Iterable[int]) -> list[int]:
    """The sequences ``after + 1, after + 2, …`` present in ``sequences``, up to the first gap.

    A sequence is visible only when it and all below it are durable, so anything past a
    gap is hidden until the gap is filled.
    """
    present = set(sequences)
    tail: list[int] = []
    while after + len(tail) + 1 in present:
        tail.append(after + len(tail) + 1)
    return tail


# -- batches ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KVBatch:
    """One committed batch: ``kind`` ``"put"`` with its ``pairs``, or ``"delete"`` with its
    ``keys`` (``pairs`` then empty). Pairs and keys are in the order they were given."""

    sequence: int
    kind: Literal["put", "delete"]
    pairs: tuple[tuple[bytes, bytes], ...] = ()
    keys: tuple[bytes, ...] = ()


def _frame(header: Mapping[str, Any], body: Iterable[bytes]) -> bytes:
    encoded = canonical_json(header)
    return seal(b"".join([_U32.pack(len(encoded)), encoded, *body]))


def _entries(pairs: Iterable[tuple[bytes, bytes]]) -> Iterable[bytes]:
    for key, value in pairs:
        yield _U32.pack(len(key))
        yield key
        yield _U32.pack(len(value))
        yield value


def encode_batch(batch: KVBatch, nonce: str) -> bytes:
    """The sealed log object for ``batch``. ``nonce`` makes each attempt's bytes unique, so a
    retried create can recognise its own write whose response was lost."""
    header = {
        "format": KV_FORMAT,
        "kind": _BATCH_KIND,
        "op": batch.kind,
        "sequence": batch.sequence,
        "count": len(batch.pairs) if batch.kind == "put" else len(batch.keys),
        "nonce": nonce,
    }
    if batch.kind == "put":
        return _frame(header, _entries(batch.pairs))
    return _frame(header, (part for key in batch.keys for part in (_U32.pack(len(key)), key)))


def encode_tombstone(sequence: int, nonce: str = "") -> bytes:
    """What a pruned log object is overwritten with: the slot stays taken (so no writer can
    ever create batch ``sequence`` again) but the batch's data is gone. ``nonce`` is the
    pruned batch's writer nonce, so the writer's retry can still recognise its batch
    (``""``: unknown, the form tombstones had before they kept it)."""
    header: dict[str, Any] = {
        "format": KV_FORMAT,
        "kind": _BATCH_KIND,
        "op": "pruned",
        "sequence": sequence,
    }
    if nonce:
        header["nonce"] = nonce
    return _frame(header, [])


@dataclass(frozen=True, slots=True)
class LogStamp:
    """Whose a log object is: ``pruned`` for a tombstone, and the writer ``nonce`` of its
    batch (``None`` when it does not say: a tombstone written before they kept it)."""

    pruned: bool
    nonce: str | None


def describe_log_object(blob: bytes, *, key: str, sequence: int) -> LogStamp:
    """The :class:`LogStamp` of log object ``sequence`` (header only, entries unread);
    :class:`CorruptionError` if damaged or not batch ``sequence``."""
    header, _ = _open(blob, key=key, kind=_BATCH_KIND, sequence=sequence)
    nonce = header.get("nonce")
    return LogStamp(header.get("op") == "pruned", nonce if isinstance(nonce, str) else None)


class _Reader:
    def __init__(self, data: bytes, offset: int, key: str) -> None:
        self.data, self.offset, self.key = data, offset, key

    def take(self) -> bytes:
        end = self.offset + _U32.size
        if end > len(self.data):
            raise CorruptionError(self.key, "entry runs past the end")
        (length,) = _U32.unpack_from(self.data, self.offset)
        if end + length > len(self.data):
            raise CorruptionError(self.key, "entry runs past the end")
        self.offset = end + length
        return self.data[end : end + length]


def _open(blob: bytes, *, key: str, kind: str, sequence: int) -> tuple[dict[str, Any], _Reader]:
    header, payload, end = open_framed(blob, key=key, formats=(KV_FORMAT,), kind=kind)
    if header.get("sequence") != sequence:
        raise CorruptionError(
            key, "sequence does not match the key", expected=sequence, actual=header.get("sequence")
        )
    return header, _Reader(payload, end, key)


def _count(header: Mapping[str, Any], key: str) -> int:
    count = header.get("count")
    if not is_int(count) or count < 0:
        raise CorruptionError(key, f"bad entry count {count!r}")
    return count


def _finish(reader: _Reader) -> None:
    if reader.offset != len(reader.data):
        raise CorruptionError(reader.key, "trailing bytes after the last entry")


def decode_batch(blob: bytes, *, key: str, sequence: int) -> KVBatch | None:
    """The batch in a log object, ``None`` for a tombstone (a pruned batch);
    :class:`CorruptionError` if damaged or not batch ``sequence``.

    Raises:
        CorruptionError: if the object is damaged, is not batch ``sequence`` or has an unknown op.
    """
    header, reader = _open(blob, key=key, kind=_BATCH_KIND, sequence=sequence)
    op = header.get("op")
    if op == "pruned":
        return None
    count = _count(header, key)
    if op == "put":
        pairs = tuple((reader.take(), reader.take()) for _ in range(count))
        _finish(reader)
        return KVBatch(sequence, "put", pairs=pairs)
    if op == "delete":
        keys = tuple(reader.take() for _ in range(count))
        _finish(reader)
        return KVBatch(sequence, "delete", keys=keys)
    raise CorruptionError(key, f"unknown batch op {op!r}")


# -- snapshots -------------------------------------------------------------------------------


def encode_snapshot(sequence: int, items: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The sealed snapshot of every live key (``items`` sorted by key) after ``sequence``."""
    header = {
        "format": KV_FORMAT,
        "kind": _SNAPSHOT_KIND,
        "sequence": sequence,
        "count": len(items),
    }
    return _frame(header, _entries(items))


def decode_snapshot(blob: bytes, *, key: str, sequence: int) -> dict[bytes, bytes]:
    """The key/value map in a snapshot object; :class:`CorruptionError` if damaged."""
    header, reader = _open(blob, key=key, kind=_SNAPSHOT_KIND, sequence=sequence)
    state = {reader.take(): reader.take() for _ in range(_count(header, key))}
    _finish(reader)
    return state


# -- manifest --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KVManifest:
    """Where a reader starts: batches ``1..snapshot`` are folded into the compacted state —
    the sorted ``runs`` of segments (newest run first; a run's segments are disjoint and in
    key order), or, while ``legacy``, the snapshot object :attr:`snapshot_key` a store of
    format 1-3 wrote (written by compaction ``snapshot_id``; ``""`` in format-1 stores).
    Batches below ``retained_from`` are pruned (``retained_from <= snapshot + 1``); log
    objects below ``tombstoned_below`` are tombstones already. ``generation`` grows with every
    compaction commit and every sweep that condemns segments: a compaction commits only onto
    the generation it read, so two compactors never both win and a sweep can fence every
    compaction in flight (format 4). ``retired`` lists snapshots a format-3 sweep condemned
    (read, never written)."""

    snapshot: int = 0
    retained_from: int = 1
    tombstoned_below: int = 1
    snapshot_id: str = ""
    retired: tuple[tuple[int, str], ...] = ()
    runs: tuple[tuple[SegmentRef, ...], ...] = ()
    generation: int = 0
    legacy: bool = False

    @property
    def snapshot_key(self) -> str:
        """The key of the legacy snapshot readers start from (meaningful only while
        :attr:`legacy`)."""
        return snapshot_key(self.snapshot, self.snapshot_id)

    @property
    def segments(self) -> tuple[SegmentRef, ...]:
        """Every segment the manifest references, newest run first."""
        return tuple(segment for run in self.runs for segment in run)

    def merged(self, other: KVManifest) -> KVManifest:
        """The stored manifest (``self``) with the marks of ``other`` merged in by maximum
        (``retained_from``, ``tombstoned_below``, ``generation``): what a compare-and-swap
        retry of a prune or a sweep writes, so racing maintainers never move a mark
        backward. The compacted state (snapshot, runs) is always ``self``'s: only
        :func:`commit_compaction` moves it."""
        return KVManifest(
            self.snapshot,
            max(self.retained_from, other.retained_from),
            max(self.tombstoned_below, other.tombstoned_below),
            self.snapshot_id,
            self.retired,
            self.runs,
            max(self.generation, other.generation),
            self.legacy,
        )


def commit_compaction(
    stored: KVManifest, read: KVManifest, snapshot: int, runs: tuple[tuple[SegmentRef, ...], ...]
) -> KVManifest | None:
    """The manifest a compaction that read ``read`` writes over ``stored``: compacted state
    through ``snapshot`` as ``runs``, the next generation, the stored marks kept; ``None``
    when it lost (``stored`` moved to another generation since: another compaction
    committed, or a sweep condemned the segments in flight)."""
    if stored.generation != read.generation or stored.snapshot != read.snapshot:
        return None
    return KVManifest(
        snapshot,
        stored.retained_from,
        stored.tombstoned_below,
        "",
        (),
        runs,
        stored.generation + 1,
        False,
    )


def plan_merge(tail_entries: int, run_entries: Sequence[int], max_runs: int) -> int:
    """How many of the newest runs (``run_entries`` entries each, newest first) a compaction
    folds together with the log tail (``tail_entries`` distinct keys): size-tiered — a run
    joins while it holds at most twice what is merged so far, or while keeping it apart
    would leave more than ``max_runs`` runs. Write amplification stays logarithmic in the
    data."""
    merged, total = 0, tail_entries
    while merged < len(run_entries):
        runs_after = 1 + len(run_entries) - merged
        if run_entries[merged] <= 2 * total or runs_after > max_runs:
            total += run_entries[merged]
            merged += 1
        else:
            break
    return merged


def _segment_document(segment: SegmentRef) -> list[Any]:
    return [
        segment.name,
        segment.first.hex(),
        segment.last.hex(),
        segment.count,
        segment.size,
        segment.index_offset,
        segment.index_length,
    ]


def _decode_segment(raw: Any, key: str) -> SegmentRef:
    try:
        name, first, last, count, size, offset, length = raw
        ref = SegmentRef(
            name, bytes.fromhex(first), bytes.fromhex(last), count, size, offset, length
        )
    except (TypeError, ValueError) as exc:
        raise CorruptionError(key, f"bad segment entry {raw!r}") from exc
    numbers = (ref.count, ref.size, ref.index_offset, ref.index_length)
    if (
        not isinstance(ref.name, str)
        or segment_generation(ref.name) is None
        or not all(is_int(n) and n >= 0 for n in numbers)
        or ref.index_offset + ref.index_length != ref.size
        or ref.first > ref.last
    ):
        raise CorruptionError(key, f"bad segment entry {raw!r}")
    return ref


def encode_manifest(manifest: KVManifest, nonce: str) -> bytes:
    """The sealed manifest object (canonical JSON), format :data:`KV_MANIFEST_FORMAT`."""
    document: dict[str, Any] = {
        "format": KV_MANIFEST_FORMAT,
        "kind": _MANIFEST_KIND,
        "snapshot": manifest.snapshot,
        "retained_from": manifest.retained_from,
        "tombstoned_below": manifest.tombstoned_below,
        "generation": manifest.generation,
        "runs": [[_segment_document(s) for s in run] for run in manifest.runs],
        "nonce": nonce,
    }
    if manifest.legacy:
        document["legacy_snapshot_id"] = manifest.snapshot_id
    return seal(canonical_json(document))


def _decode_retired(document: Mapping[str, Any], key: str) -> tuple[tuple[int, str], ...]:
    raw = document.get("retired", []) if document["format"] == 3 else []
    if not isinstance(raw, list):
        raise CorruptionError(key, f"bad manifest field retired={raw!r}")
    retired: list[tuple[int, str]] = []
    for entry in raw:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and is_int(entry[0])
            and entry[0] > 0
            and isinstance(entry[1], str)
            and (not entry[1] or _is_snapshot_id(entry[1]))
        ):
            raise CorruptionError(key, f"bad retired snapshot {entry!r}")
        retired.append((entry[0], entry[1]))
    return tuple(sorted(retired))


def _decode_runs(document: Mapping[str, Any], key: str) -> tuple[tuple[SegmentRef, ...], ...]:
    raw = document.get("runs")
    if not isinstance(raw, list) or not all(isinstance(run, list) for run in raw):
        raise CorruptionError(key, f"bad manifest field runs={raw!r}")
    runs = tuple(tuple(_decode_segment(entry, key) for entry in run) for run in raw)
    for run in runs:
        if not run or any(a.last >= b.first for a, b in itertools.pairwise(run)):
            raise CorruptionError(key, "a run's segments are empty, overlap or are unsorted")
    return runs


def decode_manifest(blob: bytes, *, key: str) -> KVManifest:
    """The manifest in a blob (format 1, 2, 3 or 4); :class:`CorruptionError` if damaged or
    inconsistent.

    Raises:
        CorruptionError: if the blob is damaged, a field is malformed or the fields are
            inconsistent.
    """
    document = open_document(blob, key=key, formats=_MANIFEST_FORMATS, kind=_MANIFEST_KIND)
    fields: list[int] = []
    for name in ("snapshot", "retained_from", "tombstoned_below"):
        value = document.get(name)
        if not is_int(value) or value < 0:
            raise CorruptionError(key, f"bad manifest field {name}={value!r}")
        fields.append(value)
    if document["format"] >= 4:
        legacy_id = document.get("legacy_snapshot_id")
        legacy = legacy_id is not None
        snapshot_id = legacy_id if legacy else ""
        generation = document.get("generation")
        if not is_int(generation) or generation < 0:
            raise CorruptionError(key, f"bad manifest field generation={generation!r}")
        runs = _decode_runs(document, key)
        if legacy and (runs or not fields[0]):
            raise CorruptionError(key, "a legacy snapshot next to segments, or of nothing")
    else:
        snapshot_id = document.get("snapshot_id", "") if document["format"] > 1 else ""
        legacy, generation, runs = fields[0] > 0, 0, ()
    if not isinstance(snapshot_id, str) or (snapshot_id and not _is_snapshot_id(snapshot_id)):
        raise CorruptionError(key, f"bad manifest field snapshot_id={snapshot_id!r}")
    retired = _decode_retired(document, key)
    manifest = KVManifest(
        fields[0], fields[1], fields[2], snapshot_id, retired, runs, generation, legacy
    )
    if not 1 <= manifest.tombstoned_below <= manifest.retained_from <= manifest.snapshot + 1:
        raise CorruptionError(key, f"inconsistent manifest {manifest!r}")
    return manifest


# -- sweeping unreferenced snapshots ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotSweep:
    """What a sweep may delete, given a listing of ``snapshots/`` and a manifest read *after*
    it: ``now`` — snapshots the manifest can never reference again (below its snapshot, or
    at its sequence but another compaction's: the manifest's snapshot only grows, and of
    equal sequences the stored one is kept; or retired in it); ``if_old`` — snapshots newer
    than the manifest's, which a running compaction may still be about to reference, so they may go
    only once old by the store's clock (:meth:`old`) *and* retired in the manifest first."""

    now: tuple[str, ...]
    if_old: tuple[tuple[str, float | None], ...]

    def old(self, store_now: float | None, grace_seconds: float) -> tuple[str, ...]:
        """The ``if_old`` keys written at least ``grace_seconds`` before ``store_now`` (a
        time from the store's clock; ``None``, or a listing without times, keeps them)."""
        if store_now is None:
            return ()
        return tuple(
            key
            for key, mtime in self.if_old
            if mtime is not None and store_now - mtime >= grace_seconds
        )


def plan_snapshot_sweep(
    listing: Iterable[tuple[str, float | None]], manifest: KVManifest
) -> SnapshotSweep:
    """Sort listed ``(key, mtime)`` snapshots into :class:`SnapshotSweep` ``now`` / ``if_old``;
    the manifest's own snapshot and keys that are not snapshots are never in either."""
    now: list[str] = []
    if_old: list[tuple[str, float | None]] = []
    referenced = manifest.snapshot_key if manifest.snapshot else None
    for key, mtime in listing:
        parsed = parse_snapshot_key(key)
        if parsed is None or key == referenced:
            continue
        if parsed[0] <= manifest.snapshot or parsed in manifest.retired:
            now.append(key)
        else:
            if_old.append((key, mtime))
    return SnapshotSweep(tuple(now), tuple(if_old))


def plan_sweep(
    segments: Iterable[tuple[str, float | None]],
    snapshots: Iterable[tuple[str, float | None]],
    manifest: KVManifest,
) -> SnapshotSweep:
    """What a sweep may delete, given listings of ``segments/`` and ``snapshots/`` and a
    manifest read *after* them.

    A segment the manifest does not reference is dead for good when it was written against
    an older generation than the manifest's (its compaction committed and was replaced, or
    lost): ``now``. One of the manifest's generation may belong to a compaction still in
    flight: ``if_old``, to be condemned by bumping the generation first. Legacy snapshots
    other than the manifest's go at once once a format-4 compaction or sweep has moved the
    generation (no format-3 compactor can write a format-4 manifest); before that, only
    those :func:`plan_snapshot_sweep` sends ``now``.
    """
    referenced = {segment.name for segment in manifest.segments}
    now: list[str] = []
    if_old: list[tuple[str, float | None]] = []
    for key, mtime in segments:
        name = key[len(SEGMENT_PREFIX) + 1 :] if key.startswith(SEGMENT_PREFIX + "/") else ""
        generation = segment_generation(name)
        if generation is None or name in referenced:
            continue
        if generation < manifest.generation:
            now.append(key)
        else:
            if_old.append((key, mtime))
    if manifest.generation == 0:
        now += plan_snapshot_sweep(snapshots, manifest).now
    else:
        base = manifest.snapshot_key if manifest.legacy else None
        now += [key for key, _ in snapshots if parse_snapshot_key(key) and key != base]
    return SnapshotSweep(tuple(now), tuple(if_old))
