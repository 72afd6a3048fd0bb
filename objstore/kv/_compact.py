"""One KV compaction: fold the log tail (and the newest runs) into a new sorted run.

A compaction reads the manifest (generation ``g``), the contiguous log tail after its
``snapshot``, and streams a merge of that tail with the runs :func:`plan_merge` picks into
new segments ``segments/{g:020d}-{id}`` (create-if-absent, about ``segment_bytes`` each; memory:
the tail, one output segment and ~1 MiB per input run). It then compare-and-swaps the
manifest onto the next generation — only if the stored one is still at ``g``
(:func:`commit_compaction`). So of two compactions of the same generation one wins and the
other's segments are garbage it deletes; a sweep that condemns old unreferenced segments
bumps the generation first, which fences every compaction in flight. The winner deletes the
segments it replaced; a reader still holding the old manifest finds them gone and reloads.
A crash at any step leaves the old manifest (and unreferenced segments a later sweep
collects) or the new one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from objstore._concurrency import gather_bounded
from objstore.backends import AsyncBackend
from objstore.errors import NotFoundError
from objstore.kv._format import (
    LOG_PREFIX,
    KVBatch,
    KVManifest,
    commit_compaction,
    contiguous_tail,
    decode_snapshot,
    log_key,
    plan_merge,
    sequence_of,
)
from objstore.kv._read import (
    Entry,
    SegmentReader,
    StaleRead,
    merge_sources,
    read_manifest,
    swap_manifest,
)
from objstore.kv._segment import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_SEGMENT_BYTES,
    SegmentBuilder,
    SegmentRef,
)

__all__ = [
    "DEFAULT_FLUSH_BATCHES",
    "DEFAULT_FLUSH_BYTES",
    "DEFAULT_MAX_RUNS",
    "Compaction",
    "Compactor",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_RUNS = 6
"""Runs the size-tiered policy lets stand before merging more of them."""
DEFAULT_FLUSH_BATCHES = 4096
"""Log batches one compaction pass folds at most (the tail it holds in memory)."""
DEFAULT_FLUSH_BYTES = 32 * 1024 * 1024
"""Key and value bytes of log batches after which a compaction pass stops reading the tail
(the rest waits for the next pass)."""
_LIST_PAGE = 1000
_PARALLEL = 16
_YIELD_EVERY = 256


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one compaction did: the manifest after it, whether it ``committed`` (``False``:
    nothing to do, or it lost to another compaction or a sweep), the segments it wrote and
    those it replaced."""

    manifest: KVManifest
    version: str | None
    committed: bool
    written: tuple[SegmentRef, ...] = ()
    replaced: tuple[str, ...] = ()


async def _items(items: Iterable[Entry]) -> AsyncIterator[Entry]:
    for item in items:
        yield item


async def _run_stream(reader: SegmentReader, run: tuple[SegmentRef, ...]) -> AsyncIterator[Entry]:
    for segment in run:
        async for item in reader.stream(segment):
            yield item


class Compactor:
    """Compactions of one store's KV state (see the module docstring)."""

    def __init__(
        self,
        backend: AsyncBackend,
        reader: SegmentReader,
        read_log: Callable[[int], Awaitable[KVBatch | None]],
        *,
        max_runs: int = DEFAULT_MAX_RUNS,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        flush_batches: int = DEFAULT_FLUSH_BATCHES,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        attempts: int = 1000,
    ) -> None:
        self.backend = backend
        self.reader = reader
        self.read_log = read_log
        self.max_runs = max_runs
        self.segment_bytes = segment_bytes
        self.block_bytes = block_bytes
        self.flush_batches = flush_batches
        self.flush_bytes = flush_bytes
        self.attempts = attempts

    async def _tail(self, after: int) -> list[KVBatch]:
        """The contiguous batches after ``after`` (at most ``flush_batches``, and no more
        once they hold ``flush_bytes``).

        Raises:
            StaleRead: if one of them was pruned (the manifest moved past ``after``).
        """
        found: list[int] = []
        while len(found) < self.flush_batches:
            start = after + len(found)
            listing = await self.backend.list_after(LOG_PREFIX, log_key(start), limit=_LIST_PAGE)
            sequences = (sequence_of(info.key, LOG_PREFIX) for info in listing)
            run = contiguous_tail(start, (s for s in sequences if s is not None))
            found += run
            if len(listing) < _LIST_PAGE or len(run) < len(listing):
                break
        found = found[: self.flush_batches]
        tail: list[KVBatch] = []
        held = 0
        for first in range(0, len(found), _PARALLEL):
            chunk = found[first : first + _PARALLEL]
            for batch in await gather_bounded((self.read_log(s) for s in chunk), _PARALLEL):
                if batch is None:
                    raise StaleRead
                tail.append(batch)
                held += sum(len(k) + len(v) for k, v in batch.pairs) + sum(map(len, batch.keys))
            if held >= self.flush_bytes:
                break  # the rest waits for the next pass: memory stays bounded
        return tail

    async def compact(self, *, full: bool) -> Compaction:
        """One compaction pass from the stored manifest (``full``: merge every run, dropping
        deleted keys, into one).

        A log tail pruned under it raises :class:`StaleRead` (retry from a fresh manifest);
        losing ``attempts`` races for the manifest to prunes or sweeps, ``ConflictError``."""
        manifest, version = await read_manifest(self.backend)
        tail = await self._tail(manifest.snapshot)
        memtable: dict[bytes, bytes | None] = {}
        for batch in tail:
            if batch.kind == "put":
                memtable.update(batch.pairs)
            else:
                memtable.update((key, None) for key in batch.keys)
        runs = manifest.runs
        if manifest.legacy or full:
            merged = len(runs)
        else:
            sizes = [sum(segment.count for segment in run) for run in runs]
            merged = plan_merge(len(memtable), sizes, self.max_runs)
        legacy = manifest.legacy
        if not tail and not legacy and (merged < 2 if not full else len(runs) <= 1):
            return Compaction(manifest, version, False)
        sources = [_items(sorted(memtable.items()))]
        sources += [_run_stream(self.reader, run) for run in runs[:merged]]
        if legacy:
            blob, _ = await self._legacy(manifest)
            sources.append(
                _items(
                    sorted(
                        decode_snapshot(
                            blob, key=manifest.snapshot_key, sequence=manifest.snapshot
                        ).items()
                    )
                )
            )
        bottom = merged == len(runs)
        memtable = {}
        written = await self._write(manifest.generation, merge_sources(sources, True), bottom)
        snapshot = manifest.snapshot + len(tail)
        new_runs = ((written,) if written else ()) + runs[merged:]
        replaced = tuple(s.key for run in runs[:merged] for s in run)
        if legacy:
            replaced += (manifest.snapshot_key,)
        stored, version, wrote = await swap_manifest(
            self.backend,
            manifest,
            version,
            lambda current: commit_compaction(current, manifest, snapshot, new_runs),
            self.attempts,
        )
        if not wrote and (stored.snapshot, stored.runs) != (snapshot, new_runs):
            # Lost — or our swap landed with its answer lost and the manifest moved on since:
            # only what the stored manifest does not reference may go.
            logger.info("KV compaction of generation %d lost", manifest.generation)
            keep = {segment.name for segment in stored.segments}
            await self.backend.delete_many([s.key for s in written if s.name not in keep])
            return Compaction(stored, version, False)
        await self.backend.delete_many(replaced)
        return Compaction(stored, version, True, tuple(written), replaced)

    async def _legacy(self, manifest: KVManifest) -> tuple[bytes, str]:
        try:
            return await self.backend.get(manifest.snapshot_key)
        except NotFoundError as exc:
            raise StaleRead from exc

    async def _write(
        self, generation: int, merged: AsyncIterator[Entry], bottom: bool
    ) -> tuple[SegmentRef, ...]:
        """Stream ``merged`` into segments of about ``segment_bytes`` (dropping deleted keys
        when the merge reaches the ``bottom`` run); return them in key order."""
        written: list[SegmentRef] = []
        builder: SegmentBuilder | None = None
        count = 0
        async for key, value in merged:
            if value is None and bottom:
                continue
            if builder is None:
                name = f"{generation:020d}-{uuid.uuid4().hex[:16]}"
                builder = SegmentBuilder(name, self.block_bytes)
            builder.add(key, value)
            if builder.size >= self.segment_bytes:
                written.append(await self._put(builder))
                builder = None
            count += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let writers sharing this loop run
        if builder is not None:
            written.append(await self._put(builder))
        return tuple(written)

    async def _put(self, builder: SegmentBuilder) -> SegmentRef:
        data, ref = builder.finish()
        await self.backend.put_if_absent(ref.key, data)
        return ref
