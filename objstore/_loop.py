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
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

__all__ = ["blocking", "run_sync"]

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
    """Run ``coro`` on objstore's private loop and return its result (or raise its error)."""
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
