"""A ``state.bin`` sidecar read in bounded ranged reads and checked as it streams.

:class:`SidecarCheck` is :func:`~objstore.checkpoint._sidecar.verify_sidecar` fed one piece at
a time (same checks, same order, same reasons), so a sidecar of any size is verified while
holding at most :data:`READ_AHEAD` ranges of ``range_size`` bytes. The pieces can be consumed
by a check alone (validation) or handed on to an upload (a copy), which then fails, before it
completes, if the file turns out not to be the recorded one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Callable

import xxhash

from objstore.backends import AsyncBackend
from objstore.checkpoint._layout import state_key
from objstore.checkpoint._manifest import StoredManifest
from objstore.checkpoint._sidecar import HEADER, verify_sidecar
from objstore.errors import CorruptionError, NotFoundError

__all__ = [
    "RANGE_SIZE",
    "READ_AHEAD",
    "Progress",
    "SidecarCheck",
    "check_sidecar",
    "checked_pieces",
    "no_progress",
    "open_sidecar",
    "read_ranges",
]

RANGE_SIZE = 8 * 1024 * 1024
"""Bytes per ranged read when a sidecar is streamed (the default ``range_size``)."""
READ_AHEAD = 2
"""Ranged reads in flight at once: memory is bounded by ``READ_AHEAD * range_size``."""

Progress = Callable[[int], None]
"""Called with the number of bytes just read, after each ranged read."""


def no_progress(_: int) -> None:
    """The default progress callback: nothing to report to."""


class SidecarCheck:
    """:func:`~objstore.checkpoint._sidecar.verify_sidecar`, fed one piece at a time.

    Same checks, same order, same reasons: size (before reading), whole-file xxh3-128, then
    the header (magic, format, id, writer nonce) and the chunk index bounds.
    """

    def __init__(self, key: str, stored: StoredManifest) -> None:
        self._key = key
        self._stored = stored
        self._hasher = xxhash.xxh3_128()
        self._header = bytearray()
        self._size = 0

    def check_size(self, size: int) -> None:
        """Raise :class:`CorruptionError` if ``size`` is not the recorded one.

        Raises:
            CorruptionError: if ``size`` is not the recorded one (truncated or longer).
        """
        expected = self._stored.manifest.state_size
        if expected is not None and size != expected:
            reason = "truncated" if size < expected else "longer than recorded"
            raise CorruptionError(self._key, f"sidecar {reason}", expected=expected, actual=size)

    def update(self, piece: bytes) -> None:
        """Account for the next bytes of the file."""
        self._hasher.update(piece)
        self._size += len(piece)
        if len(self._header) < HEADER.size:
            self._header += piece[: HEADER.size - len(self._header)]

    def finish(self) -> None:
        """Raise :class:`CorruptionError` if the bytes seen are not the recorded sidecar.

        Raises:
            CorruptionError: if the whole file's checksum is not the recorded one, or a chunk lies
                outside the file.
        """
        manifest = self._stored.manifest
        actual = self._hasher.hexdigest()
        if actual != manifest.state_checksum:
            raise CorruptionError(
                self._key,
                "sidecar checksum mismatch",
                expected=manifest.state_checksum,
                actual=actual,
            )
        # verify_sidecar on the header alone, with no size, the header's own checksum and no
        # index, performs exactly its header checks; the index bounds need only the size.
        header = bytes(self._header)
        verify_sidecar(
            header,
            key=self._key,
            checkpoint_id=manifest.checkpoint_id,
            nonce=self._stored.state_nonce,
            size=None,
            state_checksum=xxhash.xxh3_128_hexdigest(header),
            entries=(),
        )
        for entry in manifest.operator_states:
            if entry.offset < HEADER.size or entry.offset + entry.length > self._size:
                raise CorruptionError(
                    self._key, f"chunk {entry.name or entry.offset} lies outside the file"
                )


async def read_ranges(
    backend: AsyncBackend, key: str, size: int, range_size: int
) -> AsyncGenerator[bytes, None]:
    """The first ``size`` bytes of ``key``, in order, as ranged reads of ``range_size``,
    :data:`READ_AHEAD` of them in flight. A short read means the object shrank.

    Raises:
        CorruptionError: if a ranged read returns fewer bytes than asked (the object shrank).
    """
    starts = iter(range(0, size, range_size))
    in_flight: collections.deque[tuple[int, int, asyncio.Future[bytes]]] = collections.deque()
    try:
        while True:
            while len(in_flight) < READ_AHEAD:
                start = next(starts, None)
                if start is None:
                    break
                end = min(size, start + range_size)
                in_flight.append(
                    (start, end, asyncio.ensure_future(backend.get_range(key, start, end)))
                )
            if not in_flight:
                return
            start, end, read = in_flight.popleft()
            piece = await read
            if len(piece) != end - start:
                raise CorruptionError(
                    key, "sidecar truncated", expected=size, actual=start + len(piece)
                )
            yield piece
    finally:
        for _, _, read in in_flight:
            read.cancel()
        await asyncio.gather(*(read for _, _, read in in_flight), return_exceptions=True)


async def checked_pieces(
    backend: AsyncBackend,
    key: str,
    size: int,
    check: SidecarCheck,
    *,
    range_size: int,
    progress: Progress,
) -> AsyncGenerator[bytes, None]:
    """The sidecar's bytes, each piece checked and reported before it is handed on; after
    the last one the whole file is checked, so a consumer that uploads the pieces fails
    (and aborts its upload) before completing it if the file is not the recorded one.
    A sidecar that vanishes while being read is :class:`CorruptionError` too.

    Raises:
        CorruptionError: if the sidecar vanishes while being read, is not of the recorded size or
            content.
    """
    try:
        async with contextlib.aclosing(read_ranges(backend, key, size, range_size)) as pieces:
            async for piece in pieces:
                check.update(piece)
                progress(len(piece))
                yield piece
    except NotFoundError:
        raise CorruptionError(key, "state.bin missing") from None
    check.finish()


async def open_sidecar(
    backend: AsyncBackend, stored: StoredManifest, *, range_size: int, progress: Progress
) -> tuple[int, AsyncGenerator[bytes, None]]:
    """The size of the sidecar of ``stored`` and its :func:`checked_pieces` (one HEAD).

    Raises:
        CorruptionError: if it is missing or not of the recorded size.
    """
    key = state_key(stored.manifest.checkpoint_id)
    check = SidecarCheck(key, stored)
    try:
        size = (await backend.head(key)).size
    except NotFoundError:
        raise CorruptionError(key, "state.bin missing") from None
    check.check_size(size)
    pieces = checked_pieces(backend, key, size, check, range_size=range_size, progress=progress)
    return size, pieces


async def check_sidecar(
    backend: AsyncBackend, stored: StoredManifest, *, range_size: int, progress: Progress
) -> None:
    """Read the sidecar of ``stored`` in ranges and check it; :class:`CorruptionError` if it
    is missing or not the recorded file."""
    _, pieces = await open_sidecar(backend, stored, range_size=range_size, progress=progress)
    async with contextlib.aclosing(pieces):
        async for _ in pieces:
            pass
