"""Incremental checkpoints: the save that re-references unchanged chunks, the shared-object
GC, and reading, validating and sizing checkpoints whose frames live in shared objects.

The protocol and why it is safe without trusting clocks: :mod:`objstore.checkpoint._shared`.
A manifest of an incremental save is manifest format 2 with one part (``INCREMENTAL_PART``)
and no exclusive object; each frame names its shared object (``key``) and that object's
length and xxh3-128 (it is one whole zstd frame: ``offset`` 0).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING

import xxhash

from objstore._concurrency import gather_bounded
from objstore.backends import AsyncBackend, Buffer, ObjectInfo
from objstore.checkpoint._layout import CHECKPOINTS, PIN_PREFIX, manifest_key, pin_key
from objstore.checkpoint._manifest import (
    CheckpointManifest,
    OperatorState,
    PartEntry,
    PartFrame,
    StoredManifest,
    encode_manifest,
)
from objstore.checkpoint._plan import scan
from objstore.checkpoint._quarantine import QUARANTINE
from objstore.checkpoint._reads import read_manifest
from objstore.checkpoint._shared import (
    GC_RECORD,
    SHARED,
    GcRecord,
    SharedGcResult,
    decode_gc_record,
    encode_gc_record,
    is_shared_key,
    plan_doomed,
    raw_digest_of,
    refs_safe,
    shared_key,
)
from objstore.checkpoint._sidecar import Chunk, StateInput, _compress, decode_frame, iter_chunks
from objstore.codec import canonical_json, parse_json
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    CorruptionError,
    NotFoundError,
    ObjstoreError,
    PreconditionFailedError,
)

if TYPE_CHECKING:
    from objstore.checkpoint._store import AsyncCheckpointStore

__all__ = [
    "INCREMENTAL_PART",
    "REPAIR_ATTEMPTS",
    "SharedFrame",
    "StateSizes",
    "collect_shared",
    "load_frames",
    "read_gc_record",
    "save_incremental",
    "shared_frames",
    "state_sizes",
]

logger = logging.getLogger(__name__)

INCREMENTAL_PART = "state"
"""The name of the one part an incremental save writes."""
REPAIR_ATTEMPTS = 5
"""Repairs a save tries (each after a GC doomed one of its refs) before it withdraws."""
PARALLEL = 16


@dataclass(frozen=True, slots=True)
class SharedFrame:
    """One chunk of an incremental checkpoint: its shared object ``key`` (one whole zstd
    frame of ``length`` bytes whose xxh3-128 is ``xxh3``) and its decompressed size."""

    name: str | None
    key: str
    length: int
    raw_length: int
    xxh3: str

    @property
    def raw_digest(self) -> str | None:
        """The xxh3-128 of the raw chunk (from the key)."""
        return raw_digest_of(self.key)

    def entry(self) -> OperatorState:
        """As a frame entry (offset 0 of its own object), for the frame decoder."""
        return OperatorState(self.name, 0, self.length, self.raw_length, self.xxh3)

    def part_frame(self) -> PartFrame:
        """As a manifest frame (format 2)."""
        return PartFrame(self.name, 0, self.length, self.raw_length, self.xxh3, key=self.key)


# -- the manifest's view -----------------------------------------------------------------------


def shared_frames(manifest: CheckpointManifest) -> list[SharedFrame]:
    """Every frame of ``manifest`` that lives in a shared object, in order (empty for a
    checkpoint without parts).

    Raises:
        CorruptionError: a frame's key is not a shared object's.
    """
    frames: list[SharedFrame] = []
    for part in manifest.parts:
        for frame in part.frames:
            if frame.key is None:
                continue
            if not is_shared_key(frame.key):
                raise CorruptionError(
                    manifest_key(manifest.checkpoint_id),
                    f"frame key {frame.key!r} is not a shared object",
                )
            frames.append(
                SharedFrame(frame.name, frame.key, frame.length, frame.raw_length, frame.xxh3)
            )
    return frames


def is_incremental(manifest: CheckpointManifest) -> bool:
    """Whether ``manifest`` keeps all its state in shared objects (an incremental save)."""
    return bool(manifest.parts) and all(part.key is None for part in manifest.parts)


def with_frames(
    manifest: CheckpointManifest, frames: Sequence[SharedFrame], writer_nonce: str
) -> CheckpointManifest:
    """``manifest`` with one part, :data:`INCREMENTAL_PART`, holding ``frames``; its
    ``writer_nonce`` is the nonce of the save call, which names the call's pins."""
    part = PartEntry(
        name=INCREMENTAL_PART,
        key_groups=None,
        key=None,
        size=None,
        xxh3=None,
        writer_nonce=writer_nonce,
        frames=tuple(frame.part_frame() for frame in frames),
    )
    return dataclasses.replace(
        manifest, operator_states=(), state_checksum=None, state_size=None, parts=(part,)
    )


def refs_of(manifest: CheckpointManifest) -> set[str]:
    """The shared keys ``manifest`` references (none for an unreadable frame list)."""
    try:
        return {frame.key for frame in shared_frames(manifest)}
    except CorruptionError:
        return set()


# -- the GC record and listings ------------------------------------------------------------------


async def read_gc_record(backend: AsyncBackend) -> GcRecord:
    """The GC record now (one GET); generation 0 if there is none.

    Raises:
        CorruptionError: the record is unreadable.
    """  # noqa: DOC502 - raised by decode_gc_record
    try:
        data, version = await backend.get(GC_RECORD)
    except NotFoundError:
        return GcRecord()
    return decode_gc_record(data, version)


async def list_shared(backend: AsyncBackend) -> dict[str, ObjectInfo]:
    """Every shared object, by key (one listing of ``shared/``, all pages; the GC record and
    anything else not named like a shared object left out)."""
    return {info.key: info for info in await backend.list(SHARED) if is_shared_key(info.key)}


# -- saving --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What one attempt of a save may reuse: raw digest -> frame of the base, each listed
    (with its length) and not doomed when the attempt read the GC record."""

    record: GcRecord
    reusable: dict[str, SharedFrame]


async def _plan(
    store: AsyncCheckpointStore, base: int | None, extra: Sequence[SharedFrame] = ()
) -> _Plan:
    """Steps (a) and (b): the record, then the base's frames (and ``extra`` ones) that are
    listed now and not doomed."""
    record = await read_gc_record(store.backend)
    frames = list(extra)
    if base is not None:
        try:
            _, _, stored = await read_manifest(store.backend, base)
            frames.extend(shared_frames(stored.manifest))
        except (NotFoundError, CorruptionError) as exc:  # pruned, aborted, damaged
            logger.info("incremental base %d unusable (%s): uploading everything", base, exc)
    if not frames:
        return _Plan(record, {})
    listed = await list_shared(store.backend)
    reusable: dict[str, SharedFrame] = {}
    for frame in frames:
        info = listed.get(frame.key)
        digest = frame.raw_digest
        if (
            digest is not None
            and info is not None
            and info.size == frame.length
            and frame.key not in record.doomed
        ):
            reusable.setdefault(digest, frame)
    return _Plan(record, reusable)


def _prepare(
    data: Buffer, reusable: Mapping[str, SharedFrame], level: int
) -> tuple[str, int, SharedFrame | None, bytes | None, str | None]:
    """Hash one chunk; compress it unless a reusable frame holds the same bytes. Returns
    ``(raw digest, raw length, reused frame, new frame bytes, new frame xxh3)``."""
    raw = memoryview(data).cast("B")
    digest = xxhash.xxh3_128_hexdigest(raw)
    hit = reusable.get(digest)
    if hit is not None and hit.raw_length == raw.nbytes:
        return digest, raw.nbytes, hit, None, None
    frame, frame_xxh3, _ = _compress(raw, level, 0)
    return digest, raw.nbytes, None, frame, frame_xxh3


async def _put_shared(
    backend: AsyncBackend, key: str, frame: bytes, frame_xxh3: str | None = None
) -> tuple[int, str]:
    """Create a shared object (key unique to this save call); if it exists, it is this
    call's own (a duplicate chunk, or a retried request): its length and xxh3 are read back."""
    try:
        await backend.put_if_absent(key, frame)
    except AlreadyExistsError:
        data, _ = await backend.get(key)
        return len(data), xxhash.xxh3_128_hexdigest(data)
    return len(frame), frame_xxh3 or xxhash.xxh3_128_hexdigest(frame)


async def _upload(
    store: AsyncCheckpointStore,
    chunks: Iterator[Chunk] | AsyncIterator[Chunk],
    plan: _Plan,
    nonce: str,
) -> tuple[list[SharedFrame], int]:
    """Step (c): every chunk as a frame, reused or uploaded (at most ``chunks_in_flight``
    chunks held at once). Returns the frames and the bytes uploaded."""
    uploaded = 0

    async def one(name: str | None, data: Buffer) -> SharedFrame:
        nonlocal uploaded
        digest, raw_length, hit, frame, frame_xxh3 = await asyncio.to_thread(
            _prepare, data, plan.reusable, store.compression_level
        )
        if hit is not None:
            return SharedFrame(name, hit.key, hit.length, hit.raw_length, hit.xxh3)
        assert frame is not None
        key = shared_key(digest, nonce)
        length, stored_xxh3 = await _put_shared(store.backend, key, frame, frame_xxh3)
        uploaded += len(frame)
        return SharedFrame(name, key, length, raw_length, stored_xxh3)

    frames: list[SharedFrame] = []
    window: collections.deque[asyncio.Task[SharedFrame]] = collections.deque()
    try:
        async for name, data in _aiter(chunks):
            window.append(asyncio.ensure_future(one(name, data)))
            if len(window) >= store.chunks_in_flight:
                frames.append(await window.popleft())
        while window:
            frames.append(await window.popleft())
    finally:
        for task in window:
            task.cancel()
    return frames, uploaded


async def _aiter(chunks: Iterator[Chunk] | AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    if isinstance(chunks, AsyncIterator):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def _in_memory(state: StateInput) -> list[Chunk] | None:
    """The chunks of ``state`` if it is held in memory (a repair can read them again)."""
    if isinstance(state, bytes | bytearray | memoryview | Mapping | list | tuple):
        return list(iter_chunks(state))  # type: ignore[arg-type]
    return None


def is_pin_name(name: str) -> bool:
    """Whether a checkpoint directory's object ``name`` is a pin."""
    return name.startswith(PIN_PREFIX) and name.endswith(".json")


def encode_pin(checkpoint_id: int, keys: Iterable[str]) -> bytes:
    """The pin's canonical JSON."""
    return canonical_json({"checkpoint_id": checkpoint_id, "keys": sorted(set(keys))})


def decode_pin(data: bytes, key: str) -> set[str]:
    """The shared keys a pin names.

    Raises:
        CorruptionError: the pin is unreadable (damaged at rest or in transit: what it pins
            is unknown, so a GC must not treat it as pinning nothing).
    """
    body = parse_json(data, key=key)
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CorruptionError(key, "pin has no list of keys")
    return set(keys)


async def _pin(
    backend: AsyncBackend, checkpoint_id: int, call_nonce: str, attempt: int, keys: set[str]
) -> None:
    """Step (p): create this attempt's pin, then drop the previous attempt's (the keys a
    repair replaced are never committed by this call; a pin kept beside the committed
    manifest would hold them until the checkpoint is pruned)."""
    await backend.put_if_absent(
        pin_key(checkpoint_id, call_nonce, attempt), encode_pin(checkpoint_id, keys)
    )
    if attempt > 0:
        await backend.delete(pin_key(checkpoint_id, call_nonce, attempt - 1))


async def _pin_and_check(
    store: AsyncCheckpointStore,
    checkpoint_id: int,
    plan: _Plan,
    frames: list[SharedFrame],
    retained: list[Chunk] | None,
    call_nonce: str,
    pinned: list[int],
) -> list[SharedFrame]:
    """Steps (p) and (e), repairing until the refs are safe: the frames to commit. Every
    pin is named after ``call_nonce`` (the manifest part's ``writer_nonce``), so a prune of
    the manifest deletes exactly this call's pins; ``pinned`` receives each attempt pinned.

    Raises:
        PreconditionFailedError: a ref's bytes are gone and the state is not in memory, or
            GCs kept dooming the refs; nothing was committed.
    """
    for attempt in range(REPAIR_ATTEMPTS):
        keys = {frame.key for frame in frames}
        await _pin(store.backend, checkpoint_id, call_nonce, attempt, keys)
        pinned.append(attempt)
        if refs_safe(plan.record, await read_gc_record(store.backend), keys):
            return frames
        logger.warning("checkpoint %d: a GC doomed objects it reuses; repairing", checkpoint_id)
        plan = await _plan(store, None, frames)
        nonce = os.urandom(16).hex()
        repaired: list[SharedFrame] = []
        for position, frame in enumerate(frames):
            kept = plan.reusable.get(frame.raw_digest or "")
            if kept is not None and kept.key == frame.key:
                repaired.append(frame)
                continue
            copy = await _copy_frame(store, frame, nonce, retained, position)
            if copy is None:
                raise PreconditionFailedError(
                    manifest_key(checkpoint_id),
                    f"checkpoint {checkpoint_id}: a GC collected state this save reused, and "
                    "the state is not held in memory to upload again; nothing was committed: "
                    "save again",
                )
            repaired.append(copy)
        frames = repaired
    raise PreconditionFailedError(
        manifest_key(checkpoint_id),
        f"checkpoint {checkpoint_id}: GCs kept dooming its objects ({REPAIR_ATTEMPTS} "
        "repairs); nothing was committed: save again",
    )


async def save_incremental(
    store: AsyncCheckpointStore,
    manifest: CheckpointManifest,
    state: StateInput,
    base: int | None,
) -> CheckpointManifest:
    """``AsyncCheckpointStore.save_incremental`` (steps (a)-(d) of ``_shared``).

    Raises:
        PreconditionFailedError: GCs kept dooming this save's refs and the repair could not
            find their bytes (or gave up after :data:`REPAIR_ATTEMPTS`); nothing was
            committed: save again.
        CheckpointConflict: another writer committed this id.
    """
    chunks = iter_chunks(state)
    retained = _in_memory(state)
    plan = await _plan(store, base)
    call_nonce = os.urandom(16).hex()
    frames, uploaded = await _upload(store, chunks, plan, call_nonce)
    store._incremental_uploaded = uploaded
    checkpoint_id = manifest.checkpoint_id
    pinned: list[int] = []
    try:
        frames = await _pin_and_check(
            store, checkpoint_id, plan, frames, retained, call_nonce, pinned
        )
        final = with_frames(manifest, frames, call_nonce)
        result = await store._commits.commit(final, None, None, None)
    except (CheckpointConflict, PreconditionFailedError):
        # Nothing of this call was committed, nor can it be: no create in flight. (After an
        # unknown outcome or a transient error the pin stays: a delayed create may land.)
        await _unpin(store.backend, checkpoint_id, call_nonce, pinned)
        raise
    if not any(part.writer_nonce == call_nonce for part in result.parts):
        # An earlier call's commit was completed (its own pins stay with it): ours is moot.
        await _unpin(store.backend, checkpoint_id, call_nonce, pinned)
    store._incremental_base = result.checkpoint_id
    return result


async def _unpin(
    backend: AsyncBackend, checkpoint_id: int, call_nonce: str, pinned: list[int]
) -> None:
    """Drop the last pin of a save call that will never commit (it raised, or returned an
    earlier call's manifest): beside another writer's manifest of the id it would keep the
    call's objects from the GC until that checkpoint is pruned and the janitor tombstones
    the id. Best effort: a pin left behind costs storage, never safety."""
    if not pinned:
        return
    with contextlib.suppress(ObjstoreError, OSError):
        await backend.delete(pin_key(checkpoint_id, call_nonce, pinned[-1]))


async def _copy_frame(
    store: AsyncCheckpointStore,
    frame: SharedFrame,
    nonce: str,
    retained: list[Chunk] | None,
    position: int,
) -> SharedFrame | None:
    """``frame``'s bytes under a fresh key: copied from its object if it still verifies,
    else compressed again from the caller's in-memory state; ``None`` if neither is there."""
    digest = frame.raw_digest or ""
    data: bytes | None = None
    try:
        data, _ = await store.backend.get(frame.key)
        if xxhash.xxh3_128_hexdigest(data) != frame.xxh3:
            data = None
    except NotFoundError:
        data = None
    if data is None and retained is not None and position < len(retained):
        raw = retained[position][1]
        _, _, _, data, _ = await asyncio.to_thread(_prepare, raw, {}, store.compression_level)
    if data is None:
        return None
    key = shared_key(digest, nonce)
    length, stored_xxh3 = await _put_shared(store.backend, key, data)
    return SharedFrame(frame.name, key, length, frame.raw_length, stored_xxh3)


# -- the GC --------------------------------------------------------------------------------------


async def _manifest_refs(backend: AsyncBackend, listing: list[ObjectInfo]) -> set[str]:
    """Keys referenced by the manifests and the pins of one listing of ``checkpoints/``
    (every pin, also beside a manifest: it may be another writer's of the same id, who can
    commit once that manifest is pruned), plus every quarantined manifest (listed after it).
    A manifest or pin gone since the listing holds nothing, nor does an aborted id's
    tombstone.

    Raises:
        CorruptionError: a manifest, pin or quarantined manifest cannot be parsed (damaged
            at rest or in transit): what it references is unknown, so the run must stop
            before deleting anything. Any other read error propagates the same way.
    """  # noqa: DOC502 - raised by the decoders it calls
    entries = scan(listing)
    committed = sorted(cid for cid, entry in entries.items() if entry.committed)
    pins = [
        info.key
        for entry in entries.values()
        for info in entry.others
        if is_pin_name(info.key.rsplit("/", 1)[-1])
    ]

    async def pinned(key: str) -> set[str]:
        try:
            data, _ = await backend.get(key)
        except NotFoundError:
            return set()  # its directory was collected: that save can never commit
        return decode_pin(data, key)

    async def refs(checkpoint_id: int) -> set[str]:
        try:
            _, _, stored = await read_manifest(backend, checkpoint_id)
        except NotFoundError:  # pruned since the listing, or a tombstone (AbortedCheckpoint)
            return set()
        return {frame.key for frame in shared_frames(stored.manifest)}

    found = await gather_bounded((refs(cid) for cid in committed), PARALLEL)
    quarantined = [
        info.key for info in await backend.list(QUARANTINE) if info.key.endswith("/manifest.json")
    ]

    async def quarantined_refs(key: str) -> set[str]:
        try:
            data, _ = await backend.get(key)
        except NotFoundError:
            return set()
        body = parse_json(data, key=key)
        parts = body.get("parts", []) if isinstance(body, dict) else None
        if not isinstance(parts, list):
            raise CorruptionError(key, "quarantined manifest is not a manifest")
        keys: set[str] = set()
        for part in parts:
            for frame in part.get("frames", []) if isinstance(part, dict) else []:
                if isinstance(frame, dict) and isinstance(frame.get("key"), str):
                    keys.add(frame["key"])
        return keys

    found += await gather_bounded((quarantined_refs(k) for k in quarantined), PARALLEL)
    found += await gather_bounded((pinned(key) for key in pins), PARALLEL)
    return set().union(*found)


async def _relisted_refs(backend: AsyncBackend) -> set[str]:
    """Step (4): what the manifests and pins reference now (a new listing)."""
    return await _manifest_refs(backend, await backend.list(CHECKPOINTS))


async def _write_record(backend: AsyncBackend, record: GcRecord, doomed: list[str]) -> str | None:
    """Step (3): the next generation, by compare-and-swap; the record id it carries if it
    was ours, ``None`` if another GC wrote first. A lost answer (``OutcomeUnknownError``)
    propagates: the run aborts, deleting nothing (its doom list, if it landed, stays in
    force like any crashed run's)."""
    record_id = record.record_id or os.urandom(16).hex()
    data = encode_gc_record(record.generation + 1, doomed, record_id)
    try:
        if record.version is None:
            await backend.put_if_absent(GC_RECORD, data)
        else:
            await backend.put_if_match(GC_RECORD, data, record.version)
    except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
        return None
    return record_id


async def collect_shared(
    store: AsyncCheckpointStore,
    grace_seconds: float | None,
    *,
    dry_run: bool,
    store_now: Callable[[dict[str, ObjectInfo]], Awaitable[float | None]],
) -> SharedGcResult:
    """``AsyncCheckpointStore.collect_shared``: one GC run (steps 1-6 of ``_shared``)."""
    grace = store.orphan_grace_seconds if grace_seconds is None else grace_seconds
    backend = store.backend
    record = await read_gc_record(backend)  # (1)
    listed = await list_shared(backend)  # (2)
    referenced = await _manifest_refs(backend, await backend.list(CHECKPOINTS))
    used = sum(1 for key in listed if key in referenced)
    now = await store_now(listed) if grace > 0 and listed else None
    mtimes = {key: info.mtime for key, info in listed.items()}
    doomed = plan_doomed(record, mtimes, referenced, store_now=now, grace_seconds=grace)

    def result(
        deleted: tuple[str, ...] = (), generation: int | None = None, aborted: str | None = None
    ) -> SharedGcResult:
        size = sum(listed[key].size for key in deleted)
        return SharedGcResult(
            grace, len(listed), used, tuple(doomed), deleted, size, generation, aborted, dry_run
        )

    if dry_run or not doomed:
        return result()
    record_id = await _write_record(backend, record, doomed)  # (3)
    if record_id is None:
        return result(aborted="another GC wrote the GC record first")
    generation = record.generation + 1
    still_used = await _relisted_refs(backend)  # (4)
    final = [key for key in doomed if key not in still_used]
    current = await read_gc_record(backend)  # (5)
    if current.generation != generation or current.record_id != record_id:
        return result(generation=generation, aborted="another GC started meanwhile")
    for key in final:  # (6)
        await backend.delete(key)
    if final:
        logger.info("collected %d shared objects", len(final))
    return result(tuple(final), generation)


# -- reading -------------------------------------------------------------------------------------


async def load_frames(
    store: AsyncCheckpointStore, manifest: CheckpointManifest
) -> list[tuple[SharedFrame, bytes]]:
    """Every shared frame of ``manifest``, fetched, verified and decompressed, in order.

    Raises:
        NotFoundError: a shared object is missing.
        CorruptionError: one fails its checksum or length.
    """  # noqa: DOC502 - raised by the backend and the frame decoder
    frames = shared_frames(manifest)

    async def one(frame: SharedFrame) -> bytes:
        data, _ = await store.backend.get(frame.key)
        if len(data) != frame.length:
            raise CorruptionError(
                frame.key, "shared object size mismatch", expected=frame.length, actual=len(data)
            )
        return await asyncio.to_thread(decode_frame, data, frame.entry(), key=frame.key)

    raws = await gather_bounded((one(frame) for frame in frames), store.chunks_in_flight)
    return list(zip(frames, raws, strict=True))


@dataclass(frozen=True, slots=True)
class StateSizes:
    """Stored bytes of one checkpoint's state: ``exclusive`` (its own ``state.bin``) and
    ``shared`` (shared objects it references, each counted once; ``shared_with_others`` of
    those are referenced by another listed checkpoint too)."""

    exclusive: int
    shared: int
    shared_with_others: int


def state_sizes(
    manifests: Mapping[int, CheckpointManifest], sizes: Mapping[str, int] | None = None
) -> dict[int, StateSizes]:
    """Exclusive and shared bytes of every checkpoint in ``manifests`` (pure). ``sizes``
    overrides recorded lengths (a listing)."""
    owners: collections.Counter[str] = collections.Counter()
    per: dict[int, dict[str, int]] = {}
    for checkpoint_id, manifest in manifests.items():
        frames = {frame.key: frame.length for frame in shared_frames(manifest)}
        per[checkpoint_id] = frames
        owners.update(frames.keys())
    result: dict[int, StateSizes] = {}
    for checkpoint_id, manifest in manifests.items():
        frames = per[checkpoint_id]
        shared = sum((sizes or {}).get(key, length) for key, length in frames.items())
        with_others = sum(
            (sizes or {}).get(key, length) for key, length in frames.items() if owners[key] > 1
        )
        result[checkpoint_id] = StateSizes(manifest.state_size or 0, shared, with_others)
    return result


# -- copying -------------------------------------------------------------------------------------


async def copy_incremental(
    src: AsyncCheckpointStore, dst: AsyncCheckpointStore, stored: StoredManifest
) -> None:
    """Commit on ``dst`` a copy of the incremental checkpoint ``stored`` of ``src``, with
    every shared object it references, as an incremental save on ``dst`` would: after
    reading ``dst``'s GC record, a frame reuses an object already on ``dst`` with the same
    bytes (listed, not doomed: nothing is stored twice), or its verified bytes are copied
    under a fresh key; the manifest (its frames pointing at ``dst``'s objects, the rest
    unchanged) is pinned and checked like a save's (steps (p), (e) of ``_shared``), then
    created.

    Raises:
        AlreadyExistsError: ``dst`` already has a manifest of that id (the caller decides).
        CorruptionError: a source object is missing its recorded bytes.
        PreconditionFailedError: ``dst``'s GCs kept dooming the copy's objects.
    """  # noqa: DOC502 - AlreadyExistsError from the backend, CorruptionError from _source_frame
    manifest = stored.manifest
    checkpoint_id = manifest.checkpoint_id
    frames = shared_frames(manifest)
    call_nonce = os.urandom(16).hex()
    for attempt in range(REPAIR_ATTEMPTS):
        record = await read_gc_record(dst.backend)
        listed = await list_shared(dst.backend)
        nonce = os.urandom(16).hex()
        placed: dict[str, SharedFrame] = {}
        copied: list[SharedFrame] = []
        for frame in frames:
            if frame.key not in placed:
                placed[frame.key] = await _place(src, dst, frame, listed, record, nonce)
            target = placed[frame.key]
            copied.append(dataclasses.replace(target, name=frame.name))
        keys = placed_keys(copied)
        await _pin(dst.backend, checkpoint_id, call_nonce, attempt, keys)
        if not refs_safe(record, await read_gc_record(dst.backend), keys):
            continue  # a GC on dst doomed some: place them again
        body = dataclasses.replace(stored, manifest=with_frames(manifest, copied, call_nonce))
        await dst.backend.put_if_absent(manifest_key(checkpoint_id), encode_manifest(body))
        return
    raise PreconditionFailedError(
        manifest_key(checkpoint_id),
        f"checkpoint {checkpoint_id}: the destination's GCs kept dooming the copy; try again",
    )


def placed_keys(frames: Sequence[SharedFrame]) -> set[str]:
    """The keys of ``frames``."""
    return {frame.key for frame in frames}


async def _place(
    src: AsyncCheckpointStore,
    dst: AsyncCheckpointStore,
    frame: SharedFrame,
    listed: Mapping[str, ObjectInfo],
    record: GcRecord,
    nonce: str,
) -> SharedFrame:
    """``frame`` on ``dst``: an object already there with the same bytes, else a copy."""
    digest = frame.raw_digest or ""
    for key, info in listed.items():
        if raw_digest_of(key) != digest or info.size != frame.length or key in record.doomed:
            continue
        try:
            data, _ = await dst.backend.get(key)
        except NotFoundError:
            continue
        if xxhash.xxh3_128_hexdigest(data) == frame.xxh3:
            return dataclasses.replace(frame, key=key)
    data = await _source_frame(src, frame)
    key = shared_key(digest, nonce)
    length, frame_xxh3 = await _put_shared(dst.backend, key, data, frame.xxh3)
    return SharedFrame(frame.name, key, length, frame.raw_length, frame_xxh3)


async def _source_frame(src: AsyncCheckpointStore, frame: SharedFrame) -> bytes:
    """The verified bytes of ``frame`` on ``src``.

    Raises:
        CorruptionError: they are not the recorded ones.
    """
    data, _ = await src.backend.get(frame.key)
    if len(data) != frame.length or xxhash.xxh3_128_hexdigest(data) != frame.xxh3:
        raise CorruptionError(frame.key, "shared object does not match its manifest")
    return data
