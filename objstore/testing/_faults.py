"""A transport wrapper that injects faults and records every request.

Wrap any transport, build a backend on it, and drive a store through it::

    faults = FaultInjectingTransport(MemoryTransport("t"))
    store = CheckpointStore(Backend(AsyncBackend(faults)))
    faults.crash_after("put_if_absent", nth=2)     # die right after the 2nd create lands
    with pytest.raises(SimulatedCrash):
        store.save_with_state(manifest, chunks)

Faults: crash (raise :class:`SimulatedCrash`, never retried) before or after the Nth call of
an operation; transient errors at a rate (retried by the backend); a write that lands but
whose response is lost (raised as a transient error that may have landed, so the backend
reads the object back); bytes flipped on read. Interleavings:
:meth:`FaultInjectingTransport.on_call` runs another actor's work at an exact request,
deterministically. :attr:`calls` logs each request for request counting.
"""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from objstore.backends import Buffer, ObjectInfo, ObjectListing, RetryPolicy, Transport
from objstore.errors import TransientStorageError

__all__ = [
    "READ_OPERATIONS",
    "WRITE_OPERATIONS",
    "Call",
    "FaultInjectingTransport",
    "SimulatedCrash",
]

WRITE_OPERATIONS = frozenset(
    {"put", "put_if_absent", "put_if_match", "delete", "put_if_absent_stream"}
)
READ_OPERATIONS = frozenset({"get", "get_range", "head", "list"})


_T = TypeVar("_T")


class SimulatedCrash(Exception):
    """The process "died" here: raised by an injected crash and never retried."""

    __module__ = "objstore.testing"  # its public home (tracebacks, pickles, docs)


@dataclass(frozen=True, slots=True)
class Call:
    """One request that reached the wrapped transport (or was stopped by a crash)."""

    operation: str
    key: str
    size: int | None = None

    @property
    def is_write(self) -> bool:
        """Whether the request changes the store."""
        return self.operation in WRITE_OPERATIONS


Action = Callable[[], Awaitable[object]]
"""Another actor's work, run by :meth:`FaultInjectingTransport.on_call` at a request."""


@dataclass(slots=True)
class _Trigger:
    operation: str
    nth: int
    when: str  # "before", "after", "lose-response", "hook-before" or "hook-after"
    key_contains: str
    seen: int = 0
    action: Action | None = None

    def fires(self, operation: str, key: str) -> bool:
        if self.operation not in ("*", operation) or self.key_contains not in key:
            return False
        self.seen += 1
        return self.seen == self.nth


@dataclass(slots=True)
class _State:
    triggers: list[_Trigger] = field(default_factory=list)
    transient_rate: float = 0.0
    transient_operations: frozenset[str] = frozenset()
    corrupt_key_contains: str | None = None
    corrupt_offset: int | None = None


class FaultInjectingTransport(Transport):
    """Wraps ``inner`` and misbehaves on purpose; thread-safe."""

    def __init__(self, inner: Transport, *, seed: int = 0) -> None:
        self.inner = inner
        self.adopt_capabilities(inner)
        self.calls: list[Call] = []
        self._state = _State()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    @property
    def url(self) -> str:
        return self.inner.url

    # -- configuring faults ----------------------------------------------------------------

    def crash_before(self, operation: str, nth: int = 1, *, key_contains: str = "") -> None:
        """Raise :class:`SimulatedCrash` instead of performing the ``nth`` matching call.

        ``operation`` is a transport method name, or ``"*"`` for any request.
        """
        self._add(_Trigger(operation, nth, "before", key_contains))

    def crash_after(self, operation: str, nth: int = 1, *, key_contains: str = "") -> None:
        """Perform the ``nth`` matching call, then raise :class:`SimulatedCrash`."""
        self._add(_Trigger(operation, nth, "after", key_contains))

    def lose_response(self, operation: str, nth: int = 1, *, key_contains: str = "") -> None:
        """Perform the ``nth`` matching call, then raise a transient error (as if the
        connection dropped after the store applied the write)."""
        self._add(_Trigger(operation, nth, "lose-response", key_contains))

    def on_call(
        self,
        operation: str,
        action: Action,
        *,
        nth: int = 1,
        when: Literal["before", "after"] = "after",
        key_contains: str = "",
    ) -> None:
        """Await ``action()`` at the ``nth`` matching call: ``before`` it reaches the store,
        or ``after`` it was answered and before the caller sees the answer.

        A deterministic interleaving point: the caller is held at that request while
        ``action`` runs another actor's work to completion (from a blocking store, run it in
        a thread: ``lambda: asyncio.to_thread(other.prune, 1)``). An action's exception
        propagates to the caller instead of the request's answer.

        Raises:
            ValueError: if ``when`` is neither ``"before"`` nor ``"after"``.
        """
        if when not in ("before", "after"):
            raise ValueError("when is 'before' or 'after'")
        self._add(_Trigger(operation, nth, f"hook-{when}", key_contains, action=action))

    def fail_transiently(self, rate: float, operations: Iterable[str] | None = None) -> None:
        """Fail each matching call with :class:`TransientStorageError` with ``rate`` odds,
        before it reaches the store (so its ``may_have_landed`` is ``False``).

        Raises:
            ValueError: if ``rate`` is outside [0, 1].
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self._lock:
            self._state.transient_rate = rate
            self._state.transient_operations = frozenset(
                operations if operations is not None else WRITE_OPERATIONS | READ_OPERATIONS
            )

    def flip_bytes_on_read(self, key_contains: str, offset: int | None = None) -> None:
        """Flip one byte (at ``offset``, default the middle) of every read of matching keys."""
        with self._lock:
            self._state.corrupt_key_contains = key_contains
            self._state.corrupt_offset = offset

    def clear_faults(self) -> None:
        """Remove every configured fault (the call log is kept)."""
        with self._lock:
            self._state = _State()

    def clear_calls(self) -> None:
        """Empty the call log."""
        with self._lock:
            self.calls.clear()

    def count(self, operation: str | None = None, *, writes: bool | None = None) -> int:
        """How many logged calls match ``operation`` and/or are (not) writes."""
        with self._lock:
            calls = list(self.calls)
        return sum(
            1
            for call in calls
            if (operation is None or call.operation == operation)
            and (writes is None or call.is_write == writes)
        )

    def _add(self, trigger: _Trigger) -> None:
        if trigger.nth < 1:
            raise ValueError("nth counts from 1")
        with self._lock:
            self._state.triggers.append(trigger)

    # -- the wrapping ----------------------------------------------------------------------

    def _before(
        self, operation: str, key: str, size: int | None = None
    ) -> tuple[str | None, list[_Trigger]]:
        """Log the call and decide its fate (``None``, ``"after"`` or ``"lose-response"``),
        with the :meth:`on_call` hooks that fire at it.

        Raises:
            SimulatedCrash: if a crash is due before this call.
            TransientStorageError: if an injected transient failure is due.
        """
        hooks: list[_Trigger] = []
        with self._lock:
            self.calls.append(Call(operation, key, size))
            fate = None
            for trigger in self._state.triggers:
                if trigger.fires(operation, key):
                    if trigger.when == "before":
                        raise SimulatedCrash(f"crash before {operation} {key}")
                    if trigger.action is not None:
                        hooks.append(trigger)
                    else:
                        fate = trigger.when
            if (
                fate is None
                and operation in self._state.transient_operations
                and self._rng.random() < self._state.transient_rate
            ):
                raise TransientStorageError(
                    f"injected transient failure of {operation} {key}", may_have_landed=False
                )
        return fate, hooks

    @staticmethod
    async def _run_hooks(hooks: list[_Trigger], when: str) -> None:
        for hook in hooks:
            if hook.when == when and hook.action is not None:
                await hook.action()

    async def _call(
        self,
        operation: str,
        key: str,
        request: Callable[[], Awaitable[_T]],
        size: int | None = None,
    ) -> _T:
        """Perform ``request`` with whatever fault is due; a crash "after" fires whether the
        request succeeded or failed, as a real process can die after either answer.

        Raises:
            SimulatedCrash: if a crash is due after this call (whether the request succeeded or
                failed).
            TransientStorageError: if this call's response is to be lost.
        """
        fate, hooks = self._before(operation, key, size)
        await self._run_hooks(hooks, "hook-before")
        try:
            result = await request()
        except Exception as exc:
            if fate == "after":
                raise SimulatedCrash(f"crash after {operation} {key}") from exc
            raise
        await self._run_hooks(hooks, "hook-after")
        if fate == "after":
            raise SimulatedCrash(f"crash after {operation} {key}")
        if fate == "lose-response":
            raise TransientStorageError(f"response of {operation} {key} was lost")
        return result

    def _corrupt(self, key: str, data: bytes) -> bytes:
        with self._lock:
            pattern, offset = self._state.corrupt_key_contains, self._state.corrupt_offset
        if pattern is None or pattern not in key or not data:
            return data
        position = min(offset if offset is not None else len(data) // 2, len(data) - 1)
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        return bytes(flipped)

    async def get(self, key: str) -> tuple[bytes, str]:
        data, version = await self._call("get", key, lambda: self.inner.get(key))
        return self._corrupt(key, data), version

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        data = await self._call("get_range", key, lambda: self.inner.get_range(key, start, end))
        return self._corrupt(key, data)

    async def head(self, key: str) -> ObjectInfo:
        return await self._call("head", key, lambda: self.inner.head(key))

    async def put(self, key: str, data: Buffer) -> str:
        return await self._call("put", key, lambda: self.inner.put(key, data), len(data))

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        return await self._call(
            "put_if_absent", key, lambda: self.inner.put_if_absent(key, data), len(data)
        )

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        return await self._call(
            "put_if_match", key, lambda: self.inner.put_if_match(key, data, version), len(data)
        )

    async def put_if_absent_stream(
        self, key: str, parts: AsyncIterable[Buffer], *, retry: RetryPolicy | None = None
    ) -> str:
        return await self._call(
            "put_if_absent_stream",
            key,
            lambda: self.inner.put_if_absent_stream(key, parts, retry=retry),
        )

    async def list(self, prefix: str) -> ObjectListing:
        return await self._call("list", prefix, lambda: self.inner.list(prefix))

    async def list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        return await self._call(
            "list", prefix, lambda: self.inner.list_after(prefix, start_after, limit)
        )

    async def delete(self, key: str, version: str | None = None) -> None:
        await self._call("delete", key, lambda: self.inner.delete(key, version))

    async def close(self) -> None:
        await self.inner.close()
