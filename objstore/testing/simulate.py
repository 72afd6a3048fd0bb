"""A deterministic interleaving simulator for objstore's stores.

Several actors — checkpoint writers of different epochs, a janitor (``prune``,
``cleanup_orphans``, pointer repair), readers, sink committers, bit rot; KV writers,
compactors and pruners; source committers; snapshot savers; projection advancers — run as
asyncio tasks against the real async store classes over **one** simulated transport in which
every request is a scheduling point. A seeded :class:`random.Random` decides, request by
request, which parked request proceeds and its fate: performed, slow (the store's clock jumps),
failed transiently (the retry layer retries; its budget is small, so some calls exhaust it),
performed with its response lost, failed with an untranslated ``OSError`` (disk full), or the
actor crashes before or after it (its task is cancelled; it may restart as a new store object,
with the same or a newer epoch). Each actor has its own clock skew; the store's clock (object
mtimes) is the simulation's. Retries sleep no real time; nonces, uuids and ``time.time`` are
drawn from the seed while a run lasts, so **a seed is a history**.

After every step that wrote, and after every call that returned, the scenario checks the
stores' promises over the history (see each scenario's module docstring for the list). A
failure prints the seed, the broken promise, a shrunk schedule and the command that replays it.

Command line::

    python -m objstore.testing.simulate --seeds 2000 --store checkpoint
    python -m objstore.testing.simulate --store kv --seed 17 --actors kw1,kc \
        --replay 'kw1 kc:crash-after kw1'

Programmatic use (e.g. in a pytest test)::

    from objstore.testing.simulate import SCENARIOS, explore
    failures = explore(SCENARIOS["kv"], range(500))
    assert not failures, failures[0].report()

Your own code: subclass :class:`Scenario` — ``actors(rng)`` returns :class:`ActorSpec` s whose
programs take an :class:`ActorContext` (``ctx.backend()`` gives a backend over the simulated
transport; wrap each store call in ``await ctx.call(label, fn)`` to put it in the history;
``ctx.think(seconds)`` pauses), and ``check_step``/``check_call``/``check_end`` raise
:class:`Violation`. :func:`run` and :func:`explore` do the rest; ``World.raw`` reads the store
without scheduling, for the checks.

``objstore/testing/README.md`` lists the promises each scenario checks and the seed that
finds each violation of issue 10 on the unfixed code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from objstore.testing._sim import (
    FATES,
    ActorContext,
    ActorSpec,
    CallRecord,
    CheckpointScenario,
    Decision,
    FaultRates,
    KVScenario,
    ProjectionScenario,
    RunResult,
    Scenario,
    SimulatedTransport,
    SnapshotScenario,
    SourceScenario,
    Violation,
    World,
    format_schedule,
    parse_schedule,
    run,
)

__all__ = [
    "FATES",
    "SCENARIOS",
    "ActorContext",
    "ActorSpec",
    "CallRecord",
    "CheckpointScenario",
    "Decision",
    "Failure",
    "FaultRates",
    "KVScenario",
    "ProjectionScenario",
    "RunResult",
    "Scenario",
    "SimulatedTransport",
    "SnapshotScenario",
    "SourceScenario",
    "Violation",
    "World",
    "explore",
    "format_schedule",
    "main",
    "parse_schedule",
    "run",
    "shrink",
]

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        CheckpointScenario(),
        KVScenario(),
        SourceScenario(),
        SnapshotScenario(),
        ProjectionScenario(),
    )
}
"""The built-in scenarios, by ``--store`` name."""


@dataclass(slots=True)
class Failure:
    """A run that broke a promise, and its shrunk replay."""

    original: RunResult
    shrunk: RunResult

    def report(self) -> str:
        """What broke, the seed, and the command that replays the shrunk schedule."""
        violation = self.shrunk.violation or self.original.violation
        lines = [
            f"store {self.original.scenario}, seed {self.original.seed}: {violation}",
            f"  shrunk from {len(self.original.decisions)} steps and actors "
            f"{','.join(self.original.actors)} to {len(self.shrunk.decisions)} steps and actors "
            f"{','.join(self.shrunk.actors)}",
            f"  replay: {self.shrunk.replay_command()}",
        ]
        return "\n".join(lines)


def _same_failure(result: RunResult, promise: str) -> bool:
    return result.violation is not None and result.violation.promise == promise


def shrink(scenario: Scenario, result: RunResult, *, budget: int = 150) -> RunResult:
    """A smaller run that breaks the same promise: fewer actors, then fewer decisions, then
    fewer faults (each step kept only while the failure persists; at most ``budget`` runs).

    Decisions not in the shrunk list are taken from the seed, so the shrunk schedule replays
    exactly with ``run(scenario, seed, actors=..., decisions=...)``.
    """
    if result.violation is None:
        return result
    promise = result.violation.promise
    best = result
    loop = asyncio.new_event_loop()
    runs = 0

    def attempt(actors: Sequence[str], decisions: Sequence[Decision]) -> RunResult | None:
        nonlocal runs
        runs += 1
        candidate = run(
            scenario,
            result.seed,
            actors=actors,
            decisions=decisions,
            loop=loop,
            ignore=result.ignore,
        )
        return candidate if _same_failure(candidate, promise) else None

    try:
        for actor in list(best.actors):
            if runs >= budget or len(best.actors) <= 1:
                break
            actors = [a for a in best.actors if a != actor]
            found = attempt(actors, [d for d in best.decisions if d.actor != actor])
            if found is not None:
                best = found
        chunk = max(1, len(best.decisions) // 2)
        while chunk >= 1 and runs < budget:
            start, changed = 0, False
            while start < len(best.decisions) and runs < budget:
                trial = best.decisions[:start] + best.decisions[start + chunk :]
                found = attempt(best.actors, trial)
                if found is not None and len(found.decisions) <= len(best.decisions):
                    best, changed = found, True
                else:
                    start += chunk
            if not changed:
                chunk //= 2
        for index, decision in enumerate(list(best.decisions)):
            if runs >= budget:
                break
            if decision.fate == "ok" or index >= len(best.decisions):
                continue
            trial = list(best.decisions)
            trial[index] = Decision(decision.actor, "ok", decision.index)
            found = attempt(best.actors, trial)
            if found is not None and len(found.decisions) <= len(best.decisions):
                best = found
    finally:
        loop.close()
    return best


def explore(
    scenario: Scenario,
    seeds: Iterable[int],
    *,
    stop_after: int | None = None,
    shrink_failures: bool = True,
    ignore: frozenset[str] = frozenset(),
) -> list[Failure]:
    """Run ``scenario`` for every seed; return the failures (shrunk), at most ``stop_after``.

    ``ignore`` names promises whose violations are not reported (to look past a known bug).
    """
    failures: list[Failure] = []
    loop = asyncio.new_event_loop()
    try:
        for seed in seeds:
            result = run(scenario, seed, loop=loop, ignore=ignore)
            if result.violation is None:
                continue
            shrunk = shrink(scenario, result) if shrink_failures else result
            failures.append(Failure(result, shrunk))
            if stop_after is not None and len(failures) >= stop_after:
                break
    finally:
        loop.close()
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: explore seeds, or replay one schedule. Exit 1 on a violation."""
    parser = argparse.ArgumentParser(
        prog="python -m objstore.testing.simulate",
        description="Explore interleavings of objstore's stores and check their promises.",
    )
    parser.add_argument("--store", choices=sorted(SCENARIOS), default="checkpoint")
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to explore")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed explored")
    parser.add_argument("--seed", type=int, help="run (or replay) this one seed")
    parser.add_argument("--actors", help="comma-separated actors to keep (with --seed)")
    parser.add_argument("--replay", help="schedule printed by a failure (with --seed)")
    parser.add_argument("--trace", action="store_true", help="print the history of --seed")
    parser.add_argument(
        "--ignore", default="", help="comma-separated promises not to report (e.g. P2-told-older)"
    )
    parser.add_argument("--only", help="report only this promise (e.g. P3)")
    parser.add_argument("--max-failures", type=int, default=1, help="stop after this many")
    parser.add_argument("--no-shrink", action="store_true", help="report failures unshrunk")
    args = parser.parse_args(argv)
    # Stores log their expected troubles at WARNING; a run provokes thousands of them.
    logging.getLogger("objstore").addHandler(logging.NullHandler())
    scenario = SCENARIOS[args.store]
    ignore = frozenset(filter(None, args.ignore.split(",")))
    if args.only:
        if args.only not in scenario.promises:
            parser.error(f"--only: {args.store} checks {', '.join(sorted(scenario.promises))}")
        ignore |= scenario.promises - {args.only}
    if args.seed is not None:
        actors = args.actors.split(",") if args.actors else None
        decisions = parse_schedule(args.replay) if args.replay else []
        result = run(scenario, args.seed, actors=actors, decisions=decisions, ignore=ignore)
        if args.trace or args.replay:
            print("\n".join(result.trace))
            print("\ncalls:")
            print("\n".join("  " + call.describe() for call in result.calls))
        if result.violation is not None:
            print(f"\nstore {args.store}, seed {args.seed}: {result.violation}")
            print(f"  replay: {result.replay_command()}")
            return 1
        print(f"store {args.store}, seed {args.seed}: {result.steps} steps, no violation")
        return 0
    started = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    failures = explore(
        scenario,
        seeds,
        stop_after=args.max_failures,
        shrink_failures=not args.no_shrink,
        ignore=ignore,
    )
    elapsed = time.perf_counter() - started
    for failure in failures:
        print(failure.report())
    if failures:
        return 1
    print(f"store {args.store}: {args.seeds} seeds, no violation ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
