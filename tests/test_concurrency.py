"""The one bounded gather every store uses (objstore._concurrency)."""

from __future__ import annotations

import asyncio

import pytest

from objstore._concurrency import gather_bounded


def test_gather_bounded_keeps_order_and_limit() -> None:
    running = 0
    peak = 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (5 - i % 5))
        running -= 1
        return i

    results = asyncio.run(gather_bounded((job(i) for i in range(20)), 3))
    assert results == list(range(20))
    assert peak == 3


def test_gather_bounded_propagates_the_error() -> None:
    async def fail() -> int:
        raise KeyError("boom")

    async def ok() -> int:
        return 1

    with pytest.raises(KeyError):
        asyncio.run(gather_bounded([ok(), fail(), ok()], 2))


def test_gather_bounded_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        asyncio.run(gather_bounded([], 0))
