"""The CheckpointStore scenario: writers of several epochs, a janitor, readers, sink
committers and bit rot, checked against DESIGN §3's promises after every step.

Promises checked (names appear in reports):

- ``P1``  a save that returned stays valid, unless a prune removed it while a newer (by
  ``(epoch, id)``, the order readers choose by) valid
  checkpoint existed, or something outside objstore damaged it (the ``env`` actor).
- ``P1-undone``  a checkpoint once seen valid never turns invalid under its manifest.
- ``P1-stateless``  a manifest is never committed while its state is gone.
- ``P1-own``  a save is never told it lost to a commit its own store object made.
- ``P2-read``  once a save by epoch E returned, no reader returns an epoch < E while a
  checkpoint of epoch ≥ E stays valid throughout the read.
- ``P2-fence``  a save by an older epoch that starts after a newer epoch's save returned
  raises ``FencedError``; ``P2-told-older``: a newer epoch is never told it lost to an older.
- ``P3``  recovery / ``load_latest`` never report nothing if at every step of the call some
  checkpoint was valid (not necessarily the same one: a save and a prune may overlap it).
- ``P4``  a sink transition ``update_manifest`` returned is never lost.
Writers sometimes save as the coordinator of a *parallel* checkpoint (:class:`_ParallelSave`):
begin, workers writing parts (some twice, as an engine re-running a task), one commit; it is
recorded as a ``save`` (mode ``parallel``), so every promise above covers it too.

- ``P6``  after a repair returned, ``load_latest`` never returns a checkpoint newer than the
  one the repair's walk chose that the walk found invalid (while it is still invalid).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import objstore.checkpoint as checkpoint_api
from objstore.checkpoint import (
    CHECKPOINTS,
    LATEST,
    SHARED,
    AsyncCheckpointStore,
    AsyncParallelJob,
    CheckpointManifest,
    PartReceipt,
    RecoveryReport,
    manifest_key,
    parse_listing_key,
    parse_pointer,
    plan_pointer_repair,
    read_pointer_async,
    repair_pointer_async,
    scan,
    state_key,
    write_part_async,
)
from objstore.errors import CheckpointConflict, CorruptionError, FencedError, NotFoundError
from objstore.testing._sim._engine import (
    ActorContext,
    ActorSpec,
    CallRecord,
    Scenario,
    World,
)

__all__ = ["CheckpointScenario"]

GRACE = 60.0
SINKS = ("a", "b")


@dataclass(slots=True)
class _Oracle:
    """What the checker knows: validity over time and the history of returned calls."""

    valid: dict[int, int] = field(default_factory=dict)  # id -> epoch, valid now
    valid_since: dict[int, int] = field(default_factory=dict)  # id -> step
    present: dict[int, int | None] = field(default_factory=dict)  # id -> epoch (manifest there)
    cache: dict[tuple[Any, ...], tuple[bool, int | None]] = field(default_factory=dict)
    nonempty_since: int | None = None  # step since which some checkpoint is always valid
    damaged: set[int] = field(default_factory=set)
    retired: set[tuple[int, int]] = field(default_factory=set)  # (id, epoch) pruned legitimately
    repaired_invalid: list[tuple[int, set[int]]] = field(default_factory=list)
    transitions: list[tuple[int, int, str]] = field(default_factory=list)  # id, epoch, sink


def _oracle(world: World) -> _Oracle:
    state: _Oracle = world.notes.setdefault("oracle", _Oracle())
    return state


def _epoch_for(name: str, incarnation: int, rng: random.Random) -> int:
    base = int(name[1:])
    if incarnation == 0 or rng.random() < 0.4:
        return base
    return base + 10 * incarnation


async def _writer(ctx: ActorContext) -> None:
    """Save a few checkpoints, retrying failed saves the way a careful caller would."""
    rng = ctx.rng
    epoch = _epoch_for(ctx.name, ctx.incarnation, rng)
    store = AsyncCheckpointStore(
        ctx.backend(),
        max_retained=rng.choice([None, None, 1, 2]),
        orphan_grace_seconds=GRACE,
        clock=ctx.clock,
    )
    claim = getattr(store, "claim_epoch", None)
    if claim is not None:
        record = await ctx.call("claim_epoch", partial(claim, epoch), epoch=epoch)
        if isinstance(record.error, CheckpointConflict):
            return
    start = await ctx.call("next_checkpoint_id", store.next_checkpoint_id)
    next_id = start.result if start.ok else rng.randint(1, 4)
    used: set[int] = set()
    skipped: set[int] = set()
    for _ in range(rng.randint(2, 4)):
        checkpoint_id = next_id
        used.add(checkpoint_id)
        mode = rng.choice(["with_state", "state_data", "state_data", "manifest_only"])
        if _parallel_rng(ctx).random() < PARALLEL_ODDS:
            mode = "parallel"
        elif _incremental_rng(ctx).random() < INCREMENTAL_ODDS:
            mode = "incremental"
        manifest = CheckpointManifest(
            checkpoint_id,
            epoch,
            timestamp_ms=int(ctx.clock() * 1000),
            sink_commit_statuses={sink: "pending" for sink in SINKS},
            source_offsets={"src": checkpoint_id},
        )
        state = {"op": f"{ctx.name}-{epoch}-{checkpoint_id}".encode() * 8}
        if mode == "incremental":  # one chunk changes, the others are reused
            state = {"const": f"{ctx.name}-const".encode() * 8, **state, "shared": b"s" * 64}
        parallel = _ParallelSave(ctx, store, manifest) if mode == "parallel" else None
        if mode == "state_data":
            staged = await ctx.call(
                "save_state_data",
                partial(store.save_state_data, checkpoint_id, state, epoch=epoch),
                id=checkpoint_id,
                epoch=epoch,
            )
            if not staged.ok:
                if isinstance(staged.error, FencedError):
                    return
                next_id = max(used) + 1
                continue
            if rng.random() < 0.3:
                await ctx.think(rng.uniform(0.5, 1.5) * GRACE)
        for attempt in range(3):
            if parallel is not None:
                operation: Any = parallel.attempt
            elif mode == "with_state":
                operation = partial(store.save_with_state, manifest, state)
            elif mode == "incremental":
                operation = partial(store.save_incremental, manifest, state)
            else:
                operation = partial(store.save, manifest)
            record = await ctx.call(
                "save", operation, id=checkpoint_id, epoch=epoch, mode=mode, attempt=attempt
            )
            if record.ok or isinstance(record.error, CheckpointConflict):
                break
            if rng.random() < 0.3:
                break  # gives up on this id
        if isinstance(record.error, FencedError):
            return
        if isinstance(record.error, CheckpointConflict):
            found = await ctx.call("next_checkpoint_id", store.next_checkpoint_id)
            next_id = found.result if found.ok else max(used) + 1
        else:
            next_id = max(used) + 1
            if rng.random() < 0.2:
                skipped.add(next_id)  # left for later: saved out of order, below others
                next_id += 1
            if skipped and rng.random() < 0.3:
                next_id = skipped.pop()


# -- parallel checkpoints (issue 12): a coordinator and its workers ----------------------------

PARALLEL_ODDS = 0.25
"""How often a writer's save is a parallel checkpoint instead (decided by its own random
stream, so the other choices of a seed stay as they were)."""
PARALLEL_PARTS = 3


INCREMENTAL_ODDS = 0.3
"""How often a writer's save is incremental (drawn from its own stream, like parallel ones,
so seeds without incremental saves or shared GCs replay the histories they had before)."""


def _side_rng(ctx: ActorContext, tag: str) -> random.Random:
    """An actor's random stream for ``tag`` (separate from ``ctx.rng``: drawing from it does
    not change the rest of the seed's history)."""
    found: random.Random | None = ctx.memory.get(f"{tag}-rng-{ctx.incarnation}")
    if found is None:
        found = random.Random(f"{ctx.world.seed}/{ctx.name}/{ctx.incarnation}/{tag}")
        ctx.memory[f"{tag}-rng-{ctx.incarnation}"] = found
    return found


def _incremental_rng(ctx: ActorContext) -> random.Random:
    """The writer's random stream for choosing incremental saves."""
    return _side_rng(ctx, "incremental")


def _parallel_rng(ctx: ActorContext) -> random.Random:
    """The writer's random stream for its parallel saves (separate from ``ctx.rng``)."""
    found: random.Random | None = ctx.memory.get(f"parallel-rng-{ctx.incarnation}")
    if found is None:
        found = random.Random(f"{ctx.world.seed}/{ctx.name}/{ctx.incarnation}/parallel")
        ctx.memory[f"parallel-rng-{ctx.incarnation}"] = found
    return found


class _ParallelSave:
    """A writer's save as the coordinator of a parallel checkpoint of ``manifest``: begun
    once, then each worker writes its part (through its own backend, as another process
    would), some twice (an engine re-running a task after a lost answer), then one commit.
    A retried attempt (the writer's retry loop) keeps the job and the receipts it has,
    rewriting some parts again, and commits again: it must complete, never conflict with
    itself."""

    def __init__(self, ctx: ActorContext, store: AsyncCheckpointStore, manifest: Any) -> None:
        self.ctx = ctx
        self.store = store
        self.manifest: CheckpointManifest = manifest
        self.rng = _parallel_rng(ctx)
        self.job: AsyncParallelJob | None = None
        self.receipts: dict[str, PartReceipt] = {}

    async def attempt(self) -> CheckpointManifest:
        manifest = self.manifest
        if self.job is None:
            plan = {f"kg-{i}": (4 * i, 4 * i + 3) for i in range(PARALLEL_PARTS)}
            self.job = await self.store.begin_parallel(manifest.checkpoint_id, manifest.epoch, plan)
        for ticket in self.job.tickets:
            if ticket.part in self.receipts and self.rng.random() < 0.8:
                continue
            state = {"op": f"{ticket.part}-{manifest.epoch}-{manifest.checkpoint_id}".encode() * 8}
            for _ in range(2 if self.rng.random() < 0.25 else 1):
                worker = self.ctx.backend()
                self.receipts[ticket.part] = await write_part_async(ticket, state, backend=worker)
        return await self.job.commit(
            list(self.receipts.values()),
            source_offsets=manifest.source_offsets,
            sink_commit_statuses=manifest.sink_commit_statuses,
            timestamp_ms=manifest.timestamp_ms,
        )


async def _janitor(ctx: ActorContext) -> None:
    """Prune, collect orphans and repair the pointer, as an operator's cron job would."""
    rng = ctx.rng
    store = AsyncCheckpointStore(ctx.backend(), orphan_grace_seconds=GRACE, clock=ctx.clock)
    for _ in range(rng.randint(2, 4)):
        job = rng.choice(["prune", "cleanup_orphans", "repair", "repair"])
        if _side_rng(ctx, "janitor-gc").random() < 0.25:
            job = "collect_shared"  # objstore gc's second half
        if job == "prune":
            keep = rng.choice([1, 2])
            await ctx.call("prune", partial(store.prune, keep), keep=keep)
        elif job == "cleanup_orphans":
            await ctx.call("cleanup_orphans", store.cleanup_orphans)
        elif job == "collect_shared":
            await ctx.call("collect_shared", store.collect_shared)
        else:
            repaired = await ctx.call("repair", partial(_repair, store))
            if repaired.ok:  # then `objstore show`, as the operator would
                shown = AsyncCheckpointStore(ctx.backend(), orphan_grace_seconds=GRACE)
                await ctx.call("load_latest", shown.load_latest)
        await ctx.think(rng.uniform(0.0, 5.0))


async def _repair(store: AsyncCheckpointStore) -> RecoveryReport:
    """What ``objstore recover --repair`` does: walk, move the pointer off what the walk
    found invalid, and quarantine it when this objstore can (``quarantine_invalid_async``)."""
    pointer = await read_pointer_async(store)
    report = await store.recover_latest_validated()
    await repair_pointer_async(store, plan_pointer_repair(pointer, report))
    quarantine = getattr(checkpoint_api, "quarantine_invalid_async", None)
    if quarantine is not None:
        await quarantine(store, report)
    return report


async def _shared_gc(ctx: ActorContext) -> None:
    """The shared-object GC run often, with no grace (age is no safety argument): it races
    every incremental save's plan, pin, check and commit."""
    rng = _side_rng(ctx, "shared-gc")
    store = AsyncCheckpointStore(ctx.backend(), orphan_grace_seconds=GRACE, clock=ctx.clock)
    for _ in range(rng.randint(3, 6)):
        grace = rng.choice([0.0, 0.0, GRACE])
        await ctx.call("collect_shared", partial(store.collect_shared, grace), grace=grace)
        await ctx.think(rng.uniform(0.0, 3.0))


async def _reader(ctx: ActorContext) -> None:
    """Restart-time reads: ``load_latest`` and the validated recovery walk."""
    rng = ctx.rng
    for _ in range(rng.randint(2, 4)):
        store = AsyncCheckpointStore(ctx.backend(), orphan_grace_seconds=GRACE, clock=ctx.clock)
        if rng.random() < 0.5:
            await ctx.call("load_latest", store.load_latest)
        else:
            await ctx.call("recover_latest_validated", store.recover_latest_validated)


async def _sink_committer(ctx: ActorContext) -> None:
    """Read the newest checkpoint, then (a little later) mark one sink committed."""
    rng = ctx.rng
    store = AsyncCheckpointStore(ctx.backend(), orphan_grace_seconds=GRACE, clock=ctx.clock)
    for _ in range(rng.randint(1, 3)):
        loaded = await ctx.call("load_latest", store.load_latest)
        manifest = loaded.result if loaded.ok else None
        if manifest is None:
            await ctx.think(1.0)
            continue
        sink = rng.choice(SINKS)
        await ctx.think(rng.uniform(0.0, 2.0))
        updated = manifest.with_status(sink, "committed")
        await ctx.call(
            "update_manifest",
            partial(store.update_manifest, updated),
            id=manifest.checkpoint_id,
            epoch=manifest.epoch,
            sink=sink,
        )


async def _bit_rot(ctx: ActorContext) -> None:
    """Something outside objstore damages one committed sidecar (a flipped byte)."""
    raw = ctx.world.raw
    victims: list[int] = []
    for _ in range(8):  # waits for a committed checkpoint with state to damage
        await ctx.think(ctx.rng.uniform(0.0, 2.0))
        entries = scan(await raw.list("checkpoints"))
        victims = sorted(cid for cid, e in entries.items() if e.committed and _rot_key(e))
        if victims and ctx.rng.random() < 0.5:
            break
    if not victims:
        return
    victim = victims[-1] if ctx.rng.random() < 0.7 else ctx.rng.choice(victims)
    key = _rot_key(entries[victim]) or state_key(victim)
    data, _ = await raw.get(key)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    await raw.put(key, bytes(flipped))
    _oracle(ctx.world).damaged.add(victim)
    ctx.world.trace.append(f"{ctx.world.step}: env flips a byte of {key}")
    ctx.world.dirty = True


def _rot_key(entry: Any) -> str | None:
    """What bit rot damages in a committed directory: ``state.bin``, else its first part."""
    if entry.state is not None:
        return str(entry.state.key)
    parts = [info.key for info in entry.others if "/parts/" in info.key]
    return str(parts[0]) if parts else None


async def _pointer_loss(ctx: ActorContext) -> None:
    """Something outside objstore deletes ``latest.txt`` or writes garbage into it, once
    (an operator's mistake, a lifecycle rule): the fences it carried must hold anyway."""
    raw = ctx.world.raw
    for _ in range(8):  # waits for a pointer that names a checkpoint, most often
        await ctx.think(ctx.rng.uniform(0.0, 2.0))
        try:
            named = parse_pointer((await raw.get(LATEST))[0])
        except NotFoundError:
            named = None
        if named is not None and named.checkpoint_id is not None and ctx.rng.random() < 0.6:
            break
    if ctx.rng.random() < 0.5:
        try:
            await raw.delete(LATEST)
        except NotFoundError:
            return
        what = "deletes"
    else:
        await raw.put(LATEST, b"\x00garbage")
        what = "garbles"
    ctx.world.trace.append(f"{ctx.world.step}: env {what} {LATEST}")
    ctx.world.dirty = True


class CheckpointScenario(Scenario):
    """Writers w1/w2(/w3) of epochs 1/2(/3) (some saves parallel, some incremental),
    janitor ``j``, reader ``r``, sink committer ``s``, bit rot or pointer loss ``env`` and
    shared-object GCs ``g1``/``g2`` (grace 0 mostly); the seed picks who takes part and
    their clock skews. Validity of an incremental checkpoint includes its shared objects, so
    ``P1``/``P1-undone``/``P1-stateless`` cover them."""

    name = "checkpoint"
    max_steps = 160
    promises = frozenset(
        {
            "P1",
            "P1-undone",
            "P1-stateless",
            "P1-own",
            "P2-read",
            "P2-fence",
            "P2-told-older",
            "P3",
            "P4",
            "P6",
        }
    )

    def actors(self, rng: random.Random) -> list[ActorSpec]:
        writers = 3 if rng.random() < 0.35 else 2
        cast = [
            ActorSpec(f"w{i}", _writer, restarts=rng.choice([0, 1, 1, 2]), skew=rng.uniform(-5, 5))
            for i in range(1, writers + 1)
        ]
        # Shared-object GCs come from a stream of their own, last in the cast: a seed that
        # has none replays the history it had before incremental checkpoints.
        side = random.Random(repr(rng.getstate()[1][:8]) + "/shared-gc")
        gcs = side.choice([0, 0, 1, 1, 2])
        rot = rng.random() < 0.15
        if rot or rng.random() < 0.6:
            skew = rng.choice([0.0, 0.0, 2.5 * GRACE, -GRACE])
            cast.append(ActorSpec("j", _janitor, restarts=1, skew=skew))
        if rot or rng.random() < 0.7:
            cast.append(ActorSpec("r", _reader, restarts=0))
        if rng.random() < 0.35:
            cast.append(ActorSpec("s1", _sink_committer, restarts=0))
            cast.append(ActorSpec("s2", _sink_committer, restarts=0))
        if rot:
            cast.append(ActorSpec("env", _bit_rot, restarts=0))
        elif rng.random() < 0.25:
            cast.append(ActorSpec("env", _pointer_loss, restarts=0))
        cast.extend(
            ActorSpec(f"g{i}", _shared_gc, restarts=side.choice([0, 1])) for i in range(1, gcs + 1)
        )
        return cast

    def _store(self, world: World) -> AsyncCheckpointStore:
        store: AsyncCheckpointStore | None = world.notes.get("checker")
        if store is None:
            store = AsyncCheckpointStore(world.raw, orphan_grace_seconds=GRACE)
            world.notes["checker"] = store
        return store

    async def _refresh(self, world: World) -> None:
        """Validate every committed checkpoint (cached by object versions, shared objects'
        included: an incremental checkpoint's state lives there)."""
        oracle = _oracle(world)
        store = self._store(world)
        listing = await world.raw.list(CHECKPOINTS)
        entries = scan(listing)
        shared = hash(tuple(sorted((i.key, i.version) for i in await world.raw.list(SHARED))))
        valid: dict[int, int] = {}
        present: dict[int, int | None] = {}
        for cid, entry in entries.items():
            if entry.manifest is None:
                continue
            versions = (
                cid,
                entry.manifest.version,
                entry.state.version if entry.state is not None else None,
                tuple((info.key, info.version) for info in entry.others),  # parts, pins
                shared,
            )
            known = oracle.cache.get(versions)
            if known is None:
                result = await store.validate_checkpoint(cid)
                epoch: int | None
                try:
                    loaded = await store.load_by_id(cid)
                    epoch = loaded.epoch if loaded is not None else None
                except CorruptionError:
                    epoch = None
                known = (result.valid and epoch is not None, epoch)
                oracle.cache[versions] = known
            present[cid] = known[1]
            if known[0] and known[1] is not None:
                valid[cid] = known[1]
        for cid in list(oracle.valid_since):
            if cid not in valid or valid[cid] != oracle.valid.get(cid):
                del oracle.valid_since[cid]
        for cid in valid:
            oracle.valid_since.setdefault(cid, world.step)
        oracle.valid, oracle.present = valid, present
        if not valid:
            oracle.nonempty_since = None
        elif oracle.nonempty_since is None:
            oracle.nonempty_since = world.step

    async def check_step(self, world: World) -> None:
        oracle = _oracle(world)
        before = dict(oracle.valid)
        await self._refresh(world)
        step_writes = [w for w in world.writes if w.step == world.step]
        for cid, epoch in before.items():
            if (
                cid not in oracle.valid
                and oracle.present.get(cid) == epoch
                and cid not in oracle.damaged
            ):
                world.fail(
                    "P1-undone",
                    f"checkpoint {cid} (epoch {epoch}) was valid and is now invalid under its "
                    f"manifest after step {world.step}: {_describe(step_writes)}",
                )
        for write in step_writes:
            parsed = parse_listing_key(write.key)
            if (
                write.ok
                and write.operation == "put_if_absent"
                and parsed is not None
                and parsed[1] == "manifest.json"
                and write.label != "cleanup_orphans"  # a tombstone: the id aborted, no commit
            ):
                cid = parsed[0]
                if cid not in oracle.valid and cid not in oracle.damaged:
                    world.fail(
                        "P1-stateless",
                        f"{write.actor} committed {write.key} but checkpoint {cid} does not "
                        "validate (its state is gone or not its own)",
                    )
        # Damage from outside counts as valid here: a prune that trusted it is not at fault.
        # "Newer" is the order readers choose by, (epoch, id): a newer epoch's checkpoint
        # outranks every older epoch's, whatever the ids (DESIGN §3 invariant 3).
        newest_valid = max(
            [(e, c) for c, e in oracle.valid.items()]
            + [(oracle.present.get(c) or 0, c) for c in oracle.damaged],
            default=(0, 0),
        )
        for record in world.calls:
            if record.label != "save" or not record.ok:
                continue
            cid, epoch = record.info["id"], record.info["epoch"]
            if oracle.valid.get(cid) == epoch or cid in oracle.damaged:
                continue
            if (cid, epoch) in oracle.retired:
                continue
            deleted_by = [
                w for w in world.writes if w.key == manifest_key(cid) and w.operation == "delete"
            ]
            if (
                oracle.present.get(cid) is None
                and deleted_by
                and deleted_by[-1].label in ("prune", "save")
                and newest_valid > (epoch, cid)
            ):
                oracle.retired.add((cid, epoch))  # pruned while a newer valid one existed
                continue
            world.fail(
                "P1",
                f"save of checkpoint {cid} by {record.actor} (epoch {epoch}) returned at step "
                f"{record.end} but the checkpoint is no longer valid at step {world.step}: "
                f"{_describe(step_writes)}",
            )
        for cid, epoch, sink in oracle.transitions:
            try:
                manifest = await self._store(world).load_by_id(cid)
            except CorruptionError:
                continue
            if manifest is None or manifest.epoch != epoch:
                continue
            if manifest.sink_commit_statuses.get(sink) != "committed":
                world.fail(
                    "P4",
                    f"sink {sink!r} of checkpoint {cid} was committed by update_manifest but "
                    f"is now {manifest.sink_commit_statuses.get(sink)!r} after step "
                    f"{world.step}: {_describe(step_writes)}",
                )

    async def check_call(self, world: World, record: CallRecord) -> None:
        oracle = _oracle(world)
        if record.label == "update_manifest" and record.ok:
            oracle.transitions.append(
                (record.info["id"], record.info["epoch"], record.info["sink"])
            )
            world.dirty = True
        if record.label == "repair" and record.ok and record.result.chosen_id is not None:
            chosen = record.result.chosen_id
            invalid = {
                cid
                for cid, reason in record.result.skipped
                if cid > chosen
                and cid in record.result.examined
                and "never committed" not in reason
            }
            oracle.repaired_invalid.append((record.end, invalid))
        if record.label == "save":
            self._check_save(world, record)
        if record.label in ("load_latest", "recover_latest_validated") and record.ok:
            self._check_read(world, record)

    def _returned_saves_before(self, world: World, step: int) -> list[CallRecord]:
        return [r for r in world.calls if r.label == "save" and r.ok and r.end < step]

    def _check_save(self, world: World, record: CallRecord) -> None:
        epoch = record.info["epoch"]
        newer = [
            r for r in self._returned_saves_before(world, record.start) if r.info["epoch"] > epoch
        ]
        if record.ok and newer:
            world.fail(
                "P2-fence",
                f"{record.actor}'s save of checkpoint {record.info['id']} by epoch {epoch} "
                f"returned although {newer[0].actor}'s save by epoch {newer[0].info['epoch']} "
                f"had returned before it started (step {newer[0].end})",
            )
        error = record.error
        if isinstance(error, CheckpointConflict):
            winner = error.winner_epoch
            if winner is not None and winner < epoch:
                world.fail(
                    "P2-told-older",
                    f"{record.actor} (epoch {epoch}) was told it lost checkpoint "
                    f"{record.info['id']} to an older epoch {winner}: {error}",
                )
            if winner is None or winner == epoch:
                creates = [
                    w
                    for w in world.writes
                    if w.key == manifest_key(record.info["id"])
                    and w.operation == "put_if_absent"
                    and w.ok
                ]
                if (
                    creates
                    and (creates[-1].actor, creates[-1].incarnation)
                    == (record.actor, record.incarnation)
                    and record.info["id"] in _oracle(world).present
                ):
                    world.fail(
                        "P1-own",
                        f"{record.actor}'s save of checkpoint {record.info['id']} was told "
                        f"{type(error).__name__} against its own commit (step "
                        f"{creates[-1].step}): {error}",
                    )

    def _check_read(self, world: World, record: CallRecord) -> None:
        oracle = _oracle(world)
        if isinstance(record.result, RecoveryReport):
            chosen = record.result.chosen_id
            manifest = record.result.manifest
        else:
            manifest = record.result
            chosen = manifest.checkpoint_id if manifest is not None else None
        steady = {
            cid: epoch
            for cid, epoch in oracle.valid.items()
            if oracle.valid_since.get(cid, world.step + 1) <= record.start
        }
        since = oracle.nonempty_since
        if chosen is None and since is not None and since <= record.start:
            world.fail(
                "P3",
                f"{record.actor}'s {record.label} (steps {record.start}..{record.end}) found "
                f"nothing although some checkpoint was valid at every step of it (now "
                f"{sorted(oracle.valid)})",
            )
        if manifest is None:
            return
        returned = self._returned_saves_before(world, record.start)
        fenced_by = max((r.info["epoch"] for r in returned), default=None)
        if fenced_by is not None and manifest.epoch < fenced_by:
            newer = {cid: e for cid, e in steady.items() if e >= fenced_by}
            if newer:
                world.fail(
                    "P2-read",
                    f"{record.actor}'s {record.label} returned checkpoint {chosen} of epoch "
                    f"{manifest.epoch} although a save by epoch {fenced_by} had returned and "
                    f"checkpoint(s) {sorted(newer)} of epoch >= {fenced_by} stayed valid",
                )
        if record.label == "load_latest" and chosen is not None:
            for step, invalid in oracle.repaired_invalid:
                if step <= record.start and chosen in invalid and chosen not in oracle.valid:
                    world.fail(
                        "P6",
                        f"{record.actor}'s load_latest returned checkpoint {chosen}, which a "
                        f"repair (step {step}) found invalid and which is still invalid",
                    )


def _describe(writes: list[Any]) -> str:
    return ", ".join(f"{w.actor} {w.label} {w.operation} {w.key}" for w in writes) or "-"
