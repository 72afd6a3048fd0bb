"""Retrying transient storage errors with jittered exponential backoff (via tenacity)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from objstore.errors import TransientStorageError

__all__ = ["RetryPolicy"]

_T = TypeVar("_T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient errors are retried: "full jitter" exponential backoff, bounded.

    Attempt ``n`` (1-based) that fails transiently sleeps a uniform random time in
    ``[0, min(max_backoff, initial_backoff * 2 ** (n - 1))]``; after ``max_attempts`` attempts
    the last :class:`~objstore.errors.TransientStorageError` is raised. ``sleep`` and ``rng``
    are injectable so tests run instantly and deterministically.
    """

    max_attempts: int = 8
    initial_backoff: float = 0.05
    max_backoff: float = 5.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff times must not be negative")

    def backoff(self, attempt: int) -> float:
        """The sleep after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return self.rng.uniform(0.0, ceiling)

    async def call(
        self,
        operation: Callable[[int], Awaitable[_T]],
        *,
        description: str,
    ) -> _T:
        """Await ``operation(attempt_number)`` until it does not fail transiently.

        The attempt number lets conditional writes know whether an earlier attempt may have
        landed (any attempt after the first).

        Raises:
            AssertionError: never: it guards an unreachable path (tenacity either returns or
                re-raises).
        """

        def wait(state: tenacity.RetryCallState) -> float:
            return self.backoff(state.attempt_number)

        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            logger.info(
                "retrying %s after attempt %d failed transiently: %s",
                description,
                state.attempt_number,
                error,
            )

        retrying = tenacity.AsyncRetrying(
            sleep=self.sleep,
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(TransientStorageError),
            before_sleep=log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await operation(attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity either returns or reraises")
