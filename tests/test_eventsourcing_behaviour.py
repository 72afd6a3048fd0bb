"""objstore.eventsourcing beyond the framework's suites: request counts, pruning, user names
in keys, damaged objects, batched and fenced views, the factory's configuration and an
application that snapshots to objstore while its events stay in SQLite.

Every store behaviour runs on memory, a local directory and moto S3.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    InfrastructureFactory,
    InfrastructureFactoryError,
    IntegrityError,
    StoredEvent,
    Tracking,
)
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.utils import Environment

from objstore.backends import RequestEvent, open_backend
from objstore.checkpoint import CheckpointStore
from objstore.errors import CorruptionError, FencedError
from objstore.eventsourcing import (
    ENVIRONMENT,
    ObjstoreAggregateRecorder,
    ObjstoreFactory,
    ObjstoreTrackingRecorder,
    commit_due,
)
from objstore.eventsourcing._layout import event_key, events_prefix, view_root
from tests.conftest import make_store_url

KINDS = ["memory", "file", "s3"]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request.param, request, tmp_path)


class Requests:
    """Records every request a backend sends."""

    def __init__(self) -> None:
        self.events: list[RequestEvent] = []

    def __call__(self, event: RequestEvent) -> None:
        self.events.append(event)

    def clear(self) -> None:
        self.events.clear()

    def counts(self) -> Counter[str]:
        return Counter(event.operation for event in self.events)


def snapshot(originator_id: UUID | str, version: int, state: bytes = b"s") -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id, originator_version=version, topic="t:Snap", state=state
    )


def recorder(url: str, hook: Requests | None = None, purpose: str = "snapshots") -> Any:
    return ObjstoreAggregateRecorder(open_backend(url, request_hook=hook), purpose)


# -- snapshots ---------------------------------------------------------------------------------

MANY = 60


def test_snapshot_save_is_one_write_and_latest_load_two_requests(url: str) -> None:
    """Saving a snapshot is one PUT; the newest snapshot (at or below any version) is one
    LIST + one GET however many snapshots exist."""
    requests = Requests()
    snapshots = recorder(url, requests)
    originator = uuid4()
    snapshots.insert_events([snapshot(originator, 1)])  # the capability probe happens here
    for version in range(2, MANY + 1):
        requests.clear()
        snapshots.insert_events([snapshot(originator, version, str(version).encode())])
        assert requests.counts() == {"put_if_absent": 1}

    for lte in (None, MANY, MANY // 2, 1):
        requests.clear()
        found = snapshots.select_events(originator, desc=True, limit=1, lte=lte)
        expected = MANY if lte is None else lte
        assert [(s.originator_version, s.state) for s in found] == [
            (expected, str(expected).encode() if expected > 1 else b"s")
        ]
        assert requests.counts() == {"list_after": 1, "get": 1}, lte

    requests.clear()
    assert snapshots.select_events(originator, desc=True, limit=1, lte=0) == []
    assert snapshots.select_events(uuid4(), desc=True, limit=1) == []


def test_selects_match_the_framework_semantics(url: str) -> None:
    snapshots = recorder(url)
    originator = uuid4()
    snapshots.insert_events([snapshot(originator, v) for v in (0, 1, 2, 5, 9)])

    def versions(**kwargs: Any) -> list[int]:
        return [s.originator_version for s in snapshots.select_events(originator, **kwargs)]

    assert versions() == [0, 1, 2, 5, 9]
    assert versions(desc=True) == [9, 5, 2, 1, 0]
    assert versions(gt=1, lte=5) == [2, 5]
    assert versions(gt=1, lte=5, desc=True) == [5, 2]
    assert versions(desc=True, limit=2, lte=8) == [5, 2]
    assert versions(limit=2, gt=0) == [1, 2]
    assert versions(gt=9) == []
    assert versions(gt=5, lte=5) == []


def test_prune_keeps_the_newest_snapshots(url: str) -> None:
    snapshots = recorder(url)
    originator, other = uuid4(), uuid4()
    snapshots.insert_events([snapshot(originator, v) for v in range(1, 8)])
    snapshots.insert_events([snapshot(other, 1)])
    assert snapshots.prune(originator, keep=2) == [5, 4, 3, 2, 1]
    assert [s.originator_version for s in snapshots.select_events(originator)] == [6, 7]
    assert snapshots.select_events(originator, desc=True, limit=1)[0].originator_version == 7
    assert snapshots.prune(originator, keep=2) == []
    assert len(snapshots.select_events(other)) == 1
    with pytest.raises(ValueError, match="keep"):
        snapshots.prune(originator, keep=0)


NASTY_IDS = ["a", "a/b", "..", "../a", "x/../y", "%2F", "ü/日本", "a" * 1000, " ", "a\\b"]


def test_originator_ids_cannot_escape_or_collide(url: str) -> None:
    snapshots = recorder(url)
    for index, originator in enumerate(NASTY_IDS):
        snapshots.insert_events([snapshot(originator, 1, str(index).encode())])
    for index, originator in enumerate(NASTY_IDS):
        found = snapshots.select_events(originator)
        assert [(s.originator_id, s.state) for s in found] == [(originator, str(index).encode())]
    backend = open_backend(url)
    assert all(info.key.startswith("snapshots/snapshots/") for info in backend.list(""))


@pytest.mark.parametrize(
    ("originator", "version", "error"),
    [
        ("", 1, ValueError),
        ("a\x00b", 1, ValueError),
        ("\ud800", 1, ValueError),
        (b"bytes", 1, TypeError),
        ("ok", -1, ValueError),
        ("ok", 2**64, ValueError),
        ("ok", True, TypeError),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(
    url: str, originator: Any, version: Any, error: type[Exception]
) -> None:
    snapshots = recorder(url)
    with pytest.raises(error):
        snapshots.insert_events([snapshot(originator, version)])
    assert open_backend(url).list("") == []


def test_a_failed_batch_leaves_nothing_behind(url: str) -> None:
    snapshots = recorder(url)
    originator = uuid4()
    snapshots.insert_events([snapshot(originator, 2)])
    with pytest.raises(IntegrityError):
        snapshots.insert_events([snapshot(originator, 3), snapshot(originator, 2)])
    assert [s.originator_version for s in snapshots.select_events(originator)] == [2]


def test_uuid_and_str_ids_come_back_as_stored(url: str) -> None:
    snapshots = recorder(url)
    as_uuid = uuid4()
    snapshots.insert_events([snapshot(as_uuid, 1), snapshot("plain", 1)])
    assert snapshots.select_events(as_uuid)[0].originator_id == as_uuid
    assert snapshots.select_events("plain")[0].originator_id == "plain"


def test_a_damaged_snapshot_is_skipped_but_a_damaged_event_raises(url: str) -> None:
    backend = open_backend(url)
    originator = uuid4()
    for purpose in ("snapshots", "events"):
        objects = recorder(url, purpose=purpose)
        objects.insert_events([snapshot(originator, 1), snapshot(originator, 2)])
        backend.put(event_key(purpose, originator, 2), b"garbage")
    snapshots = recorder(url)
    assert [s.originator_version for s in snapshots.select_events(originator)] == [1]
    newest = snapshots.select_events(originator, desc=True, limit=1)
    assert [s.originator_version for s in newest] == [1]
    # An object copied to another version's key is refused too.
    blob, _ = backend.get(event_key("snapshots", originator, 1))
    backend.put(event_key("snapshots", originator, 3), blob)
    assert snapshots.select_events(originator, desc=True, limit=1)[0].originator_version == 1
    with pytest.raises(CorruptionError):
        recorder(url, purpose="events").select_events(originator)


def test_keys_sort_newest_first() -> None:
    originator = uuid4()
    keys = [event_key("snapshots", originator, v) for v in (0, 1, 9, 10, 2**64 - 1)]
    assert sorted(keys) == list(reversed(keys))
    assert all(key.startswith(events_prefix("snapshots", originator) + "/") for key in keys)


# -- views -------------------------------------------------------------------------------------


class Tally(ObjstoreTrackingRecorder):
    """A view counting events per key."""

    def count(self, tracking: Tracking, key: str) -> None:
        self.update(tracking, lambda state: {key: int(state.get(key, 0)) + 1})


def tally(url: str, **kwargs: Any) -> Tally:
    hook = kwargs.pop("request_hook", None)
    return Tally(CheckpointStore(view_root(url, "tally"), request_hook=hook), **kwargs)


def feed(view: Tally, start: int, stop: int) -> None:
    for notification_id in range(start, stop):
        view.count(Tracking("app", notification_id), f"k{notification_id % 3}")


def test_a_view_commits_every_n_events_together_with_its_position(url: str) -> None:
    writer = tally(url, commit_every=5, commit_interval=None)
    feed(writer, 1, 5)
    assert writer.max_tracking_id("app") == 4  # served from memory
    reader = tally(url)
    assert reader.max_tracking_id("app") is None
    assert dict(reader.state) == {}
    feed(writer, 5, 6)
    assert reader.max_tracking_id("app") == 5
    assert dict(reader.state) == {"k0": 1, "k1": 2, "k2": 2}
    assert writer.committed_checkpoint_id == 1


def test_a_view_commits_after_its_interval_without_more_events(url: str) -> None:
    writer = tally(url, commit_every=1000, commit_interval=0.2)
    feed(writer, 1, 3)
    reader = tally(url)
    reader.wait("app", 2, timeout=5)
    assert dict(reader.state) == {"k1": 1, "k2": 1}
    writer.close()


def test_a_crashed_view_replays_from_its_last_commit_exactly_once(url: str) -> None:
    uninterrupted = tally(url.rstrip("/") + "-whole", commit_every=4, commit_interval=None)
    feed(uninterrupted, 1, 11)
    uninterrupted.flush()

    crashed = tally(url, commit_every=4, commit_interval=None)
    feed(crashed, 1, 8)  # commits after 4; 5..7 are lost with the process
    del crashed
    resumed = tally(url, commit_every=4, commit_interval=None)
    position = resumed.max_tracking_id("app")
    assert position == 4
    feed(resumed, position + 1, 11)
    resumed.flush()
    assert dict(resumed.state) == dict(uninterrupted.state)
    assert sum(resumed.state.values()) == 10
    with pytest.raises(IntegrityError):
        resumed.count(Tracking("app", 10), "k0")
    assert sum(resumed.state.values()) == 10


def test_a_newer_runner_fences_the_older_one(url: str) -> None:
    old = tally(url, commit_every=1, commit_interval=None)
    feed(old, 1, 3)
    new = tally(url, commit_every=1, commit_interval=None)
    feed(new, 3, 4)
    assert new.epoch is not None
    assert old.epoch is not None
    assert new.epoch > old.epoch
    with pytest.raises(FencedError) as raised:
        feed(old, 3, 4)
    assert raised.value.winner_epoch == new.epoch
    with pytest.raises(FencedError):  # a fenced view stays fenced
        old.flush()
    # A runner started with an explicitly older epoch is refused at its first write.
    stale = tally(url, epoch=old.epoch, commit_every=1, commit_interval=None)
    with pytest.raises(FencedError):
        feed(stale, 4, 5)
    reader = tally(url)
    assert reader.max_tracking_id("app") == 3
    assert sum(reader.state.values()) == 3


def test_a_tracking_commit_costs_three_writes(url: str) -> None:
    requests = Requests()
    view = tally(url, commit_every=1, commit_interval=None, request_hook=requests)
    feed(view, 1, 3)  # first commit, epoch claim and the capability probe are behind us
    requests.clear()
    feed(view, 3, 4)
    # state.bin and manifest.json created, latest.txt swapped; no read.
    assert requests.counts() == {"put_if_absent": 2, "put_if_match": 1}


def test_update_is_all_or_nothing(url: str) -> None:
    view = tally(url, commit_every=1, commit_interval=None)
    feed(view, 1, 2)
    with pytest.raises(TypeError):
        view.update(Tracking("app", 2), {"bad": object()})
    with pytest.raises(TypeError):
        view.update(Tracking("app", 2), {1: 1})  # type: ignore[dict-item]
    assert view.max_tracking_id("app") == 1
    assert dict(view.state) == {"k1": 1}
    view.update(Tracking("app", 2), {"x": [1, "two"]}, deletes=["k1"])
    assert dict(view.state) == {"x": [1, "two"]}


def test_positions_are_per_application(url: str) -> None:
    view = tally(url, commit_every=1, commit_interval=None)
    view.insert_tracking(Tracking("a", 5))
    view.insert_tracking(Tracking("b", 1))
    reader = tally(url)
    assert (reader.max_tracking_id("a"), reader.max_tracking_id("b")) == (5, 1)
    assert reader.has_tracking_id("a", 5)
    assert not reader.has_tracking_id("b", 2)


def test_commit_due() -> None:
    assert not commit_due(0, None, 10.0, 1, 1.0)
    assert commit_due(5, 0.0, 0.0, 5, None)
    assert not commit_due(4, 0.0, 0.5, 5, 1.0)
    assert commit_due(4, 0.0, 1.0, 5, 1.0)
    assert not commit_due(4, 0.0, 100.0, 5, None)


@pytest.mark.parametrize(
    "kwargs", [{"commit_every": 0}, {"commit_interval": 0}, {"keep_checkpoints": 0}]
)
def test_view_options_are_checked(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Tally(CheckpointStore(str(tmp_path)), **kwargs)


# -- the factory -------------------------------------------------------------------------------


def construct(env: Mapping[str, str]) -> ObjstoreFactory:
    factory = InfrastructureFactory.construct(
        {"PERSISTENCE_MODULE": "objstore.eventsourcing", **env}
    )
    assert isinstance(factory, ObjstoreFactory)
    return factory


def test_factory_needs_a_url() -> None:
    with pytest.raises(OSError, match="OBJSTORE_URL"):
        construct({})


def test_factory_reads_storage_options_from_the_environment() -> None:
    factory = construct(
        {
            "OBJSTORE_URL": "s3://bucket/app",
            "OBJSTORE_STORAGE_OPTIONS": '{"use_ssl": false}',
            "OBJSTORE_ENDPOINT_URL": "http://127.0.0.1:9000",
            "OBJSTORE_REGION": "eu-west-3",
            "OBJSTORE_ACCESS_KEY_ID": "id",
            "OBJSTORE_SECRET_ACCESS_KEY": "secret",
            "OBJSTORE_SESSION_TOKEN": "token",
        }
    )
    assert factory.url == "s3://bucket/app"
    assert factory.storage_options == {
        "use_ssl": False,
        "endpoint_url": "http://127.0.0.1:9000",
        "client_kwargs": {"region_name": "eu-west-3"},
        "key": "id",
        "secret": "secret",
        "token": "token",
    }


@pytest.mark.parametrize(
    "env",
    [
        {"OBJSTORE_STORAGE_OPTIONS": "{not json"},
        {"OBJSTORE_STORAGE_OPTIONS": "[1]"},
        {"OBJSTORE_COMMIT_EVERY": "many"},
        {"OBJSTORE_EPOCH": "first"},
    ],
)
def test_factory_refuses_bad_variables(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(OSError, match=next(iter(env))):
        construct({"OBJSTORE_URL": str(tmp_path), **env}).tracking_recorder()


def test_prefixed_variables_win_and_name_the_view(tmp_path: Path) -> None:
    env = {
        "PERSISTENCE_MODULE": "objstore.eventsourcing",
        "OBJSTORE_URL": str(tmp_path / "plain"),
        "REPORTS_OBJSTORE_URL": str(tmp_path / "reports"),
        "REPORTS_OBJSTORE_COMMIT_EVERY": "7",
        "REPORTS_OBJSTORE_EPOCH": "12",
    }
    factory = InfrastructureFactory.construct(Environment("Reports", env))
    assert isinstance(factory, ObjstoreFactory)
    view = factory.tracking_recorder(Tally)
    assert view.commit_every == 7
    assert view.store.url.endswith(f"{tmp_path}/reports/views/Reports")
    view.insert_tracking(Tracking("app", 1))
    assert view.epoch == 12
    view.close()


def test_factory_without_an_events_module_says_so(tmp_path: Path) -> None:
    factory = construct({"OBJSTORE_URL": str(tmp_path)})
    with pytest.raises(InfrastructureFactoryError, match="OBJSTORE_EVENTS_MODULE"):
        factory.application_recorder()
    with pytest.raises(InfrastructureFactoryError, match="itself"):
        construct(
            {"OBJSTORE_URL": str(tmp_path), "OBJSTORE_EVENTS_MODULE": "objstore.eventsourcing"}
        ).process_recorder()


def test_factory_refuses_a_foreign_tracking_recorder(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="ObjstoreTrackingRecorder"):
        construct({"OBJSTORE_URL": str(tmp_path)}).tracking_recorder(
            POPOTrackingRecorder  # type: ignore[arg-type]
        )


# -- a whole application -----------------------------------------------------------------------


class Sensor(Aggregate):
    @event("Created")
    def __init__(self, name: str) -> None:
        self.name = name
        self.readings: list[int] = []

    @event("Read")
    def read(self, value: int) -> None:
        self.readings.append(value)


class Sensors(Application[UUID]):
    snapshotting_intervals = {Sensor: 5}  # noqa: RUF012 - the framework's class attribute


@pytest.fixture
def sensors(url: str, tmp_path: Path) -> Iterator[Sensors]:
    app = Sensors(
        {
            "PERSISTENCE_MODULE": "objstore.eventsourcing",
            "OBJSTORE_URL": url,
            "OBJSTORE_EVENTS_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(tmp_path / f"events-{uuid.uuid4().hex}.db"),
            "IS_SNAPSHOTTING_ENABLED": "yes",
        }
    )
    yield app
    app.close()


def test_an_application_snapshots_to_objstore_and_keeps_events_in_sqlite(
    sensors: Sensors, url: str
) -> None:
    sensor = Sensor("s1")
    sensors.save(sensor)
    for value in range(12):
        sensor.read(value)
        sensors.save(sensor)
    assert sensors.snapshots is not None
    versions = [s.originator_version for s in sensors.snapshots.get(sensor.id)]
    assert versions == [5, 10]
    keys = [info.key for info in open_backend(url).list("")]
    assert len(keys) == 2
    assert all(key.startswith("snapshots/snapshots/") for key in keys)
    loaded = sensors.repository.get(sensor.id)
    assert loaded.readings == list(range(12))
    assert loaded.version == 13
    assert sensors.repository.get(sensor.id, version=7).readings == list(range(6))
    assert sensors.recorder.max_notification_id() == 13
    assert json.loads(json.dumps(type(sensors.recorder).__name__)) == "SQLiteApplicationRecorder"


def test_every_variable_the_factory_reads_is_documented() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## eventsourcing\n", 1)[1].split("\n## ", 1)[0]
    read = {
        value
        for name, value in vars(ObjstoreFactory).items()
        if name.startswith("OBJSTORE_") and isinstance(value, str)
    }
    assert read == set(ENVIRONMENT)
    assert [name for name in sorted(read) if f"`{name}`" not in section] == []


def test_a_runner_that_claimed_without_committing_is_still_fenced(url: str) -> None:
    first = tally(url, commit_every=100, commit_interval=None)
    feed(first, 1, 2)  # claimed its epoch, committed nothing yet
    second = tally(url, commit_every=1, commit_interval=None)
    feed(second, 1, 2)
    assert first.epoch is not None
    assert second.epoch == first.epoch + 1
    with pytest.raises(FencedError):
        first.flush()


def test_racing_saves_of_one_version_have_one_winner(url: str) -> None:
    originator = uuid4()
    snapshots = recorder(url)
    snapshots.insert_events([snapshot(originator, 1)])  # probe once, before the race
    barrier = threading.Barrier(6)

    def save(index: int) -> str:
        barrier.wait()
        try:
            snapshots.insert_events([snapshot(originator, 2, str(index).encode())])
        except IntegrityError:
            return "lost"
        return str(index)

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(save, range(6)))
    winners = [outcome for outcome in outcomes if outcome != "lost"]
    assert len(winners) == 1
    newest = snapshots.select_events(originator, desc=True, limit=1)
    assert newest[0].state == winners[0].encode()


def test_a_view_whose_newest_commit_is_damaged_resumes_from_the_one_before(url: str) -> None:
    writer = tally(url, commit_every=2, commit_interval=None)
    feed(writer, 1, 5)  # checkpoints 1 (positions 2) and 2 (positions 4)
    assert writer.committed_checkpoint_id == 2
    backend = open_backend(view_root(url, "tally"))
    newest = "checkpoints/checkpoint_00000000000000000002/state.bin"
    blob, _ = backend.get(newest)
    backend.put(newest, blob[:-8] + b"damaged!")
    resumed = tally(url, commit_every=2, commit_interval=None)
    assert resumed.max_tracking_id("app") == 2
    assert sum(resumed.state.values()) == 2
    feed(resumed, 3, 7)
    assert resumed.committed_checkpoint_id == 4  # above the damaged id, which it never reuses
    reader = tally(url)
    assert reader.max_tracking_id("app") == 6
    assert sum(reader.state.values()) == 6
