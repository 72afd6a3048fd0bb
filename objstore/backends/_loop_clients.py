"""One network client per event loop, shared by the transports opened with the same options.

aiohttp sessions (under aiobotocore and gcsfs alike) belong to the event loop that created
them, and objstore runs on several: the blocking facade's private loop, the caller's own loops,
a fresh loop in every child process. Building a client is costly (an aiobotocore client takes
~0.2 s: service model, credential chain), so every transport of one kind opened with the same
options on the same loop shares one.

A :class:`LoopClients` pool (one per transport kind) holds the clients of this process, keyed
by (event loop, configuration), each counting the transports using it. A transport holds a
:class:`ClientSeat`: :meth:`ClientSeat.client` returns the running loop's client (built on first
use, once, however many tasks ask at the same time) and :meth:`ClientSeat.release` gives up
every loop's client; the last user of a client closes it. Clients of loops that have ended are
closed the next time the pool is used, and after ``fork`` the child starts with an empty pool:
it must not use or close its parent's connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["ClientSeat", "LoopClients"]

logger = logging.getLogger(__name__)

_C = TypeVar("_C")
_Key = tuple[asyncio.AbstractEventLoop, str]

_CLOSE_ON_OTHER_LOOP_TIMEOUT = 2.0


@dataclass(slots=True)
class _Entry(Generic[_C]):
    """The client of one (loop, configuration) and how many seats hold it."""

    client: _C | None = None
    users: int = 0
    building: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the client is built, so concurrent first uses build only one."""


class LoopClients(Generic[_C]):
    """The clients of one transport kind in this process, one per (loop, configuration).

    Args:
        kind: names the clients in log messages (``S3``, ``GCS``).
        close: closes a client. Called on the client's own loop, or on another loop when the
            client's loop is not running (closed, or idle); then only what needs no loop can be
            released. Errors are logged, not raised.
    """

    def __init__(
        self,
        kind: str,
        close: Callable[[_C, asyncio.AbstractEventLoop], Coroutine[Any, Any, None]],
    ) -> None:
        self.kind = kind
        self._close = close
        self._lock = threading.Lock()
        self._entries: dict[_Key, _Entry[_C]] = {}
        self._pid = os.getpid()

    def _forked(self) -> bool:
        """Forget the parent's clients in a forked child (call with the lock held)."""
        if self._pid == os.getpid():
            return False
        self._entries = {}
        self._pid = os.getpid()
        return True

    def seat(self, config: str, build: Callable[[], Awaitable[_C]]) -> ClientSeat[_C]:
        """A new seat for one transport.

        ``config`` identifies the client configuration (transports with equal ``config``
        share clients); ``build`` makes such a client on the running loop.
        """
        return ClientSeat(self, config, build)

    def _join(self, key: _Key) -> tuple[_Entry[_C], list[tuple[_Key, _Entry[_C]]]]:
        """Count one more user of ``key``'s entry (made if needed); also hand back the entries
        of loops that have ended, for the caller to close."""
        with self._lock:
            self._forked()
            ended = [(k, self._entries.pop(k)) for k in list(self._entries) if k[0].is_closed()]
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.users += 1
            return entry, ended

    def _entry(self, key: _Key) -> _Entry[_C] | None:
        with self._lock:
            return None if self._forked() else self._entries.get(key)

    def _leave(self, key: _Key) -> _Entry[_C] | None:
        """Count one user less; return the entry if it was the last, for the caller to close."""
        with self._lock:
            if self._forked():
                return None
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.users -= 1
            if entry.users > 0:
                return None
            del self._entries[key]
            return entry

    async def _close_entry(self, loop: asyncio.AbstractEventLoop, entry: _Entry[_C]) -> None:
        """Close an entry's client: here if it is ours or its loop is not running, else on
        its loop (waiting briefly).

        Raises:
            CancelledError: if the task running this close is itself being cancelled (a close
                cancelled on the other loop is swallowed).
        """
        client = entry.client
        if client is None:
            return
        entry.client = None
        current = asyncio.get_running_loop()
        try:
            if loop is current or not loop.is_running():
                # Ours, or a loop that has ended or sits idle (a caller's loop between
                # ``run_until_complete`` calls): nothing will run there for us.
                await self._close(client, loop)
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(self._close(client, loop), loop)
                try:
                    await asyncio.wait_for(
                        asyncio.wrap_future(future), _CLOSE_ON_OTHER_LOOP_TIMEOUT
                    )
                except TimeoutError:
                    # That loop may be shutting down and never run the request.
                    if loop.is_closed():
                        await self._close(client, loop)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled, not the other loop's close
        except Exception:  # closing is best effort: the connection may already be gone
            logger.debug("closing a %s client failed", self.kind, exc_info=True)


class ClientSeat(Generic[_C]):
    """One transport's use of a :class:`LoopClients` pool (created by :meth:`LoopClients.seat`).

    Not picklable: a transport pickles its options and takes a new seat when unpickled, as
    clients belong to this process's loops.
    """

    def __init__(
        self, pool: LoopClients[_C], config: str, build: Callable[[], Awaitable[_C]]
    ) -> None:
        self.pool = pool
        self.config = config
        self._build = build
        self._joined: set[_Key] = set()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _take_joined(self, key: _Key | None) -> tuple[bool, set[_Key]]:
        """Add ``key`` to the loops this seat uses (is it new?), or with ``None`` empty them."""
        with self._lock:
            if self._pid != os.getpid():
                self._joined = set()
                self._pid = os.getpid()
            if key is None:
                joined, self._joined = self._joined, set()
                return False, joined
            new = key not in self._joined
            self._joined.add(key)
            return new, self._joined

    async def client(self) -> _C:
        """The running loop's client for this seat's configuration, built on first use."""
        key = (asyncio.get_running_loop(), self.config)
        new, _ = self._take_joined(key)
        entry = None if new else self.pool._entry(key)
        if entry is None:
            entry, ended = self.pool._join(key)
            for ended_key, ended_entry in ended:
                await self.pool._close_entry(ended_key[0], ended_entry)
        if entry.client is None:
            async with entry.building:
                if entry.client is None:
                    entry.client = await self._build()
        return entry.client

    async def release(self) -> None:
        """Stop using every loop's client; the last user of a client closes it.

        The running loop's client is closed before returning, as is one whose loop has
        ended; one on another loop that still runs is closed there (waiting briefly). A later
        :meth:`client` builds fresh clients.
        """
        _, joined = self._take_joined(None)
        for key in joined:
            entry = self.pool._leave(key)
            if entry is not None:
                await self.pool._close_entry(key[0], entry)

    def loops(self) -> int:
        """How many loops' clients this seat holds (for tests and diagnostics)."""
        with self._lock:
            return len(self._joined) if self._pid == os.getpid() else 0
