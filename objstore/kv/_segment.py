"""Sorted immutable segments: the compacted KV state as blocks with an index (pure, no I/O).

A segment object ``kv/segments/{generation:020d}-{id}`` is::

    block 0 | block 1 | … | index

Each block is a sealed blob (:func:`objstore.codec.seal`: xxh3 checksum, zstd when it
pays) of ``u32 count`` then ``count`` entries ``u32 key length | key | u32 value length |
value``, keys strictly ascending; a value length of ``0xFFFFFFFF`` (no value bytes) marks a
deleted key, which hides the key in older runs. Blocks hold about
:data:`DEFAULT_BLOCK_BYTES` of raw entries, so a point read fetches one small range.

The index is a sealed framed object (header ``format``/``kind``/``count``) whose entries
are ``u32 key length | first key of the block | u64 offset | u32 length``. The manifest
records, per segment, its first and last key, entry count, size and where the index is
(:class:`SegmentRef`), so a reader fetches the index with one ranged GET and a block with
another, and never needs the whole object.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from objstore.codec import canonical_json, open_framed, seal, unseal
from objstore.errors import CorruptionError

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_SEGMENT_BYTES",
    "SEGMENT_FORMAT",
    "SEGMENT_PREFIX",
    "Block",
    "SegmentBuilder",
    "SegmentIndex",
    "SegmentRef",
    "decode_block",
    "decode_index",
    "segment_generation",
]

SEGMENT_FORMAT = 1
"""Format version of segment blocks and indexes."""
SEGMENT_PREFIX = "kv/segments"
DEFAULT_BLOCK_BYTES = 64 * 1024
"""Raw entry bytes after which a block is closed."""
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
"""Stored bytes after which a segment is closed (far below any single-PUT limit)."""
_DELETED = 0xFFFFFFFF
_U32 = struct.Struct("<I")
_INDEX_ENTRY = struct.Struct("<QI")
_INDEX_KIND = "objstore.kv-segment-index"


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """What the manifest knows of one segment: its object ``name`` under
    :data:`SEGMENT_PREFIX`, its ``first`` and ``last`` key, ``count`` entries, ``size`` bytes
    and the byte range ``[index_offset, index_offset + index_length)`` of its index."""

    name: str
    first: bytes
    last: bytes
    count: int
    size: int
    index_offset: int
    index_length: int

    @property
    def key(self) -> str:
        """The segment's object key."""
        return f"{SEGMENT_PREFIX}/{self.name}"


def segment_generation(name: str) -> int | None:
    """The manifest generation a segment named ``name`` was written against (the
    compaction that wrote it read that generation), or ``None`` for a foreign name."""
    digits, dash, ident = name.partition("-")
    if not (dash and len(digits) == 20 and digits.isascii() and digits.isdigit()):
        return None
    if not (ident.isascii() and ident.isalnum()):
        return None
    return int(digits)


@dataclass(frozen=True, slots=True)
class Block:
    """One decoded block: ``keys`` ascending and their ``values`` (``None``: deleted)."""

    keys: list[bytes]
    values: list[bytes | None]
    cost: int

    def find(self, key: bytes) -> tuple[bool, bytes | None]:
        """``(found, value)`` of ``key`` in this block (value ``None``: deleted)."""
        at = bisect.bisect_left(self.keys, key)
        if at < len(self.keys) and self.keys[at] == key:
            return True, self.values[at]
        return False, None


def decode_block(blob: bytes, *, key: str) -> Block:
    """The entries of one sealed block.

    Raises:
        CorruptionError: if the block is damaged or its entries do not parse or are unsorted.
    """
    payload = unseal(blob, key=key)
    if len(payload) < _U32.size:
        raise CorruptionError(key, "block too short")
    (count,) = _U32.unpack_from(payload)
    keys: list[bytes] = []
    values: list[bytes | None] = []
    offset, end = _U32.size, len(payload)
    try:
        for _ in range(count):
            (length,) = _U32.unpack_from(payload, offset)
            offset += 4
            entry_key = payload[offset : offset + length]
            offset += length
            (length,) = _U32.unpack_from(payload, offset)
            offset += 4
            if length == _DELETED:
                values.append(None)
            else:
                values.append(payload[offset : offset + length])
                offset += length
            if offset > end or (keys and keys[-1] >= entry_key):
                raise CorruptionError(key, "block entries overrun or are not sorted")
            keys.append(entry_key)
    except struct.error as exc:
        raise CorruptionError(key, "block entries run past the end") from exc
    if offset != end:
        raise CorruptionError(key, "trailing bytes after the last block entry")
    return Block(keys, values, len(payload) + 64 * count)


@dataclass(frozen=True, slots=True)
class SegmentIndex:
    """Where each block of a segment starts: its first key, byte offset and length."""

    first_keys: list[bytes]
    offsets: list[int]
    lengths: list[int]

    def block_for(self, key: bytes) -> int | None:
        """The block that would hold ``key`` (``None``: before the first block)."""
        at = bisect.bisect_right(self.first_keys, key) - 1
        return at if at >= 0 else None

    @property
    def cost(self) -> int:
        """A rough count of the bytes this index holds in memory."""
        return sum(len(k) for k in self.first_keys) + 120 * len(self.first_keys)


def decode_index(blob: bytes, *, key: str, size: int) -> SegmentIndex:
    """The index of a segment ``size`` bytes long.

    Raises:
        CorruptionError: if the index is damaged or points outside the segment.
    """
    header, payload, start = open_framed(blob, key=key, formats=(SEGMENT_FORMAT,), kind=_INDEX_KIND)
    count = header.get("count")
    if not isinstance(count, int) or count < 0:
        raise CorruptionError(key, f"bad index count {count!r}")
    first_keys: list[bytes] = []
    offsets: list[int] = []
    lengths: list[int] = []
    offset = start
    try:
        for _ in range(count):
            (length,) = _U32.unpack_from(payload, offset)
            offset += 4
            first_keys.append(payload[offset : offset + length])
            offset += length
            block_offset, block_length = _INDEX_ENTRY.unpack_from(payload, offset)
            offset += _INDEX_ENTRY.size
            if block_offset + block_length > size:
                raise CorruptionError(key, "index points past the end of the segment")
            offsets.append(block_offset)
            lengths.append(block_length)
    except struct.error as exc:
        raise CorruptionError(key, "index entries run past the end") from exc
    if offset != len(payload):
        raise CorruptionError(key, "trailing bytes after the last index entry")
    return SegmentIndex(first_keys, offsets, lengths)


class SegmentBuilder:
    """Builds one segment from entries added in ascending key order (bounded memory: the
    sealed blocks of this segment plus one open block).

    :meth:`add` entries, watch :attr:`size`, then :meth:`finish` for the object's bytes and
    its :class:`SegmentRef`.
    """

    def __init__(self, name: str, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        self.name = name
        self.block_bytes = block_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._index: list[tuple[bytes, int, int]] = []
        self._open: list[bytes] = []
        self._open_raw = 0
        self._open_count = 0
        self._open_first = b""
        self._first: bytes | None = None
        self._last = b""
        self._count = 0

    @property
    def size(self) -> int:
        """Bytes this segment holds so far (sealed blocks plus the open block's raw bytes)."""
        return self._size + self._open_raw

    @property
    def count(self) -> int:
        """Entries added so far."""
        return self._count

    def add(self, key: bytes, value: bytes | None) -> None:
        """Append ``key`` (greater than every key added before) with ``value`` (``None``:
        deleted)."""
        if not self._open_count:
            self._open_first = key
        if self._first is None:
            self._first = key
        self._last = key
        self._count += 1
        self._open_count += 1
        self._open.append(_U32.pack(len(key)))
        self._open.append(key)
        if value is None:
            self._open.append(_U32.pack(_DELETED))
            self._open_raw += 8 + len(key)
        else:
            self._open.append(_U32.pack(len(value)))
            self._open.append(value)
            self._open_raw += 8 + len(key) + len(value)
        if self._open_raw >= self.block_bytes:
            self._close_block()

    def _close_block(self) -> None:
        if not self._open_count:
            return
        block = seal(b"".join([_U32.pack(self._open_count), *self._open]))
        self._index.append((self._open_first, self._size, len(block)))
        self._parts.append(block)
        self._size += len(block)
        self._open, self._open_raw, self._open_count = [], 0, 0

    def finish(self) -> tuple[bytes, SegmentRef]:
        """The segment object's bytes and its reference (at least one entry was added)."""
        self._close_block()
        entries: list[bytes] = []
        for first, offset, length in self._index:
            entries += [_U32.pack(len(first)), first, _INDEX_ENTRY.pack(offset, length)]
        header = canonical_json(
            {"format": SEGMENT_FORMAT, "kind": _INDEX_KIND, "count": len(self._index)}
        )
        index = seal(b"".join([_U32.pack(len(header)), header, *entries]))
        data = b"".join([*self._parts, index])
        ref = SegmentRef(
            self.name,
            self._first if self._first is not None else b"",
            self._last,
            self._count,
            len(data),
            self._size,
            len(index),
        )
        return data, ref


def iter_blocks_in(
    index: SegmentIndex, data: bytes, base: int, first: int, last: int, *, key: str
) -> Iterator[Block]:
    """Decode blocks ``first..last`` (inclusive) out of ``data``, the segment's bytes from
    offset ``base`` on (one ranged read covering them).
    A damaged block raises ``CorruptionError``."""
    for number in range(first, last + 1):
        start = index.offsets[number] - base
        yield decode_block(data[start : start + index.lengths[number]], key=key)
