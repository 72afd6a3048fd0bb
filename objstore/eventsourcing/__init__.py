"""objstore as persistence for ``eventsourcing``: ``PERSISTENCE_MODULE=objstore.eventsourcing``.

Snapshots live in object storage, one object per (originator, version); projection views
keep their state and tracking positions in one atomic objstore commit, fenced by epoch, so
a crashed runner resumes exactly once. The application's events stay in the persistence
module named by ``OBJSTORE_EVENTS_MODULE`` (SQLite, Postgres...). Install with
``pip install "objstore[eventsourcing]"``; the README's "eventsourcing" section shows the
configuration for a whole application and for one projection.
"""

from __future__ import annotations

from objstore.eventsourcing._factory import ENVIRONMENT, ObjstoreFactory
from objstore.eventsourcing._layout import EVENT_FORMAT
from objstore.eventsourcing._recorder import AsyncEventObjects, ObjstoreAggregateRecorder
from objstore.eventsourcing._view import ObjstoreTrackingRecorder, commit_due

Factory = ObjstoreFactory
"""The name the framework's own persistence modules give their factory."""

__all__ = [
    "ENVIRONMENT",
    "EVENT_FORMAT",
    "AsyncEventObjects",
    "Factory",
    "ObjstoreAggregateRecorder",
    "ObjstoreFactory",
    "ObjstoreTrackingRecorder",
    "commit_due",
]
