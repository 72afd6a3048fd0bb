"""objstore.eventsourcing against the framework's own conformance test cases, unmodified.

Each framework test case is subclassed once per store kind (a local directory, moto S3 and
the SeaweedFS server); an autouse fixture hands the test a fresh store URL. Framework test
cases that do **not** apply, and why:

- ``ApplicationRecorderTestCase``, ``ProcessRecorderTestCase`` and
  ``NonInterleavingNotificationIDsBaseCase``: they test an application sequence
  (notification log, ``max_notification_id``, subscriptions, concurrent inserts with
  gap-free notification ids). objstore offers no application recorder: the factory hands
  those recorders to the events module (``OBJSTORE_EVENTS_MODULE``), whose own suites cover
  them; the README's "eventsourcing" section says why objstore does not offer one.
- ``TaggedDecisionCountersProjectionTestCase`` *does* apply and runs (a DCB application's
  events in POPO, the view on objstore).
- ``InfrastructureFactoryTestCase`` runs on the local directory and moto only: none of its
  tests sends a request to the store (they construct recorders), so SeaweedFS would test
  nothing more.

The objstore-specific behaviour (request counts, pruning, names in keys, corruption,
fencing, batching) is tested in ``tests/test_eventsourcing_behaviour.py``; the kill-and-restart
run in ``tests/test_eventsourcing_e2e.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from eventsourcing.persistence import AggregateRecorder, Tracking
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteProcessRecorder
from eventsourcing.tests import persistence as framework
from eventsourcing.tests import projection as framework_projection
from eventsourcing.utils import Environment

from objstore.backends import open_backend
from objstore.checkpoint import CheckpointStore
from objstore.eventsourcing import (
    ObjstoreAggregateRecorder,
    ObjstoreFactory,
    ObjstoreTrackingRecorder,
)
from objstore.eventsourcing._layout import view_root
from tests.conftest import make_store_url

STORE_KINDS = ["file", "s3", "seaweedfs"]


class _OnStore:
    """Gives each test ``self.url``, a fresh store of ``self.kind``."""

    kind: ClassVar[str]
    url: str

    @pytest.fixture(autouse=True)
    def _objstore_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.url = make_store_url(self.kind, request, tmp_path)
        self.tmp_path = tmp_path
        self.configure()

    def configure(self) -> None:
        """Set up what the test case reads from attributes (an ``env``), once ``url`` is set."""


class CountersView(ObjstoreTrackingRecorder, framework_projection.EventCountersView):
    """The framework's event-counters view, kept on objstore."""

    def get_created_event_counter(self) -> int:
        return int(self.get("created", 0))

    def get_subsequent_event_counter(self) -> int:
        return int(self.get("subsequent", 0))

    def incr_created_event_counter(self, tracking: Tracking) -> None:
        self.update(tracking, _increment("created"))

    def incr_subsequent_event_counter(self, tracking: Tracking) -> None:
        self.update(tracking, _increment("subsequent"))


def _increment(key: str) -> Any:
    def changes(state: Mapping[str, Any]) -> dict[str, int]:
        return {key: int(state.get(key, 0)) + 1}

    return changes


class CustomTrackingRecorder(ObjstoreTrackingRecorder):
    """A subclass the factory test constructs by argument and by topic."""


# -- the recorders -----------------------------------------------------------------------------


class _SnapshotRecorderCase(_OnStore):
    def create_recorder(self) -> AggregateRecorder:
        return ObjstoreAggregateRecorder(open_backend(self.url), "snapshots")


class _TrackingRecorderCase(_OnStore):
    def create_recorder(self) -> ObjstoreTrackingRecorder:
        # Every event commits, so the suite's checks also run against what is durable.
        store = CheckpointStore(view_root(self.url, f"tracking-{uuid.uuid4().hex}"))
        return ObjstoreTrackingRecorder(store, commit_every=1)


class _CountersViewCase(_OnStore):
    def construct_event_counters_view(self) -> CountersView:
        # Commits every second event: the view must answer from its own state in between.
        return CountersView(CheckpointStore(view_root(self.url, "counters")), commit_every=2)


class _ProjectionCase(_OnStore):
    """The runner tests: the application's events in POPO, the view on objstore."""

    view_class = CountersView
    env: ClassVar[dict[str, str]] = {}

    def configure(self) -> None:
        self.env = {  # type: ignore[misc]
            "EVENTCOUNTERS_PERSISTENCE_MODULE": "objstore.eventsourcing",
            "EVENTCOUNTERS_OBJSTORE_URL": self.url,
            "EVENTCOUNTERS_OBJSTORE_COMMIT_EVERY": "3",
        }


class _DCBProjectionCase(_ProjectionCase):
    def configure(self) -> None:
        super().configure()
        # How the DCB application serialises its decisions (it reads the plain key).
        self.env["MAPPER_TOPIC"] = "eventsourcing.dcb.msgpack:MessagePackMapper"


class _EventSourcedProjectionCase(_OnStore):
    """An event-sourced projection whose snapshots are on objstore and whose events and
    tracking (one transaction, so one database) are in the events module."""

    env: ClassVar[dict[str, str]] = {}

    def configure(self) -> None:
        self.env = {  # type: ignore[misc]
            "COUNTERS_PERSISTENCE_MODULE": "objstore.eventsourcing",
            "COUNTERS_OBJSTORE_URL": self.url,
            "COUNTERS_OBJSTORE_EVENTS_MODULE": "eventsourcing.popo",
            "COUNTERS_IS_SNAPSHOTTING_ENABLED": "yes",
        }


class _FactoryCase(_OnStore):
    def configure(self) -> None:
        self.env = Environment(
            "",
            {
                "PERSISTENCE_MODULE": "objstore.eventsourcing",
                "OBJSTORE_URL": self.url,
                "OBJSTORE_EVENTS_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.tmp_path / "events.db"),
            },
        )

    def expected_factory_class(self) -> type[ObjstoreFactory]:
        return ObjstoreFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return ObjstoreAggregateRecorder

    def expected_application_recorder_class(self) -> type[Any]:
        return SQLiteApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[Any]:
        return ObjstoreTrackingRecorder

    def tracking_recorder_subclass(self) -> type[Any]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[Any]:
        return SQLiteProcessRecorder


def _per_kind(name: str, bases: tuple[type, ...], kinds: list[str]) -> None:
    for kind in kinds:
        cls = type(f"Test{name}_{kind}", bases, {"kind": kind, "__module__": __name__})
        globals()[cls.__name__] = cls


_per_kind(
    "SnapshotRecorder", (_SnapshotRecorderCase, framework.AggregateRecorderTestCase), STORE_KINDS
)
_per_kind(
    "TrackingRecorder", (_TrackingRecorderCase, framework.TrackingRecorderTestCase), STORE_KINDS
)
_per_kind(
    "EventCountersView",
    (_CountersViewCase, framework_projection.EventCountersViewTestCase),
    STORE_KINDS,
)
_per_kind(
    "AggregateEventCountersProjection",
    (_ProjectionCase, framework_projection.AggregateEventCountersProjectionTestCase),
    STORE_KINDS,
)
_per_kind(
    "TaggedDecisionCountersProjection",
    (_DCBProjectionCase, framework_projection.TaggedDecisionCountersProjectionTestCase),
    STORE_KINDS,
)
_per_kind(
    "EventSourcedProjection",
    (_EventSourcedProjectionCase, framework_projection.EventSourcedProjectionTestCase),
    STORE_KINDS,
)
_per_kind(
    "InfrastructureFactory",
    (_FactoryCase, framework.InfrastructureFactoryTestCase),
    ["file", "s3"],
)
