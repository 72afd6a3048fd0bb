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
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from objstore.backends import AsyncBackend, MemoryTransport, open_transport
from objstore.checkpoint import CheckpointManifest, CheckpointStore, RecoveryReport, read_pointer
from objstore.cli.demo._server import moto_s3
from objstore.cli.demo._steps import (
    SOURCE,
    CrashPlan,
    DemoError,
    DemoStep,
    Reporter,
    WordCounts,
    generate_events,
    plan_crash,
    pointer_name,
    prepare_location,
    run_processor,
)
from objstore.errors import CheckpointConflict
from objstore.testing import FaultInjectingTransport, SimulatedCrash

__all__ = ["DEFAULT_S3_URL", "DEFAULT_URL", "DemoResult", "run_demo", "run_demo_command"]

DEFAULT_URL = "./objstore-demo"
DEFAULT_S3_URL = "s3://objstore-demo/demo"


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

    Storage errors propagate. The exactly-once verdict is :attr:`DemoResult.exactly_once`.

    Raises:
        DemoError: for bad arguments or a location holding foreign checkpoints.
        RuntimeError: if the planned crash did not happen (the demo could not prove anything).
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

    prepare_location(url, options, report)
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
        pointer = read_pointer(second)
        result.pointer_after_crash = pointer_name(pointer)
        recovered = second.recover_latest_validated()
        state = WordCounts.restore(second, recovered)
        result.recovered_id = recovered.chosen_id
        result.recovered_offset = state.offset
        result.skipped = list(recovered.skipped)
        _report_recovery(report, result, recovered, pointer.checkpoint_id)
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

        result.orphans_deleted = len(second.cleanup_orphans().deleted)
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


def _report_recovery(
    report: Reporter, result: DemoResult, recovered: RecoveryReport, named: int | None
) -> None:
    """Tell what the restart found: the checkpoint ``latest.txt`` named (``named``), what
    recovery chose, what it skipped and why."""
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
    """The crashed writer wakes up and tries to commit over the new run: it must lose.

    Raises:
        RuntimeError: if the zombie's commit succeeds (fencing is broken).
    """
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
    options = dict(storage_options or {})
    with moto_s3(target) if s3 else contextlib.nullcontext() as server_options:
        if server_options is not None:
            endpoint = server_options["endpoint_url"]
            options.update(server_options)
            report(
                DemoStep("info", f"started a moto S3 server at {endpoint}", {"endpoint": endpoint})
            )
        return run_demo(
            target,
            events=events,
            interval=interval,
            seed=seed,
            crash=crash,
            storage_options=options,
            report=report,
        )
