"""SourceCheckpointStore: where each source feeding a query resumes, committed in sessions.

The contract is Drasi's source ``CheckpointStore`` + ``SessionControl`` (DESIGN §4). Layout::

    {root}/sources/{query}/state         sealed JSON: every source's checkpoint (the commit record)
    {root}/sources/{query}/config_hash   sealed JSON: the query's config hash

``{query}`` is the query id percent-escaped into one key segment (see
:func:`~objstore._keys.name_segment`); source ids live *inside* the state object, so no
source id is ever part of a key.

**Commit protocol.** The whole committed state is one object. The outermost :meth:`commit`
replaces it with one conditional write: compare-and-swap against the version this store
object last read or wrote (create-if-absent while the object does not exist). The store
remembers that version, so a steady-state commit is exactly **1 write**; the first commit of
a store object that has read nothing yet costs **1 GET + 1 write**. A crash at any point
leaves either the old or the new object — one write, never a mix — and a write that fails
never touches the committed state, so the last good position of every source survives
(unlike Drasi's manager, an oversized position is refused at staging, before anything is
lost).

**Concurrent committers** (two processes, one query): the loser of the compare-and-swap
re-reads the newer state and re-applies *only its own staged changes* on top, then retries
(1 extra GET + 1 extra write per lost race). So neither process's sources are lost; for a
source both processes staged, the higher sequence wins.

**A source's committed sequence never moves backward through** :meth:`commit`. Before
every write the staged changes are checked against the state they would replace (per
source: :func:`backward_sources`); if any staged sequence is lower than the committed one —
typically a stale committer that lost the race to a newer commit — the whole commit is
refused with :class:`~objstore.errors.ConflictError` (``expected`` = ``{source_id: staged
sequence}``, ``actual`` = ``{source_id: committed sequence}``), nothing is written, and the
session stays open (roll it back, re-read, re-stage). An equal sequence is accepted (a
retried commit, or a new position for the same sequence). A refusal is always judged
against state read from the store (what the store object remembers is re-read first, 1
GET, so a reset by another process is not mistaken for a conflict). To start a source over, use
:meth:`clear_checkpoints`. After ``max_commit_attempts`` consecutive lost races
:meth:`commit` raises :class:`~objstore.errors.ConflictError` (``expected`` = the state
generation it last tried to write, ``actual`` = the generation the store holds; sources have
no checkpoint ids or epochs), leaving the session open.

:class:`AsyncSourceCheckpointStore` holds all logic; :class:`SourceCheckpointStore` is its
blocking face.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from objstore._checks import MAX_U64, check_u64, is_int
from objstore._keys import escape_name, join_key, name_segment
from objstore._loop import AsyncClosing, StoreFacade, blocking
from objstore._open import StoreLocation, as_async_backend
from objstore.backends import AsyncBackend, Buffer, RequestHook
from objstore.codec import canonical_json, open_document, seal
from objstore.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptionError,
    NotFoundError,
    PreconditionFailedError,
)

__all__ = [
    "DEFAULT_MAX_POSITION_SIZE",
    "STATE_FORMAT",
    "AsyncSourceCheckpointStore",
    "SourceCheckpoint",
    "SourceCheckpointStore",
    "backward_sources",
    "decode_config_hash",
    "decode_state",
    "encode_config_hash",
    "encode_state",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = 1
"""Format version of the ``state`` and ``config_hash`` objects."""
DEFAULT_MAX_POSITION_SIZE = 64 * 1024
"""Largest source position accepted by default; the state object holds every source's
position and is rewritten by each commit, so positions are meant to be small."""
DEFAULT_MAX_COMMIT_ATTEMPTS = 32
_STATE_KIND = "objstore.source-state"
_CONFIG_KIND = "objstore.source-config-hash"


@dataclass(frozen=True, slots=True)
class SourceCheckpoint:
    """Where one source resumes: the last processed ``sequence`` (u64) and an opaque
    ``source_position`` (e.g. a Kafka offset or a Postgres LSN) for native resumption.

    Raises ``TypeError``/``ValueError`` for a sequence outside u64 or a position that is
    not bytes-like; a ``bytearray``/``memoryview`` position is copied to ``bytes``.
    """

    sequence: int
    source_position: bytes | None = None

    def __post_init__(self) -> None:
        check_u64(self.sequence, "sequence")
        position = _check_position(self.source_position)
        if position is not self.source_position:
            object.__setattr__(self, "source_position", position)


def _check_position(position: object) -> bytes | None:
    if position is None or type(position) is bytes:
        return position
    if not isinstance(position, bytes | bytearray | memoryview):
        raise TypeError(f"source_position must be bytes or None, not {type(position).__name__}")
    return bytes(position)


# -- encoding (pure) ---------------------------------------------------------------------------


def encode_state(
    query_id: str, generation: int, sources: Mapping[str, SourceCheckpoint], nonce: str
) -> bytes:
    """The sealed ``state`` object: canonical JSON of every source's checkpoint.

    ``generation`` counts commits (informational); ``nonce`` makes each written object
    unique, so a retried compare-and-swap can recognise its own earlier attempt and a
    content-hash version (local disk) never repeats.
    """
    document = {
        "format": STATE_FORMAT,
        "kind": _STATE_KIND,
        "query_id": query_id,
        "generation": generation,
        "nonce": nonce,
        "sources": {
            source_id: {
                "sequence": checkpoint.sequence,
                "position": None
                if checkpoint.source_position is None
                else base64.b64encode(checkpoint.source_position).decode("ascii"),
            }
            for source_id, checkpoint in sources.items()
        },
    }
    return seal(canonical_json(document))


def _document(blob: bytes, *, key: str, kind: str, query_id: str) -> dict[str, Any]:
    return open_document(
        blob, key=key, formats=(STATE_FORMAT,), kind=kind, owner=("query_id", query_id)
    )


def decode_state(
    blob: bytes, *, key: str, query_id: str
) -> tuple[int, dict[str, SourceCheckpoint]]:
    """``(generation, sources)`` from a ``state`` object.

    Raises:
        CorruptionError: if the blob is damaged, malformed or belongs to another query.
    """
    document = _document(blob, key=key, kind=_STATE_KIND, query_id=query_id)
    generation = document.get("generation")
    entries = document.get("sources")
    if not is_int(generation) or not isinstance(entries, dict):
        raise CorruptionError(key, "missing generation or sources")
    sources: dict[str, SourceCheckpoint] = {}
    for source_id, entry in entries.items():
        try:
            position = entry["position"]
            sources[source_id] = SourceCheckpoint(
                entry["sequence"],
                None if position is None else base64.b64decode(position, validate=True),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise CorruptionError(key, f"bad checkpoint for source {source_id!r}: {exc}") from exc
    return generation, sources


def backward_sources(
    committed: Mapping[str, SourceCheckpoint], changes: Mapping[str, SourceCheckpoint]
) -> dict[str, tuple[int, int]]:
    """``{source_id: (staged sequence, committed sequence)}`` for every change that would
    move a committed source's sequence backward (an equal sequence is not backward)."""
    return {
        source_id: (change.sequence, committed[source_id].sequence)
        for source_id, change in changes.items()
        if source_id in committed and change.sequence < committed[source_id].sequence
    }


def encode_config_hash(query_id: str, config_hash: int) -> bytes:
    """The sealed ``config_hash`` object."""
    return seal(
        canonical_json(
            {
                "format": STATE_FORMAT,
                "kind": _CONFIG_KIND,
                "query_id": query_id,
                "config_hash": config_hash,
            }
        )
    )


def decode_config_hash(blob: bytes, *, key: str, query_id: str) -> int:
    """The hash stored in a ``config_hash`` object; :class:`CorruptionError` if damaged.

    Raises:
        CorruptionError: if the object is damaged or the value is not an unsigned 64-bit integer.
    """
    document = _document(blob, key=key, kind=_CONFIG_KIND, query_id=query_id)
    value = document.get("config_hash")
    if not is_int(value) or not 0 <= value <= MAX_U64:
        raise CorruptionError(key, f"bad config hash {value!r}")
    return value


# -- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Committed:
    """What this store object last saw committed: ``version`` ``None`` = no state object."""

    version: str | None
    generation: int
    sources: Mapping[str, SourceCheckpoint]


_ABSENT = _Committed(None, 0, {})


class AsyncSourceCheckpointStore(AsyncClosing):
    """Per-source checkpoints of one query under ``{root}/sources/{query}/`` (asyncio).

    Sessions: :meth:`begin` opens one (or nests: a counter), :meth:`commit` closes a level
    and only the outermost commit writes, :meth:`rollback` discards the *whole* session at
    any depth (staged writes are not tracked per level) and is a no-op without one.
    :meth:`commit` without a session raises ``RuntimeError``. Staged writes are visible to
    this store object's reads until committed or rolled back. If the outermost commit
    fails, the session stays open with its staged writes, so it can be retried or rolled
    back; :meth:`session` rolls back for you.

    ``stage_checkpoint`` outside a session raises ``RuntimeError`` on persistent stores
    (file, s3, gs) and, on ``memory://`` (``is_persistent`` False), commits at once like
    Drasi's volatile store. Inside a session staging is transactional on every backend, so
    ``memory://`` is a faithful stand-in for tests.

    :meth:`clear_checkpoints`, :meth:`write_config_hash` and :meth:`read_config_hash` are
    standalone operations, outside any session. A store object holds one session: use one
    per concurrent writer.

    Args:
        url_or_backend: store URL/path or an opened backend.
        query_id: the query whose sources these are (any non-empty str without NUL).
        storage_options: fsspec options when a URL is given.
        verify_fencing: prove before the first conditional write that the store enforces
            preconditions, refusing it with ``NotSupportedError`` if not (default). ``False``
            skips that check, at a risk: on a store that ignores preconditions concurrent
            writers cannot be fenced and create-once writes are not once, so a stale writer
            may overwrite newer state. With an opened backend, set it on the backend instead.
        request_hook: called with a :class:`~objstore.observability.RequestEvent` after
            every request (see :mod:`objstore.observability`); URL only.
        max_position_size: a larger ``source_position`` is refused with ``ValueError``.
        max_commit_attempts: lost compare-and-swap races a commit absorbs before raising
            :class:`~objstore.errors.ConflictError`.
    """

    def __init__(
        self,
        url_or_backend: StoreLocation,
        query_id: str,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        max_position_size: int = DEFAULT_MAX_POSITION_SIZE,
        max_commit_attempts: int = DEFAULT_MAX_COMMIT_ATTEMPTS,
    ) -> None:
        segment = name_segment(query_id, what="query id")
        if max_position_size < 0:
            raise ValueError("max_position_size must not be negative")
        if max_commit_attempts < 1:
            raise ValueError("max_commit_attempts must be at least 1")
        self.backend: AsyncBackend = as_async_backend(
            url_or_backend,
            storage_options,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
        )
        self.query_id = query_id
        self.max_position_size = max_position_size
        self.max_commit_attempts = max_commit_attempts
        self.state_key = join_key("sources", segment, "state")
        self.config_key = join_key("sources", segment, "config_hash")
        self._depth = 0
        self._staged: dict[str, SourceCheckpoint] = {}
        self._known: _Committed | None = None

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self.backend.url

    @property
    def is_persistent(self) -> bool:
        """Whether checkpoints survive the process (the transport's ``persistent``
        capability): False for ``memory://``."""
        return self.backend.transport.persistent

    @property
    def in_session(self) -> bool:
        """Whether a session is open on this store object."""
        return self._depth > 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, {self.query_id!r})"

    # -- sessions ----------------------------------------------------------------------------

    async def begin(self) -> None:
        """Open a session, or a nested level of the open one."""
        if self._depth == 0:
            self._staged.clear()
        self._depth += 1

    async def commit(self) -> None:
        """Close one session level; the outermost writes every staged checkpoint atomically.

        Costs nothing when nothing was staged, 1 write in the steady state, 1 GET + 1 write
        when this store object has not read the state yet, plus 1 GET + 1 write per lost
        race with another committer. On any error the session stays open. Writing raises
        :class:`~objstore.errors.ConflictError` (nothing written) if a staged sequence is
        lower than the committed one of its source or after ``max_commit_attempts`` lost
        races, and :class:`~objstore.errors.CorruptionError` if the stored state is damaged
        (:meth:`clear_checkpoints` resets it).

        Raises:
            RuntimeError: without an open session.
        """
        if self._depth == 0:
            raise RuntimeError("commit() without an open session; call begin() first")
        if self._depth > 1:
            self._depth -= 1
            return
        if self._staged:
            await self._commit_changes(dict(self._staged))
        self._staged.clear()
        self._depth = 0

    async def rollback(self) -> None:
        """Discard the whole session (every nesting level); a no-op without one."""
        self._staged.clear()
        self._depth = 0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSourceCheckpointStore]:
        """``async with store.session():`` — begin, then commit on success or roll back on
        an exception (including a failed commit, which is re-raised)."""
        await self.begin()
        try:
            yield self
            await self.commit()
        except BaseException:
            await self.rollback()
            raise

    # -- checkpoints ---------------------------------------------------------------------------

    async def stage_checkpoint(
        self, source_id: str, sequence: int, source_position: Buffer | None = None
    ) -> None:
        """Stage ``source_id``'s checkpoint into the open session.

        A ``None`` position replaces (removes) the stored one; the sequence is kept. A bad
        id, sequence or position raises ``TypeError``/``ValueError`` (from the argument
        checks) without changing anything staged or stored. On ``memory://`` outside a
        session it commits at once, so it raises what :meth:`commit` raises (e.g.
        :class:`~objstore.errors.ConflictError` for a sequence below the committed).

        Raises:
            ValueError: for a position larger than ``max_position_size`` (and a bad id or
                sequence), without changing anything staged or stored.
            RuntimeError: outside a session on a persistent store.
        """
        escape_name(source_id, what="source id")
        checkpoint = SourceCheckpoint(sequence, _check_position(source_position))
        position = checkpoint.source_position
        if position is not None and len(position) > self.max_position_size:
            raise ValueError(
                f"source position of {source_id!r} is {len(position)} bytes, more than "
                f"max_position_size={self.max_position_size}; the last good position is kept"
            )
        if self._depth > 0:
            self._staged[source_id] = checkpoint
        elif self.is_persistent:
            raise RuntimeError(
                "stage_checkpoint() outside a session on a persistent store; call begin() first"
            )
        else:
            await self._commit_changes({source_id: checkpoint})

    async def read_checkpoint(self, source_id: str) -> SourceCheckpoint | None:
        """``source_id``'s checkpoint as this store object sees it: staged, else committed
        (1 GET), else ``None``."""
        escape_name(source_id, what="source id")
        if self._depth > 0 and source_id in self._staged:
            return self._staged[source_id]
        return (await self._fetch()).sources.get(source_id)

    async def read_all_checkpoints(self) -> dict[str, SourceCheckpoint]:
        """Every source's checkpoint, committed (1 GET) overlaid with the session's staged."""
        merged = dict((await self._fetch()).sources)
        if self._depth > 0:
            merged.update(self._staged)
        return merged

    async def clear_checkpoints(self) -> None:
        """Delete every source checkpoint, then the config hash (a standalone operation that
        leaves an open session's staged writes alone).

        The state goes first: a crash in between leaves the old config hash, which makes a
        restarting query see a config change and reset again, never stale checkpoints
        under a missing hash.
        """
        self._known = None
        await self.backend.delete(self.state_key)
        self._known = _ABSENT
        await self.backend.delete(self.config_key)

    async def write_config_hash(self, config_hash: int) -> None:
        """Store the query's config hash (u64), replacing the previous one (1 write)."""
        value = check_u64(config_hash, "config_hash")
        await self.backend.put(self.config_key, encode_config_hash(self.query_id, value))

    async def read_config_hash(self) -> int | None:
        """The stored config hash, or ``None`` (1 GET); ``CorruptionError`` if damaged."""
        try:
            blob, _ = await self.backend.get(self.config_key)
        except NotFoundError:
            return None
        return decode_config_hash(blob, key=self.config_key, query_id=self.query_id)

    async def close(self) -> None:
        """Close the backend's connections."""
        await self.backend.close()

    # -- internals -----------------------------------------------------------------------------

    async def _fetch(self) -> _Committed:
        """Read the committed state (1 GET) and remember its version for the next commit."""
        try:
            blob, version = await self.backend.get(self.state_key)
        except NotFoundError:
            self._known = _ABSENT
            return _ABSENT
        generation, sources = decode_state(blob, key=self.state_key, query_id=self.query_id)
        self._known = _Committed(version, generation, sources)
        return self._known

    async def _commit_changes(self, changes: Mapping[str, SourceCheckpoint]) -> None:
        """Apply ``changes`` on top of the newest committed state with one conditional write,
        re-reading and re-applying them after each lost race;

        Raises:
            ConflictError: (nothing written) if it would move a source backward, or after losing
                ``max_commit_attempts`` consecutive races.
        """
        known = self._known
        fresh = known is None  # read by this call, not remembered from an earlier one
        attempted: int | None = None  # the generation the last lost write tried to store
        try:
            if known is None:
                known = await self._fetch()
            for _ in range(self.max_commit_attempts):
                if backward_sources(known.sources, changes):
                    if fresh:
                        break
                    known, fresh = await self._fetch(), True  # e.g. cleared since: confirm
                    continue
                sources = {**known.sources, **changes}
                generation = attempted = known.generation + 1
                blob = encode_state(self.query_id, generation, sources, uuid.uuid4().hex)
                try:
                    if known.version is None:
                        version = await self.backend.put_if_absent(self.state_key, blob)
                    else:
                        version = await self.backend.put_if_match(
                            self.state_key, blob, known.version
                        )
                except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
                    logger.info(
                        "source state of query %r changed under us; re-applying %d staged "
                        "checkpoint(s) on the newer state",
                        self.query_id,
                        len(changes),
                    )
                    known, fresh = await self._fetch(), True
                    continue
                self._known = _Committed(version, generation, sources)
                return
        except BaseException:
            self._known = None  # the write may or may not have landed: read before the next
            raise
        backward = backward_sources(known.sources, changes)
        if backward:
            raise ConflictError(
                self.state_key,
                f"query {self.query_id!r}: committing would move source(s) backward "
                + ", ".join(
                    f"{sid!r} {ours} < {theirs}" for sid, (ours, theirs) in backward.items()
                )
                + " (a newer commit landed first); nothing was written and the session is "
                "still open",
                expected={sid: ours for sid, (ours, _) in backward.items()},
                actual={sid: theirs for sid, (_, theirs) in backward.items()},
            )
        raise ConflictError(
            self.state_key,
            f"query {self.query_id!r}: lost {self.max_commit_attempts} consecutive races to "
            f"commit source checkpoints (last tried generation {attempted}, the store holds "
            f"{known.generation}); the session is still open",
            expected=attempted,
            actual=known.generation,
        )


class SourceCheckpointStore(StoreFacade[AsyncSourceCheckpointStore]):
    """The blocking face of :class:`AsyncSourceCheckpointStore`: same arguments, methods
    and errors, no ``await``. ``with store.session():`` begins, commits or rolls back."""

    def __init__(
        self,
        url_or_backend: StoreLocation,
        query_id: str,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        max_position_size: int = DEFAULT_MAX_POSITION_SIZE,
        max_commit_attempts: int = DEFAULT_MAX_COMMIT_ATTEMPTS,
    ) -> None:
        super().__init__(
            AsyncSourceCheckpointStore(
                url_or_backend,
                query_id,
                storage_options=storage_options,
                verify_fencing=verify_fencing,
                request_hook=request_hook,
                max_position_size=max_position_size,
                max_commit_attempts=max_commit_attempts,
            )
        )

    @property
    def query_id(self) -> str:
        """The query whose sources these are."""
        return self._async.query_id

    @property
    def is_persistent(self) -> bool:
        """Whether checkpoints survive the process: False only for ``memory://``."""
        return self._async.is_persistent

    @property
    def in_session(self) -> bool:
        """Whether a session is open on this store object."""
        return self._async.in_session

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, {self.query_id!r})"

    @contextlib.contextmanager
    def session(self) -> Iterator[SourceCheckpointStore]:
        """``with store.session():`` — see :meth:`AsyncSourceCheckpointStore.session`."""
        self.begin()
        try:
            yield self
            self.commit()
        except BaseException:
            self.rollback()
            raise

    begin = blocking(AsyncSourceCheckpointStore.begin)
    commit = blocking(AsyncSourceCheckpointStore.commit)
    rollback = blocking(AsyncSourceCheckpointStore.rollback)
    stage_checkpoint = blocking(AsyncSourceCheckpointStore.stage_checkpoint)
    read_checkpoint = blocking(AsyncSourceCheckpointStore.read_checkpoint)
    read_all_checkpoints = blocking(AsyncSourceCheckpointStore.read_all_checkpoints)
    clear_checkpoints = blocking(AsyncSourceCheckpointStore.clear_checkpoints)
    write_config_hash = blocking(AsyncSourceCheckpointStore.write_config_hash)
    read_config_hash = blocking(AsyncSourceCheckpointStore.read_config_hash)
    close = blocking(AsyncSourceCheckpointStore.close)
