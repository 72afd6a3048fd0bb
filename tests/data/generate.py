"""Write the golden stored data under ``tests/data``: one small store per stored format.

Usage (from the repository root)::

    python tests/data/generate.py                 # add any missing <name>-format-<N> directory
    python tests/data/generate.py --out /tmp/gold # write every one afresh somewhere else

Each directory is named after the store and the format version its objects carry, taken from
the format constants of today's code (``objstore.sources.STATE_FORMAT`` and so on). A
directory that already exists under ``tests/data`` holds bytes a released version wrote, and
is never rewritten: when a format changes, bump its constant, run this script to add the new
directory beside the old one, and extend ``tests/test_format_compat.py`` — which reads back
every directory, and also runs this script into a temporary directory and reads that back
with the same checks, so the script and the data cannot drift apart.

What is not generated here, and why:

* ``checkpoint-format-<N>`` is named after the pointer format (``latest.txt``), the last
  checkpoint format to change; manifests and sidecars are still format 1.
* ``checkpoint-format-1`` was written by :class:`objstore.CheckpointStore` when the checkpoint
  store landed (commit 24cf837), then given a field a future version might add
  (``future_field``) to prove unknown fields are kept; ``kv-format-1`` (commit 0716182) was
  written by a KV store whose snapshots had no ids, which today's code no longer writes.
  Both are frozen as they are. ``kv-format-2`` (manifest format 2, tombstones without the
  pruned batch's nonce) and ``kv-format-3`` (a whole-state snapshot, one retired) are
  frozen too: today's code writes format 4 (segments) and keeps nonces in tombstones.
* ``checkpoint-parts-format-<N>`` holds a checkpoint of parts (manifest format ``N``, from
  ``objstore.checkpoint.PARTS_FORMAT``) above a format-1 one: what a parallel commit writes.
* ``checkpoint-incremental-format-<N>`` holds incremental checkpoints (manifest format
  ``N``, every frame a shared object under the top-level ``shared/``) above a format-1 one,
  and the shared-object GC's record ``shared/.gc.json`` (its own ``format_version``,
  ``objstore.checkpoint._shared.GC_FORMAT``). Incremental stores were never released under
  the first layout (``checkpoints/shared/``, written on the day the feature merged), so this
  directory was regenerated for the top-level ``shared/`` layout instead of being kept.
* ``checkpoint-tombstone-format-<N>`` holds a tombstone (an aborted id, ``format_version``
  2 at its ``manifest.json``) between two format-1 checkpoints.
* Objects whose writers draw random nonces (projection bases, KV objects) differ byte for
  byte between runs; the checks compare what a store reads back, never raw bytes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from objstore import (
    CheckpointManifest,
    CheckpointStore,
    KVStore,
    Snapshot,
    SourceCheckpoint,
    write_part,
)
from objstore.backends import AsyncBackend, Backend, open_transport
from objstore.checkpoint import (
    PARTS_FORMAT,
    POINTER_FORMAT,
    TOMBSTONE_FORMAT,
    remove_checkpoints,
)
from objstore.codec import SEALED_FORMAT, seal
from objstore.eventsourcing import EVENT_FORMAT
from objstore.eventsourcing._layout import EventRecord, encode_event, event_key
from objstore.kv import KV_MANIFEST_FORMAT
from objstore.projections import PROJECTION_FORMAT, _encode_base, _encode_delta
from objstore.snapshots import SNAPSHOT_FORMAT, encode_snapshot
from objstore.sources import STATE_FORMAT, encode_config_hash, encode_state
from objstore.testing import FaultInjectingTransport, SimulatedCrash

DATA = Path(__file__).resolve().parent

# -- what each store holds (the read-back checks in tests/test_format_compat.py use these) -----

SOURCES_QUERY = "q/1"
SOURCES_GENERATION = 7
SOURCES = {"src/ü": SourceCheckpoint(42, b"\x00pos"), "other": SourceCheckpoint(3)}
SOURCES_CONFIG_HASH = 2**64 - 1

PROJECTION = "proj/a"
PROJECTION_BASE = {"process/tenant/42": 9, "s": 1}
PROJECTION_DELTA = {"process/tenant/42": 10}  # delta "d1", already folded into the base

SNAPSHOT_STREAM = "order/ü"
SNAPSHOTS = {
    "bytes-state": Snapshot(SNAPSHOT_STREAM, 12, 3, b"\x00\x01state"),
    "json-state": Snapshot(SNAPSHOT_STREAM, 13, 4, {"total": 5, "items": ["a"]}),
}

EVENTSOURCING_SNAPSHOTS = [
    EventRecord(UUID("6f1c3d0e-2b7a-4c55-9a43-6d2f1e0b9c11"), 5, "app:Order.Snapshot", b'{"n":5}'),
    EventRecord(UUID("6f1c3d0e-2b7a-4c55-9a43-6d2f1e0b9c11"), 10, "app:Order.Snapshot", b"x" * 600),
    EventRecord("order/\u00fc", 0, "app:Order.Snapshot", b"\x00raw"),
]
"""Stored events (snapshots) of the eventsourcing recorder: a UUID id with two versions (the
second large enough to be compressed) and a str id that needs escaping."""

CHECKPOINT_SAVES = [(5, 1), (7, 1), (6, 2)]
"""``(id, epoch)`` saved in this order, epoch 2 claiming the store before its save: the
store a zombie leaves behind, with epoch 1's checkpoint 7 above the pointer's 6."""


def checkpoint_state(checkpoint_id: int, epoch: int) -> bytes:
    """The state saved with checkpoint ``checkpoint_id`` of ``epoch``."""
    return f"epoch-{epoch}-checkpoint-{checkpoint_id};".encode() * 20


PARTS_CHECKPOINT = 2
"""The id of the parts checkpoint (epoch 1); checkpoint 1 below it is a format-1 save."""
PARTS = {
    "kg-0000-0063": ((0, 63), {"window": b"w0;" * 300, "counts": bytes(range(256))}),
    "kg-0064-0127": ((64, 127), {"window": b"w1;" * 200}),
    "unkeyed": (None, {"meta": b"\x00"}),
}
"""Part name -> (key-group range, frames by name) of the parts checkpoint."""


def incremental_state(checkpoint_id: int) -> dict[str, bytes]:
    """The state of incremental checkpoint ``checkpoint_id``: ``op-0`` changes every time,
    ``op-1`` from checkpoint 4 on, ``op-2`` never (shared by all)."""
    return {
        "op-0": f"changing-{checkpoint_id};".encode() * 40,
        "op-1": (b"second;" if checkpoint_id < 4 else b"second-v2;") * 30,
        "op-2": bytes(range(256)) * 3,
    }


INCREMENTAL_SAVES = (2, 3, 4)
"""Incremental saves above the full checkpoint 1; checkpoint 2 is then removed and the
shared-object GC collects what only it used, leaving a GC record of generation 1."""


SEALED = {
    "empty": b"",
    "short": b"objstore sealed framing: a payload under 256 bytes is stored raw\n",
    "long": b"objstore sealed framing: a longer payload is zstd-compressed\n" * 16,
}
"""Sealed blobs ``<name>.sealed`` with their payloads ``<name>.raw``: stored raw (flags 0)
below 256 bytes, zstd-compressed (flag bit 0) above when that pays."""

# -- writers ------------------------------------------------------------------------------------


def _put(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_sources(root: Path) -> None:
    """A source-offsets store of query ``q/1`` (its state and config hash objects)."""
    escaped = SOURCES_QUERY.replace("/", "%2F")
    state = encode_state(SOURCES_QUERY, SOURCES_GENERATION, SOURCES, "0" * 32)
    _put(root, f"sources/{escaped}/state", state)
    config_hash = encode_config_hash(SOURCES_QUERY, SOURCES_CONFIG_HASH)
    _put(root, f"sources/{escaped}/config_hash", config_hash)


def write_projections(root: Path) -> None:
    """A projection-cursor store: projection ``proj/a``'s base, which folded delta ``d1``."""
    escaped = PROJECTION.replace("/", "%2F")
    _put(root, f"projections/{escaped}/base", _encode_base(PROJECTION, PROJECTION_BASE, ["d1"]))
    _put(root, f"projections/{escaped}/deltas/d1", _encode_delta(PROJECTION, PROJECTION_DELTA))


def write_snapshots(root: Path) -> None:
    """Two snapshot stores, one snapshot each: a bytes state and a JSON state."""
    for name, snapshot in SNAPSHOTS.items():
        _put(root / name, "snapshots/order%2F%C3%BC.snapshot", encode_snapshot(snapshot))


def write_eventsourcing(root: Path) -> None:
    """The eventsourcing snapshot recorder's objects for :data:`EVENTSOURCING_SNAPSHOTS`."""
    for record in EVENTSOURCING_SNAPSHOTS:
        key = event_key("snapshots", record.originator_id, record.originator_version)
        _put(root, key, encode_event(record))


def write_sealed(root: Path) -> None:
    """Sealed blobs of :data:`SEALED`, each beside its payload."""
    for name, payload in SEALED.items():
        _put(root, f"{name}.sealed", seal(payload))
        _put(root, f"{name}.raw", payload)


def write_kv(root: Path) -> None:
    """A KV store written through the public API: four batches, the log pruned below batch 3
    (which compacts first), so it holds a run of segments (manifest format 4), tombstones
    keeping their batches' nonces and a live tail; then a compaction through batch 4 crashes
    after writing its segment, and a sweep fences it (the manifest's generation moves on)
    and deletes that segment."""
    root.mkdir(parents=True, exist_ok=True)
    kv = KVStore(str(root), compact_every=0)
    faults = FaultInjectingTransport(open_transport(str(root)))
    crashing = KVStore(Backend(AsyncBackend(faults)), compact_every=0)
    try:
        kv.put_batch([(b"user/1", b"alice"), (b"user/2", b"bob")])
        kv.put_batch([(b"user/3", b"carol"), (b"user/1", b"alice-2")])
        kv.delete_batch([b"user/2"])
        kv.prune_batch_log(3)
        kv.put_batch([(b"user/4", b"dave"), (b"order/9", b"\x00\xff")])
        faults.crash_after("put_if_absent", key_contains="segments")
        try:
            crashing.compact()
        except SimulatedCrash:
            pass  # the segment is written, the manifest never moved
        else:
            raise AssertionError("the compaction was to crash after writing its segment")
        kv.sweep_snapshots(grace_seconds=0)
    finally:
        crashing.close()
        kv.close()
    shutil.rmtree(root / ".objstore-locks", ignore_errors=True)  # local-disk locks, not data
    for leftover in root.rglob("clock"):  # the sweep's clock object: not part of the format
        leftover.unlink()


def write_checkpoints(root: Path) -> None:
    """A checkpoint store with a format-2 ``latest.txt``, written through the public API:
    :data:`CHECKPOINT_SAVES`, with ``claim_epoch(2)`` before epoch 2's save."""
    root.mkdir(parents=True, exist_ok=True)
    for checkpoint_id, epoch in CHECKPOINT_SAVES:
        store = CheckpointStore(str(root))
        try:
            if epoch > 1:
                store.claim_epoch(epoch)
            manifest = CheckpointManifest(
                checkpoint_id=checkpoint_id,
                epoch=epoch,
                timestamp_ms=1_700_000_000_000 + checkpoint_id * 1000,
                source_offsets={"events": {"p0": checkpoint_id * 10}},
            )
            store.save_with_state(manifest, checkpoint_state(checkpoint_id, epoch))
        finally:
            store.close()
    for lock in root.rglob("*.lock"):  # local-disk locks, not data
        lock.unlink()


def write_parts(root: Path) -> None:
    """A checkpoint store holding a format-1 checkpoint 1 and a parts checkpoint 2 (manifest
    format 2) of :data:`PARTS`, each part written by its own worker, committed by a
    coordinator (:meth:`~objstore.CheckpointStore.begin_parallel`)."""
    root.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(str(root))
    try:
        first = CheckpointManifest(checkpoint_id=1, epoch=1, timestamp_ms=1_700_000_001_000)
        store.save_with_state(first, checkpoint_state(1, 1))
        job = store.begin_parallel(
            PARTS_CHECKPOINT,
            1,
            parts={name: groups for name, (groups, _) in PARTS.items()},
        )
        receipts = [write_part(ticket, PARTS[ticket.part][1]) for ticket in job.tickets]
        job.commit(
            receipts,
            source_offsets={"events": {"p0": 20}},
            metadata={"parallelism": len(PARTS)},
            timestamp_ms=1_700_000_002_000,
        )
    finally:
        store.close()
    for lock in root.rglob("*.lock"):
        lock.unlink()


def write_incremental(root: Path) -> None:
    """A checkpoint store with a full checkpoint 1 (format 1) and incremental checkpoints
    3 and 4 (manifest format 2, frames in ``shared/``, pins ``refs-{nonce}-{n}.json``)
    after checkpoint 2 was removed (``rm``) and its garbage collected (``.gc.json``)."""
    root.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(str(root))
    try:
        first = CheckpointManifest(checkpoint_id=1, epoch=1, timestamp_ms=1_700_000_001_000)
        store.save_with_state(first, checkpoint_state(1, 1))
        for checkpoint_id in INCREMENTAL_SAVES:
            manifest = CheckpointManifest(
                checkpoint_id=checkpoint_id,
                epoch=1,
                timestamp_ms=1_700_000_000_000 + checkpoint_id * 1000,
                source_offsets={"events": {"p0": checkpoint_id * 10}},
            )
            store.save_incremental(manifest, incremental_state(checkpoint_id))
        remove_checkpoints(store, [2])
        assert len(store.collect_shared(0).deleted) == 1  # op-0 of checkpoint 2
    finally:
        store.close()
    for lock in root.rglob("*.lock"):
        lock.unlink()


def write_tombstone(root: Path) -> None:
    """A checkpoint store whose id 2 was aborted: checkpoint 1 saved, state staged for 2 and
    collected by ``cleanup_orphans`` (a tombstone at its ``manifest.json``), then 3 saved."""
    root.mkdir(parents=True, exist_ok=True)

    async def far_ahead() -> float:
        return time.time() + 7200

    store = CheckpointStore(str(root))
    try:
        for checkpoint_id in (1, 2, 3):
            manifest = CheckpointManifest(
                checkpoint_id=checkpoint_id,
                epoch=1,
                timestamp_ms=1_700_000_000_000 + checkpoint_id * 1000,
            )
            if checkpoint_id == 2:
                store.save_state_data(2, checkpoint_state(2, 1), epoch=1)
                janitor = CheckpointStore(str(root), store_clock=far_ahead)
                assert len(janitor.cleanup_orphans().deleted) == 1
                janitor.close()
            else:
                store.save_with_state(manifest, checkpoint_state(checkpoint_id, 1))
    finally:
        store.close()
    for lock in root.rglob("*.lock"):
        lock.unlink()


GENERATORS: dict[str, Callable[[Path], None]] = {
    f"sources-format-{STATE_FORMAT}": write_sources,
    f"projections-format-{PROJECTION_FORMAT}": write_projections,
    f"snapshots-format-{SNAPSHOT_FORMAT}": write_snapshots,
    f"sealed-format-{SEALED_FORMAT}": write_sealed,
    f"eventsourcing-format-{EVENT_FORMAT}": write_eventsourcing,
    f"kv-format-{KV_MANIFEST_FORMAT}": write_kv,
    f"checkpoint-format-{POINTER_FORMAT}": write_checkpoints,
    f"checkpoint-tombstone-format-{TOMBSTONE_FORMAT}": write_tombstone,
    f"checkpoint-parts-format-{PARTS_FORMAT}": write_parts,
    f"checkpoint-incremental-format-{PARTS_FORMAT}": write_incremental,
}
"""Directory name -> writer, one per format today's code writes."""


def generate(out: Path, *, only: list[str] | None = None) -> list[str]:
    """Write every directory of :data:`GENERATORS` (or those in ``only``) that ``out`` lacks;
    return the names written. Existing directories are left untouched."""
    written = []
    for name, write in GENERATORS.items():
        if (only and name not in only) or (out / name).exists():
            continue
        staging = out / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        write(staging)
        staging.rename(out / name)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DATA, help="where to write (tests/data)")
    parser.add_argument("--only", action="append", help="a directory name; may repeat")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = generate(args.out, only=args.only)
    for name in GENERATORS:
        state = "written" if name in written else "kept (already exists)"
        print(f"{args.out / name}: {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
