"""Pure encoding helpers shared by every store: canonical JSON, checksums, sealed blobs.

No I/O here. A *sealed blob* is how the smaller stores (snapshots, projection cursors,
source offsets, KV objects) frame their payloads so that corruption and truncation are
detected on read::

    magic "OBJS" | format u8 | flags u8 | raw length u64 | xxh3-128(raw) 16 bytes | body

The body is the raw payload, zstd-compressed when flag bit 0 is set.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Container
from typing import Any

import xxhash
import zstandard

from objstore.backends import Buffer
from objstore.errors import CorruptionError

__all__ = [
    "SEALED_FORMAT",
    "canonical_json",
    "checksum",
    "open_document",
    "open_framed",
    "parse_json",
    "seal",
    "unseal",
]

SEALED_MAGIC = b"OBJS"
SEALED_FORMAT = 1
_HEADER = struct.Struct("<4sBBQ16s")
_COMPRESSED = 0x01
_COMPRESS_THRESHOLD = 256
_FRAME_LENGTH = struct.Struct("<I")


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as canonical JSON: sorted keys, no spaces, UTF-8, no NaN.

    Raises ``TypeError``/``ValueError`` if ``value`` is not JSON-serialisable.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_json(data: bytes, *, key: str) -> Any:
    """Parse UTF-8 JSON, turning undecodable bytes into a :class:`CorruptionError`.

    Raises:
        CorruptionError: if the bytes are not valid UTF-8 or not valid JSON.
    """
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CorruptionError(key, f"not valid UTF-8 at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        # json's own messages may end in "at" ("Unterminated string starting at").
        reason = exc.msg.removesuffix(" at")
        raise CorruptionError(key, f"not valid JSON: {reason} at character {exc.pos}") from exc


def checksum(data: Buffer) -> str:
    """The xxh3-128 of ``data`` as 32 hex digits."""
    return xxhash.xxh3_128_hexdigest(data)


def seal(payload: Buffer, *, level: int = 3) -> bytes:
    """Frame ``payload`` with a checksum, compressing it when that pays."""
    raw = bytes(payload)
    flags = 0
    body = raw
    if len(raw) >= _COMPRESS_THRESHOLD:
        compressed = zstandard.ZstdCompressor(level=level).compress(raw)
        if len(compressed) < len(raw):
            body, flags = compressed, _COMPRESSED
    header = _HEADER.pack(SEALED_MAGIC, SEALED_FORMAT, flags, len(raw), xxhash.xxh3_128_digest(raw))
    return header + body


def unseal(blob: bytes, *, key: str) -> bytes:
    """Verify and unframe a sealed blob; raise :class:`CorruptionError` on any mismatch.

    Raises:
        CorruptionError: if the blob is truncated, has a bad magic or unknown format version, does
            not decompress, or its length or checksum do not match.
    """
    if len(blob) < _HEADER.size:
        raise CorruptionError(key, f"truncated: {len(blob)} bytes is shorter than the header")
    magic, version, flags, raw_length, digest = _HEADER.unpack_from(blob)
    if magic != SEALED_MAGIC:
        raise CorruptionError(key, "bad magic", expected=SEALED_MAGIC, actual=magic)
    if version != SEALED_FORMAT:
        raise CorruptionError(key, f"unknown format version {version}")
    body = blob[_HEADER.size :]
    if flags & _COMPRESSED:
        try:
            raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise CorruptionError(key, f"zstd frame does not decode: {exc}") from exc
    else:
        raw = body
    if len(raw) != raw_length:
        raise CorruptionError(key, "length mismatch", expected=raw_length, actual=len(raw))
    actual = xxhash.xxh3_128_digest(raw)
    if actual != digest:
        raise CorruptionError(key, "checksum mismatch", expected=digest.hex(), actual=actual.hex())
    return raw


# -- sealed documents: the one decoder the small stores share ------------------------------------


def open_document(
    blob: bytes,
    *,
    key: str,
    formats: Container[int],
    kind: str,
    owner: tuple[str, object] | None = None,
) -> dict[str, Any]:
    """The JSON object sealed in ``blob``, checked to be one of ``formats`` and of ``kind``.

    ``owner`` is ``(field, value)`` the document must carry (the query or projection it
    belongs to), so an object copied to another owner's key is refused.

    Raises:
        CorruptionError: (naming ``key``) if the blob is damaged, is not a JSON object, or does not
            match.
    """
    document = parse_json(unseal(blob, key=key), key=key)
    if not isinstance(document, dict):
        raise CorruptionError(key, "not a JSON object")
    _check_header(document, key=key, formats=formats, kind=kind, owner=owner)
    return document


def open_framed(
    blob: bytes, *, key: str, formats: Container[int], kind: str
) -> tuple[dict[str, Any], bytes, int]:
    """``(header, payload, body start)`` of a sealed framed object.

    A framed payload is ``u32 header length | JSON header | body`` (snapshots and KV
    objects); the header is checked as :func:`open_document` checks a document, and the
    body is ``payload[start:]``.

    Raises:
        CorruptionError: if the blob is damaged, its header runs past the end, is not a JSON object
            or does not match.
    """
    payload = unseal(blob, key=key)
    if len(payload) < _FRAME_LENGTH.size:
        raise CorruptionError(key, "too short for a header")
    (length,) = _FRAME_LENGTH.unpack_from(payload)
    end = _FRAME_LENGTH.size + length
    if end > len(payload):
        raise CorruptionError(key, "header runs past the end", expected=end, actual=len(payload))
    header = parse_json(payload[_FRAME_LENGTH.size : end], key=key)
    if not isinstance(header, dict):
        raise CorruptionError(key, "header is not a JSON object")
    _check_header(header, key=key, formats=formats, kind=kind, owner=None)
    return header, payload, end


def _check_header(
    document: dict[str, Any],
    *,
    key: str,
    formats: Container[int],
    kind: str,
    owner: tuple[str, object] | None,
) -> None:
    if document.get("format") not in formats:
        raise CorruptionError(key, f"unknown format {document.get('format')!r}")
    if document.get("kind") != kind:
        raise CorruptionError(
            key, f"not a {kind} object", expected=kind, actual=document.get("kind")
        )
    if owner is not None:
        field, value = owner
        if document.get(field) != value:
            raise CorruptionError(
                key, f"belongs to another {field}", expected=value, actual=document.get(field)
            )
