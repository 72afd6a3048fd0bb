"""Every request a backend sends, as one :class:`RequestEvent`: logged and handed to a hook.

:class:`~objstore.backends.AsyncBackend` times each attempt of each request it sends to its
transport (retries, read-backs and the capability probe included) and passes the outcome to a
:class:`RequestObserver`, which logs it at DEBUG on this module's logger and calls the user's
request hook, if any. When neither wants it nothing is timed or built: an unobserved request
costs one cached logging level check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from objstore.errors import (
    AlreadyExistsError,
    NotFoundError,
    PreconditionFailedError,
    TransientStorageError,
)

__all__ = ["Operation", "Outcome", "RequestEvent", "RequestHook", "RequestObserver", "outcome_of"]

logger = logging.getLogger(__name__)

Operation: TypeAlias = Literal[
    "get",
    "get_range",
    "head",
    "put",
    "put_if_absent",
    "put_if_absent_stream",
    "put_if_match",
    "list",
    "list_after",
    "delete",
    "check_root",
]
"""The transport request an event describes (one per :class:`~objstore.backends.Transport`
method)."""

Outcome: TypeAlias = Literal[
    "ok",
    "not_found",
    "already_exists",
    "precondition_failed",
    "transient_error",
    "error",
    "cancelled",
]
"""How a request ended. ``not_found``, ``already_exists`` and ``precondition_failed`` are
answers the protocol expects (a lost race, a missing object), not failures of the store;
``transient_error`` is retried while attempts remain; ``error`` is anything else."""


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One attempt of one request to a store, as it ended.

    Attributes:
        store: the root URL of the store (no credentials).
        scheme: ``memory``, ``file``, ``s3``, ``gs`` or a registered transport's scheme.
        operation: which request (:data:`Operation`).
        key: the object key, or the prefix of a listing, relative to ``store``.
        attempt: 1 for the first attempt, 2 and up for retries of the same request.
        outcome: how it ended (:data:`Outcome`).
        bytes_sent: payload bytes written (0 for reads).
        bytes_received: payload bytes read (object data only; 0 for ``head``/``list``).
        duration: seconds from sending the request to its outcome.
        error: the error it raised, if any (already an objstore error for expected ones).
    """

    store: str
    scheme: str
    operation: Operation
    key: str
    attempt: int
    outcome: Outcome
    bytes_sent: int
    bytes_received: int
    duration: float
    error: BaseException | None = None

    @property
    def is_retry(self) -> bool:
        """Whether this attempt repeats one that failed transiently."""
        return self.attempt > 1


RequestHook: TypeAlias = Callable[[RequestEvent], None]
"""Called synchronously with every :class:`RequestEvent`, on the thread of the event loop
that sent the request: keep it quick and non-blocking. An exception it raises is logged and
never fails the request."""


def outcome_of(error: BaseException | None) -> Outcome:
    """The :data:`Outcome` of a request that raised ``error`` (``None``: it succeeded)."""
    if error is None:
        return "ok"
    if isinstance(error, NotFoundError):
        return "not_found"
    if isinstance(error, AlreadyExistsError):
        return "already_exists"
    if isinstance(error, PreconditionFailedError):
        return "precondition_failed"
    if isinstance(error, TransientStorageError):
        return "transient_error"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "error"


class RequestObserver:
    """Turns a finished request into a DEBUG log line and a call of the request hook."""

    __slots__ = ("hook", "scheme", "store")

    def __init__(self, store: str, scheme: str, hook: RequestHook | None) -> None:
        if hook is not None and not callable(hook):
            raise TypeError(f"request_hook must be callable, not {type(hook).__name__}")
        self.store = store
        self.scheme = scheme
        self.hook = hook

    @property
    def wanted(self) -> bool:
        """Whether anyone listens (a hook, or DEBUG logging on this module's logger)."""
        return self.hook is not None or logger.isEnabledFor(logging.DEBUG)

    def record(
        self,
        operation: Operation,
        key: str,
        attempt: int,
        duration: float,
        *,
        sent: int,
        received: int,
        error: BaseException | None,
    ) -> None:
        """Log and hand on one finished attempt (call only when :attr:`wanted`)."""
        event = RequestEvent(
            store=self.store,
            scheme=self.scheme,
            operation=operation,
            key=key,
            attempt=attempt,
            outcome=outcome_of(error),
            bytes_sent=sent,
            bytes_received=received,
            duration=duration,
            error=error,
        )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s %s: %s in %.1f ms, %d B sent, %d B received, attempt %d%s",
                operation,
                self.store,
                key,
                event.outcome,
                duration * 1000.0,
                sent,
                received,
                attempt,
                f" ({type(error).__name__}: {error})"
                if event.outcome in ("error", "transient_error")
                else "",
            )
        if self.hook is not None:
            try:
                self.hook(event)
            except Exception:
                # A broken metrics hook must never turn a committed write into a failure.
                logger.warning("request hook %r failed", self.hook, exc_info=True)
