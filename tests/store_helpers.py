"""Infrastructure shared by the source, projection and snapshot store tests.

Each rule runs through one *face* (the blocking class on objstore's private loop, or the
async class driven from a loop the test owns) on one backend kind; :data:`EVERY_BACKEND`
and :data:`LOCAL_BACKENDS` say which pairings. Test modules re-export the fixtures they use
(``combo``, ``faces``, ``url``, ``raw``, ``local_url``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from objstore.backends import AsyncBackend, Backend, RetryPolicy, open_backend, open_transport
from objstore.testing import FaultInjectingTransport
from objstore.testing.contract import LoopDriven, run_processes
from tests.conftest import ALL_BACKENDS, make_store_url

__all__ = [
    "EVERY_BACKEND",
    "LOCAL_BACKENDS",
    "NASTY_NAMES",
    "Faces",
    "combo",
    "crash_points",
    "faces",
    "local_backends",
    "local_url",
    "no_sleep",
    "raw",
    "run_processes",
    "url",
]


async def no_sleep(_: float) -> None:
    """Retry backoff that does not wait."""


class Faces:
    """Opens stores through one face: ``sync`` (the blocking class, on objstore's private
    loop) or ``async`` (the async class, on a loop owned by this object).

    A store URL is served by one backend per URL for the whole test, opened without the
    capability probe (the backend contract suite proves the probe), so tests stay fast on
    S3 and GCS; every store object is still new. Backends are closed by :meth:`close`.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self._backends: dict[str, AsyncBackend] = {}

    def as_face(self, backend: AsyncBackend) -> Any:
        """``backend`` as the face expects it: ``AsyncBackend`` for async, else ``Backend``."""
        return backend if self.loop is not None else Backend(backend)

    def _backend(self, url: str) -> AsyncBackend:
        if url not in self._backends:
            self._backends[url] = AsyncBackend(
                open_transport(url), retry=RetryPolicy(sleep=no_sleep), verify_fencing=False
            )
        return self._backends[url]

    def backend(self, url: str) -> Any:
        """The test's backend for ``url``, as the face expects it."""
        return self.as_face(self._backend(url))

    def store(
        self, sync_class: type, async_class: type, location: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """A store of ``sync_class`` / ``async_class`` (by face) at ``location``."""
        if isinstance(location, str):
            location = self.backend(location)
        if self.loop is None:
            return sync_class(location, *args, **kwargs)
        return LoopDriven(async_class(location, *args, **kwargs), self.loop)

    def faulty(self, url: str, **retry: Any) -> tuple[FaultInjectingTransport, Any]:
        """A new fault-injecting backend (no probe, no backoff sleeps) around the test's
        transport for ``url``, as the face expects it."""
        faults = FaultInjectingTransport(self._backend(url).transport)
        backend = AsyncBackend(
            faults, retry=RetryPolicy(sleep=no_sleep, **retry), verify_fencing=False
        )
        return faults, self.as_face(backend)

    def close(self) -> None:
        """Close every backend opened here (fault-injecting ones share their transport)."""
        for backend in self._backends.values():
            if self.loop is None:
                Backend(backend).close()
            else:
                self.loop.run_until_complete(backend.close())
        if self.loop is not None:
            self.loop.close()


def crash_points(faults: FaultInjectingTransport) -> list[tuple[str, int]]:
    """``(operation, nth)`` of every write in the call log, in order: where to crash."""
    seen: Counter[str] = Counter()
    points = []
    for call in faults.calls:
        if call.is_write:
            seen[call.operation] += 1
            points.append((call.operation, seen[call.operation]))
    return points


# -- fixtures ------------------------------------------------------------------------------------


# Rules that touch storage run on every backend through the blocking face and on memory and
# file through the async face too; rules that are pure session/validation logic run on memory
# and file through both faces. The async face meets S3 and GCS in the asyncio.run tests. This
# keeps every backend and both faces covered without paying S3 client setup for every pairing.
EVERY_BACKEND = [("sync", kind) for kind in ALL_BACKENDS] + [("async", "memory"), ("async", "file")]
LOCAL_BACKENDS = [(face, kind) for kind in ("memory", "file") for face in ("sync", "async")]


def combo_id(combo: tuple[str, str]) -> str:
    return f"{combo[0]}-{combo[1]}"


local_backends = pytest.mark.parametrize("combo", LOCAL_BACKENDS, ids=combo_id, indirect=True)
"""Run a test on memory and file, through both faces, instead of :data:`EVERY_BACKEND`."""


@pytest.fixture(params=EVERY_BACKEND, ids=combo_id)
def combo(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(face, backend kind)`` of the current run."""
    return cast(tuple[str, str], request.param)


@pytest.fixture
def faces(combo: tuple[str, str]) -> Iterator[Faces]:
    """The face of the current run."""
    opened = Faces(combo[0])
    yield opened
    opened.close()


@pytest.fixture
def url(combo: tuple[str, str], request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of the current run's backend kind."""
    return make_store_url(combo[1], request, tmp_path)


@pytest.fixture
def raw() -> Iterator[Callable[[str], Backend]]:
    """``raw(url)``: a blocking backend for reading and damaging objects around the stores,
    one per URL for the test."""
    opened: dict[str, Backend] = {}

    def open_(url: str) -> Backend:
        if url not in opened:
            opened[url] = open_backend(url, verify_fencing=False)
        return opened[url]

    yield open_
    for backend in opened.values():
        backend.close()


@pytest.fixture(params=["memory", "file"])
def local_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh memory or file store, for tests of one face's own plumbing."""
    return make_store_url(request.param, request, tmp_path)


NASTY_NAMES = [
    "a/b",
    "../..",
    "..",
    ".",
    "%2F",
    "100%",
    "ünïcødé/✓",
    " spaced ",
    "x" * 1000,
    "é/" * 500,
]
