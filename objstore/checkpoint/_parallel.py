"""Parallel checkpoints: one coordinator, many workers, one fenced commit (manifest format 2).

The coordinator calls :meth:`~objstore.checkpoint.AsyncCheckpointStore.begin_parallel` with the
parts it plans and gets a job whose :attr:`~AsyncParallelJob.tickets` are picklable; each
ticket goes to a worker (a Dask or Ray task, a process pool, another machine), which calls
:func:`write_part` (or :func:`write_part_async`): it opens the store from the ticket, streams
its state into the part's own object ``checkpoints/checkpoint_N/parts/{name}.bin`` — a
``state.bin``-style sidecar, compressed, checksummed, written create-if-absent by the same
encoder and upload path as a single-writer save — and returns a small picklable
:class:`PartReceipt`. The coordinator hands every receipt to :meth:`AsyncParallelJob.commit`,
which checks them against the plan (:func:`check_receipts`) and commits one manifest through
the store's commit protocol, exactly as a save without state: create-if-absent manifest, then
the pointer moved by compare-and-swap, where a zombie coordinator (an older epoch) is fenced
and its manifest withdrawn.

Retries are safe. The object key of a part is deterministic and so is its header (it carries
a nonce derived from the job's nonce and the part's name, not a random one), so a worker that
retries after a lost answer, or a task an engine ran twice, finds the object already there and
reads it back: byte for byte what it just encoded, it is accepted as is; otherwise, if it holds
the same frames of the same raw bytes (zstd's bytes for a large chunk depend on whether it was
compressed multi-threaded, a matter of timing), it is accepted with a receipt describing it as
stored; anything else is :class:`~objstore.errors.ConflictError` (two different states for one
part). The worker hashes each raw chunk as it goes (xxh3, a few % of the compression's CPU) for
that comparison. Parts
of a checkpoint that never commits are orphans: ``cleanup_orphans`` claims the id with a
tombstone and deletes them after the grace period (or at once when their epoch is fenced).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import xxhash
import zstandard

from objstore._checks import is_int
from objstore._loop import run_sync
from objstore._open import StoreLocation, as_async_backend
from objstore.backends import AsyncBackend
from objstore.checkpoint._layout import part_key
from objstore.checkpoint._manifest import (
    CheckpointManifest,
    PartEntry,
    PartFrame,
    StoredManifest,
    check_part_name,
)
from objstore.checkpoint._sidecar import (
    HEADER,
    SIDECAR_FORMAT,
    SIDECAR_MAGIC,
    EncodedState,
    SidecarEncoder,
    StateInput,
    decode_frame,
    decode_sidecar,
    iter_chunks,
    verify_sidecar,
)
from objstore.checkpoint._streamed_sidecar import (
    RANGE_SIZE,
    Progress,
    SidecarCheck,
    checked_pieces,
    read_ranges,
)
from objstore.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptionError,
    NotFoundError,
    ReceiptError,
)

if TYPE_CHECKING:
    from objstore.checkpoint._store import AsyncCheckpointStore

__all__ = [
    "AsyncParallelJob",
    "ParallelJob",
    "PartReceipt",
    "PartTicket",
    "check_part",
    "check_receipts",
    "open_part",
    "write_part",
    "write_part_async",
]

KeyGroups = tuple[int, int]


@dataclass(frozen=True, slots=True)
class PartTicket:
    """Everything a worker needs to write one part, in any process (picklable).

    ``url`` and ``storage_options`` reopen the coordinator's store (the coordinator's store
    already proved the store enforces preconditions, so workers skip that probe);
    ``checkpoint_id``, ``epoch``, ``part`` and its ``key_groups`` say what to write;
    ``job_nonce`` ties the part to this job (a receipt of another job is refused at commit);
    ``compression_level``, ``chunks_in_flight`` and ``single_put_limit`` are the
    coordinator store's settings, so every worker encodes the same bytes for the same state.
    """

    url: str
    storage_options: dict[str, Any] | None
    checkpoint_id: int
    epoch: int
    part: str
    key_groups: KeyGroups | None
    job_nonce: str
    compression_level: int
    chunks_in_flight: int
    single_put_limit: int

    @property
    def key(self) -> str:
        """The key of the part's object."""
        return part_key(self.checkpoint_id, self.part)

    @property
    def writer_nonce(self) -> bytes:
        """The nonce in the part's header: derived from the job's nonce and the part's name,
        so a retried write produces the same bytes."""
        return xxhash.xxh3_128_digest(f"{self.job_nonce}/{self.part}".encode())


@dataclass(frozen=True, slots=True)
class PartReceipt:
    """What a worker hands back to the coordinator after writing its part (picklable).

    ``key``, ``size`` and ``xxh3`` describe the part's object, ``frames`` its frame index
    (name, offset, length, raw length, frame xxh3), ``writer_nonce`` the nonce in its header;
    ``checkpoint_id``, ``epoch`` and ``job_nonce`` say which job it belongs to.
    """

    part: str
    key_groups: KeyGroups | None
    key: str
    size: int
    xxh3: str
    frames: tuple[PartFrame, ...]
    writer_nonce: str
    checkpoint_id: int
    epoch: int
    job_nonce: str

    @property
    def raw_size(self) -> int:
        """The decompressed size of the part's state."""
        return sum(frame.raw_length for frame in self.frames)

    def entry(self) -> PartEntry:
        """The part as the manifest records it."""
        return PartEntry(
            name=self.part,
            key_groups=self.key_groups,
            key=self.key,
            size=self.size,
            xxh3=self.xxh3,
            writer_nonce=self.writer_nonce,
            frames=self.frames,
        )


# -- the plan ----------------------------------------------------------------------------------


def plan_parts(
    parts: Mapping[str, KeyGroups | None] | Iterable[str | tuple[str, KeyGroups | None]],
) -> dict[str, KeyGroups | None]:
    """Normalise the parts a coordinator plans: a mapping name → key-group range (or
    ``None``), or an iterable of names or ``(name, range)`` pairs.

    Raises:
        TypeError: a name is not a str, or an item is neither a name nor a pair.
        ValueError: no parts, a duplicate or bad name (:func:`check_part_name`), or a range
            that is not ``(first, last)`` with ``0 <= first <= last``.
    """
    if isinstance(parts, str | bytes):
        raise TypeError("parts must be a mapping or an iterable of part names, not a str")
    items: list[tuple[str, Any]]
    if isinstance(parts, Mapping):
        items = list(parts.items())
    else:
        items = []
        for item in parts:
            if isinstance(item, str):
                items.append((item, None))
            elif isinstance(item, tuple) and len(item) == 2:
                items.append(item)
            else:
                raise TypeError(f"a part must be a name or a (name, key_groups) pair, not {item!r}")
    if not items:
        raise ValueError("a parallel checkpoint needs at least one part")
    planned: dict[str, KeyGroups | None] = {}
    for name, groups in items:
        check_part_name(name)
        if name in planned:
            raise ValueError(f"part {name!r} is planned twice")
        if groups is not None:
            groups = tuple(groups)
            if (
                len(groups) != 2
                or not all(is_int(v) for v in groups)
                or not 0 <= groups[0] <= groups[1]
            ):
                raise ValueError(f"part {name!r}: key_groups must be (first, last), got {groups!r}")
        planned[name] = groups
    return planned


def check_receipts(
    checkpoint_id: int,
    epoch: int,
    job_nonce: str,
    planned: Mapping[str, KeyGroups | None],
    receipts: Iterable[object],
) -> tuple[PartEntry, ...]:
    """The manifest's parts for ``receipts``, in planned order, if they are exactly this
    job's: one :class:`PartReceipt` per planned part, each of this checkpoint id, epoch and
    job nonce, for the planned part and key-group range. Pure; nothing is written.

    Raises:
        ReceiptError: a receipt of another checkpoint, epoch or job (a stale or foreign
            one), of a part not planned or with another key-group range, two receipts for
            one part, or a planned part without a receipt; its ``parts`` names them.
        TypeError: an item is not a :class:`PartReceipt`.
    """
    key = f"checkpoint {checkpoint_id}"
    by_name: dict[str, PartReceipt] = {}
    for receipt in receipts:
        if not isinstance(receipt, PartReceipt):
            raise TypeError(f"receipts must be PartReceipt, not {type(receipt).__name__}")
        if (receipt.checkpoint_id, receipt.epoch, receipt.job_nonce) != (
            checkpoint_id,
            epoch,
            job_nonce,
        ):
            raise ReceiptError(
                key,
                f"the receipt for part {receipt.part!r} belongs to checkpoint "
                f"{receipt.checkpoint_id} of epoch {receipt.epoch} (job {receipt.job_nonce}), "
                f"not to this job (checkpoint {checkpoint_id}, epoch {epoch}, job {job_nonce})",
                checkpoint_id=checkpoint_id,
                parts=(receipt.part,),
            )
        if receipt.part not in planned:
            raise ReceiptError(
                key,
                f"part {receipt.part!r} was not planned",
                checkpoint_id=checkpoint_id,
                parts=(receipt.part,),
            )
        if receipt.key_groups != planned[receipt.part] or receipt.key != part_key(
            checkpoint_id, receipt.part
        ):
            raise ReceiptError(
                key,
                f"the receipt for part {receipt.part!r} does not match its plan",
                checkpoint_id=checkpoint_id,
                parts=(receipt.part,),
            )
        if receipt.part in by_name:
            raise ReceiptError(
                key,
                f"two receipts for part {receipt.part!r}: hand each part's receipt once",
                checkpoint_id=checkpoint_id,
                parts=(receipt.part,),
            )
        by_name[receipt.part] = receipt
    missing = tuple(name for name in planned if name not in by_name)
    if missing:
        raise ReceiptError(
            key,
            f"no receipt for the planned parts {list(missing)}: every part must be written "
            "before the commit",
            checkpoint_id=checkpoint_id,
            parts=missing,
        )
    return tuple(by_name[name].entry() for name in planned)


# -- the worker --------------------------------------------------------------------------------


async def write_part_async(
    ticket: PartTicket, state: StateInput, *, backend: StoreLocation | None = None
) -> PartReceipt:
    """Write the part of ``ticket`` and return its receipt (the worker's side; async).

    ``state`` takes every form ``save_with_state`` takes (bytes, a mapping name → chunk, a
    sequence or (async) iterable of chunks); each chunk becomes one zstd frame, which
    :meth:`~objstore.checkpoint.AsyncCheckpointStore.load_part_frame` reads on its own.
    Memory stays bounded by the encoder's window, whatever the size. The store is opened from
    the ticket and closed again, unless an opened ``backend`` is given (then used as it is).

    Safe to call again for the same ticket (a retry, or a task run twice): if the part's
    object already exists and holds exactly what this call encoded, the receipt is returned
    as if this call had written it.

    Raises:
        ConflictError: the part's object already exists with other content (another state
            was written for this part of this job); nothing is changed.
        TypeError: ``ticket`` is not a :class:`PartTicket`, or bad chunks (from the reader).
    """  # noqa: DOC502 - ConflictError raised by _settle
    if not isinstance(ticket, PartTicket):
        raise TypeError(f"ticket must be a PartTicket, not {type(ticket).__name__}")
    chunks = iter_chunks(state)
    if backend is None:
        opened = as_async_backend(
            ticket.url, dict(ticket.storage_options or {}), verify_fencing=False
        )
        try:
            return await _write_part(opened, ticket, chunks)
        finally:
            await opened.close()
    return await _write_part(as_async_backend(backend), ticket, chunks)


def write_part(
    ticket: PartTicket, state: StateInput, *, backend: StoreLocation | None = None
) -> PartReceipt:
    """Blocking :func:`write_part_async` (from any thread or process; not from async code).

    Raises:
        ConflictError: the part's object already exists with other content.
        TypeError: ``ticket`` is not a :class:`PartTicket`, or bad chunks.
    """  # noqa: DOC502 - raised by write_part_async, run here
    return run_sync(write_part_async(ticket, state, backend=backend))


async def _write_part(backend: AsyncBackend, ticket: PartTicket, chunks: Any) -> PartReceipt:
    """Encode and upload one part create-if-absent (one PUT, or a stream once it outgrows
    the single-PUT limit, as ``CommitProtocol.write_sidecar`` does), settling an object
    found in its place (:func:`_settle`)."""
    encoder = SidecarEncoder(
        ticket.checkpoint_id,
        ticket.epoch,
        ticket.writer_nonce,
        level=ticket.compression_level,
        window=ticket.chunks_in_flight,
    )
    key = ticket.key
    limit = min(ticket.single_put_limit, backend.transport.single_put_limit)
    raw: list[RawChunk] = []
    pieces = encoder.pieces(_hashed(chunks, raw))
    head: collections.deque[bytes] = collections.deque()
    head_size = 0
    try:
        async for piece in pieces:
            head.append(piece)
            head_size += len(piece)
            if head_size > limit:
                break
        try:
            if head_size <= limit:
                data = head[0] if len(head) == 1 else b"".join(head)
                head.clear()
                await backend.put_if_absent(key, data)
            else:
                await backend.put_if_absent_stream(key, _chain(head, pieces))
        except AlreadyExistsError:
            async for _ in pieces:  # finish encoding: the result says what we would have written
                pass
            settled = await _settle(backend, ticket, encoder.result(), raw)
            if settled is not None:
                return settled
    finally:
        await pieces.aclose()
    encoded = encoder.result()
    frames = tuple(
        PartFrame(entry.name, entry.offset, entry.length, entry.raw_length, entry.xxh3)
        for entry in encoded.entries
    )
    return _receipt(ticket, encoded.size, encoded.checksum, frames)


def _receipt(
    ticket: PartTicket, size: int, checksum: str, frames: tuple[PartFrame, ...]
) -> PartReceipt:
    return PartReceipt(
        part=ticket.part,
        key_groups=ticket.key_groups,
        key=ticket.key,
        size=size,
        xxh3=checksum,
        frames=frames,
        writer_nonce=ticket.writer_nonce.hex(),
        checkpoint_id=ticket.checkpoint_id,
        epoch=ticket.epoch,
        job_nonce=ticket.job_nonce,
    )


RawChunk = tuple[str | None, int, str]
"""A chunk as written: its name, raw length and the xxh3-128 of its raw bytes."""
HASH_INLINE = 1 << 20
"""Chunks up to this size are hashed on the event loop; larger ones in a worker thread."""


async def _hashed(chunks: Any, raw: list[RawChunk]) -> AsyncIterator[Any]:
    """``chunks`` as they are, each one's raw length and xxh3-128 appended to ``raw``: what
    a retry compares an object already stored with (:func:`_settle`)."""
    if isinstance(chunks, AsyncIterator):
        source: AsyncIterator[Any] = chunks
    else:

        async def lifted() -> AsyncIterator[Any]:
            for chunk in chunks:
                yield chunk

        source = lifted()
    async for name, data in source:
        size = memoryview(data).nbytes
        if size <= HASH_INLINE:
            digest = xxhash.xxh3_128_hexdigest(data)
        else:
            digest = await asyncio.to_thread(xxhash.xxh3_128_hexdigest, data)
        raw.append((name, size, digest))
        yield name, data


async def _settle(
    backend: AsyncBackend, ticket: PartTicket, encoded: EncodedState, raw: list[RawChunk]
) -> PartReceipt | None:
    """The part's object was already there (an earlier attempt of this part). Accept it if
    it is byte for byte what we encoded (``None``: our receipt stands); else if it is this
    part's object holding the same frames of the same raw bytes, only compressed
    differently (zstd's output for a chunk depends on whether it ran multi-threaded), with
    a receipt describing it as stored. Read back in ranges, never held whole.

    Raises:
        ConflictError: it holds other state (or is not this part's object, or vanished).
    """
    key = ticket.key
    try:
        stored = await _stored_part(backend, key)
    except (NotFoundError, CorruptionError, zstandard.ZstdError):
        stored = None
    if stored is not None and (stored.size, stored.checksum) == (encoded.size, encoded.checksum):
        return None
    if stored is not None and stored.same_state(ticket, raw):
        frames = tuple(
            PartFrame(name, offset, length, raw_length, digest)
            for (name, _, _), (offset, length, raw_length, _, digest) in zip(
                raw, stored.frames, strict=True
            )
        )
        return _receipt(ticket, stored.size, stored.checksum, frames)
    raise ConflictError(
        key,
        f"{key}: another state was already written for this part of this job; it is kept, "
        "nothing was changed",
        expected={"size": encoded.size, "xxh3": encoded.checksum},
        actual={
            "size": stored.size if stored is not None else None,
            "xxh3": stored.checksum if stored is not None else None,
        },
    )


@dataclass(slots=True)
class _StoredPart:
    """A part object as read back: size, whole xxh3, header and its zstd frames, each as
    ``(offset, length, raw length, raw xxh3, frame xxh3)``."""

    size: int
    checksum: str
    header: bytes
    frames: list[tuple[int, int, int, str, str]]
    whole: bool
    """Whether the object ended exactly at a frame's end."""

    def same_state(self, ticket: PartTicket, raw: list[RawChunk]) -> bool:
        """Whether this is ``ticket``'s part object holding exactly the chunks ``raw``."""
        if not self.whole or len(self.header) < HEADER.size:
            return False
        magic, version, _, checkpoint_id, epoch, nonce = HEADER.unpack(self.header)
        if (magic, version, checkpoint_id, epoch, nonce) != (
            SIDECAR_MAGIC,
            SIDECAR_FORMAT,
            ticket.checkpoint_id,
            ticket.epoch,
            ticket.writer_nonce,
        ):
            return False
        return [(size, digest) for _, size, digest in raw] == [
            (raw_length, digest) for _, _, raw_length, digest, _ in self.frames
        ]


async def _stored_part(backend: AsyncBackend, key: str) -> _StoredPart:
    """Read ``key`` back in ranged reads, splitting it into its zstd frames as it streams
    (each decompressed once, to hash its raw bytes; memory: one range plus one chunk).

    Raises:
        NotFoundError: it is gone.
        CorruptionError: it shrank while being read.
        zstandard.ZstdError: its bytes are not zstd frames.
    """  # noqa: DOC502 - raised by the backend, read_ranges and zstandard
    size = (await backend.head(key)).size
    whole = xxhash.xxh3_128()
    header = bytearray()
    frames: list[tuple[int, int, int, str, str]] = []
    decompressor: Any = None
    raw_hash = frame_hash = xxhash.xxh3_128()
    offset = HEADER.size
    raw_length = consumed = 0
    async with contextlib.aclosing(read_ranges(backend, key, size, RANGE_SIZE)) as ranges:
        async for piece in ranges:
            whole.update(piece)
            data = piece
            if len(header) < HEADER.size:
                take = HEADER.size - len(header)
                header += data[:take]
                data = data[take:]
            while data:
                if decompressor is None:
                    decompressor = zstandard.ZstdDecompressor().decompressobj()
                    raw_hash, frame_hash = xxhash.xxh3_128(), xxhash.xxh3_128()
                    raw_length = consumed = 0
                out = decompressor.decompress(data)
                raw_hash.update(out)
                raw_length += len(out)
                if not decompressor.eof:
                    frame_hash.update(data)
                    consumed += len(data)
                    break
                rest = decompressor.unused_data
                used = len(data) - len(rest)
                frame_hash.update(data[:used])
                consumed += used
                frames.append(
                    (offset, consumed, raw_length, raw_hash.hexdigest(), frame_hash.hexdigest())
                )
                offset += consumed
                decompressor = None
                data = rest
    return _StoredPart(size, whole.hexdigest(), bytes(header), frames, decompressor is None)


async def _chain(head: collections.deque[bytes], rest: Any) -> Any:
    """``head``'s pieces, then ``rest``'s; each head piece is let go once handed over."""
    while head:
        yield head.popleft()
    async for piece in rest:
        yield piece


# -- the coordinator ---------------------------------------------------------------------------


class AsyncParallelJob:
    """One parallel checkpoint in progress, held by its coordinator (asyncio).

    Made by :meth:`~objstore.checkpoint.AsyncCheckpointStore.begin_parallel`; hand
    :attr:`tickets` to the workers and their receipts to :meth:`commit`.
    """

    def __init__(
        self,
        store: AsyncCheckpointStore,
        checkpoint_id: int,
        epoch: int,
        planned: dict[str, KeyGroups | None],
        storage_options: dict[str, Any] | None,
    ) -> None:
        self.store = store
        self.checkpoint_id = checkpoint_id
        self.epoch = epoch
        self.planned = planned
        self.job_nonce = os.urandom(16).hex()
        self.tickets: tuple[PartTicket, ...] = tuple(
            PartTicket(
                url=store.url,
                storage_options=storage_options,
                checkpoint_id=checkpoint_id,
                epoch=epoch,
                part=name,
                key_groups=groups,
                job_nonce=self.job_nonce,
                compression_level=store.compression_level,
                chunks_in_flight=store.chunks_in_flight,
                single_put_limit=store.single_put_limit,
            )
            for name, groups in planned.items()
        )
        """One picklable ticket per planned part, in planned order."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(checkpoint_id={self.checkpoint_id}, epoch={self.epoch}, "
            f"parts={len(self.planned)})"
        )

    def ticket(self, part: str) -> PartTicket:
        """The ticket of ``part``.

        Raises:
            KeyError: no such part was planned.
        """
        for ticket in self.tickets:
            if ticket.part == part:
                return ticket
        raise KeyError(part)

    async def commit(
        self,
        receipts: Iterable[PartReceipt],
        *,
        source_offsets: dict[str, Any] | None = None,
        sink_epochs: dict[str, int] | None = None,
        sink_commit_statuses: dict[str, Any] | None = None,
        watermark: int | None = None,
        metadata: dict[str, Any] | None = None,
        timestamp_ms: int | None = None,
    ) -> CheckpointManifest:
        """Commit the checkpoint: one manifest (format 2) listing every part, through the
        store's commit protocol (create-if-absent, then the pointer moved forward by
        compare-and-swap, then ``max_retained`` pruning), as a save without state.

        The receipts are checked first, before any request (:func:`check_receipts`). A
        commit that raised anything but a conflict may have committed: calling it again with
        the same receipts completes it. Returns the manifest as stored.

        Raises:
            ReceiptError: the receipts are not exactly this job's (see
                :func:`check_receipts`); nothing was written.
            FencedError: a newer epoch committed or claimed the store (this coordinator is
                a zombie); a manifest it committed is withdrawn again.
            CheckpointConflict: another writer committed this id (or a janitor aborted it,
                having collected its parts as orphans).
        """  # noqa: DOC502 - raised by check_receipts and the commit protocol
        parts = check_receipts(
            self.checkpoint_id, self.epoch, self.job_nonce, self.planned, receipts
        )
        fields: dict[str, Any] = {
            "source_offsets": source_offsets or {},
            "sink_epochs": sink_epochs or {},
            "sink_commit_statuses": sink_commit_statuses or {},
            "watermark": watermark,
            "metadata": metadata or {},
            "vnode_count": self.store.vnode_count,
        }
        if timestamp_ms is not None:
            fields["timestamp_ms"] = timestamp_ms
        manifest = CheckpointManifest(
            checkpoint_id=self.checkpoint_id, epoch=self.epoch, parts=parts, **fields
        )
        return await self.store._commit_parts(manifest)


class ParallelJob:
    """The blocking face of :class:`AsyncParallelJob` (from
    :meth:`~objstore.CheckpointStore.begin_parallel`)."""

    def __init__(self, job: AsyncParallelJob) -> None:
        self._async = job

    def __repr__(self) -> str:
        return repr(self._async)

    @property
    def async_job(self) -> AsyncParallelJob:
        """The async job this face drives."""
        return self._async

    @property
    def checkpoint_id(self) -> int:
        """The id being checkpointed."""
        return self._async.checkpoint_id

    @property
    def epoch(self) -> int:
        """The coordinator's epoch."""
        return self._async.epoch

    @property
    def job_nonce(self) -> str:
        """The nonce every ticket and receipt of this job carries."""
        return self._async.job_nonce

    @property
    def planned(self) -> dict[str, KeyGroups | None]:
        """Part name → key-group range, as planned."""
        return dict(self._async.planned)

    @property
    def tickets(self) -> tuple[PartTicket, ...]:
        """One picklable ticket per planned part, in planned order."""
        return self._async.tickets

    def ticket(self, part: str) -> PartTicket:
        """The ticket of ``part`` (``KeyError`` if it was not planned)."""
        return self._async.ticket(part)

    def commit(self, receipts: Iterable[PartReceipt], **fields: Any) -> CheckpointManifest:
        """Blocking :meth:`AsyncParallelJob.commit` (same keyword arguments)."""
        return run_sync(self._async.commit(receipts, **fields))


# -- reading and validating parts --------------------------------------------------------------


def _exclusive(part: PartEntry) -> list[Any]:
    return [frame.as_operator_state() for frame in part.frames if frame.key is None]


def part_as_stored(manifest: CheckpointManifest, part: PartEntry) -> StoredManifest:
    """A stand-in manifest whose "sidecar" is ``part``'s object, so the sidecar checks
    (:class:`~objstore.checkpoint._streamed_sidecar.SidecarCheck`) verify a part as they
    verify ``state.bin``: size, whole-object xxh3, header (id, writer nonce), frame bounds."""
    standin = CheckpointManifest(
        checkpoint_id=manifest.checkpoint_id,
        epoch=manifest.epoch,
        operator_states=tuple(_exclusive(part)),
        state_checksum=part.xxh3,
        state_size=part.size,
    )
    return StoredManifest(standin, writer_nonce="", state_nonce=part.writer_nonce, revision=0)


async def open_part(
    backend: AsyncBackend,
    manifest: CheckpointManifest,
    part: PartEntry,
    *,
    range_size: int,
    progress: Progress,
) -> tuple[int, AsyncGenerator[bytes, None]]:
    """The size of ``part``'s object and its bytes in ranged reads, each checked as it
    streams and the whole object after the last (as ``open_sidecar`` does for
    ``state.bin``): a consumer uploading them fails before completing if it is not whole.

    Raises:
        CorruptionError: the part has no object, or it is missing or not of the recorded
            size.
    """
    if part.key is None:
        raise CorruptionError(part.name, "the part has no object of its own")
    check = SidecarCheck(part.key, part_as_stored(manifest, part))
    try:
        size = (await backend.head(part.key)).size
    except NotFoundError:
        raise CorruptionError(part.key, "part object missing") from None
    check.check_size(size)
    pieces = checked_pieces(
        backend, part.key, size, check, range_size=range_size, progress=progress
    )
    return size, pieces


async def check_part(
    backend: AsyncBackend,
    manifest: CheckpointManifest,
    part: PartEntry,
    *,
    streamed: bool,
    range_size: int,
    progress: Progress,
) -> str | None:
    """Validate one part: its object (size, xxh3, header, frame bounds; streamed in ranges
    or one GET) and every shared frame (its object exists, holds ``length`` bytes at
    ``offset``, and they hash to the frame's xxh3). The reason it is invalid, or ``None``.
    Transient errors propagate."""
    own = part_key(manifest.checkpoint_id, part.name)
    if part.key is not None and part.key != own:
        return f"part {part.name!r}: {part.key} is not checkpoint {manifest.checkpoint_id}'s"
    if part.key is not None and part.xxh3 is not None:
        try:
            if streamed:
                size = (await backend.head(part.key)).size
                check = SidecarCheck(part.key, part_as_stored(manifest, part))
                check.check_size(size)
                pieces = checked_pieces(
                    backend, part.key, size, check, range_size=range_size, progress=progress
                )
                async with contextlib.aclosing(pieces):
                    async for _ in pieces:
                        pass
            else:
                data, _ = await backend.get(part.key)
                verify_sidecar(
                    data,
                    key=part.key,
                    checkpoint_id=manifest.checkpoint_id,
                    nonce=part.writer_nonce,
                    size=part.size,
                    state_checksum=part.xxh3,
                    entries=_exclusive(part),
                )
        except NotFoundError:
            return f"part {part.name!r}: {part.key} missing"
        except CorruptionError as exc:
            return f"part {part.name!r}: {exc.reason}"
    for frame in part.frames:
        if frame.key is None:
            continue
        try:
            data = await backend.get_range(frame.key, frame.offset, frame.offset + frame.length)
        except NotFoundError:
            return f"part {part.name!r}: shared object {frame.key} missing"
        if len(data) != frame.length or xxhash.xxh3_128_hexdigest(data) != frame.xxh3:
            return f"part {part.name!r}: shared object {frame.key} does not hold its frame"
    return None


async def read_part(
    backend: AsyncBackend, manifest: CheckpointManifest, part: PartEntry, parallelism: int
) -> list[bytes]:
    """Every frame of ``part``, verified and decompressed, in order: the part's object in
    one read (its whole xxh3 checked), shared frames one ranged read each.

    Raises:
        CorruptionError: the part's object or a frame does not match the manifest, or is
            missing.
    """
    exclusive = _exclusive(part)
    data = b""
    if part.key is not None and part.size is not None and part.xxh3 is not None:
        try:
            data = await backend.get_range(part.key, 0, part.size + 1)
        except NotFoundError:
            raise CorruptionError(part.key, "part object missing") from None
        if len(exclusive) == len(part.frames):
            joined = await decode_sidecar(
                data,
                key=part.key,
                checkpoint_id=manifest.checkpoint_id,
                nonce=part.writer_nonce,
                size=part.size,
                state_checksum=part.xxh3,
                entries=exclusive,
                parallelism=parallelism,
            )
            view = memoryview(joined)
            out, start = [], 0
            for frame in part.frames:
                out.append(bytes(view[start : start + frame.raw_length]))
                start += frame.raw_length
            return out
        await asyncio.to_thread(
            verify_sidecar,
            data,
            key=part.key,
            checkpoint_id=manifest.checkpoint_id,
            nonce=part.writer_nonce,
            size=part.size,
            state_checksum=part.xxh3,
            entries=exclusive,
        )
    view = memoryview(data)
    frames = []
    for frame in part.frames:
        frames.append(await read_frame(backend, part, frame, view))
    return frames


async def read_frame(
    backend: AsyncBackend, part: PartEntry, frame: PartFrame, exclusive: memoryview | None = None
) -> bytes:
    """One frame of ``part``, verified (its xxh3) and decompressed: from ``exclusive`` (the
    part's object, already read) or with one ranged read.

    Raises:
        CorruptionError: the frame is missing, short, or fails its checksum.
    """
    key = frame.key or part.key
    if key is None:
        raise CorruptionError(part.name, f"frame {frame.name!r} has no object")
    if frame.key is None and exclusive is not None and exclusive.nbytes:
        raw: Any = exclusive[frame.offset : frame.offset + frame.length]
    else:
        try:
            raw = await backend.get_range(key, frame.offset, frame.offset + frame.length)
        except NotFoundError:
            raise CorruptionError(key, f"frame {frame.name!r}: object missing") from None
    return await asyncio.to_thread(decode_frame, raw, frame.as_operator_state(), key=key)


def frame_of(part: PartEntry, name_or_index: str | int) -> PartFrame:
    """The frame of ``part`` named ``name_or_index`` (or at that position).

    Raises:
        TypeError: ``name_or_index`` is neither a name nor a position.
        KeyError: no such frame.
    """  # noqa: DOC502 - KeyError raised by PartEntry.frame
    if isinstance(name_or_index, bool) or not isinstance(name_or_index, str | int):
        raise TypeError("name_or_index must be a frame name or a position")
    return part.frame(name_or_index)


def joined_names(parts: Sequence[PartEntry]) -> list[str]:
    """The names ``load_state`` gives the frames of a parts checkpoint: ``{part}/{frame}``,
    an unnamed frame by its position in its part.

    Raises:
        ValueError: two frames would get one name (an unnamed frame's position equals
            another frame's name).
    """
    names: list[str] = []
    seen: set[str] = set()
    for part in parts:
        for position, frame in enumerate(part.frames):
            name = f"{part.name}/{position if frame.name is None else frame.name}"
            if name in seen:
                raise ValueError(f"two frames of part {part.name!r} are both named {name!r}")
            seen.add(name)
            names.append(name)
    return names
