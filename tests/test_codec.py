"""The one sealed-document decoder the small stores share (objstore.codec)."""

from __future__ import annotations

import struct

import pytest

from objstore.codec import canonical_json, open_document, open_framed, seal
from objstore.errors import CorruptionError

KEY = "some/key"


def document(**fields: object) -> bytes:
    return seal(canonical_json({"format": 1, "kind": "k", "owner": "me", **fields}))


def framed(header: dict[str, object], body: bytes = b"body") -> bytes:
    encoded = canonical_json(header)
    return seal(struct.pack("<I", len(encoded)) + encoded + body)


def test_open_document_returns_a_matching_document() -> None:
    opened = open_document(document(x=5), key=KEY, formats=(1,), kind="k", owner=("owner", "me"))
    assert opened["x"] == 5


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (document(format=2), "unknown format 2"),
        (document(kind="other"), "not a k object"),
        (document(owner="you"), "belongs to another owner"),
        (seal(b"[1, 2]"), "not a JSON object"),
        (seal(b"{"), "not valid JSON"),
        (document()[:-1], "truncated|length|checksum|zstd"),
    ],
)
def test_open_document_refuses_what_does_not_match(blob: bytes, reason: str) -> None:
    with pytest.raises(CorruptionError, match=reason) as caught:
        open_document(blob, key=KEY, formats=(1,), kind="k", owner=("owner", "me"))
    assert caught.value.key == KEY


def test_open_framed_splits_header_and_body() -> None:
    header, payload, start = open_framed(
        framed({"format": 1, "kind": "k", "n": 2}), key=KEY, formats={1}, kind="k"
    )
    assert header["n"] == 2
    assert payload[start:] == b"body"


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (seal(b"\x01"), "too short for a header"),
        (seal(struct.pack("<I", 99) + b"{}"), "header runs past the end"),
        (framed({"format": 3, "kind": "k"}), "unknown format 3"),
        (framed({"format": 1, "kind": "j"}), "not a k object"),
    ],
)
def test_open_framed_refuses_what_does_not_match(blob: bytes, reason: str) -> None:
    with pytest.raises(CorruptionError, match=reason):
        open_framed(blob, key=KEY, formats={1}, kind="k")
