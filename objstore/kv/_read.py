"""Reading the compacted KV state: segment indexes and blocks by ranged GETs through a
bounded LRU, point lookups and ordered scans over runs, and the manifest's read/swap.

Memory is bounded by configuration: decoded blocks live in an LRU of ``cache_bytes``; the
index of a segment (first key, offset and length per block: about 1/1000 of the data) is
kept while the manifest references the segment.
"""

from __future__ import annotations

import bisect
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

from objstore.backends import AsyncBackend
from objstore.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
)
from objstore.kv._format import MANIFEST_KEY, KVManifest, decode_manifest, encode_manifest
from objstore.kv._segment import (
    Block,
    SegmentIndex,
    SegmentRef,
    decode_index,
    iter_blocks_in,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "BlockCache",
    "Entry",
    "SegmentReader",
    "StaleRead",
    "merge_sources",
    "read_manifest",
    "segment_for_key",
    "segments_for_range",
    "swap_manifest",
]

DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
"""Decoded block bytes a store object keeps (LRU)."""
_SCAN_READ_BYTES = 1024 * 1024
"""Bytes of consecutive blocks an unbounded scan or a compaction fetches per ranged GET."""

Entry = tuple[bytes, bytes | None]
"""A key and its value (``None``: deleted in this run, hiding older runs)."""


class StaleRead(Exception):
    """What a reader read was superseded under it (pruned, or a segment replaced): reload."""


class BlockCache:
    """Decoded blocks by ``(segment name, block number)``, least recently used dropped first
    once their cost passes ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._blocks: OrderedDict[tuple[str, int], Block] = OrderedDict()

    def get(self, name: str, number: int) -> Block | None:
        """The cached block, or ``None``."""
        block = self._blocks.get((name, number))
        if block is not None:
            self._blocks.move_to_end((name, number))
        return block

    def put(self, name: str, number: int, block: Block) -> None:
        """Cache ``block``, dropping the least recently used beyond the capacity."""
        if (name, number) in self._blocks:
            return
        self._blocks[(name, number)] = block
        self.used += block.cost
        while self.used > self.capacity and self._blocks:
            _, dropped = self._blocks.popitem(last=False)
            self.used -= dropped.cost


class SegmentReader:
    """Ranged reads of segments for one store object. A segment that is gone (replaced by a
    compaction since the manifest was read) raises :data:`StaleRead`: the caller reloads."""

    def __init__(self, backend: AsyncBackend, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.backend = backend
        self.blocks = BlockCache(cache_bytes)
        self._indexes: dict[str, SegmentIndex] = {}

    def retain(self, manifest: KVManifest) -> None:
        """Forget the indexes of segments ``manifest`` no longer references."""
        keep = {segment.name for segment in manifest.segments}
        for name in [name for name in self._indexes if name not in keep]:
            del self._indexes[name]

    async def _range(self, segment: SegmentRef, start: int, end: int) -> bytes:
        try:
            return await self.backend.get_range(segment.key, start, end)
        except NotFoundError as exc:
            raise StaleRead from exc

    async def index(self, segment: SegmentRef) -> SegmentIndex:
        """The segment's index (1 ranged GET the first time).
        A segment that is gone raises :class:`StaleRead`."""
        index = self._indexes.get(segment.name)
        if index is None:
            end = segment.index_offset + segment.index_length
            blob = await self._range(segment, segment.index_offset, end)
            index = decode_index(blob, key=segment.key, size=segment.index_offset)
            self._indexes[segment.name] = index
        return index

    async def block(
        self, segment: SegmentRef, number: int, *, ahead: int = 0, backward: bool = False
    ) -> Block:
        """Block ``number`` (1 ranged GET unless cached); with ``ahead`` bytes, the
        uncached blocks after it (before it, ``backward``) up to that many bytes come in the
        same GET (scans). A segment that is gone raises :class:`StaleRead`."""
        cached = self.blocks.get(segment.name, number)
        if cached is not None:
            return cached
        index = await self.index(segment)
        offsets, lengths = index.offsets, index.lengths
        first = last = number
        if backward:
            end = offsets[number] + lengths[number]
            while (
                first > 0
                and end - offsets[first - 1] <= ahead
                and self.blocks.get(segment.name, first - 1) is None
            ):
                first -= 1
        else:
            while (
                last + 1 < len(offsets)
                and offsets[last + 1] + lengths[last + 1] - offsets[number] <= ahead
                and self.blocks.get(segment.name, last + 1) is None
            ):
                last += 1
        start = offsets[first]
        data = await self._range(segment, start, offsets[last] + lengths[last])
        blocks = list(iter_blocks_in(index, data, start, first, last, key=segment.key))
        for offset, block in enumerate(blocks):
            self.blocks.put(segment.name, first + offset, block)
        return blocks[number - first]

    async def get(self, segment: SegmentRef, key: bytes) -> tuple[bool, bytes | None]:
        """``(found, value)`` of ``key`` in ``segment``: at most 2 ranged GETs cold.
        A segment that is gone raises :class:`StaleRead`."""
        index = await self.index(segment)
        number = index.block_for(key)
        if number is None:
            return False, None
        return (await self.block(segment, number)).find(key)

    async def scan(
        self, segment: SegmentRef, low: bytes, high: bytes, forward: bool, ahead: int
    ) -> AsyncIterator[Entry]:
        """The entries of ``segment`` with ``low <= key <= high`` (empty ``high``:
        unbounded), in key order or reversed.
        A segment that is gone raises :class:`StaleRead`."""
        index = await self.index(segment)
        count = len(index.offsets)
        if forward:
            number = index.block_for(low)
            number = 0 if number is None else number
            while number < count:
                if high and index.first_keys[number] > high:
                    return
                block = await self.block(segment, number, ahead=ahead)
                start = bisect.bisect_left(block.keys, low)
                for at in range(start, len(block.keys)):
                    key = block.keys[at]
                    if high and key > high:
                        return
                    yield key, block.values[at]
                number += 1
        else:
            found = index.block_for(high) if high else count - 1
            if found is None:
                return
            number = found
            while number >= 0:
                block = await self.block(segment, number, ahead=ahead, backward=True)
                stop = bisect.bisect_right(block.keys, high) if high else len(block.keys)
                for at in range(stop - 1, -1, -1):
                    key = block.keys[at]
                    if key < low:
                        return
                    yield key, block.values[at]
                number -= 1

    async def stream(self, segment: SegmentRef) -> AsyncIterator[Entry]:
        """Every entry of ``segment`` in order, reading about 1 MiB per ranged GET and
        holding only that (compaction: bypasses the cache).
        A segment that is gone raises :class:`StaleRead`."""
        index = await self.index(segment)
        number, count = 0, len(index.offsets)
        while number < count:
            last = number
            while (
                last + 1 < count
                and index.offsets[last + 1] + index.lengths[last + 1] - index.offsets[number]
                <= _SCAN_READ_BYTES
            ):
                last += 1
            start = index.offsets[number]
            data = await self._range(segment, start, index.offsets[last] + index.lengths[last])
            for block in iter_blocks_in(index, data, start, number, last, key=segment.key):
                for at, key in enumerate(block.keys):
                    yield key, block.values[at]
            number = last + 1


def segment_for_key(run: Sequence[SegmentRef], key: bytes) -> SegmentRef | None:
    """The segment of ``run`` whose key range holds ``key``, if any."""
    at = bisect.bisect_right([segment.first for segment in run], key) - 1
    if at >= 0 and key <= run[at].last:
        return run[at]
    return None


def segments_for_range(run: Sequence[SegmentRef], low: bytes, high: bytes) -> list[SegmentRef]:
    """The segments of ``run`` overlapping ``[low, high]`` (empty ``high``: unbounded), in
    key order."""
    return [s for s in run if s.last >= low and (not high or s.first <= high)]


async def merge_sources(
    sources: list[AsyncIterator[Entry]], forward: bool
) -> AsyncGenerator[Entry, None]:
    """One ordered stream of ``sources`` (each ordered the same way, newest first): every
    key once, with the newest source's value (``None`` included)."""
    heads: list[Entry | None] = []
    for source in sources:
        heads.append(await anext(source, None))
    try:
        while True:
            chosen: bytes | None = None
            for head in heads:
                if head is None:
                    continue
                if chosen is None or (head[0] < chosen if forward else head[0] > chosen):
                    chosen = head[0]
            if chosen is None:
                return
            value: bytes | None = None
            taken = False
            for number, head in enumerate(heads):
                if head is not None and head[0] == chosen:
                    if not taken:
                        value, taken = head[1], True
                    heads[number] = await anext(sources[number], None)
            yield chosen, value
    finally:
        for source in sources:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()


async def read_manifest(backend: AsyncBackend) -> tuple[KVManifest, str | None]:
    """The stored manifest and its version (an empty one and ``None`` when absent)."""
    try:
        blob, version = await backend.get(MANIFEST_KEY)
    except NotFoundError:
        return KVManifest(), None
    return decode_manifest(blob, key=MANIFEST_KEY), version


async def swap_manifest(
    backend: AsyncBackend,
    manifest: KVManifest,
    version: str | None,
    change: Callable[[KVManifest], KVManifest | None],
    attempts: int,
) -> tuple[KVManifest, str | None, bool]:
    """Compare-and-swap the manifest to ``change(stored)`` from ``manifest`` at ``version``
    (what the caller last read), re-reading and re-applying after each lost race; ``change``
    returns ``None`` to write nothing. Returns the stored manifest, its version and whether
    this call wrote it.

    Raises:
        ConflictError: after losing ``attempts`` consecutive races.
    """
    target: KVManifest | None = manifest
    for _ in range(attempts):
        target = change(manifest)
        if target is None or (target == manifest and version is not None):
            return manifest, version, False
        blob = encode_manifest(target, uuid.uuid4().hex)
        try:
            if version is None:
                version = await backend.put_if_absent(MANIFEST_KEY, blob)
            else:
                version = await backend.put_if_match(MANIFEST_KEY, blob, version)
        except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
            manifest, version = await read_manifest(backend)
            continue
        return target, version, True
    raise ConflictError(
        MANIFEST_KEY,
        f"lost {attempts} consecutive races to update the KV manifest",
        expected=target,
        actual=manifest,
    )
