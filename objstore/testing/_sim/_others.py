"""Scenarios for the source, snapshot and projection stores.

Promises checked:

- ``SRC-backward``  (sources) a source's committed sequence never moves backward through
  ``commit``: every state object written holds, per source, at least the sequence of the one
  it replaced.
- ``SNAP-older``  (snapshots) a stream's stored snapshot never goes to a lower sequence, and
  a load never returns a sequence below one whose save returned before the load started.
- ``PROJ-lost``  (projections) cursors an advance returned for are never lost: every later
  load sees at least them.
"""

from __future__ import annotations

import random
from functools import partial

from objstore.projections import AsyncProjectionCheckpointStore, GlobalProjectionCheckpoint
from objstore.snapshots import AsyncSnapshotStore, Snapshot, decode_snapshot
from objstore.sources import AsyncSourceCheckpointStore, decode_state
from objstore.testing._sim._engine import (
    ActorContext,
    ActorSpec,
    CallRecord,
    Scenario,
    World,
)

__all__ = ["ProjectionScenario", "SnapshotScenario", "SourceScenario"]

QUERY = "q"
SOURCES = ("s1", "s2")


async def _committer(ctx: ActorContext) -> None:
    """Read a source's sequence, stage a higher one, commit (one session per round)."""
    rng = ctx.rng
    store = AsyncSourceCheckpointStore(ctx.backend(), QUERY)
    for _ in range(rng.randint(2, 4)):
        source = rng.choice(SOURCES)
        await store.begin()
        current = await ctx.call("read_checkpoint", partial(store.read_checkpoint, source))
        if not current.ok:
            await store.rollback()
            continue
        base = current.result.sequence if current.result is not None else 0
        sequence = base + rng.randint(1, 100)
        await store.stage_checkpoint(source, sequence)
        if rng.random() < 0.5:
            await ctx.think(rng.uniform(0, 1))
        record = await ctx.call("commit", store.commit, source=source, sequence=sequence)
        if not record.ok:
            await store.rollback()


class SourceScenario(Scenario):
    """Source committers ``c1``, ``c2`` (and ``c3``) of one query."""

    name = "sources"
    max_steps = 100
    promises = frozenset({"SRC-backward"})

    def actors(self, rng: random.Random) -> list[ActorSpec]:
        count = rng.choice([2, 2, 3])
        return [
            ActorSpec(f"c{i}", _committer, restarts=rng.choice([0, 1])) for i in range(1, count + 1)
        ]

    async def check_step(self, world: World) -> None:
        key = f"sources/{QUERY}/state"
        previous: dict[str, int] = {}
        for write in world.writes:
            if write.key != key or not write.ok or write.data is None:
                continue
            _, sources = decode_state(write.data, key=key, query_id=QUERY)
            for source, checkpoint in sources.items():
                before = previous.get(source, 0)
                if checkpoint.sequence < before:
                    world.fail(
                        "SRC-backward",
                        f"{write.actor}'s commit (step {write.step}) moved source {source!r} "
                        f"back from {before} to {checkpoint.sequence}",
                    )
            previous = {source: cp.sequence for source, cp in sources.items()}


async def _snapshot_saver(ctx: ActorContext) -> None:
    """Save snapshots of one stream at increasing sequences (each saver its own pace)."""
    rng = ctx.rng
    store = AsyncSnapshotStore(ctx.backend())
    sequence = rng.randint(1, 50)
    for _ in range(rng.randint(2, 4)):
        sequence += rng.randint(1, 100)
        snapshot = Snapshot("stream", sequence, 1, {"by": ctx.name, "at": sequence})
        await ctx.call("save", partial(store.save, snapshot), sequence=sequence)


async def _snapshot_loader(ctx: ActorContext) -> None:
    store = AsyncSnapshotStore(ctx.backend())
    for _ in range(ctx.rng.randint(1, 4)):
        await ctx.call("load", lambda: store.load("stream"))


class SnapshotScenario(Scenario):
    """Snapshot savers ``n1``, ``n2`` of one stream and a loader ``nl``."""

    name = "snapshots"
    max_steps = 80
    promises = frozenset({"SNAP-older"})

    def actors(self, rng: random.Random) -> list[ActorSpec]:
        cast = [ActorSpec("n1", _snapshot_saver), ActorSpec("n2", _snapshot_saver)]
        if rng.random() < 0.5:
            cast.append(ActorSpec("nl", _snapshot_loader, restarts=0))
        return cast

    async def check_step(self, world: World) -> None:
        key = AsyncSnapshotStore.key_for("stream")
        stored = 0
        for write in world.writes:
            if write.key != key or not write.ok or write.data is None:
                continue
            sequence = decode_snapshot(write.data, key=key).sequence_number
            if sequence < stored:
                world.fail(
                    "SNAP-older",
                    f"{write.actor}'s save (step {write.step}) replaced the snapshot at "
                    f"sequence {stored} with an older one at {sequence}",
                )
            stored = sequence

    async def check_call(self, world: World, record: CallRecord) -> None:
        if record.label != "load" or not record.ok:
            return
        saved = [
            r.info["sequence"]
            for r in world.calls
            if r.label == "save" and r.ok and r.end < record.start
        ]
        loaded = record.result.sequence_number if record.result is not None else 0
        if saved and loaded < max(saved):
            world.fail(
                "SNAP-older",
                f"{record.actor}'s load returned sequence {loaded} although a save of "
                f"{max(saved)} had returned before it started",
            )


async def _projector(ctx: ActorContext) -> None:
    """Load the cursors, then advance one stream at a time."""
    rng = ctx.rng
    store = AsyncProjectionCheckpointStore(ctx.backend(), compact_every=rng.choice([1, 2, 3]))
    loaded = await ctx.call("load", lambda: store.load_projection_checkpoint("p"))
    previous = loaded.result if loaded.ok else GlobalProjectionCheckpoint()
    for _ in range(rng.randint(2, 4)):
        stream = rng.choice(SOURCES)
        current = previous.advance(stream, previous.cursor_for(stream) + rng.randint(1, 20))
        record = await ctx.call(
            "advance",
            partial(store.advance_projection_cursors, "p", previous, current),
            cursors=dict(current.cursors),
        )
        if record.ok:
            previous = current


async def _projection_compactor(ctx: ActorContext) -> None:
    store = AsyncProjectionCheckpointStore(ctx.backend())
    for _ in range(ctx.rng.randint(1, 3)):
        await ctx.call("compact", lambda: store.compact_projection_checkpoint("p"))


class ProjectionScenario(Scenario):
    """Projection advancers ``p1``, ``p2`` and a compactor ``pc``."""

    name = "projections"
    max_steps = 100
    promises = frozenset({"PROJ-lost"})

    def actors(self, rng: random.Random) -> list[ActorSpec]:
        cast = [ActorSpec("p1", _projector), ActorSpec("p2", _projector)]
        if rng.random() < 0.6:
            cast.append(ActorSpec("pc", _projection_compactor))
        return cast

    async def check_step(self, world: World) -> None:
        advanced: dict[str, int] = {}
        for record in world.calls:
            if record.label == "advance" and record.ok:
                for stream, cursor in record.info["cursors"].items():
                    advanced[stream] = max(advanced.get(stream, 0), cursor)
        if not advanced:
            return
        loaded = await AsyncProjectionCheckpointStore(world.raw).load_projection_checkpoint("p")
        for stream, cursor in advanced.items():
            if loaded.cursor_for(stream) < cursor:
                world.fail(
                    "PROJ-lost",
                    f"stream {stream!r} was advanced to {cursor} but the stored cursor is "
                    f"{loaded.cursor_for(stream)} after step {world.step}",
                )
