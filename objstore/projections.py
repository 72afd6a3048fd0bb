"""ProjectionCheckpointStore: named per-stream cursor maps, advanced with one request.

The contract is mako's ``ProjectionCheckpointStore`` (DESIGN §4). Layout::

    {root}/projections/{name}/base          sealed JSON: cursors + ids of the deltas folded in
    {root}/projections/{name}/deltas/{id}   sealed JSON: the cursors one advance raised

``{name}`` is the projection name escaped into one key segment, so projection ``a`` never
lists (or reads) the objects of ``a/b``; stream ids live inside the objects, never in keys.
A delta id is 128 random bits in hex, so two writers can never claim the same delta.

**Value.** A projection's cursors are ``base ⊔ every present delta not in base.folded``,
where ``⊔`` takes the per-stream maximum. Max is commutative and idempotent, so deltas need
no order and concurrent advances of one projection all count, whatever the interleaving.

**Requests.** :meth:`~AsyncProjectionCheckpointStore.advance_projection_cursors` writes
exactly one new delta (create-if-absent) holding only the cursors that strictly increased,
however many; nothing when none did. Load = 1 LIST + 1 GET of the base + 1 GET per unfolded
delta (in parallel). Save = 1 LIST + 1 compare-and-swap of the base (+1 GET when this
store object has not seen the base's version) + deletes of the deltas it supersedes.

**Compaction.** After an advance that leaves ``compact_every`` unfolded deltas known to
this store object (its own advances, plus those a load found), the store folds them into a
new base: GET base → LIST → GET unfolded deltas → compare-and-swap the base (folded = every
delta listed) → delete those deltas. Each step is crash-safe: until the swap nothing has
changed; after it the folded deltas are ignored by readers whether or not they are deleted
yet. A compaction that loses the swap to another writer gives up (that writer compacted or
saved). So a projection holds at most about ``compact_every`` deltas per writer.

**Save** truly replaces: the new base lists every delta present when it was written as
folded, so older advances stop counting, while an advance that lands after the save's
listing counts on top of it (it is ordered after the save).

**Readers** list first, then read the base, then the unfolded deltas; if a listed delta has
vanished meanwhile (a compaction folded it into a newer base), they start over. That order
guarantees that any delta they apply was written after the base they read was listed.

:class:`AsyncProjectionCheckpointStore` holds all logic; :class:`ProjectionCheckpointStore`
is its blocking face.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from objstore._checks import MAX_U64, check_u64, is_int
from objstore._concurrency import gather_bounded
from objstore._keys import join_key, name_segment
from objstore._loop import AsyncClosing, StoreFacade, blocking
from objstore._open import StoreLocation, as_async_backend
from objstore.backends import AsyncBackend, RequestHook
from objstore.codec import canonical_json, open_document, seal
from objstore.errors import (
    AlreadyExistsError,
    CorruptionError,
    NotFoundError,
    ObjstoreError,
    PreconditionFailedError,
)

__all__ = [
    "DEFAULT_COMPACT_EVERY",
    "PROJECTION_FORMAT",
    "AsyncProjectionCheckpointStore",
    "GlobalProjectionCheckpoint",
    "ProjectionCheckpointStore",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

PROJECTION_FORMAT = 1
"""Format version of base and delta objects."""
DEFAULT_COMPACT_EVERY = 16
_BASE_KIND = "objstore.projection-base"
_DELTA_KIND = "objstore.projection-delta"
_READ_ATTEMPTS = 16
_SAVE_ATTEMPTS = 32
_PARALLEL_READS = 16


def _check_stream_id(stream_id: object) -> str:
    if not isinstance(stream_id, str):
        raise TypeError(f"stream id must be str, not {type(stream_id).__name__}")
    if not stream_id:
        raise ValueError("stream id must not be empty")
    if "\x00" in stream_id:
        raise ValueError(f"stream id {stream_id!r} contains NUL")
    try:
        stream_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"stream id {stream_id!r} is not valid UTF-8") from exc
    return stream_id


def _check_cursor(stream_id: str, sequence: object) -> int:
    return check_u64(sequence, f"cursor of {stream_id!r}")


@dataclass(frozen=True, slots=True)
class GlobalProjectionCheckpoint:
    """How far a projection has read each stream: stream id → last processed sequence.

    A missing stream reads as 0. Immutable: :meth:`advance` and :meth:`merge` return new
    checkpoints, so the ``previous`` handed to
    :meth:`AsyncProjectionCheckpointStore.advance_projection_cursors` stays intact. Stream
    ids are non-empty str without NUL; cursors are u64 (``TypeError``/``ValueError``).
    """

    cursors: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.cursors, Mapping):
            raise TypeError(f"cursors must be a mapping, not {type(self.cursors).__name__}")
        checked = {
            _check_stream_id(stream_id): _check_cursor(stream_id, sequence)
            for stream_id, sequence in self.cursors.items()
        }
        object.__setattr__(self, "cursors", MappingProxyType(checked))

    @classmethod
    def _trusted(cls, cursors: dict[str, int]) -> GlobalProjectionCheckpoint:
        """Wrap already validated cursors without copying or re-checking them."""
        checkpoint = object.__new__(cls)
        object.__setattr__(checkpoint, "cursors", MappingProxyType(cursors))
        return checkpoint

    def __hash__(self) -> int:
        return hash(frozenset(self.cursors.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.cursors)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self.cursors),))

    def cursor_for(self, stream_id: str) -> int:
        """The cursor of ``stream_id``; 0 when it has none."""
        return self.cursors.get(stream_id, 0)

    def advance(self, stream_id: str, sequence: int) -> GlobalProjectionCheckpoint:
        """A checkpoint with ``stream_id`` moved to ``sequence``, unless that would lower it
        (then ``self``). Copies the cursors: use :meth:`merge` to advance many at once."""
        _check_cursor(_check_stream_id(stream_id), sequence)
        if sequence <= self.cursor_for(stream_id):
            return self
        return type(self)._trusted({**self.cursors, stream_id: sequence})

    def merge(self, other: GlobalProjectionCheckpoint) -> GlobalProjectionCheckpoint:
        """The per-stream maximum of ``self`` and ``other``."""
        merged = dict(self.cursors)
        _merge_into(merged, other.cursors)
        return type(self)._trusted(merged)

    def advanced_since(self, previous: GlobalProjectionCheckpoint) -> dict[str, int]:
        """The cursors of ``self`` strictly greater than in ``previous``."""
        return {
            stream_id: sequence
            for stream_id, sequence in self.cursors.items()
            if sequence > previous.cursor_for(stream_id)
        }


def _merge_into(target: dict[str, int], cursors: Mapping[str, int]) -> None:
    for stream_id, sequence in cursors.items():
        if sequence > target.get(stream_id, -1):
            target[stream_id] = sequence


# -- encoding (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Base:
    cursors: dict[str, int]
    folded: frozenset[str]


_EMPTY_BASE = _Base({}, frozenset())


def _encode_base(name: str, cursors: Mapping[str, int], folded: Iterable[str]) -> bytes:
    # The nonce keeps every base unique, so a retried swap recognises its own write and a
    # content-hash version (local disk) never repeats.
    document = {
        "format": PROJECTION_FORMAT,
        "kind": _BASE_KIND,
        "name": name,
        "nonce": uuid.uuid4().hex,
        "folded": sorted(folded),
        "cursors": dict(cursors),
    }
    return seal(canonical_json(document))


def _encode_delta(name: str, cursors: Mapping[str, int]) -> bytes:
    document = {
        "format": PROJECTION_FORMAT,
        "kind": _DELTA_KIND,
        "name": name,
        "cursors": dict(cursors),
    }
    return seal(canonical_json(document))


def _decode(
    blob: bytes, *, key: str, kind: str, name: str
) -> tuple[dict[str, Any], dict[str, int]]:
    document = open_document(
        blob, key=key, formats=(PROJECTION_FORMAT,), kind=kind, owner=("name", name)
    )
    cursors = document.get("cursors")
    if not isinstance(cursors, dict):
        raise CorruptionError(key, "cursors are not a JSON object")
    for stream_id, sequence in cursors.items():
        if not is_int(sequence) or not 0 <= sequence <= MAX_U64 or not stream_id:
            raise CorruptionError(key, f"bad cursor {stream_id!r}: {sequence!r}")
    return document, cursors


def _decode_base(blob: bytes, *, key: str, name: str) -> _Base:
    document, cursors = _decode(blob, key=key, kind=_BASE_KIND, name=name)
    folded = document.get("folded")
    if not isinstance(folded, list) or not all(isinstance(item, str) for item in folded):
        raise CorruptionError(key, "folded is not a list of delta ids")
    return _Base(cursors, frozenset(folded))


def _decode_delta(blob: bytes, *, key: str, name: str) -> dict[str, int]:
    return _decode(blob, key=key, kind=_DELTA_KIND, name=name)[1]


# -- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """The keys of one projection."""

    name: str
    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/base"

    @property
    def deltas(self) -> str:
        return f"{self.prefix}/deltas"

    def delta(self, delta_id: str) -> str:
        return f"{self.deltas}/{delta_id}"

    def delta_ids(self, keys: Iterable[str]) -> list[str]:
        """The ids of the deltas among listed ``keys``; anything else is ignored."""
        start = self.deltas + "/"
        return [
            key[len(start) :]
            for key in keys
            if key.startswith(start) and "/" not in key[len(start) :]
        ]


_UNKNOWN = "unknown"


class AsyncProjectionCheckpointStore(AsyncClosing):
    """Named projection checkpoints under ``{root}/projections/`` (asyncio).

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
        compact_every: fold deltas into a new base once an advance leaves this many
            unfolded deltas known to this store object (at least 1).
    """

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        compact_every: int = DEFAULT_COMPACT_EVERY,
    ) -> None:
        if not is_int(compact_every) or compact_every < 1:
            raise ValueError("compact_every must be an int of at least 1")
        self.backend: AsyncBackend = as_async_backend(
            url_or_backend,
            storage_options,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
        )
        self.compact_every = compact_every
        # Per projection: unfolded deltas this object knows of, and the base version it last
        # saw (None: no base; absent from the dict: unknown).
        self._pending: dict[str, int] = {}
        self._base_versions: dict[str, str | None] = {}

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self.backend.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _layout(self, name: object) -> _Layout:
        segment = name_segment(name, what="projection name")
        return _Layout(str(name), join_key("projections", segment))

    async def load_projection_checkpoint(self, name: str) -> GlobalProjectionCheckpoint:
        """The cursors of projection ``name``; an empty checkpoint if it has none.

        A damaged base or delta raises :class:`~objstore.errors.CorruptionError` (from
        reading it; the cursors are the projection's source of truth, so damage is never
        mistaken for a fresh start; :meth:`save_projection_checkpoint` replaces them).

        Raises:
            ObjstoreError: if the projection keeps changing while being read, through every
                attempt.
        """
        layout = self._layout(name)
        for _ in range(_READ_ATTEMPTS):
            listing = [info.key for info in await self.backend.list(layout.prefix)]
            try:
                if layout.base in listing:
                    blob, version = await self.backend.get(layout.base)
                    base = _decode_base(blob, key=layout.base, name=layout.name)
                else:
                    version, base = None, _EMPTY_BASE
                unfolded = [i for i in layout.delta_ids(listing) if i not in base.folded]
                deltas = await gather_bounded(
                    (self._read_delta(layout, i) for i in unfolded), _PARALLEL_READS
                )
            except NotFoundError:
                continue  # a compaction folded what we listed into a newer base: start over
            cursors = dict(base.cursors)
            for delta in deltas:
                _merge_into(cursors, delta)
            self._base_versions[layout.name] = version
            self._pending[layout.name] = len(unfolded)
            return GlobalProjectionCheckpoint._trusted(cursors)
        raise ObjstoreError(
            f"projection {layout.name!r} kept changing while being read ({_READ_ATTEMPTS} tries)"
        )

    async def save_projection_checkpoint(
        self, name: str, checkpoint: GlobalProjectionCheckpoint
    ) -> None:
        """Replace the cursors of projection ``name`` with exactly ``checkpoint``'s.

        Raises:
            PreconditionFailedError: only after losing the base's compare-and-swap to other
                savers/compactors many times in a row.
        """
        _check_checkpoint(checkpoint)
        layout = self._layout(name)
        version = self._base_versions.get(layout.name, _UNKNOWN)
        if version == _UNKNOWN:
            version = await self._base_version(layout)
        for _ in range(_SAVE_ATTEMPTS):
            listed = layout.delta_ids(info.key for info in await self.backend.list(layout.deltas))
            blob = _encode_base(layout.name, checkpoint.cursors, listed)
            try:
                new_version = await self._swap_base(layout, blob, version)
            except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
                version = await self._base_version(layout)
                continue
            self._base_versions[layout.name] = new_version
            self._pending[layout.name] = 0
            await self.backend.delete_many(layout.delta(i) for i in listed)
            return
        raise PreconditionFailedError(
            layout.base, f"projection {layout.name!r}: lost {_SAVE_ATTEMPTS} races to save"
        )

    async def advance_projection_cursors(
        self,
        name: str,
        previous: GlobalProjectionCheckpoint,
        current: GlobalProjectionCheckpoint,
    ) -> None:
        """Persist the cursors of ``current`` that are strictly greater than in
        ``previous``: exactly one create-if-absent request however many, none if none.

        Cursors never move backward: a lower cursor in ``current`` is ignored, and the
        stored value is the maximum ever advanced (since the last save). Every
        ``compact_every`` advances, the deltas are compacted in the same call; a failed
        compaction is logged at WARNING and retried later, the advance itself stands.
        """
        _check_checkpoint(previous)
        _check_checkpoint(current)
        layout = self._layout(name)
        changed = current.advanced_since(previous)
        if not changed:
            return
        blob = _encode_delta(layout.name, changed)
        await self.backend.put_if_absent(layout.delta(uuid.uuid4().hex), blob)
        pending = self._pending.get(layout.name, 0) + 1
        self._pending[layout.name] = pending
        if pending < self.compact_every:
            return
        try:
            await self.compact_projection_checkpoint(layout.name)
        except ObjstoreError as exc:
            self._pending[layout.name] = 0
            logger.warning("compacting projection %r failed, will retry: %s", layout.name, exc)

    async def compact_projection_checkpoint(self, name: str) -> bool:
        """Fold the unfolded deltas of ``name`` into a new base and delete them.

        Returns False when there was nothing to fold or another writer changed the base
        meanwhile (its compaction or save stands; nothing is lost). Raises
        :class:`~objstore.errors.CorruptionError` if the base or a delta is damaged.
        """
        layout = self._layout(name)
        try:
            blob, version = await self.backend.get(layout.base)
        except NotFoundError:
            base, base_version = _EMPTY_BASE, None
        else:
            base, base_version = _decode_base(blob, key=layout.base, name=layout.name), version
        listed = layout.delta_ids(info.key for info in await self.backend.list(layout.deltas))
        unfolded = [i for i in listed if i not in base.folded]
        self._pending[layout.name] = 0
        if not unfolded:
            # Only leftovers of a compaction that crashed before deleting: finish its job.
            await self.backend.delete_many(layout.delta(i) for i in listed)
            return False
        try:
            deltas = await gather_bounded(
                (self._read_delta(layout, i) for i in unfolded), _PARALLEL_READS
            )
        except NotFoundError:
            return False  # another writer folded and deleted them
        cursors = dict(base.cursors)
        for delta in deltas:
            _merge_into(cursors, delta)
        try:
            new_version = await self._swap_base(
                layout, _encode_base(layout.name, cursors, listed), base_version
            )
        except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
            self._base_versions.pop(layout.name, None)
            return False
        self._base_versions[layout.name] = new_version
        await self.backend.delete_many(layout.delta(i) for i in listed)
        return True

    async def close(self) -> None:
        """Close the backend's connections."""
        await self.backend.close()

    # -- internals -----------------------------------------------------------------------------

    async def _read_delta(self, layout: _Layout, delta_id: str) -> dict[str, int]:
        key = layout.delta(delta_id)
        blob, _ = await self.backend.get(key)
        return _decode_delta(blob, key=key, name=layout.name)

    async def _base_version(self, layout: _Layout) -> str | None:
        """The base's current version (1 GET; the content is not decoded, so a damaged base
        can still be replaced by a save)."""
        try:
            return (await self.backend.get(layout.base))[1]
        except NotFoundError:
            return None

    async def _swap_base(self, layout: _Layout, blob: bytes, version: str | None) -> str:
        if version is None:
            return await self.backend.put_if_absent(layout.base, blob)
        return await self.backend.put_if_match(layout.base, blob, version)


def _check_checkpoint(checkpoint: object) -> None:
    if not isinstance(checkpoint, GlobalProjectionCheckpoint):
        raise TypeError(f"expected a GlobalProjectionCheckpoint, not {type(checkpoint).__name__}")


class ProjectionCheckpointStore(StoreFacade[AsyncProjectionCheckpointStore]):
    """The blocking face of :class:`AsyncProjectionCheckpointStore`: same arguments,
    methods and errors, no ``await``."""

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        compact_every: int = DEFAULT_COMPACT_EVERY,
    ) -> None:
        super().__init__(
            AsyncProjectionCheckpointStore(
                url_or_backend,
                storage_options=storage_options,
                verify_fencing=verify_fencing,
                request_hook=request_hook,
                compact_every=compact_every,
            )
        )

    load_projection_checkpoint = blocking(AsyncProjectionCheckpointStore.load_projection_checkpoint)
    save_projection_checkpoint = blocking(AsyncProjectionCheckpointStore.save_projection_checkpoint)
    advance_projection_cursors = blocking(AsyncProjectionCheckpointStore.advance_projection_cursors)
    compact_projection_checkpoint = blocking(
        AsyncProjectionCheckpointStore.compact_projection_checkpoint
    )
    close = blocking(AsyncProjectionCheckpointStore.close)
