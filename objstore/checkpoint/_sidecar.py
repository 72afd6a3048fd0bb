"""The ``state.bin`` sidecar: format, the streaming encoder and verification.

Layout::

    header  magic "OBJSTATE" | format u16 | reserved u16 | checkpoint id u64 | epoch u64
            | writer nonce 16B
    frames  one zstd frame per chunk (content size and zstd checksum included)

The manifest indexes every frame (offset, length, raw length, xxh3-128 of the frame) and
records the xxh3-128 of the whole file as ``state_checksum``. Chunks are compressed and
hashed in worker threads (zstd and xxhash release the GIL), several at a time, while earlier
frames are already being uploaded; at most ``window`` chunks are held at once.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeAlias

import xxhash
import zstandard

from objstore.backends import Buffer
from objstore.checkpoint._manifest import OperatorState
from objstore.errors import CorruptionError

__all__ = [
    "HEADER",
    "Chunk",
    "SidecarEncoder",
    "StateInput",
    "decode_frame",
    "iter_chunks",
    "verify_sidecar",
]

SIDECAR_MAGIC = b"OBJSTATE"
SIDECAR_FORMAT = 1
HEADER = struct.Struct("<8sHHQQ16s")
MULTITHREAD_THRESHOLD = 4 * 1024 * 1024
"""Chunks at least this large are compressed with zstd's own worker threads as well."""

Chunk: TypeAlias = tuple[str | None, Buffer]
StateInput: TypeAlias = (
    Buffer
    | Mapping[str, Buffer]
    | Sequence[Buffer | tuple[str, Buffer]]
    | Iterable[Buffer | tuple[str, Buffer]]
    | AsyncIterable[Buffer | tuple[str, Buffer]]
)

_BUFFER_TYPES = (bytes, bytearray, memoryview)
_local = threading.local()


def _as_chunk(item: object, position: int) -> Chunk:
    if isinstance(item, _BUFFER_TYPES):
        return None, item
    if isinstance(item, tuple) and len(item) == 2:
        name, data = item
        if not isinstance(name, str) or not name:
            raise TypeError(f"chunk {position}: operator name must be a non-empty str")
        if not isinstance(data, _BUFFER_TYPES):
            raise TypeError(
                f"chunk {position} ({name!r}) must be bytes-like, not {type(data).__name__}"
            )
        return name, data
    raise TypeError(f"chunk {position} must be bytes-like, not {type(item).__name__}")


class _NameCheck:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, chunk: Chunk) -> Chunk:
        name = chunk[0]
        if name is not None:
            if name in self.seen:
                raise ValueError(f"duplicate operator name {name!r}")
            self.seen.add(name)
        return chunk


def iter_chunks(state: StateInput) -> Iterator[Chunk] | AsyncIterator[Chunk]:
    """Normalise every accepted form of state into named chunks.

    In-memory forms (one buffer, a mapping, a list or tuple) are fully checked *now*, so bad
    input fails before any request; iterators are checked as they are consumed, and a bad
    item aborts the save before anything is committed.
    """
    check = _NameCheck()
    if isinstance(state, _BUFFER_TYPES):
        return iter([(None, state)])
    if isinstance(state, Mapping):
        chunks = [check(_as_chunk((name, data), i)) for i, (name, data) in enumerate(state.items())]
        return iter(chunks)
    if isinstance(state, list | tuple):
        return iter([check(_as_chunk(item, i)) for i, item in enumerate(state)])
    if isinstance(state, str):
        raise TypeError("state must be bytes-like chunks, not str")
    if isinstance(state, AsyncIterable):
        source = state

        async def async_chunks() -> AsyncIterator[Chunk]:
            position = 0
            async for item in source:
                yield check(_as_chunk(item, position))
                position += 1

        return async_chunks()
    if isinstance(state, Iterable):
        return (check(_as_chunk(item, i)) for i, item in enumerate(state))
    raise TypeError(f"state must be bytes-like chunks, not {type(state).__name__}")


def _compressor(level: int, threads: int) -> zstandard.ZstdCompressor:
    cache: dict[tuple[int, int], zstandard.ZstdCompressor] | None = getattr(
        _local, "compressors", None
    )
    if cache is None:
        cache = _local.compressors = {}
    compressor = cache.get((level, threads))
    if compressor is None:
        compressor = zstandard.ZstdCompressor(
            level=level, threads=threads, write_checksum=True, write_content_size=True
        )
        cache[(level, threads)] = compressor
    return compressor


def _compress(data: Buffer, level: int) -> tuple[bytes, str, int]:
    raw = memoryview(data).cast("B")
    threads = -1 if raw.nbytes >= MULTITHREAD_THRESHOLD else 0
    frame = _compressor(level, threads).compress(raw)
    return frame, xxhash.xxh3_128_hexdigest(frame), raw.nbytes


def decode_frame(frame: Buffer, entry: OperatorState, *, key: str) -> bytes:
    """Verify and decompress one frame described by ``entry``."""
    actual = xxhash.xxh3_128_hexdigest(frame)
    if actual != entry.xxh3:
        raise CorruptionError(
            key,
            f"chunk {entry.name or entry.offset} checksum mismatch",
            expected=entry.xxh3,
            actual=actual,
        )
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=entry.raw_length)
    except zstandard.ZstdError as exc:
        raise CorruptionError(key, f"chunk does not decompress: {exc}") from exc
    if len(raw) != entry.raw_length:
        raise CorruptionError(
            key, "chunk raw length mismatch", expected=entry.raw_length, actual=len(raw)
        )
    return raw


@dataclass(slots=True)
class EncodedState:
    """What the manifest records about a written sidecar."""

    entries: tuple[OperatorState, ...]
    checksum: str
    size: int


class SidecarEncoder:
    """Turns chunks into the bytes of ``state.bin``, compressing ``window`` chunks at once.

    Iterate :meth:`pieces` to get the file's bytes in order; afterwards :meth:`result` says
    what the manifest must record.
    """

    def __init__(
        self, checkpoint_id: int, epoch: int, nonce: bytes, *, level: int, window: int
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._header = HEADER.pack(SIDECAR_MAGIC, SIDECAR_FORMAT, 0, checkpoint_id, epoch, nonce)
        self._level = level
        self._window = window
        self._hasher = xxhash.xxh3_128()
        self._entries: list[OperatorState] = []
        self._size = 0
        self._done = False

    def _account(self, piece: bytes) -> None:
        self._hasher.update(piece)
        self._size += len(piece)

    async def pieces(
        self, chunks: Iterator[Chunk] | AsyncIterator[Chunk]
    ) -> AsyncGenerator[bytes, None]:
        """The sidecar's bytes: the header, then one frame per chunk, in order."""
        self._account(self._header)
        yield self._header
        in_flight: collections.deque[tuple[str | None, asyncio.Future[tuple[bytes, str, int]]]]
        in_flight = collections.deque()
        try:
            async for name, data in _aiter(chunks):
                in_flight.append(
                    (name, asyncio.ensure_future(asyncio.to_thread(_compress, data, self._level)))
                )
                if len(in_flight) >= self._window:
                    yield await self._emit(*in_flight.popleft())
            while in_flight:
                yield await self._emit(*in_flight.popleft())
        finally:
            for _, future in in_flight:
                future.cancel()
        self._done = True

    async def _emit(
        self, name: str | None, future: asyncio.Future[tuple[bytes, str, int]]
    ) -> bytes:
        frame, digest, raw_length = await future
        self._entries.append(OperatorState(name, self._size, len(frame), raw_length, digest))
        self._account(frame)
        return frame

    def result(self) -> EncodedState:
        """The index, checksum and size of the whole sidecar (after :meth:`pieces` ends)."""
        if not self._done:
            raise RuntimeError("the sidecar has not been fully encoded yet")
        return EncodedState(tuple(self._entries), self._hasher.hexdigest(), self._size)


async def _aiter(chunks: Iterator[Chunk] | AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    if isinstance(chunks, AsyncIterator):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def verify_sidecar(
    data: Buffer,
    *,
    key: str,
    checkpoint_id: int,
    nonce: str | None,
    size: int | None,
    state_checksum: str,
    entries: Sequence[OperatorState],
) -> None:
    """Check a whole sidecar against its manifest; raise :class:`CorruptionError` if off."""
    view = memoryview(data).cast("B")
    if size is not None and view.nbytes != size:
        reason = "truncated" if view.nbytes < size else "longer than recorded"
        raise CorruptionError(key, f"sidecar {reason}", expected=size, actual=view.nbytes)
    actual = xxhash.xxh3_128_hexdigest(view)
    if actual != state_checksum:
        raise CorruptionError(
            key, "sidecar checksum mismatch", expected=state_checksum, actual=actual
        )
    if view.nbytes < HEADER.size:
        raise CorruptionError(key, "sidecar shorter than its header")
    magic, version, _, header_id, _, header_nonce = HEADER.unpack_from(view)
    if magic != SIDECAR_MAGIC or version != SIDECAR_FORMAT:
        raise CorruptionError(key, f"bad sidecar magic or format {magic!r}/{version}")
    if header_id != checkpoint_id:
        raise CorruptionError(
            key, "sidecar belongs to another checkpoint", expected=checkpoint_id, actual=header_id
        )
    if nonce is not None and header_nonce.hex() != nonce:
        raise CorruptionError(
            key, "sidecar was written by another writer", expected=nonce, actual=header_nonce.hex()
        )
    for entry in entries:
        if entry.offset < HEADER.size or entry.offset + entry.length > view.nbytes:
            raise CorruptionError(key, f"chunk {entry.name or entry.offset} lies outside the file")


def read_header_epoch(data: Buffer) -> int | None:
    """The writer's epoch in a sidecar header, or ``None`` if the bytes are not a header."""
    view = memoryview(data).cast("B")
    if view.nbytes < HEADER.size:
        return None
    magic, _, _, _, epoch, _ = HEADER.unpack_from(view)
    return int(epoch) if magic == SIDECAR_MAGIC else None


def dump_chunks(entries: Sequence[OperatorState]) -> list[dict[str, Any]]:
    """JSON-friendly form of an index, for reports and the CLI."""
    return [entry.to_json() for entry in entries]
