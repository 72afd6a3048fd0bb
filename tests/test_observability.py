"""Per-request observability: the request hook, the DEBUG log line and OpenTelemetry metrics.

Every request a store sends must surface exactly once per attempt, with what it moved and how
it ended, on memory, a local directory and moto S3 (``KINDS``). The OpenTelemetry path is
checked with a recording meter provider built on the API's own no-op classes (no SDK).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics

from objstore import (
    AsyncCheckpointStore,
    CheckpointManifest,
    CheckpointStore,
    OpenTelemetryMetrics,
    RequestEvent,
    RequestHook,
    TransientStorageError,
    open_backend,
    request_hooks,
)
from objstore.backends import AsyncBackend, Backend, RetryPolicy, open_transport
from objstore.backends._observe import RequestObserver
from objstore.checkpoint import manifest_key, state_key
from objstore.testing import FaultInjectingTransport
from tests.conftest import make_store_url

KINDS = ["memory", "file", "s3"]
STATE = {"counts": b"c" * 5000, "window": os.urandom(300)}
OUTCOMES = {
    "ok",
    "not_found",
    "already_exists",
    "precondition_failed",
    "transient_error",
    "error",
    "cancelled",
}


async def no_sleep(_: float) -> None:
    """Retry backoff that does not wait."""


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on memory, a local directory and moto S3 in turn."""
    return make_store_url(request.param, request, tmp_path)


Observed = tuple[CheckpointStore, FaultInjectingTransport, list[RequestEvent]]


def observe(url: str, *hooks: RequestHook) -> Observed:
    """A checkpoint store whose requests are both logged by a fault injector (at the
    transport) and reported to a hook (by the backend), plus ``hooks``."""
    faults = FaultInjectingTransport(open_transport(url))
    events: list[RequestEvent] = []
    hook = request_hooks(*hooks, events.append)
    backend = AsyncBackend(faults, retry=RetryPolicy(sleep=no_sleep), request_hook=hook)
    return CheckpointStore(Backend(backend)), faults, events


@pytest.fixture
def observed(url: str) -> Iterator[Observed]:
    """:func:`observe` without extra hooks, closed after the test."""
    store, faults, events = observe(url)
    with store:
        yield store, faults, events


def size_of(url: str, key: str) -> int:
    with open_backend(url) as raw:
        return raw.head(key).size


def test_every_request_is_one_event(url: str, observed: Observed) -> None:
    store, faults, events = observed
    assert store.load_latest() is None
    store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)
    assert store.load_state(1) == STATE
    store.prune(1)
    # Exactly one event per request that reached the transport (probe included).
    assert Counter((e.operation, e.key) for e in events) == Counter(
        (c.operation, c.key) for c in faults.calls
    )
    scheme = url.split("://")[0] if "://" in url else "file"
    for event in events:
        assert event.store == store.url
        assert event.scheme == scheme
        assert event.attempt == 1
        assert not event.is_retry
        assert event.outcome in OUTCOMES
        assert event.duration >= 0
        assert (event.error is None) == (event.outcome == "ok")
    assert any(e.outcome == "not_found" for e in events)  # load_latest of an empty store
    # Bytes are the payload that went over the wire, per request.
    state_size = size_of(url, state_key(1))
    manifest_size = size_of(url, manifest_key(1))
    writes = {e.key: e for e in events if e.operation.startswith("put_if_absent")}
    assert writes[state_key(1)].bytes_sent == state_size
    assert writes[manifest_key(1)].bytes_sent == manifest_size
    assert writes[state_key(1)].outcome == "ok"
    reads = [e for e in events if e.key == state_key(1) and e.operation.startswith("get")]
    assert [e.bytes_received for e in reads] == [state_size]
    assert all(e.bytes_received == 0 for e in events if e.operation in ("head", "list", "put"))


def test_retries_and_expected_conflicts_are_reported(
    observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    store, faults, events = observed
    store.save(CheckpointManifest(checkpoint_id=1, epoch=1))  # probe out of the way
    events.clear()

    async def answer_lost_and_said_not_to_have_landed() -> None:
        raise TransientStorageError("connection refused", may_have_landed=False)

    faults.on_call(
        "put_if_absent", answer_lost_and_said_not_to_have_landed, key_contains="manifest"
    )
    with caplog.at_level(logging.DEBUG, logger="objstore.backends._observe"):
        store.save(CheckpointManifest(checkpoint_id=2, epoch=1))
    mine = [(e.operation, e.attempt, e.outcome) for e in events if e.key == manifest_key(2)]
    assert mine == [
        ("put_if_absent", 1, "transient_error"),  # landed, its answer wrongly "not landed"
        ("put_if_absent", 2, "already_exists"),  # so it is re-sent and meets its own write
        ("get", 1, "ok"),  # a conflict after a retry is read back: it is ours
    ]
    assert [e.is_retry for e in events if e.key == manifest_key(2)] == [False, True, False]
    observed_records = [r for r in caplog.records if r.name == "objstore.backends._observe"]
    lines = [r.getMessage() for r in observed_records if manifest_key(2) in r.getMessage()]
    assert len(lines) == 3
    assert "transient_error" in lines[0]
    assert "attempt 1" in lines[0]
    assert "already_exists" in lines[1]
    assert "attempt 2" in lines[1]
    assert all(r.levelno == logging.DEBUG for r in observed_records)


def test_a_failing_hook_never_fails_a_request(url: str, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[RequestEvent] = []

    def broken(event: RequestEvent) -> None:
        raise RuntimeError("metrics backend down")

    with caplog.at_level(logging.WARNING, logger="objstore"):
        store = CheckpointStore(url, request_hook=request_hooks(broken, seen.append))
        with store:
            store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)
            assert store.load_state(1) == STATE
    assert seen  # a later hook still saw every event
    assert any("request hook" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError):
        CheckpointStore(url, request_hook="not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        request_hooks(print, 3)  # type: ignore[arg-type]


def test_async_stores_report_too(url: str) -> None:
    events: list[RequestEvent] = []

    async def run() -> None:
        async with AsyncCheckpointStore(url, request_hook=events.append) as store:
            await store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)

    asyncio.run(run())
    assert {e.key for e in events if e.outcome == "ok"} >= {state_key(1), manifest_key(1)}


def test_unobserved_requests_build_no_event(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a hook and with DEBUG off, nothing is built per request (the cheap path)."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was built although nobody listens")

    monkeypatch.setattr(RequestObserver, "record", forbidden)
    caplog.set_level(logging.INFO, logger="objstore")
    with CheckpointStore(url) as store:
        store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)
        assert store.load_state(1) == STATE


# -- OpenTelemetry -------------------------------------------------------------------------------


class RecordingInstrument:
    """Counter or histogram that keeps every ``(value, attributes)`` it is given."""

    def __init__(self, name: str, unit: str) -> None:
        self.name = name
        self.unit = unit
        self.points: list[tuple[float, dict[str, Any]]] = []

    def add(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        self.points.append((amount, dict(attributes or {})))

    record = add

    def total(self, **attributes: Any) -> float:
        """Sum of the values whose attributes include ``attributes``."""
        return sum(
            value
            for value, given in self.points
            if all(given.get(f"objstore.{k}") == v for k, v in attributes.items())
        )


class RecordingMeter(metrics.NoOpMeter):
    """A meter of the OpenTelemetry API that records instead of dropping."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.instruments: dict[str, RecordingInstrument] = {}

    def _make(self, name: str, unit: str) -> Any:
        self.instruments[name] = RecordingInstrument(name, unit)
        return self.instruments[name]

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return self._make(name, unit)

    def create_histogram(self, name: str, unit: str = "", description: str = "", **_: Any) -> Any:
        return self._make(name, unit)


class RecordingMeterProvider(metrics.NoOpMeterProvider):
    """Hands out :class:`RecordingMeter` objects and remembers them by name."""

    def __init__(self) -> None:
        self.meters: dict[str, RecordingMeter] = {}

    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.meters[name] = RecordingMeter(name)
        return self.meters[name]


def test_opentelemetry_metrics_match_the_events(url: str) -> None:
    provider = RecordingMeterProvider()
    store, faults, events = observe(url, OpenTelemetryMetrics(meter_provider=provider))

    async def refused() -> None:  # before the store: retried without a read-back
        raise TransientStorageError("connection refused", may_have_landed=False)

    faults.on_call("put_if_absent", refused, when="before", key_contains="state.bin")
    with store:
        store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)
        assert store.load_state(1) == STATE
    meter = provider.meters["objstore"]
    got = meter.instruments
    assert set(got) == {
        "objstore.requests",
        "objstore.retries",
        "objstore.request.duration",
        "objstore.bytes.sent",
        "objstore.bytes.received",
    }
    assert got["objstore.request.duration"].unit == "s"
    assert got["objstore.bytes.sent"].unit == "By"
    assert got["objstore.requests"].total() == len(events)
    assert got["objstore.retries"].total() == sum(e.is_retry for e in events) == 1
    assert got["objstore.retries"].total(operation="put_if_absent") == 1
    assert got["objstore.bytes.sent"].total() == sum(e.bytes_sent for e in events)
    assert got["objstore.bytes.received"].total() == sum(e.bytes_received for e in events)
    durations = got["objstore.request.duration"].points
    assert sorted(v for v, _ in durations) == sorted(e.duration for e in events)
    for operation, outcome in {(e.operation, e.outcome) for e in events}:
        expected = sum(1 for e in events if (e.operation, e.outcome) == (operation, outcome))
        assert got["objstore.requests"].total(operation=operation, outcome=outcome) == expected
    attribute_names = {name for _, given in got["objstore.requests"].points for name in given}
    assert attribute_names == {"objstore.operation", "objstore.outcome", "objstore.scheme"}


GLOBAL_PROVIDER_SCRIPT = """
import json, sys
from objstore import CheckpointManifest, CheckpointStore, OpenTelemetryMetrics
with CheckpointStore("memory://otel-global") as store:
    store.save(CheckpointManifest(checkpoint_id=1, epoch=1))
imported_before = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
from opentelemetry import metrics
from tests.test_observability import RecordingMeterProvider
provider = RecordingMeterProvider()
metrics.set_meter_provider(provider)
with CheckpointStore("memory://otel-global", request_hook=OpenTelemetryMetrics()) as store:
    store.save(CheckpointManifest(checkpoint_id=2, epoch=1))
requests = provider.meters["objstore"].instruments["objstore.requests"]
print(json.dumps({"imported_before": imported_before, "requests": requests.total(),
                  "ok_puts": requests.total(operation="put_if_absent", outcome="ok")}))
"""


def test_opentelemetry_global_provider_and_no_import_when_unused() -> None:
    """``OpenTelemetryMetrics()`` uses the provider set with ``set_meter_provider``, and
    objstore imports nothing of OpenTelemetry until it is asked to."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER_SCRIPT],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["imported_before"] == []
    assert report["ok_puts"] >= 1  # at least the manifest
    assert report["requests"] >= 3
