"""The KVStore scenario: writers (with caller retries), a compactor, a pruner, a snapshot
sweeper and a reader.

Promises checked:

- ``KV-visible``  a batch whose put returned is readable with its sequence (until pruned).
- ``KV-state``  the store's keys equal the fold of every batch that landed in the log
  (pruning and compaction lose no key).
- ``KV-failed``  a batch that landed is never reported as failed with a definite
  (non-transient) error.
- ``KV-dup``  a caller retrying a batch on the same store object after any error never
  appends it twice (the store remembers the unanswered create and reads it back first,
  even after a prune turned it into a tombstone).
- ``KV-gap``  sequences are consecutive from 1.
- ``KV-open``  the store can always be opened and read: the manifest never references a
  missing segment (a sweeper with no grace judges every unreferenced segment old, like one
  whose judgement came while a compaction's manifest swap was held in flight past the
  grace), and point reads (``get_many``) agree with the scan.
- ``KV-leak``  after the run, one more compaction leaves no unreferenced segment or snapshot.
- ``KV-prune``  after the run, a prune with the largest cutoff any pruner asked for leaves
  no batch data below the cutoff (an interrupted prune is finished).
"""

from __future__ import annotations

import random
from functools import partial

from objstore.errors import CorruptionError, NotFoundError, TransientStorageError
from objstore.kv import (
    DEFAULT_SNAPSHOT_GRACE_SECONDS,
    LOG_PREFIX,
    MANIFEST_KEY,
    SEGMENT_PREFIX,
    SNAPSHOT_PREFIX,
    AsyncKVStore,
    KVManifest,
    decode_batch,
    decode_manifest,
    sequence_of,
)
from objstore.testing._sim._engine import (
    ActorContext,
    ActorSpec,
    CallRecord,
    Scenario,
    World,
)

__all__ = ["KVScenario"]

KEYS = [f"k{i}".encode() for i in range(5)]
GC_METHODS = ("collect_garbage", "gc", "cleanup_snapshots", "cleanup_orphans")
"""Housekeeping a fixed store may add; the end-of-run settle calls whichever exist."""


async def _kv_writer(ctx: ActorContext) -> None:
    rng = ctx.rng
    # Background compaction is off: the compactor actor compacts, so every request belongs
    # to an actor the simulator schedules.
    store = AsyncKVStore(ctx.backend(), compact_every=0)
    for number in range(rng.randint(2, 5)):
        token = f"{ctx.name}.{ctx.incarnation}.{number}"
        if rng.random() < 0.2:
            keys = [rng.choice(KEYS)]
            label, operation = "delete_batch", partial(store.delete_batch, keys)
        else:
            pairs = [(rng.choice(KEYS), token.encode())]
            label, operation = "put_batch", partial(store.put_batch, pairs)
        for attempt in range(3):
            record = await ctx.call(label, operation, token=token, attempt=attempt)
            if record.ok or rng.random() < 0.3:
                break
            await ctx.think(rng.uniform(0, 2))  # the caller's backoff: others run meanwhile


async def _kv_compactor(ctx: ActorContext) -> None:
    store = AsyncKVStore(ctx.backend(), compact_every=0, max_runs=ctx.rng.choice([1, 2, 6]))
    for _ in range(ctx.rng.randint(1, 4)):
        full = ctx.rng.random() < 0.5
        await ctx.call("compact", partial(store.compact, full), full=full)
        await ctx.think(ctx.rng.uniform(0, 2))


async def _kv_pruner(ctx: ActorContext) -> None:
    store = AsyncKVStore(ctx.backend(), compact_every=0)
    for _ in range(ctx.rng.randint(1, 3)):
        current = await ctx.call("current_sequence", store.current_sequence)
        if current.ok and current.result > 1:
            cutoff = ctx.rng.randint(2, current.result)
            ctx.world.notes["max_cutoff"] = max(ctx.world.notes.get("max_cutoff", 0), cutoff)
            await ctx.call("prune_batch_log", partial(store.prune_batch_log, cutoff), cutoff=cutoff)
        await ctx.think(ctx.rng.uniform(0, 2))


async def _kv_sweeper(ctx: ActorContext) -> None:
    store = AsyncKVStore(ctx.backend(), compact_every=0)
    for _ in range(ctx.rng.randint(1, 3)):
        grace = ctx.rng.choice([0.0, DEFAULT_SNAPSHOT_GRACE_SECONDS])
        await ctx.call("sweep_snapshots", partial(store.sweep_snapshots, grace), grace=grace)
        await ctx.think(ctx.rng.uniform(0, 2))


async def _kv_reader(ctx: ActorContext) -> None:
    store = AsyncKVStore(ctx.backend(), compact_every=0)  # long-lived: its segments get replaced
    for _ in range(ctx.rng.randint(1, 4)):
        if ctx.rng.random() < 0.5:
            await ctx.call("range_scan", store.range_scan)
        else:
            await ctx.call("get_many", partial(store.get_many, KEYS))


_Landed = dict[int, list[tuple[str, tuple[tuple[bytes, bytes], ...], tuple[bytes, ...]]]]


def _landed(world: World) -> _Landed:
    """Every batch that reached the log, by sequence (tombstones excluded); decoded once per
    write and kept in ``world.notes``."""
    batches: _Landed = world.notes.setdefault("kv_landed", {})
    seen: int = world.notes.get("kv_seen", 0)
    for write in world.writes[seen:]:
        if not write.ok or write.operation != "put_if_absent" or write.data is None:
            continue
        sequence = sequence_of(write.key, LOG_PREFIX)
        if sequence is None:
            continue
        batch = decode_batch(write.data, key=write.key, sequence=sequence)
        if batch is not None:
            batches.setdefault(sequence, []).append((batch.kind, batch.pairs, batch.keys))
    world.notes["kv_seen"] = len(world.writes)
    return batches


def _tokens(world: World) -> dict[bytes, list[int]]:
    found: dict[bytes, list[int]] = {}
    for sequence, batches in _landed(world).items():
        for _, pairs, _ in batches:
            for _, value in pairs:
                found.setdefault(value, []).append(sequence)
    return found


class KVScenario(Scenario):
    """KV writers ``kw1``/``kw2``, compactor ``kc``, pruner ``kp`` and reader ``kr``."""

    name = "kv"
    max_steps = 140
    promises = frozenset(
        {
            "KV-visible",
            "KV-state",
            "KV-failed",
            "KV-dup",
            "KV-gap",
            "KV-leak",
            "KV-prune",
            "KV-open",
        }
    )

    def actors(self, rng: random.Random) -> list[ActorSpec]:
        cast = [ActorSpec("kw1", _kv_writer, restarts=rng.choice([0, 1]))]
        if rng.random() < 0.7:
            cast.append(ActorSpec("kw2", _kv_writer, restarts=rng.choice([0, 1])))
        if rng.random() < 0.6:
            cast.append(ActorSpec("kc", _kv_compactor, restarts=1))
        if rng.random() < 0.6:
            cast.append(ActorSpec("kp", _kv_pruner, restarts=1))
        if rng.random() < 0.4:
            cast.append(ActorSpec("kr", _kv_reader, restarts=0))
        if rng.random() < 0.4:
            cast.append(ActorSpec("ks", _kv_sweeper, restarts=0))
        return cast

    async def check_step(self, world: World) -> None:
        landed = _landed(world)
        for sequence, batches in landed.items():
            if len(batches) > 1:
                world.fail("KV-gap", f"sequence {sequence} was written twice")
        expected: dict[bytes, bytes] = {}
        for sequence in sorted(landed):
            kind, pairs, keys = landed[sequence][0]
            if kind == "put":
                expected.update(pairs)
            else:
                for key in keys:
                    expected.pop(key, None)
        fresh = AsyncKVStore(world.raw, compact_every=0)
        try:
            actual = dict(await fresh.range_scan())
            points = dict(await fresh.get_many(KEYS))
        except CorruptionError as exc:
            world.fail("KV-open", f"after step {world.step} the store cannot be opened: {exc}")
            return
        if {k: v for k, v in points.items() if v is not None} != actual:
            world.fail("KV-open", f"after step {world.step} get_many and range_scan disagree")
        if actual != expected:
            world.fail(
                "KV-state",
                f"after step {world.step} the store holds {_show(actual)} but the batches that "
                f"landed make {_show(expected)}",
            )
        retained_from = (await _manifest(world)).retained_from
        for record in world.calls:
            if record.label != "put_batch" or not record.ok or record.result < retained_from:
                continue
            batch = await fresh.read_batch(record.result)
            token = record.info["token"].encode()
            if batch is None or all(value != token for _, value in batch.pairs):
                world.fail(
                    "KV-visible",
                    f"{record.actor}'s put_batch returned sequence {record.result} but that "
                    f"sequence now reads {batch!r} (step {world.step})",
                )

    async def check_call(self, world: World, record: CallRecord) -> None:
        if record.label != "put_batch" or record.error is None:
            return
        if isinstance(record.error, TransientStorageError):
            return  # the outcome is unknown to the caller: allowed either way
        token = record.info["token"].encode()
        sequences = _tokens(world).get(token, [])
        if sequences:
            world.fail(
                "KV-failed",
                f"{record.actor}'s put_batch raised {type(record.error).__name__}: "
                f"{record.error} although its batch committed as sequence {sequences[0]}",
            )

    async def check_end(self, world: World) -> None:
        for token, sequences in _tokens(world).items():
            if len(sequences) > 1:  # a token is one batch of one store object
                world.fail(
                    "KV-dup",
                    f"batch {token.decode()} was appended {len(sequences)} times "
                    f"(sequences {sequences})",
                )
        world.now += 86_400.0
        fresh = AsyncKVStore(world.raw, compact_every=0)
        await fresh.compact()
        for name in GC_METHODS:
            method = getattr(fresh, name, None)
            if method is not None:
                await method()
        cutoff = world.notes.get("max_cutoff")
        if cutoff:
            await fresh.prune_batch_log(cutoff)
        manifest = await _manifest(world)
        stored = [info.key for info in await world.raw.list(SNAPSHOT_PREFIX)]
        stored += [info.key for info in await world.raw.list(SEGMENT_PREFIX)]
        referenced = {segment.key for segment in manifest.segments}
        if manifest.legacy:
            referenced.add(manifest.snapshot_key)
        leaked = sorted(key for key in stored if key not in referenced)
        if leaked:
            world.fail(
                "KV-leak",
                f"{leaked} are not referenced (the manifest names {sorted(referenced)}) and "
                "survive a later compaction",
            )
        log = await world.raw.list(LOG_PREFIX)
        sequences = sorted(s for s in (sequence_of(i.key, LOG_PREFIX) for i in log) if s)
        if sequences and sequences != list(range(1, sequences[-1] + 1)):
            world.fail("KV-gap", f"the log has gaps: {sequences}")
        if cutoff:
            for info in log:
                sequence = sequence_of(info.key, LOG_PREFIX)
                if sequence is None or sequence >= min(cutoff, manifest.retained_from):
                    continue
                data, _ = await world.raw.get(info.key)
                if decode_batch(data, key=info.key, sequence=sequence) is not None:
                    world.fail(
                        "KV-prune",
                        f"batch {sequence} keeps its data after prune_batch_log({cutoff}) "
                        f"(retained_from {manifest.retained_from}): an interrupted prune was "
                        "not finished",
                    )


async def _manifest(world: World) -> KVManifest:
    try:
        blob, _ = await world.raw.get(MANIFEST_KEY)
    except NotFoundError:
        return KVManifest()
    return decode_manifest(blob, key=MANIFEST_KEY)


def _show(data: dict[bytes, bytes]) -> str:
    return "{" + ", ".join(f"{k.decode()}={v.decode()}" for k, v in sorted(data.items())) + "}"
