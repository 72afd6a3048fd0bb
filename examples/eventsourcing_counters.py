"""Snapshots and an exactly-once counters view on objstore, while the events stay in SQLite.

The application ``Sensors`` stores its events in SQLite (``OBJSTORE_EVENTS_MODULE``) and its
snapshots in objstore (``PERSISTENCE_MODULE=objstore.eventsourcing``); the projection
``counters`` keeps its view (event counts and the sum of the readings) on objstore too,
committed with its tracking position every ``--commit-every`` events.

    python examples/eventsourcing_counters.py write   --store DIR_OR_URL --db events.db
    python examples/eventsourcing_counters.py project --store DIR_OR_URL --db events.db

``write`` records new sensors and readings; ``project`` catches the view up with every event
recorded so far and prints it as JSON (exit status 3 and ``{"fenced": ...}`` when a newer
runner owns the view). Kill ``project`` at any moment and run it again: the view ends equal to
that of an uninterrupted run. ``tests/test_eventsourcing_e2e.py`` does exactly that.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import Environment

from objstore.errors import FencedError
from objstore.eventsourcing import ObjstoreTrackingRecorder


class Sensor(Aggregate):
    @event("Created")
    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0

    @event("Read")
    def read(self, value: int) -> None:
        self.total += value


class Sensors(Application[UUID]):
    snapshotting_intervals = {Sensor: 5}  # noqa: RUF012 - the framework's class attribute


class CountersView(ObjstoreTrackingRecorder):
    """Counts of created sensors and readings, and the sum of the readings."""

    def created(self, tracking: Tracking) -> None:
        self.update(tracking, lambda s: {"created": s.get("created", 0) + 1})

    def reading(self, tracking: Tracking, value: int) -> None:
        self.update(
            tracking,
            lambda s: {"readings": s.get("readings", 0) + 1, "sum": s.get("sum", 0) + value},
        )


class Counters(Projection[CountersView]):
    name = "counters"
    delay = 0.0
    """Seconds to spend on each event (to give a test time to kill the process)."""

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, domain_event: Sensor.Created, tracking: Tracking) -> None:
        time.sleep(self.delay)
        self.view.created(tracking)

    @process_event.register
    def _(self, domain_event: Sensor.Read, tracking: Tracking) -> None:
        time.sleep(self.delay)
        self.view.reading(tracking, domain_event.value)  # type: ignore[attr-defined]


def environment(args: argparse.Namespace) -> dict[str, str]:
    """Both ways of configuring at once: the application's variables are unprefixed (events
    in SQLite, snapshots on objstore); the projection's carry its name, ``COUNTERS_``."""
    env = {
        "PERSISTENCE_MODULE": "objstore.eventsourcing",
        "OBJSTORE_URL": args.store,
        "OBJSTORE_EVENTS_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": args.db,
        "IS_SNAPSHOTTING_ENABLED": "yes",
        "COUNTERS_PERSISTENCE_MODULE": "objstore.eventsourcing",
        "COUNTERS_OBJSTORE_URL": args.store,
        "COUNTERS_OBJSTORE_VIEW_NAME": args.view,
        "COUNTERS_OBJSTORE_COMMIT_EVERY": str(args.commit_every),
    }
    if args.epoch is not None:
        env["COUNTERS_OBJSTORE_EPOCH"] = str(args.epoch)
    return env


def write(args: argparse.Namespace) -> None:
    app = Sensors(environment(args))
    for number in range(args.sensors):
        sensor = Sensor(f"sensor-{number}")
        for value in range(args.readings):
            sensor.read(value * (number + 1))
            app.save(sensor)  # one notification per reading; a snapshot every 5 versions
    print(json.dumps({"notifications": app.recorder.max_notification_id()}))
    app.close()


def project(args: argparse.Namespace) -> int:
    """Catch the view up by polling the application's notification log.

    SQLite's recorder offers no subscriptions, so the framework's ``ProjectionRunner``
    cannot follow it; this loop does what the runner does (process each event with its
    ``Tracking``, resume after ``max_tracking_id``). With Postgres, use ``ProjectionRunner``
    with the same projection, view class and environment.
    """
    env = environment(args)
    app = Sensors(env)
    factory = InfrastructureFactory.construct(Environment(Counters.name, env))
    view = factory.tracking_recorder(CountersView)
    projection = Counters(view)
    projection.delay = args.delay
    started_from = position = view.max_tracking_id(app.name)
    try:
        while True:
            notifications = app.recorder.select_notifications(
                start=position, limit=100, inclusive_of_start=False
            )
            if not notifications:
                break
            for notification in notifications:
                domain_event = app.mapper.to_domain_event(notification)
                projection.process_event(domain_event, Tracking(app.name, notification.id))
                position = notification.id
        view.flush()
    except FencedError as fenced:
        print(json.dumps({"fenced": str(fenced), "winner_epoch": fenced.winner_epoch}))
        return 3
    finally:
        app.close()
    print(
        json.dumps(
            {
                "view": dict(view.state),
                "position": view.max_tracking_id(app.name),
                "started_from": started_from,
                "epoch": view.epoch,
            }
        )
    )
    view.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["write", "project"])
    parser.add_argument("--store", required=True, help="objstore URL or directory")
    parser.add_argument("--db", required=True, help="SQLite file holding the events")
    parser.add_argument("--view", default="counters", help="name of the view's store")
    parser.add_argument("--sensors", type=int, default=10)
    parser.add_argument("--readings", type=int, default=9)
    parser.add_argument("--commit-every", type=int, default=20)
    parser.add_argument("--epoch", type=int, default=None)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per event")
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args)
        return 0
    return project(args)


if __name__ == "__main__":
    # The framework names event classes by module ("eventsourcing_counters:Sensor.Read"), so
    # run this file as its importable module, never as __main__: events written by one process
    # must resolve to the same classes in another (the script's folder is on sys.path).
    from eventsourcing_counters import main as module_main

    sys.exit(module_main())
