"""SnapshotStore: the latest aggregate snapshot of each stream.

The contract is mako's ``SnapshotStore`` (DESIGN §4). Layout::

    {root}/snapshots/{stream}.snapshot

``{stream}`` is the stream id escaped into one key segment (see
:func:`~objstore._keys.name_segment`). Each object is a sealed blob (zstd-compressed when
that pays, xxh3-128 checksummed, like every small objstore object) of::

    header length u32 LE | canonical JSON header | state

The header holds ``format``, ``stream_id``, ``sequence_number``, ``state_schema_version``
and ``state_encoding`` (``"bytes"``: the state as given; ``"json"``: canonical JSON of a
JSON value). The full stream id is checked on load, so even a shortened key segment can
never return another stream's snapshot.

A snapshot is a cache of a fold over the stream's events, never the source of truth: a
damaged one is logged at WARNING and treated as absent (the caller replays).

**Saving never moves a stream backward.** ``save`` is a conditional write against what is
stored: create-if-absent when the store object knows of no snapshot, else compare-and-swap
on the version it last read or wrote for that stream (``load`` remembers it too). A lost
race re-reads the stored snapshot and tries again. A snapshot is replaced only by one with
an equal or higher ``sequence_number`` (equal: a retried save, or a re-snapshot in a new
schema version at the same position); an older one is refused with
:class:`~objstore.errors.ConflictError` (``expected`` = its sequence number, ``actual`` = the
stored one) and nothing is written — mako's contract says a save that returned persisted
its snapshot, so a refused save must not return quietly. A refusal is judged on a fresh
read (what the store object remembers is re-read first). A damaged stored snapshot counts
as absent and is replaced by any save. Steady state: 1 write per save, after a ``load`` or
an earlier ``save`` of the stream by the same store object; otherwise 1 create, or 1 GET +
1 write when the stream already has a snapshot.

:class:`AsyncSnapshotStore` holds all logic; :class:`SnapshotStore` is its blocking face.
:class:`NoopSnapshotStore` / :class:`AsyncNoopSnapshotStore` store nothing (for tests and
services that do not snapshot).
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeAlias

from objstore._checks import check_u64
from objstore._keys import escape_name, join_key, name_segment
from objstore._loop import AsyncClosing, StoreFacade, blocking
from objstore._open import StoreLocation, as_async_backend
from objstore.backends import AsyncBackend, RequestHook
from objstore.codec import canonical_json, open_framed, parse_json, seal
from objstore.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptionError,
    NotFoundError,
    PreconditionFailedError,
)

__all__ = [
    "SNAPSHOT_FORMAT",
    "AsyncNoopSnapshotStore",
    "AsyncSnapshotStore",
    "JSONValue",
    "NoopSnapshotStore",
    "Snapshot",
    "SnapshotStore",
    "decode_snapshot",
    "encode_snapshot",
]

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
"""Format version of snapshot objects."""
JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
_KIND = "objstore.snapshot"
_HEADER_LENGTH = struct.Struct("<I")
_MAX_SAVE_ATTEMPTS = 32
_REMEMBERED_STREAMS = 4096


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state after applying its stream up to ``sequence_number``.

    ``state`` is bytes (a ``bytearray``/``memoryview`` is copied to ``bytes``) or a JSON
    value (dicts with str keys, lists, str, int, float, bool, None; it comes back as
    ``json.loads`` returns it, so tuples become lists). ``state_schema_version`` says how
    to read the state, so a loader can refuse versions it does not understand. Raises
    ``TypeError``/``ValueError`` for a bad stream id or a number outside u64; a state that
    is not JSON-serialisable is refused by ``save``.
    """

    stream_id: str
    sequence_number: int
    state_schema_version: int
    state: bytes | JSONValue

    def __post_init__(self) -> None:
        escape_name(self.stream_id, what="stream id")
        check_u64(self.sequence_number, "sequence_number")
        check_u64(self.state_schema_version, "state_schema_version")
        if isinstance(self.state, bytearray | memoryview):
            object.__setattr__(self, "state", bytes(self.state))


# -- encoding (pure) ---------------------------------------------------------------------------


def encode_snapshot(snapshot: Snapshot, *, level: int = 3) -> bytes:
    """The sealed object for ``snapshot``; ``TypeError``/``ValueError`` if its state is
    neither bytes nor JSON-serialisable."""
    if isinstance(snapshot.state, bytes):
        encoding, state = "bytes", snapshot.state
    else:
        encoding, state = "json", canonical_json(snapshot.state)
    header = canonical_json(
        {
            "format": SNAPSHOT_FORMAT,
            "kind": _KIND,
            "stream_id": snapshot.stream_id,
            "sequence_number": snapshot.sequence_number,
            "state_schema_version": snapshot.state_schema_version,
            "state_encoding": encoding,
        }
    )
    return seal(_HEADER_LENGTH.pack(len(header)) + header + state, level=level)


def decode_snapshot(blob: bytes, *, key: str) -> Snapshot:
    """The snapshot in a sealed object; :class:`CorruptionError` if anything is off.

    Raises:
        CorruptionError: if the blob is damaged, its header is malformed, or its state encoding is
            unknown.
    """
    header, payload, end = open_framed(blob, key=key, formats=(SNAPSHOT_FORMAT,), kind=_KIND)
    raw_state = payload[end:]
    encoding = header.get("state_encoding")
    state: bytes | JSONValue
    if encoding == "bytes":
        state = raw_state
    elif encoding == "json":
        state = parse_json(raw_state, key=key)
    else:
        raise CorruptionError(key, f"unknown state encoding {encoding!r}")
    try:
        return Snapshot(
            header["stream_id"],
            header["sequence_number"],
            header["state_schema_version"],
            state,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(key, f"bad snapshot header: {exc!r}") from exc


def _accepted(versions: Iterable[int] | None) -> frozenset[int] | None:
    if versions is None:
        return None
    if isinstance(versions, str | bytes):
        raise TypeError("accepted_schema_versions must be an iterable of ints")
    return frozenset(check_u64(version, "accepted schema version") for version in versions)


def _refuse_older(key: str, snapshot: Snapshot, stored_sequence: int) -> None:
    """Raise :class:`ConflictError` if a stored snapshot at ``stored_sequence`` is newer
    than ``snapshot`` (an equal sequence may replace it).

    Raises:
        ConflictError: if ``stored_sequence`` is higher than ``snapshot``'s sequence number.
    """
    if stored_sequence > snapshot.sequence_number:
        raise ConflictError(
            key,
            f"stream {snapshot.stream_id!r} already has a snapshot at sequence "
            f"{stored_sequence}; refusing to replace it with sequence "
            f"{snapshot.sequence_number}",
            expected=snapshot.sequence_number,
            actual=stored_sequence,
        )


def _check_snapshot(snapshot: object) -> Snapshot:
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"expected a Snapshot, not {type(snapshot).__name__}")
    return snapshot


# -- the stores --------------------------------------------------------------------------------


class AsyncSnapshotStore(AsyncClosing):
    """The latest snapshot of each stream under ``{root}/snapshots/`` (asyncio).

    Args:
        url_or_backend: store URL/path or an opened backend.
        storage_options: fsspec options when a URL is given.
        verify_fencing: prove before the first conditional write that the store enforces
            preconditions, refusing it with ``NotSupportedError`` if not (default). ``False``
            skips that check, at a risk: on a store that ignores preconditions concurrent
            writers cannot be fenced and create-once writes are not once, so a stale writer
            may overwrite newer state. With an opened backend, set it on the backend instead.
        request_hook: called with a :class:`~objstore.observability.RequestEvent` after
            every request (see :mod:`objstore.observability`); URL only.
        compression_level: zstd level for snapshot objects.
    """

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        compression_level: int = 3,
    ) -> None:
        if not -7 <= compression_level <= 22:
            raise ValueError("compression_level must be within zstd's [-7, 22]")
        self.backend: AsyncBackend = as_async_backend(
            url_or_backend,
            storage_options,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
        )
        self.compression_level = compression_level
        self._known: OrderedDict[str, tuple[str, int | None]] = OrderedDict()

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self.backend.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @staticmethod
    def key_for(stream_id: str) -> str:
        """The object key of ``stream_id``'s snapshot."""
        return join_key("snapshots", name_segment(stream_id, what="stream id") + ".snapshot")

    async def save(self, snapshot: Snapshot) -> None:
        """Durably replace the stream's snapshot with ``snapshot``, unless the stored one
        has a higher ``sequence_number`` (1 conditional write in the steady state; see the
        module docstring).

        A state that is neither bytes nor JSON-serialisable raises ``TypeError``/``ValueError``
        (from encoding it) before any request.

        Raises:
            ConflictError: (nothing written) when the stored snapshot is newer, or after losing many
                consecutive races to other savers.
        """
        snapshot = _check_snapshot(snapshot)
        key = self.key_for(snapshot.stream_id)
        blob = encode_snapshot(snapshot, level=self.compression_level)
        stored = self._known.get(key)
        fresh = False  # read by this call, not remembered from an earlier one
        for _ in range(_MAX_SAVE_ATTEMPTS):
            stored_sequence = None if stored is None else stored[1]
            if stored_sequence is not None and stored_sequence > snapshot.sequence_number:
                if not fresh:  # a refusal is judged on what is stored now
                    stored, fresh = await self._read_stored(key, snapshot.stream_id), True
                    continue
                _refuse_older(key, snapshot, stored_sequence)
            try:
                if stored is None:
                    version = await self.backend.put_if_absent(key, blob)
                else:
                    version = await self.backend.put_if_match(key, blob, stored[0])
            except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
                stored, fresh = await self._read_stored(key, snapshot.stream_id), True
                continue
            self._remember(key, (version, snapshot.sequence_number))
            return
        raise ConflictError(
            key,
            f"lost {_MAX_SAVE_ATTEMPTS} consecutive races to save the snapshot of stream "
            f"{snapshot.stream_id!r}",
            expected=snapshot.sequence_number,
            actual=None if stored is None else stored[1],
        )

    async def load(
        self, stream_id: str, accepted_schema_versions: Iterable[int] | None = None
    ) -> Snapshot | None:
        """The stream's latest snapshot (1 GET), or ``None`` when there is none, when its
        ``state_schema_version`` is not in ``accepted_schema_versions`` (``None`` accepts
        every version) or when it is damaged (logged at WARNING).

        Storage errors other than damage (e.g. transient failures that outlast the
        retries) propagate: they say nothing about the snapshot.
        """
        key = self.key_for(stream_id)
        accepted = _accepted(accepted_schema_versions)
        try:
            blob, version = await self.backend.get(key)
        except NotFoundError:
            self._known.pop(key, None)
            return None
        snapshot = self._decoded(blob, key, stream_id)
        self._remember(key, (version, None if snapshot is None else snapshot.sequence_number))
        if snapshot is None:
            return None
        if accepted is not None and snapshot.state_schema_version not in accepted:
            logger.debug(
                "snapshot of stream %r has schema version %d, not one of %s",
                stream_id,
                snapshot.state_schema_version,
                sorted(accepted),
            )
            return None
        return snapshot

    async def close(self) -> None:
        """Close the backend's connections."""
        await self.backend.close()

    def _remember(self, key: str, stored: tuple[str, int | None]) -> None:
        """Remember ``(version, sequence number or None if damaged)`` of a stream's stored
        snapshot for the next save's compare-and-swap (a bounded, most-recent map)."""
        self._known[key] = stored
        self._known.move_to_end(key)
        if len(self._known) > _REMEMBERED_STREAMS:
            self._known.popitem(last=False)

    async def _read_stored(self, key: str, stream_id: str) -> tuple[str, int | None] | None:
        """``(version, sequence number)`` of the stored snapshot (1 GET); the sequence is
        ``None`` when it is damaged; ``None`` when there is no snapshot."""
        try:
            blob, version = await self.backend.get(key)
        except NotFoundError:
            self._known.pop(key, None)
            return None
        snapshot = self._decoded(blob, key, stream_id)
        return version, None if snapshot is None else snapshot.sequence_number

    @staticmethod
    def _decoded(blob: bytes, key: str, stream_id: str) -> Snapshot | None:
        """The snapshot in ``blob``, or ``None`` (logged at WARNING) when it is damaged or
        belongs to another stream."""
        try:
            snapshot = decode_snapshot(blob, key=key)
        except CorruptionError as exc:
            logger.warning("ignoring damaged snapshot of stream %r: %s", stream_id, exc)
            return None
        if snapshot.stream_id != stream_id:
            logger.warning(
                "ignoring snapshot at %s: it belongs to stream %r, not %r",
                key,
                snapshot.stream_id,
                stream_id,
            )
            return None
        return snapshot


class SnapshotStore(StoreFacade[AsyncSnapshotStore]):
    """The blocking face of :class:`AsyncSnapshotStore`: same arguments, methods and
    errors, no ``await``."""

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        compression_level: int = 3,
    ) -> None:
        super().__init__(
            AsyncSnapshotStore(
                url_or_backend,
                storage_options=storage_options,
                verify_fencing=verify_fencing,
                request_hook=request_hook,
                compression_level=compression_level,
            )
        )

    key_for = staticmethod(AsyncSnapshotStore.key_for)
    save = blocking(AsyncSnapshotStore.save)
    load = blocking(AsyncSnapshotStore.load)
    close = blocking(AsyncSnapshotStore.close)


class AsyncNoopSnapshotStore(AsyncClosing):
    """Stores nothing: ``save`` checks its argument and drops it, ``load`` returns ``None``."""

    async def save(self, snapshot: Snapshot) -> None:
        """Check ``snapshot`` (``TypeError`` if it is not one) and forget it."""
        _check_snapshot(snapshot)

    async def load(
        self, stream_id: str, accepted_schema_versions: Iterable[int] | None = None
    ) -> Snapshot | None:
        """Always ``None`` (after checking the arguments like :class:`AsyncSnapshotStore`)."""
        escape_name(stream_id, what="stream id")
        _accepted(accepted_schema_versions)
        return None

    async def close(self) -> None:
        """Nothing to close."""


class NoopSnapshotStore:
    """The blocking :class:`AsyncNoopSnapshotStore` (no event loop involved)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def save(self, snapshot: Snapshot) -> None:
        """Check ``snapshot`` (``TypeError`` if it is not one) and forget it."""
        _check_snapshot(snapshot)

    def load(
        self, stream_id: str, accepted_schema_versions: Iterable[int] | None = None
    ) -> Snapshot | None:
        """Always ``None`` (after checking the arguments like :class:`SnapshotStore`)."""
        escape_name(stream_id, what="stream id")
        _accepted(accepted_schema_versions)
        return None

    def close(self) -> None:
        """Nothing to close."""
