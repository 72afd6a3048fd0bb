"""The ``state.bin`` sidecar: format, the streaming encoder and verification.

Layout::

    header  magic "OBJSTATE" | format u16 | reserved u16 | checkpoint id u64 | epoch u64
            | writer nonce 16B
    frames  one zstd frame per chunk (content size and zstd checksum included)

The manifest indexes every frame (offset, length, raw length, xxh3-128 of the frame) and
records the xxh3-128 of the whole file as ``state_checksum``.

Saving: chunks are compressed and hashed in worker threads (zstd and xxhash release the
GIL), several at a time, while earlier frames are already being uploaded; at most ``window``
chunks are held at once, whatever the size of the state.

Restoring (:func:`decode_sidecar`): the whole file is hashed once while its frames are
decompressed in parallel, each straight into its place in one preallocated result. Frame
digests are not recomputed there: they were taken from the same bytes the whole-file
checksum covers, so they only serve reads of a single chunk (:func:`decode_frame`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import os
import queue
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
    "decode_sidecar",
    "decode_sidecar_stream",
    "iter_chunks",
    "verify_sidecar",
]

SIDECAR_MAGIC = b"OBJSTATE"
SIDECAR_FORMAT = 1
HEADER = struct.Struct("<8sHHQQ16s")
MULTITHREAD_THRESHOLD = 4 * 1024 * 1024
"""Chunks at least this large are compressed with zstd's own worker threads (one per CPU)
when no other chunk is being compressed: a single large chunk, or chunks that arrive slower
than they compress, still use every core. When several chunks are in flight they already
keep the cores busy, one each, and extra zstd threads would only compete with them."""
_CPUS = os.cpu_count() or 1
INLINE_THRESHOLD = 64 * 1024
"""Chunks (and frames decoding to) fewer bytes than this are compressed (decompressed) on
the event loop's own thread: tens of microseconds of zstd cost less than the hand-off to a
worker thread and back, which a busy machine can stretch to milliseconds. This is what a
small, frequent checkpoint (a few KiB every second) pays."""

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

    Raises:
        TypeError: if ``state`` is a str or not one of the accepted forms; a bad in-memory chunk
            fails here too.
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


class _CompressorPool:
    """zstd compression contexts shared by all threads, reused instead of rebuilt.

    A context is not thread-safe, so each compression borrows one; the pool only ever holds
    as many as were in use at once (not one per executor thread: a multi-threaded context
    holds about 10 MiB of buffers).
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[int, int], list[zstandard.ZstdCompressor]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self, level: int, threads: int) -> Iterator[zstandard.ZstdCompressor]:
        with self._lock:
            idle = self._idle.setdefault((level, threads), [])
            compressor = idle.pop() if idle else None
        if compressor is None:
            compressor = zstandard.ZstdCompressor(
                level=level, threads=threads, write_checksum=True, write_content_size=True
            )
        try:
            yield compressor
        finally:
            with self._lock:
                self._idle[(level, threads)].append(compressor)


_compressors = _CompressorPool()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor (a zstd context is not thread-safe; creating one per
    frame would cost more than decompressing a small frame)."""
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def _compress(data: Buffer, level: int, threads: int) -> tuple[bytes, str, int]:
    """One chunk's zstd frame, the frame's xxh3-128 (hashed while it is still in cache) and
    the chunk's size; ``threads`` zstd workers (0: this thread only)."""
    raw = memoryview(data).cast("B")
    with _compressors.borrow(level, threads) as compressor:
        frame = compressor.compress(raw)
    return frame, xxhash.xxh3_128_hexdigest(frame), raw.nbytes


def decode_frame(frame: Buffer, entry: OperatorState, *, key: str) -> bytes:
    """Verify and decompress one frame described by ``entry`` (a single-chunk read).

    Raises:
        CorruptionError: if the frame's checksum does not match, it does not decompress, or it
            decompresses to another length than recorded.
    """
    actual = xxhash.xxh3_128_hexdigest(frame)
    if actual != entry.xxh3:
        raise CorruptionError(
            key,
            f"chunk {entry.name or entry.offset} checksum mismatch",
            expected=entry.xxh3,
            actual=actual,
        )
    try:
        raw = _decompressor().decompress(frame, max_output_size=entry.raw_length)
    except zstandard.ZstdError as exc:
        raise CorruptionError(key, f"chunk does not decompress: {exc}") from exc
    if len(raw) != entry.raw_length:
        raise CorruptionError(
            key, "chunk raw length mismatch", expected=entry.raw_length, actual=len(raw)
        )
    return raw


def _decompress_into(frame: memoryview, entry: OperatorState, out: memoryview, key: str) -> None:
    """Decompress one frame straight into ``out`` (its ``raw_length`` bytes of the result).

    The frame is not hashed here: the caller checks the whole file. The frame header must
    announce exactly ``raw_length`` bytes; zstd then decodes it in one pass into ``out``
    (no intermediate buffer) and checks the frame's own content checksum.

    Raises:
        CorruptionError: if the frame header announces another size than ``raw_length``, the frame
            does not decompress (or fails its content checksum), or it yields another number of
            bytes.
    """
    try:
        announced = zstandard.frame_content_size(frame)
        if announced != entry.raw_length:
            raise CorruptionError(
                key,
                f"chunk {entry.name or entry.offset} raw length mismatch",
                expected=entry.raw_length,
                actual=announced,
            )
        with _decompressor().stream_reader(frame) as reader:
            written = reader.readinto(out)
    except zstandard.ZstdError as exc:
        raise CorruptionError(key, f"chunk does not decompress: {exc}") from exc
    if written != entry.raw_length:
        raise CorruptionError(
            key, "chunk raw length mismatch", expected=entry.raw_length, actual=written
        )


def _allocate(size: int) -> io.BytesIO:
    """``size`` zero bytes to decompress into, costing nothing until written.

    ``bytes(size)`` comes from ``calloc``, i.e. fresh pages the kernel maps only when first
    written, so the page faults happen in the decompressing threads, in parallel, instead of
    up front on one thread (as ``bytearray(size)`` would, zero-filling under the GIL). (Huge
    pages, ``MADV_HUGEPAGE``, were measured: on the 2-vCPU VM of ``benchmarks/RESULTS.md``
    they quadrupled the kernel time of the faults, so the pages stay 4 KiB.) The ``BytesIO``
    is the only owner of that bytes object, so ``getbuffer()`` writes it in
    place and, once every view is released, ``getvalue()`` returns that very object (CPython
    copies only a buffer that someone else also references). The result is plain ``bytes``
    with no second full-size buffer.
    """
    return io.BytesIO(bytes(size))


async def decode_sidecar(
    data: Buffer,
    *,
    key: str,
    checkpoint_id: int,
    nonce: str | None,
    size: int | None,
    state_checksum: str,
    entries: Sequence[OperatorState],
    parallelism: int,
) -> bytes:
    """Verify a whole sidecar and return all its chunks decompressed and joined.

    Every frame is decompressed in a worker thread directly into its slice of the result,
    at most ``parallelism`` at a time, while another thread hashes the whole file once: the
    result is the only full-size allocation besides ``data``, and nothing is copied twice.

    Raises:
        CorruptionError: exactly as :func:`verify_sidecar` would (a checksum mismatch wins over a
            frame that does not decode), and for a frame whose size differs from the index. A
            worker's other errors are re-raised as they are.
    """
    view = memoryview(data).cast("B")
    try:
        _check_size(view, key, size)
        _check_layout(view, key, checkpoint_id, nonce, entries)
    except CorruptionError:
        # Report what verify_sidecar reports (the checksum comes before the layout).
        verify_sidecar(
            view,
            key=key,
            checkpoint_id=checkpoint_id,
            nonce=nonce,
            size=size,
            state_checksum=state_checksum,
            entries=entries,
        )
        raise
    hashing = asyncio.ensure_future(asyncio.to_thread(xxhash.xxh3_128_hexdigest, view))
    result = _allocate(sum(entry.raw_length for entry in entries))
    slots = asyncio.Semaphore(max(1, parallelism))

    async def decode(entry: OperatorState, out: memoryview) -> None:
        frame = view[entry.offset : entry.offset + entry.length]
        try:
            async with slots:
                await asyncio.to_thread(_decompress_into, frame, entry, out, key)
        finally:
            # Released as soon as the frame is in, so that getvalue() need not copy; after a
            # cancellation the worker thread may still hold it, and it is left to that thread.
            with contextlib.suppress(BufferError):
                out.release()

    with result.getbuffer() as target:
        jobs = []
        start = 0
        for entry in entries:
            if entry.raw_length:
                jobs.append(decode(entry, target[start : start + entry.raw_length]))
            start += entry.raw_length
        outcomes = await asyncio.gather(hashing, *jobs, return_exceptions=True)
    actual = outcomes[0]
    if isinstance(actual, BaseException):
        raise actual
    if actual != state_checksum:
        raise CorruptionError(
            key, "sidecar checksum mismatch", expected=state_checksum, actual=actual
        )
    for outcome in outcomes[1:]:
        if isinstance(outcome, BaseException):
            raise outcome
    return result.getvalue()


def _streamable(entries: Sequence[OperatorState], size: int) -> bool:
    """Whether the frames can be cut from the file's bytes as they arrive: in file order,
    not overlapping, after the header and inside the recorded size (what every encoder
    writes). Other indexes are decoded from the whole file, which reports their faults."""
    end = HEADER.size
    for entry in entries:
        if entry.offset < end or entry.length < 0 or entry.offset + entry.length > size:
            return False
        end = entry.offset + entry.length
    return True


class _FrameCutter:
    """Cuts the frames of an index out of a sidecar's bytes arriving piece by piece.

    A frame that lies inside one piece is handed out as a view of it (no copy); one that
    straddles pieces is assembled in its own buffer (one copy of the compressed bytes).
    """

    def __init__(self, entries: Sequence[OperatorState]) -> None:
        self._entries = entries
        self._next = 0
        self._partial: bytearray | None = None
        self._filled = 0

    def feed(self, piece: memoryview, position: int) -> Iterator[tuple[int, memoryview]]:
        """The frames (index position, bytes) completed by ``piece``, which starts at
        byte ``position`` of the file."""
        end = position + piece.nbytes
        while self._next < len(self._entries):
            entry = self._entries[self._next]
            first, last = entry.offset, entry.offset + entry.length
            if first >= end and entry.length:
                return
            if self._partial is None and first >= position and last <= end:
                self._next += 1
                yield self._next - 1, piece[first - position : last - position]
                continue
            if self._partial is None:
                self._partial, self._filled = bytearray(entry.length), 0
            take_from = max(first + self._filled, position)
            take_to = min(last, end)
            if take_to > take_from:
                self._partial[self._filled : self._filled + take_to - take_from] = piece[
                    take_from - position : take_to - position
                ]
                self._filled += take_to - take_from
            if self._filled < entry.length:
                return
            frame, self._partial = memoryview(self._partial), None
            self._next += 1
            yield self._next - 1, frame


class _FramePool:
    """Frames decompressed by worker threads (as many as the machine has cores, at most
    ``parallelism``) that take the next frame from a queue as soon as they finish one.

    The event loop queues every frame of a piece it holds at once (they are views of that
    piece, or already copied out of earlier ones: queueing them costs no memory), then
    waits for room (:meth:`wait_for_room`: at most ``parallelism`` frames queued or being
    decoded) before it reads the next piece, which bounds memory. A worker never waits for
    the loop to hand it work, so the cores stay busy even when a busy machine is slow to
    schedule the loop. Failures are collected by frame (:meth:`raise_first_failure`).
    """

    def __init__(self, entries: Sequence[OperatorState], key: str, parallelism: int) -> None:
        self._entries = entries
        self._key = key
        self._loop = asyncio.get_running_loop()
        self._limit = max(1, parallelism)
        self._pending = 0
        self._room = asyncio.Event()
        self._jobs: queue.SimpleQueue[tuple[int, memoryview, memoryview] | None]
        self._jobs = queue.SimpleQueue()
        self._failures: dict[int, BaseException] = {}
        self._abandoned = False
        self._width = max(1, min(parallelism, _CPUS))
        self._workers: list[asyncio.Future[None]] = []  # started by the first large frame

    @property
    def failed(self) -> bool:
        """Whether a frame has failed (later frames need not be decoded)."""
        return bool(self._failures)

    def submit(self, index: int, frame: memoryview, out: memoryview) -> None:
        """Queue frame ``index`` to be decoded into ``out`` (never waits). A small frame
        (:data:`INLINE_THRESHOLD`) is decoded right here instead."""
        if out.nbytes < INLINE_THRESHOLD:
            try:
                _decompress_into(frame, self._entries[index], out, self._key)
            except CorruptionError as exc:
                self._failures[index] = exc
            finally:
                out.release()
            return
        self._pending += 1
        if not self._workers:
            self._workers = [
                asyncio.ensure_future(asyncio.to_thread(self._work)) for _ in range(self._width)
            ]
        self._jobs.put((index, frame, out))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            index, frame, out = job
            try:
                if not self._abandoned:
                    _decompress_into(frame, self._entries[index], out, self._key)
            except BaseException as exc:
                self._failures[index] = exc
            finally:
                with contextlib.suppress(BufferError):
                    out.release()
                del frame, out, job
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    self._loop.call_soon_threadsafe(self._one_done)

    def _one_done(self) -> None:
        self._pending -= 1
        if self._pending <= self._limit:
            self._room.set()

    async def wait_for_room(self) -> None:
        """Wait until at most ``parallelism`` frames are queued or being decoded."""
        while self._pending > self._limit:
            self._room.clear()
            await self._room.wait()

    def abandon(self) -> None:
        """Drop the frames still queued (the caller failed; nobody wants the result)."""
        self._abandoned = True

    async def finish(self) -> None:
        """Wait until every queued frame is decoded (or dropped, after :meth:`abandon`)."""
        for _ in self._workers:
            self._jobs.put(None)
        await asyncio.gather(*self._workers, return_exceptions=True)

    def raise_first_failure(self) -> None:
        """Raise the error of the first failed frame (in index order), if any: the
        ``CorruptionError`` of a frame that did not decode or had another size than its
        entry, or a worker's other error as it was."""
        for index in sorted(self._failures):
            raise self._failures[index]


async def decode_sidecar_stream(
    pieces: AsyncIterable[Buffer],
    *,
    key: str,
    checkpoint_id: int,
    nonce: str | None,
    size: int,
    state_checksum: str,
    entries: Sequence[OperatorState],
    parallelism: int,
) -> bytes:
    """:func:`decode_sidecar` fed the file's bytes in order, as they arrive (a streamed GET).

    Each frame is decompressed, in a worker thread and straight into its slice of the
    result, as soon as its last byte has arrived, at most ``parallelism`` at a time; the
    stream is not read further while that many are in flight, so besides the result this
    holds about ``parallelism`` frames and the pieces they lie in, never the whole file.
    The whole file is hashed piece by piece as it passes. ``pieces`` may run one byte past
    ``size`` (that byte reveals a file longer than recorded).

    Raises:
        CorruptionError: exactly as :func:`decode_sidecar` would: size, then the whole file's
            checksum, then the header (magic, format, id, writer), then a frame that does not
            decode or has another size than its index entry. A worker's other errors are
            re-raised as they are.
    """
    if not _streamable(entries, size):
        whole = bytearray()
        async for piece in pieces:
            whole += piece
        return await decode_sidecar(
            whole,
            key=key,
            checkpoint_id=checkpoint_id,
            nonce=nonce,
            size=size,
            state_checksum=state_checksum,
            entries=entries,
            parallelism=parallelism,
        )
    hasher = xxhash.xxh3_128()
    header = bytearray()
    received = 0
    result = _allocate(sum(entry.raw_length for entry in entries))
    starts = [0]
    for entry in entries:
        starts.append(starts[-1] + entry.raw_length)
    cutter = _FrameCutter(entries)
    decoder = _FramePool(entries, key, parallelism)
    header_ok = True
    with result.getbuffer() as target:
        try:
            async for piece in pieces:
                view = memoryview(piece).cast("B")
                hasher.update(view)
                if len(header) < HEADER.size:
                    header += view[: HEADER.size - len(header)]
                    if len(header) == HEADER.size:
                        header_ok = _header_fault(header, key, checkpoint_id, nonce) is None
                position, received = received, received + view.nbytes
                for index, frame in cutter.feed(view, position):
                    if entries[index].raw_length and header_ok and not decoder.failed:
                        # (no local name for the slice: getvalue() must find no view left)
                        decoder.submit(index, frame, target[starts[index] : starts[index + 1]])
                await decoder.wait_for_room()
        except BaseException:
            decoder.abandon()
            raise
        finally:
            await decoder.finish()
    if received != size:
        reason = "truncated" if received < size else "longer than recorded"
        raise CorruptionError(key, f"sidecar {reason}", expected=size, actual=received)
    actual = hasher.hexdigest()
    if actual != state_checksum:
        raise CorruptionError(
            key, "sidecar checksum mismatch", expected=state_checksum, actual=actual
        )
    fault = _header_fault(header, key, checkpoint_id, nonce)
    if fault is not None:
        raise fault
    decoder.raise_first_failure()
    return result.getvalue()


def _header_fault(
    header: Buffer, key: str, checkpoint_id: int, nonce: str | None
) -> CorruptionError | None:
    """What :func:`_check_layout` says of a header alone (no index), or ``None``."""
    try:
        _check_layout(memoryview(header).cast("B"), key, checkpoint_id, nonce, ())
    except CorruptionError as exc:
        return exc
    return None


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
                size = memoryview(data).nbytes
                if size < INLINE_THRESHOLD:
                    done = asyncio.get_running_loop().create_future()
                    done.set_result(_compress(data, self._level, 0))
                    in_flight.append((name, done))
                else:
                    busy = any(not future.done() for _, future in in_flight)
                    large = size >= MULTITHREAD_THRESHOLD
                    threads = _CPUS if large and not busy and _CPUS > 1 else 0
                    job = asyncio.to_thread(_compress, data, self._level, threads)
                    in_flight.append((name, asyncio.ensure_future(job)))
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
        """The index, checksum and size of the whole sidecar (after :meth:`pieces` ends).

        Raises:
            RuntimeError: if called before :meth:`pieces` has been consumed to its end.
        """
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
    """Check a whole sidecar against its manifest; raise :class:`CorruptionError` if off.

    Raises:
        CorruptionError: if the layout (header, id, writer, chunk bounds) or the whole file's
            checksum is off.
    """
    view = memoryview(data).cast("B")
    _check_size(view, key, size)
    actual = xxhash.xxh3_128_hexdigest(view)
    if actual != state_checksum:
        raise CorruptionError(
            key, "sidecar checksum mismatch", expected=state_checksum, actual=actual
        )
    _check_layout(view, key, checkpoint_id, nonce, entries)


def _check_size(view: memoryview, key: str, size: int | None) -> None:
    if size is not None and view.nbytes != size:
        reason = "truncated" if view.nbytes < size else "longer than recorded"
        raise CorruptionError(key, f"sidecar {reason}", expected=size, actual=view.nbytes)


def _check_layout(
    view: memoryview,
    key: str,
    checkpoint_id: int,
    nonce: str | None,
    entries: Sequence[OperatorState],
) -> None:
    """Header (magic, format, id, writer) and index bounds; cheap, no hashing.

    Raises:
        CorruptionError: if the file is shorter than its header, has a bad magic or format, another
            checkpoint id or writer nonce, or a chunk outside the file.
    """
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


def read_header_nonce(data: Buffer) -> bytes | None:
    """The writer nonce in a sidecar header, or ``None`` if the bytes are not a header."""
    view = memoryview(data).cast("B")
    if view.nbytes < HEADER.size:
        return None
    magic, _, _, _, _, nonce = HEADER.unpack_from(view)
    return bytes(nonce) if magic == SIDECAR_MAGIC else None


def dump_chunks(entries: Sequence[OperatorState]) -> list[dict[str, Any]]:
    """JSON-friendly form of an index, for reports and the CLI."""
    return [entry.to_json() for entry in entries]
