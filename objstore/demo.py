"""``objstore demo``: a stream processor that crashes, recovers and proves exactly-once state.

The processor counts words in a generated, replayable event stream. Every ``interval``
events it commits its counts and its source offset together with
:meth:`~objstore.CheckpointStore.save_with_state`. Its first run goes through a
:class:`~objstore.testing.FaultInjectingTransport` that kills it at a chosen point — between
two events, or right after one of the three writes of a checkpoint landed — so the crash
falls between two real writes. A fresh store object on the same URL then recovers with
:meth:`~objstore.CheckpointStore.recover_latest_validated`, replays the stream from the
recovered offset and finishes. The final counts must equal those of an uninterrupted run of
the same processor: every event counted exactly once, although some were processed twice.

Then the crashed writer comes back as a zombie and tries to commit over the new run (it is
fenced), and orphans the crash left are garbage-collected. Everything is reported step by
step through a callback, so the CLI prints it and tests assert on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from objstore.backends import AsyncBackend, Backend, MemoryTransport, open_backend, open_transport
from objstore.checkpoint import CheckpointManifest, CheckpointStore, RecoveryReport
from objstore.checkpoint._layout import CHECKPOINTS, LATEST, checkpoint_dir, parse_pointer
from objstore.codec import canonical_json
from objstore.errors import CheckpointConflict, NotFoundError
from objstore.testing import FaultInjectingTransport, SimulatedCrash

__all__ = [
    "CRASH_KINDS",
    "DEFAULT_URL",
    "CrashPlan",
    "DemoError",
    "DemoResult",
    "DemoStep",
    "format_step",
    "generate_events",
    "moto_s3",
    "plan_crash",
    "run_demo",
    "run_demo_command",
]

DEFAULT_URL = "./objstore-demo"
DEFAULT_S3_URL = "s3://objstore-demo/demo"
SOURCE = "words"
"""The one source partition; its offset is the number of events consumed."""
MARKER = "objstore-demo.txt"
"""Written at the store root, so a later demo run may clear what an earlier one left."""
VOCABULARY = (
    "apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel",
    "kiwi", "lemon", "mango", "nectarine", "olive", "peach", "quince", "rowan",
)  # fmt: skip
CRASH_KINDS = ("mid-batch", "after-state", "after-manifest", "after-pointer")
"""Where the first run dies: between two events; after ``state.bin`` landed (an orphan);
after ``manifest.json`` landed (committed, pointer lagging); after ``latest.txt`` moved."""

Reporter = Callable[["DemoStep"], None]


class DemoError(ValueError):
    """The demo cannot run as asked (bad arguments, a location holding other data, no moto)."""


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One thing that happened, for the user: ``kind`` (``info``, ``checkpoint``, ``crash``,
    ``recover``, ``fence``, ``gc``, ``result``), a sentence, and the facts behind it."""

    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form (for ``--json``)."""
        return {"kind": self.kind, "message": self.message, **self.data}


@dataclass(frozen=True, slots=True)
class CrashPlan:
    """Where the first run dies: ``kind`` (one of :data:`CRASH_KINDS`) during its
    ``checkpoint``-th save, or, for ``mid-batch``, just before consuming ``event_offset``."""

    kind: str
    checkpoint: int
    event_offset: int | None = None

    def describe(self) -> str:
        """A sentence saying where the crash lands."""
        if self.kind == "mid-batch":
            return (
                f"between two events: just before event {self.event_offset}, after "
                f"checkpoint #{self.checkpoint} and before the next one"
            )
        where = {
            "after-state": "after its state.bin landed, before its manifest (the commit)",
            "after-manifest": "after its manifest landed (committed), before latest.txt moved",
            "after-pointer": "right after latest.txt moved to it (fully committed)",
        }[self.kind]
        return f"during checkpoint #{self.checkpoint}: {where}"

    def arm(self, faults: FaultInjectingTransport) -> None:
        """Install the crash on ``faults`` (``mid-batch`` crashes in the processor instead)."""
        nth = self.checkpoint
        if self.kind == "after-state":
            faults.crash_after("put_if_absent", nth, key_contains="state.bin")
        elif self.kind == "after-manifest":
            faults.crash_after("put_if_absent", nth, key_contains="manifest.json")
        elif self.kind == "after-pointer":
            # The first save creates latest.txt; every later one compare-and-swaps it.
            if nth == 1:
                faults.crash_after("put_if_absent", 1, key_contains=LATEST)
            else:
                faults.crash_after("put_if_match", nth - 1, key_contains=LATEST)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "checkpoint": self.checkpoint,
            "event_offset": self.event_offset,
            "description": self.describe(),
        }


def generate_events(seed: int, count: int) -> list[str]:
    """The stream: ``count`` words drawn from :data:`VOCABULARY`, the same for the same seed,
    so any offset can be replayed."""
    rng = random.Random(f"objstore-demo-events:{seed}")
    return [rng.choice(VOCABULARY) for _ in range(count)]


def plan_crash(seed: int, events: int, interval: int, kind: str | None = None) -> CrashPlan:
    """Choose a crash point from ``seed``: a kind (unless given) and a checkpoint that leaves
    the restarted run at least one checkpoint of its own to write."""
    if interval < 1:
        raise DemoError("the checkpoint interval must be at least 1")
    checkpoints = math.ceil(events / interval)
    if checkpoints < 2:
        raise DemoError("the stream must span at least two checkpoints: use more events")
    rng = random.Random(f"objstore-demo-crash:{seed}")
    chosen = kind if kind is not None else rng.choice(CRASH_KINDS)
    if chosen not in CRASH_KINDS:
        raise DemoError(f"unknown crash kind {chosen!r}; choose one of {', '.join(CRASH_KINDS)}")
    number = rng.randint(1, checkpoints - 1)
    if chosen == "mid-batch":
        offset = min(number * interval + rng.randrange(interval), events - 1)
        return CrashPlan(chosen, number, offset)
    return CrashPlan(chosen, number)


@dataclass(slots=True)
class WordCounts:
    """The processor's state: counts per word and how far into the stream it is."""

    counts: Counter[str] = field(default_factory=Counter)
    offset: int = 0

    def chunks(self) -> dict[str, bytes]:
        """The state as named operator chunks for ``save_with_state``."""
        totals = {"events": sum(self.counts.values()), "distinct": len(self.counts)}
        return {"word_counts": canonical_json(dict(self.counts)), "totals": canonical_json(totals)}

    @classmethod
    def restore(cls, store: CheckpointStore, report: RecoveryReport) -> WordCounts:
        """The state recovered from ``report``'s checkpoint (empty for a fresh start)."""
        if report.manifest is None:
            return cls()
        data = store.load_operator_state(report.manifest.checkpoint_id, "word_counts")
        counts = Counter({str(word): int(n) for word, n in json.loads(data).items()})
        return cls(counts, int(report.manifest.source_offsets[SOURCE]))


def run_processor(
    store: CheckpointStore,
    events: list[str],
    state: WordCounts,
    *,
    epoch: int,
    interval: int,
    report: Reporter,
    crash_before_offset: int | None = None,
) -> list[int]:
    """Consume ``events`` from ``state.offset`` to the end, committing counts and offset
    every ``interval`` events (at offsets that are multiples of it) and at the end.

    ``state`` is updated in place, so a caller still sees how far a crashed run got.
    Returns the ids committed. Raises :class:`SimulatedCrash` where a crash was planned.
    """
    committed: list[int] = []
    next_id = store.next_checkpoint_id()
    while state.offset < len(events):
        stop = min(len(events), (state.offset // interval + 1) * interval)
        while state.offset < stop:
            if state.offset == crash_before_offset:
                raise SimulatedCrash(f"crash before consuming event {state.offset}")
            state.counts[events[state.offset]] += 1
            state.offset += 1
        manifest = CheckpointManifest(
            checkpoint_id=next_id,
            epoch=epoch,
            source_offsets={SOURCE: state.offset},
            metadata={"demo": "word-count"},
        )
        stored = store.save_with_state(manifest, state.chunks())
        committed.append(next_id)
        report(
            DemoStep(
                "checkpoint",
                f"checkpoint {next_id} committed: offset {state.offset}, epoch {epoch}, "
                f"state {stored.state_size} bytes",
                {"checkpoint_id": next_id, "offset": state.offset, "epoch": epoch},
            )
        )
        next_id += 1
    return committed


@dataclass(slots=True)
class DemoResult:
    """What the demo did and whether the exactly-once claim held."""

    url: str
    events: int
    interval: int
    seed: int
    crash: CrashPlan
    crashed_at_offset: int = 0
    recovered_id: int | None = None
    recovered_offset: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    pointer_after_crash: str | None = None
    first_run: list[int] = field(default_factory=list)
    second_run: list[int] = field(default_factory=list)
    zombie_error: str | None = None
    orphans_deleted: int = 0
    final_id: int | None = None
    final_offset: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    reference_counts: dict[str, int] = field(default_factory=dict)

    @property
    def replayed(self) -> int:
        """Events the first run consumed after its last surviving checkpoint: processed
        twice, counted once."""
        return self.crashed_at_offset - self.recovered_offset

    @property
    def exactly_once(self) -> bool:
        """The final state equals the uninterrupted run's, and the whole stream was consumed."""
        return (
            self.counts == self.reference_counts
            and self.final_offset == self.events
            and sum(self.counts.values()) == self.events
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form (for ``--json``)."""
        return {
            "url": self.url,
            "events": self.events,
            "interval": self.interval,
            "seed": self.seed,
            "crash": {**self.crash.to_json(), "crashed_at_offset": self.crashed_at_offset},
            "recovered_id": self.recovered_id,
            "recovered_offset": self.recovered_offset,
            "skipped": [{"id": cid, "reason": reason} for cid, reason in self.skipped],
            "pointer_after_crash": self.pointer_after_crash,
            "replayed_events": self.replayed,
            "first_run": self.first_run,
            "second_run": self.second_run,
            "zombie_error": self.zombie_error,
            "orphans_deleted": self.orphans_deleted,
            "final_id": self.final_id,
            "final_offset": self.final_offset,
            "counts": self.counts,
            "reference_counts": self.reference_counts,
            "exactly_once": self.exactly_once,
        }


def _prepare_location(url: str, options: dict[str, Any], report: Reporter) -> None:
    """Refuse a location holding someone else's checkpoints; clear an earlier demo run's."""
    backend = open_backend(url, **options)
    try:
        listing = backend.list(CHECKPOINTS)
        if listing and not backend.exists(MARKER):
            raise DemoError(
                f"{backend.url} already holds checkpoints the demo did not write; "
                "give the demo an empty location"
            )
        if listing:
            backend.delete_many([info.key for info in listing])
            report(
                DemoStep(
                    "info",
                    f"cleared the previous demo run ({len(listing)} objects)",
                    {"cleared": len(listing)},
                )
            )
        backend.put(MARKER, b"written by `objstore demo`; safe to delete\n")
    finally:
        backend.close()


def _read_latest(store: CheckpointStore) -> str | None:
    """The checkpoint ``latest.txt`` of ``store`` names, as ``checkpoint_{id:020d}`` whatever
    the pointer's format (its raw text if it names none), ``None`` if missing."""
    try:
        data, _ = Backend(store.async_store.backend).get(LATEST)
    except NotFoundError:
        return None
    record = parse_pointer(data)
    if record is None or record.checkpoint_id is None:
        return data.decode("ascii", "replace")
    return checkpoint_dir(record.checkpoint_id).rsplit("/", 1)[1]


def run_demo(
    url: str = DEFAULT_URL,
    *,
    events: int = 1000,
    interval: int = 100,
    seed: int | None = None,
    crash: str | None = None,
    storage_options: dict[str, Any] | None = None,
    report: Reporter = lambda step: None,
) -> DemoResult:
    """Run the whole demo against ``url`` and return what happened.

    Raises :class:`DemoError` for bad arguments or a location holding foreign checkpoints;
    storage errors propagate. The exactly-once verdict is :attr:`DemoResult.exactly_once`.
    """
    options = dict(storage_options or {})
    if events < 2:
        raise DemoError("the stream needs at least two events")
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    plan = plan_crash(seed, events, interval, crash)
    stream = generate_events(seed, events)
    result = DemoResult(url, events, interval, seed, plan)
    report(
        DemoStep(
            "info",
            f"word count over {events} generated events, a checkpoint every {interval} "
            f"(seed {seed}; rerun with --seed {seed} --crash {plan.kind} to reproduce)",
            {"events": events, "interval": interval, "seed": seed},
        )
    )

    # The reference: the same processor, never interrupted, on a throw-away memory store.
    reference_name = f"objstore-demo-reference-{uuid.uuid4().hex}"
    reference_store = CheckpointStore(f"memory://{reference_name}")
    reference = WordCounts()
    try:
        run_processor(
            reference_store, stream, reference, epoch=1, interval=interval, report=lambda _: None
        )
    finally:
        reference_store.close()
        MemoryTransport.discard(reference_name)
    result.reference_counts = dict(sorted(reference.counts.items()))
    report(
        DemoStep(
            "info",
            f"reference: an uninterrupted run counts {sum(reference.counts.values())} words, "
            f"{len(reference.counts)} distinct",
        )
    )

    _prepare_location(url, options, report)
    faults = FaultInjectingTransport(open_transport(url, **options), seed=seed)
    first = CheckpointStore(AsyncBackend(faults))
    second: CheckpointStore | None = None
    try:
        result.url = first.url
        report(DemoStep("info", f"run 1 (epoch 1) on {first.url}; it will crash {plan.describe()}"))
        plan.arm(faults)
        state = WordCounts()

        def first_run_step(step: DemoStep) -> None:
            result.first_run.append(step.data["checkpoint_id"])
            report(step)

        try:
            run_processor(
                first,
                stream,
                state,
                epoch=1,
                interval=interval,
                report=first_run_step,
                crash_before_offset=plan.event_offset,
            )
        except SimulatedCrash as exc:
            result.crashed_at_offset = state.offset
            report(
                DemoStep(
                    "crash",
                    f"CRASH ({exc}) at offset {state.offset}: the process is gone, with its "
                    "in-memory counts",
                    {"offset": state.offset},
                )
            )
        else:
            raise RuntimeError("the planned crash did not happen; the demo cannot prove anything")

        second = CheckpointStore(url, storage_options=options)
        result.pointer_after_crash = _read_latest(second)
        recovered = second.recover_latest_validated()
        state = WordCounts.restore(second, recovered)
        result.recovered_id = recovered.chosen_id
        result.recovered_offset = state.offset
        result.skipped = list(recovered.skipped)
        _report_recovery(report, result, recovered)
        epochs = [epoch for _, epoch in second.list()]
        epoch = max(epochs, default=1) + 1
        report(
            DemoStep(
                "info",
                f"run 2 (epoch {epoch}) resumes at offset {state.offset}: "
                f"{result.replayed} events are replayed",
                {"epoch": epoch, "offset": state.offset, "replayed": result.replayed},
            )
        )
        result.second_run = run_processor(
            second, stream, state, epoch=epoch, interval=interval, report=report
        )

        _zombie(first, result, report)

        result.orphans_deleted = second.cleanup_orphans()
        if result.orphans_deleted:
            report(
                DemoStep(
                    "gc",
                    f"gc deleted {result.orphans_deleted} orphaned checkpoint(s) the crash left",
                    {"deleted": result.orphans_deleted},
                )
            )

        final = second.recover_latest_validated()
        final_state = WordCounts.restore(second, final)
        result.final_id = final.chosen_id
        result.final_offset = final_state.offset
        result.counts = dict(sorted(final_state.counts.items()))
    finally:
        first.close()
        if second is not None:
            second.close()
    if result.exactly_once:
        replay = (
            f"although {result.replayed} events were processed twice"
            if result.replayed
            else "with no event processed twice"
        )
        message = (
            f"exactly-once: checkpoint {result.final_id} (offset {result.final_offset}) holds "
            f"the same counts as the uninterrupted run, {replay}"
        )
    else:
        message = (
            f"MISMATCH: checkpoint {result.final_id} (offset {result.final_offset}) differs "
            "from the uninterrupted run"
        )
    report(DemoStep("result", message, {"exactly_once": result.exactly_once}))
    return result


def _report_recovery(report: Reporter, result: DemoResult, recovered: RecoveryReport) -> None:
    pointer = result.pointer_after_crash
    record = parse_pointer(pointer.encode()) if pointer else None
    named = record.checkpoint_id if record else None
    report(
        DemoStep(
            "recover",
            "restart: latest.txt "
            + (f"names checkpoint {named}" if named else "is missing")
            + "; recover_latest_validated → "
            + (
                f"checkpoint {recovered.chosen_id} at offset {result.recovered_offset}"
                if recovered.chosen_id is not None
                else "nothing valid (fresh start at offset 0)"
            ),
            {"checkpoint_id": recovered.chosen_id, "pointer": named},
        )
    )
    for checkpoint_id, reason in recovered.skipped:
        report(
            DemoStep(
                "recover",
                f"skipped checkpoint {checkpoint_id}: {reason}",
                {"checkpoint_id": checkpoint_id, "reason": reason},
            )
        )
    if named is not None and recovered.chosen_id is not None and named < recovered.chosen_id:
        report(
            DemoStep(
                "recover",
                f"latest.txt lagged (the crash came before it moved); checkpoint "
                f"{recovered.chosen_id} was found by listing",
            )
        )


def _zombie(first: CheckpointStore, result: DemoResult, report: Reporter) -> None:
    """The crashed writer wakes up and tries to commit over the new run: it must lose."""
    if not result.second_run:
        return
    target = result.second_run[0]
    stale = WordCounts(Counter({"zombie": 1}), result.crashed_at_offset)
    manifest = CheckpointManifest(
        checkpoint_id=target, epoch=1, source_offsets={SOURCE: stale.offset}
    )
    try:
        first.save_with_state(manifest, stale.chunks())
    except CheckpointConflict as exc:
        result.zombie_error = type(exc).__name__
        report(
            DemoStep(
                "fence",
                f"the epoch-1 writer came back and tried to commit checkpoint {target}: "
                f"{type(exc).__name__}, nothing of it was written",
                {"checkpoint_id": target, "error": type(exc).__name__},
            )
        )
        return
    raise RuntimeError(f"a zombie writer committed checkpoint {target}: fencing is broken")


@contextlib.contextmanager
def moto_s3(url: str) -> Iterator[str]:
    """Start a moto S3 server on 127.0.0.1, point the AWS environment at it, create the
    bucket of ``url``; restore the environment and stop the server afterwards.

    Raises :class:`DemoError` when moto is not installed.
    """
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise DemoError(
            "--s3 needs moto's server: pip install 'moto[server]' (or objstore[test])"
        ) from exc
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        raise DemoError(f"--s3 needs an s3://bucket/prefix URL, not {url!r}")
    werkzeug = logging.getLogger("werkzeug")
    werkzeug_level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # one line per request otherwise, over the demo's story
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    changes = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    removed = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3")
    saved = {name: os.environ.get(name) for name in (*changes, *removed)}
    try:
        for name in removed:
            os.environ.pop(name, None)
        os.environ.update(changes)
        client = boto3.client("s3", endpoint_url=endpoint)
        if parsed.netloc not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=parsed.netloc)
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
        werkzeug.setLevel(werkzeug_level)


def run_demo_command(
    url: str | None,
    *,
    s3: bool = False,
    events: int = 1000,
    interval: int = 100,
    seed: int | None = None,
    crash: str | None = None,
    storage_options: dict[str, Any] | None = None,
    report: Reporter = lambda step: None,
) -> DemoResult:
    """``objstore demo``: :func:`run_demo` on ``url`` (default ``./objstore-demo``), or with
    ``s3`` on a moto server started for the run (default ``s3://objstore-demo/demo``)."""
    target = url or (DEFAULT_S3_URL if s3 else DEFAULT_URL)
    with moto_s3(target) if s3 else contextlib.nullcontext() as endpoint:
        if endpoint is not None:
            report(
                DemoStep("info", f"started a moto S3 server at {endpoint}", {"endpoint": endpoint})
            )
        return run_demo(
            target,
            events=events,
            interval=interval,
            seed=seed,
            crash=crash,
            storage_options=storage_options,
            report=report,
        )


_STYLES = {
    "info": ("•", "cyan"),
    "checkpoint": ("  ✓", "green"),
    "crash": ("✗", "bold red"),
    "recover": ("↺", "yellow"),
    "fence": ("⛔", "magenta"),
    "gc": ("♻", "blue"),
}


def format_step(step: DemoStep) -> Text:
    """One step as a styled line for the terminal."""
    if step.kind == "result":
        ok = bool(step.data.get("exactly_once"))
        return Text(("✔ " if ok else "✘ ") + step.message, style="bold green" if ok else "bold red")
    mark, style = _STYLES.get(step.kind, ("•", ""))
    return Text.assemble((mark + " ", style), step.message)
