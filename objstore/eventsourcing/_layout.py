"""Where the eventsourcing recorders keep their objects, and how they are encoded (pure).

Layout under the store's root URL::

    {root}/snapshots/{purpose}/{originator}/{MAX_U64 - version:020d}   one stored event
    {root}/views/{name}/checkpoints/...                                a view's checkpoints

``{purpose}`` and ``{originator}`` are user strings escaped into one key segment each
(:func:`objstore._keys.name_segment`), so an originator id holding ``/``, ``..`` or unicode
can never leave its prefix, and ``a`` never lists ``a/b``. Versions are stored *inverted*
(``MAX_U64 - version``, zero-padded to 20 digits), so a listing, which is always sorted by key,
yields the newest version first: the newest snapshot at or below a version is the first key of
one listing that starts just before that version's key.

Each stored event is one sealed object (:func:`objstore.codec.seal`) framed as
``u32 header length | JSON header | state bytes``; the header carries the full originator id
(and whether it was a UUID), the version and the topic, and is checked on read, so an object
copied to another originator's or version's key is refused as corrupt.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from uuid import UUID

from objstore._checks import MAX_U64, check_u64
from objstore._keys import join_key, name_segment
from objstore.codec import canonical_json, open_framed, seal
from objstore.errors import CorruptionError

__all__ = [
    "EVENT_FORMAT",
    "EventRecord",
    "decode_event",
    "encode_event",
    "event_key",
    "events_prefix",
    "listing_start",
    "version_of_key",
    "view_root",
]

EVENT_FORMAT = 1
"""Format version of a stored event object."""
_KIND = "objstore.eventsourcing-event"
_FRAME_LENGTH = struct.Struct("<I")
_VERSION_DIGITS = 20


@dataclass(frozen=True, slots=True)
class EventRecord:
    """The fields of the framework's ``StoredEvent``, as objstore stores them."""

    originator_id: UUID | str
    originator_version: int
    topic: str
    state: bytes


def originator_text(originator_id: object) -> str:
    """The text an originator id is keyed by (``str(uuid)`` for a UUID); ``ValueError``
    (from ``name_segment``) for an empty str, a NUL or text that is not valid UTF-8.

    Raises:
        TypeError: if the id is neither a UUID nor a str.
    """
    if isinstance(originator_id, UUID):
        return str(originator_id)
    if not isinstance(originator_id, str):
        raise TypeError(f"originator_id must be a UUID or str, not {type(originator_id).__name__}")
    name_segment(originator_id, what="originator id")
    return originator_id


def events_prefix(purpose: str, originator_id: UUID | str) -> str:
    """The prefix holding every stored version of one originator (for one purpose)."""
    return join_key(
        "snapshots",
        name_segment(purpose, what="recorder purpose"),
        name_segment(originator_text(originator_id), what="originator id"),
    )


def _inverted(version: int) -> str:
    return f"{MAX_U64 - version:0{_VERSION_DIGITS}d}"


def event_key(purpose: str, originator_id: UUID | str, version: int) -> str:
    """The key of one stored version; ``TypeError``/``ValueError`` for a version outside u64."""
    check_u64(version, "originator_version")
    return join_key(events_prefix(purpose, originator_id), _inverted(version))


def listing_start(prefix: str, lte: int | None) -> str:
    """The ``start_after`` of a newest-first listing of versions ``<= lte`` under ``prefix``.

    Keys sort newest first, so every key after the one ``lte + 1`` would have is a version at
    or below ``lte``. ``None`` (no bound), a bound at or above ``MAX_U64`` or a negative bound
    (nothing can match; callers check that first) start at the beginning.
    """
    if lte is None or lte >= MAX_U64 or lte < 0:
        return ""
    return join_key(prefix, _inverted(lte + 1))


def version_of_key(prefix: str, key: str) -> int | None:
    """The version an object key under ``prefix`` stands for, or ``None`` for a stranger."""
    name = key[len(prefix) + 1 :] if key.startswith(prefix + "/") else ""
    if len(name) != _VERSION_DIGITS or not name.isdigit():
        return None
    inverted = int(name)
    if inverted > MAX_U64:
        return None
    return MAX_U64 - inverted


def encode_event(record: EventRecord, *, level: int = 3) -> bytes:
    """The sealed object for one stored event.

    Raises:
        TypeError: if the topic is not a str or the state is not bytes-like.
    """
    if not isinstance(record.topic, str):
        raise TypeError(f"topic must be str, not {type(record.topic).__name__}")
    if not isinstance(record.state, bytes | bytearray | memoryview):
        raise TypeError(f"state must be bytes, not {type(record.state).__name__}")
    header = canonical_json(
        {
            "format": EVENT_FORMAT,
            "kind": _KIND,
            "originator_id": originator_text(record.originator_id),
            "uuid": isinstance(record.originator_id, UUID),
            "originator_version": check_u64(record.originator_version, "originator_version"),
            "topic": record.topic,
        }
    )
    return seal(_FRAME_LENGTH.pack(len(header)) + header + bytes(record.state), level=level)


def decode_event(blob: bytes, *, key: str, originator_id: UUID | str, version: int) -> EventRecord:
    """The stored event in a sealed object read from ``key``.

    Raises:
        CorruptionError: if the object is damaged, malformed, or belongs to another
            originator or version than its key says.
    """
    header, payload, start = open_framed(blob, key=key, formats=(EVENT_FORMAT,), kind=_KIND)
    expected = originator_text(originator_id)
    if header.get("originator_id") != expected:
        raise CorruptionError(
            key,
            "belongs to another originator",
            expected=expected,
            actual=header.get("originator_id"),
        )
    if header.get("originator_version") != version:
        raise CorruptionError(
            key,
            "belongs to another version",
            expected=version,
            actual=header.get("originator_version"),
        )
    topic = header.get("topic")
    if not isinstance(topic, str):
        raise CorruptionError(key, "topic is not a string")
    stored_id: UUID | str = UUID(expected) if header.get("uuid") is True else expected
    return EventRecord(stored_id, version, topic, bytes(payload[start:]))


def view_root(root_url: str, name: str) -> str:
    """The URL of the checkpoint store that holds the view ``name`` under ``root_url``.

    The name's key segment has its ``%`` escapes escaped once more, because ``file://`` URLs
    are percent-decoded when opened (S3/GCS URLs and plain paths are not); either way the
    segment stays one path segment and distinct names stay distinct.
    """
    segment = name_segment(name, what="view name").replace("%", "%25")
    return f"{root_url.rstrip('/')}/views/{segment}"
