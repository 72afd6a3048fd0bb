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
from typing import Any

import xxhash
import zstandard

from objstore.backends import Buffer
from objstore.errors import CorruptionError

__all__ = [
    "SEALED_FORMAT",
    "canonical_json",
    "checksum",
    "parse_json",
    "seal",
    "unseal",
]

SEALED_MAGIC = b"OBJS"
SEALED_FORMAT = 1
_HEADER = struct.Struct("<4sBBQ16s")
_COMPRESSED = 0x01
_COMPRESS_THRESHOLD = 256


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as canonical JSON: sorted keys, no spaces, UTF-8, no NaN.

    Raises ``TypeError``/``ValueError`` if ``value`` is not JSON-serialisable.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_json(data: bytes, *, key: str) -> Any:
    """Parse UTF-8 JSON, turning undecodable bytes into a :class:`CorruptionError`."""
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
    """Verify and unframe a sealed blob; raise :class:`CorruptionError` on any mismatch."""
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
