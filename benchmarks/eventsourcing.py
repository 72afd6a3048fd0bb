"""Per-operation latency of objstore.eventsourcing next to the framework's SQLite module.

    python -m benchmarks.eventsourcing [--reps 200] [--snapshots 500]

On the same machine, in the same run, each operation is timed ``--reps`` times on
``eventsourcing.sqlite`` (a database file in a temporary directory), objstore on a local
directory, and objstore on S3 (a ``python -m moto.server`` in its own process on 127.0.0.1):

- snapshot save: ``insert_events([one snapshot])`` of the snapshots recorder;
- latest-snapshot load: ``select_events(id, desc=True, limit=1, lte=v)`` with ``--snapshots``
  snapshots of that originator present (``v`` drawn at random);
- tracking commit: ``insert_tracking`` of a tracking recorder that commits every event
  (``OBJSTORE_COMMIT_EVERY=1``; SQLite's tracking recorder always commits).

Prints a Markdown table of median and p90 in milliseconds, and the request counts per
operation on objstore. Both sides are built by their infrastructure factories from the
environment, as an application would build them.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import InfrastructureFactory, StoredEvent, Tracking

from benchmarks._moto import moto_server, new_bucket
from objstore.backends import RequestEvent


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _time(action: Callable[[int], object], reps: int) -> list[float]:
    seconds = []
    for rep in range(reps):
        start = time.perf_counter()
        action(rep)
        seconds.append(time.perf_counter() - start)
    return seconds


def _snapshot(originator: Any, version: int) -> StoredEvent:
    return StoredEvent(
        originator_id=originator, originator_version=version, topic="bench:Snap", state=b"x" * 200
    )


def measure(env: dict[str, str], reps: int, snapshots: int) -> dict[str, list[float]]:
    """Time the three operations on the recorders the factory of ``env`` builds."""
    factory = InfrastructureFactory.construct(env)
    recorder = factory.aggregate_recorder("snapshots")
    tracking = factory.tracking_recorder()
    originator = uuid4()
    recorder.insert_events([_snapshot(originator, 0)])  # warm up (connections, probe)
    tracking.insert_tracking(Tracking("app", 1))

    saves = _time(lambda rep: recorder.insert_events([_snapshot(uuid4(), 1)]), reps)
    recorder.insert_events([_snapshot(originator, v) for v in range(1, snapshots + 1)])
    loads = _time(
        lambda rep: recorder.select_events(
            originator, desc=True, limit=1, lte=random.randint(1, snapshots)
        ),
        reps,
    )
    commits = _time(lambda rep: tracking.insert_tracking(Tracking("app", rep + 2)), reps)
    factory.close()
    return {"snapshot save": saves, "latest-snapshot load": loads, "tracking commit": commits}


def request_counts(env: dict[str, str], hook_target: list[RequestEvent]) -> dict[str, str]:
    """Requests per operation on objstore, after warm-up, from a request hook."""
    from objstore.backends import open_backend
    from objstore.checkpoint import CheckpointStore
    from objstore.eventsourcing import ObjstoreAggregateRecorder, ObjstoreTrackingRecorder
    from objstore.eventsourcing._layout import view_root

    url = env["OBJSTORE_URL"]
    recorder = ObjstoreAggregateRecorder(open_backend(url, request_hook=hook_target.append))
    view = ObjstoreTrackingRecorder(
        CheckpointStore(view_root(url, "counts"), request_hook=hook_target.append),
        commit_every=1,
        commit_interval=None,
    )
    originator = uuid4()
    recorder.insert_events([_snapshot(originator, 1)])
    view.insert_tracking(Tracking("app", 1))
    counts = {}
    for name, action in (
        ("snapshot save", lambda: recorder.insert_events([_snapshot(originator, 2)])),
        (
            "latest-snapshot load",
            lambda: recorder.select_events(originator, desc=True, limit=1, lte=2),
        ),
        ("tracking commit", lambda: view.insert_tracking(Tracking("app", 2))),
    ):
        hook_target.clear()
        action()
        counted = Counter(event.operation for event in hook_target)
        counts[name] = ", ".join(f"{n} {op}" for op, n in sorted(counted.items()))
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eventsourcing", description=__doc__)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--snapshots", type=int, default=500)
    args = parser.parse_args(argv)
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(Path(tmp) / "bench.db"),
        }
        file_env = {
            "PERSISTENCE_MODULE": "objstore.eventsourcing",
            "OBJSTORE_URL": tmp + "/store",
            "OBJSTORE_COMMIT_EVERY": "1",
        }
        results = {
            "eventsourcing.sqlite (file)": measure(sqlite_env, args.reps, args.snapshots),
            "objstore (local dir)": measure(file_env, args.reps, args.snapshots),
        }
        with moto_server():
            s3_env = {
                "PERSISTENCE_MODULE": "objstore.eventsourcing",
                "OBJSTORE_URL": f"s3://{new_bucket()}/app",
                "OBJSTORE_COMMIT_EVERY": "1",
            }
            results["objstore (moto S3)"] = measure(s3_env, args.reps, args.snapshots)
            counts = request_counts({**s3_env, "OBJSTORE_URL": f"s3://{new_bucket()}/counts"}, [])
    operations = list(next(iter(results.values())))
    print(f"{args.reps} repetitions each; {args.snapshots} snapshots present for the loads.\n")
    print("| operation | " + " | ".join(results) + " | objstore requests |")
    print("|---|" + "---:|" * len(results) + "---|")
    for operation in operations:
        cells = []
        for samples in results.values():
            seconds = samples[operation]
            median = statistics.median(seconds) * 1e3
            cells.append(f"{median:.2f} ms (p90 {_percentile(seconds, 0.9) * 1e3:.2f})")
        print(f"| {operation} | " + " | ".join(cells) + f" | {counts[operation]} |")


if __name__ == "__main__":
    main()
