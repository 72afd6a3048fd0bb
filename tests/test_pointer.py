"""``latest.txt``'s one home (objstore/checkpoint/_pointer.py): classification, the pure
move rules, and the compare-and-swap every mover uses, on every backend."""

from __future__ import annotations

import asyncio

from objstore.backends import AsyncBackend, open_async_backend
from objstore.checkpoint import LATEST, PointerRecord
from objstore.checkpoint._layout import pointer_text
from objstore.checkpoint._pointer import (
    advance_pointer,
    at_or_past,
    classify_pointer,
    moved_text,
    read_pointer,
    swap_pointer,
)


def test_classify_tells_missing_garbage_and_both_formats_apart() -> None:
    legacy = classify_pointer(b"checkpoint_00000000000000000007", "v1")
    assert (legacy.state, legacy.checkpoint_id, legacy.epoch) == ("set", 7, None)
    assert legacy.record == PointerRecord(7)
    current = classify_pointer(pointer_text(7, 2, 3), "v2")
    assert current.record == PointerRecord(7, 2, 3)
    assert current.version == "v2"
    garbage = classify_pointer(b"\xff not a pointer", "v3")
    assert (garbage.state, garbage.record) == ("garbage", None)
    claimed = classify_pointer(pointer_text(None, None, 4), "v4")
    assert claimed.state == "garbage"  # names no checkpoint, as reports say
    assert claimed.record == PointerRecord(None, None, 4)  # but fences epochs below 4


def test_a_move_never_lowers_the_fence_epoch() -> None:
    assert moved_text(9, 2, 5) == pointer_text(9, 2, 5)
    assert moved_text(9, 6, 5) == pointer_text(9, 6, 6)
    assert moved_text(9, 2, None) == pointer_text(9, 2, 2)


def test_at_or_past_ranks_by_epoch_then_id_and_format_1_by_id() -> None:
    assert not at_or_past(None, 1, 1)
    assert not at_or_past(PointerRecord(None, None, 9), 1, 1)
    assert at_or_past(PointerRecord(5, 2, 2), 1, 9)  # a newer epoch outranks any id
    assert not at_or_past(PointerRecord(5, 2, 2), 3, 1)
    assert at_or_past(PointerRecord(5, 2, 2), 2, 5)
    assert not at_or_past(PointerRecord(5, 2, 2), 2, 6)
    assert at_or_past(PointerRecord(5), 9, 5)
    assert not at_or_past(PointerRecord(5), 0, 6)


def test_swap_creates_once_and_then_only_from_the_version_read(store_url: str) -> None:
    async def scenario() -> None:
        backend: AsyncBackend = open_async_backend(store_url)
        try:
            assert (await read_pointer(backend)).state == "missing"
            first = await swap_pointer(backend, None, pointer_text(1, 1, 1))
            assert first is not None
            assert await swap_pointer(backend, None, pointer_text(2, 1, 1)) is None
            read = await read_pointer(backend)
            assert (read.checkpoint_id, read.version) == (1, first)
            second = await swap_pointer(backend, first, pointer_text(2, 1, 1))
            assert second is not None
            assert await swap_pointer(backend, first, pointer_text(3, 1, 1)) is None
            assert (await read_pointer(backend)).checkpoint_id == 2
            await backend.delete(LATEST)
            assert await swap_pointer(backend, second, pointer_text(3, 1, 1)) is None
            assert (await read_pointer(backend)).state == "missing"
        finally:
            await backend.close()

    asyncio.run(scenario())


def test_advance_moves_forward_only_and_keeps_the_fence(store_url: str) -> None:
    async def scenario() -> None:
        backend: AsyncBackend = open_async_backend(store_url)
        try:
            await swap_pointer(backend, None, pointer_text(4, 2, 5))
            found, moved = await advance_pointer(backend, 3, 2)
            assert (found.checkpoint_id, moved) == (4, False)
            found, moved = await advance_pointer(backend, 6, 2)
            assert (found.checkpoint_id, moved) == (4, True)
            assert (await read_pointer(backend)).record == PointerRecord(6, 2, 5)
        finally:
            await backend.close()

    asyncio.run(scenario())
