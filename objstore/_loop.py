"""A private event loop on a daemon thread, so the sync API can drive the async core.

The sync classes are thin facades: each method submits the matching coroutine of the async
class to this loop and waits. One loop per process (recreated after ``fork``), never the
caller's loop, so the sync API works from plain threads and from inside other frameworks.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, Self, TypeVar, cast

__all__ = ["AsyncClosing", "StoreFacade", "blocking", "run_sync"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_loop_thread: threading.Thread | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid, _loop_thread
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or not _loop.is_running():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=serve, name="objstore-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _loop_pid, _loop_thread = loop, os.getpid(), thread
        return _loop


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on objstore's private loop and return its result (or raise its error).

    Raises:
        RuntimeError: if called from objstore's own loop thread (async code must use the ``Async*``
            classes); ``coro`` is closed unrun.
    """
    loop = _get_loop()
    if threading.current_thread() is _loop_thread:
        coro.close()
        raise RuntimeError(
            "objstore's sync API was called from inside its own event loop; "
            "use the Async* classes from async code"
        )
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


class _HasAsync(Protocol):
    @property
    def _async(self) -> Any: ...


def blocking(
    async_method: Callable[Concatenate[Any, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_HasAsync, _P], _T]:
    """Turn an async method of the core class into the same method of a sync facade.

    The facade must hold the core instance as ``self._async``. The docstring and signature
    are the async method's, so the two faces are documented once.
    """
    name = async_method.__name__

    def method(self: _HasAsync, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        coro = cast(Coroutine[Any, Any, _T], getattr(self._async, name)(*args, **kwargs))
        return run_sync(coro)

    functools.update_wrapper(method, async_method)
    return method


class _AsyncStore(Protocol):
    @property
    def url(self) -> str: ...

    async def close(self) -> None: ...


_Core = TypeVar("_Core", bound=_AsyncStore)


class AsyncClosing:
    """Mixin of every async store: ``async with store:`` closes it when the block ends."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self: _AsyncStore,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class StoreFacade(Generic[_Core]):
    """Base of every blocking store: it drives the async core it is given.

    A subclass spells out the core's constructor arguments in its own typed ``__init__``
    (so ``help()`` and type checkers see them), builds the core from them and hands it to
    ``super().__init__``; it lists the core's methods with :func:`blocking`. ``with store:``
    closes the store when the block ends.
    """

    def __init__(self, core: _Core) -> None:
        self._async: _Core = core

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        run_sync(self._async.close())

    @property
    def async_store(self) -> _Core:
        """The async store this facade drives (usable from async code on any loop)."""
        return self._async

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self._async.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
