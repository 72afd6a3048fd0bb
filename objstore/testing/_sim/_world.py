"""The simulated world: one transport where every request waits for the scheduler.

A :class:`World` owns the simulated clock, the seeded random source, the actors (asyncio
tasks) and the :class:`SimulatedTransport` they all talk to. Each request an actor makes is
parked as a :class:`Request`; the scheduler (:mod:`objstore.testing._sim._engine`) picks one
parked request at a time, decides its fate (performed normally, slowly, failed transiently,
performed with its response lost, failed with a non-objstore error, or the actor crashes
before/after it) and performs it against the inner transport. Nothing else in the world can
change the store, so the history is a pure function of the seed and the decisions taken.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from objstore.backends import Buffer, ObjectInfo, ObjectListing, RetryPolicy, Transport
from objstore.testing._faults import WRITE_OPERATIONS, SimulatedCrash

__all__ = [
    "FATES",
    "CURRENT_ACTOR",
    "CURRENT_LABEL",
    "Request",
    "SimulatedTransport",
    "WriteEvent",
]

FATES = ("ok", "slow", "transient", "lost", "disk-full", "crash-before", "crash-after")
"""What the scheduler can do with a parked request (see :class:`Request`)."""

CURRENT_ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "objstore_sim_actor", default=None
)
"""The actor whose code is running (inherited by the tasks it starts); ``None`` outside."""
CURRENT_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar(
    "objstore_sim_label", default=""
)
"""The store call the running actor is in (``save``, ``prune``, …), for the history."""


@dataclass(eq=False, slots=True)
class Request:
    """One parked request: who sent it, what it is, and how to perform it."""

    actor: str
    label: str
    operation: str
    key: str
    perform: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]
    serial: int
    data: bytes | None = None
    incarnation: int = 0
    pause: float = 0.0

    @property
    def is_write(self) -> bool:
        """Whether performing it can change the store."""
        return self.operation in WRITE_OPERATIONS


@dataclass(frozen=True, slots=True)
class WriteEvent:
    """A write that reached the store (performed, whatever the caller was told)."""

    step: int
    actor: str
    incarnation: int
    label: str
    operation: str
    key: str
    data: bytes | None
    ok: bool


@dataclass(slots=True)
class _Queue:
    """The parked requests, in arrival order."""

    requests: list[Request] = field(default_factory=list)
    serial: int = 0


class SimulatedTransport(Transport):
    """A transport whose every request is a scheduling point of one :class:`World`.

    Requests made outside any actor (set-up, invariant checks) go straight to ``inner``.
    """

    def __init__(self, inner: Transport, park: Callable[[Request], None]) -> None:
        self.inner = inner
        self.adopt_capabilities(inner)
        self._park = park
        self._queue = _Queue()

    @property
    def url(self) -> str:
        return self.inner.url

    async def _request(
        self,
        operation: str,
        key: str,
        perform: Callable[[], Awaitable[Any]],
        data: Buffer | None = None,
    ) -> Any:
        actor = CURRENT_ACTOR.get()
        if actor is None:
            return await perform()
        self._queue.serial += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        request = Request(
            actor,
            CURRENT_LABEL.get(),
            operation,
            key,
            perform,
            future,
            self._queue.serial,
            bytes(data) if data is not None else None,
        )
        self._park(request)
        return await future

    async def get(self, key: str) -> tuple[bytes, str]:
        result: tuple[bytes, str] = await self._request("get", key, lambda: self.inner.get(key))
        return result

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        result: bytes = await self._request(
            "get_range", key, lambda: self.inner.get_range(key, start, end)
        )
        return result

    async def head(self, key: str) -> ObjectInfo:
        result: ObjectInfo = await self._request("head", key, lambda: self.inner.head(key))
        return result

    async def put(self, key: str, data: Buffer) -> str:
        result: str = await self._request("put", key, lambda: self.inner.put(key, data), data)
        return result

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        result: str = await self._request(
            "put_if_absent", key, lambda: self.inner.put_if_absent(key, data), data
        )
        return result

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        result: str = await self._request(
            "put_if_match", key, lambda: self.inner.put_if_match(key, data, version), data
        )
        return result

    async def put_if_absent_stream(
        self, key: str, parts: AsyncIterable[Buffer], *, retry: RetryPolicy | None = None
    ) -> str:
        data = b"".join([bytes(part) async for part in parts])
        return await self.put_if_absent(key, data)

    async def list(self, prefix: str) -> ObjectListing:
        result: ObjectListing = await self._request("list", prefix, lambda: self.inner.list(prefix))
        return result

    async def list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        result: ObjectListing = await self._request(
            "list", prefix, lambda: self.inner.list_after(prefix, start_after, limit)
        )
        return result

    async def delete(self, key: str, version: str | None = None) -> None:
        await self._request("delete", key, lambda: self.inner.delete(key, version))

    async def think(self, seconds: float) -> None:
        """Park a pause of the running actor: when scheduled, the clock moves ``seconds``."""

        async def nothing() -> None:
            return None

        actor = CURRENT_ACTOR.get()
        if actor is None:
            return
        self._queue.serial += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        request = Request(
            actor, CURRENT_LABEL.get(), "think", "", nothing, future, self._queue.serial
        )
        request.pause = seconds
        self._park(request)
        await future

    async def close(self) -> None:
        """Nothing to release: the inner transport belongs to the world."""


def disk_full(request: Request) -> OSError:
    """The non-objstore error a "disk-full" fate raises (untranslated, like a bug would)."""
    return OSError(errno.ENOSPC, f"simulated: no space left for {request.operation}")


def crash(request: Request, when: str) -> SimulatedCrash:
    """The error recorded for an actor that died at ``request``."""
    return SimulatedCrash(f"{request.actor} crashed {when} {request.operation} {request.key}")
