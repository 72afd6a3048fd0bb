"""The pieces ``objstore demo`` is made of: the event stream, the crash plan, the word-count
processor, the location check, and the :class:`DemoStep` records it reports (with their
terminal rendering). Only public names of objstore are used, plus the public fault injector of
:mod:`objstore.testing`, through which the demo crashes itself.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from objstore.backends import open_backend
from objstore.checkpoint import (
    CHECKPOINTS,
    LATEST,
    CheckpointManifest,
    CheckpointStore,
    Pointer,
    RecoveryReport,
    checkpoint_dir,
)
from objstore.codec import canonical_json
from objstore.testing import FaultInjectingTransport, SimulatedCrash

__all__ = [
    "CRASH_KINDS",
    "MARKER",
    "SOURCE",
    "VOCABULARY",
    "CrashPlan",
    "DemoError",
    "DemoStep",
    "Reporter",
    "WordCounts",
    "format_step",
    "generate_events",
    "plan_crash",
    "pointer_name",
    "prepare_location",
    "run_processor",
]

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
    the restarted run at least one checkpoint of its own to write.

    Raises:
        DemoError: if the interval is below 1, the stream spans fewer than two checkpoints, or the
            crash kind is unknown.
    """
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
    Returns the ids committed.

    Raises:
        SimulatedCrash: where a crash was planned.
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


def prepare_location(url: str, options: dict[str, Any], report: Reporter) -> None:
    """Refuse a location holding someone else's checkpoints; clear an earlier demo run's.

    Raises:
        DemoError: if the location holds checkpoints without the demo's marker (someone else's).
    """
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


def pointer_name(pointer: Pointer) -> str | None:
    """The checkpoint ``pointer`` (``latest.txt`` as read by
    :func:`~objstore.checkpoint.read_pointer`, whatever its format) names, as
    ``checkpoint_{id:020d}``; its raw text if it names none, ``None`` if missing."""
    if pointer.checkpoint_id is None:
        return pointer.text
    return checkpoint_dir(pointer.checkpoint_id).rsplit("/", 1)[1]


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
