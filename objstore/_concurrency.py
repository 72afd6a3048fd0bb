"""Bounded concurrency: the one helper every store uses to run a batch of requests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

__all__ = ["gather_bounded"]

_T = TypeVar("_T")


async def gather_bounded(jobs: Iterable[Awaitable[_T]], limit: int) -> list[_T]:
    """Await ``jobs``, at most ``limit`` at once, and return their results in order.

    Bounds the requests a batch keeps in flight (memory, connections, rate limits) where a
    plain :func:`asyncio.gather` would start them all. The first exception raised by a job
    propagates, as with :func:`asyncio.gather`.

    Raises:
        ValueError: if ``limit`` is below 1 (before any job is awaited).
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Awaitable[_T]) -> _T:
        async with semaphore:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))
