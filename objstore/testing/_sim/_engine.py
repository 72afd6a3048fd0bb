"""The scheduler: runs actors over one simulated transport, one request at a time.

A run is a pure function of ``(scenario, seed, actors, decisions)``: the seed fixes every
random choice (which parked request proceeds, its fate, the clock's steps, each actor's own
choices, nonces and uuids), and a list of :class:`Decision` replaces the seeded choices of
the first steps, which is how a failing run is replayed and shrunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from objstore.backends import AsyncBackend, MemoryTransport, RetryPolicy, Transport
from objstore.errors import TransientStorageError
from objstore.testing._faults import SimulatedCrash
from objstore.testing._sim._world import (
    CURRENT_ACTOR,
    CURRENT_LABEL,
    FATES,
    Request,
    SimulatedTransport,
    WriteEvent,
    disk_full,
)

__all__ = [
    "ActorContext",
    "ActorSpec",
    "CallRecord",
    "Decision",
    "FaultRates",
    "RunResult",
    "Scenario",
    "Violation",
    "World",
    "run",
]

_T = TypeVar("_T")
START_TIME = 1_700_000_000.0


class Violation(Exception):
    """A promise was broken: ``promise`` names it (``P1``, ``KV-dup``, …), ``detail`` says how."""

    def __init__(self, promise: str, detail: str) -> None:
        super().__init__(f"[{promise}] {detail}")
        self.promise = promise
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Decision:
    """One scheduling step: which actor's parked request proceeds (``index``-th of its own
    parked requests, usually 0) and its fate (one of :data:`FATES`).

    Written ``actor``, ``actor:fate`` or ``actor#index:fate``; a list of them separated by
    spaces is what ``--replay`` accepts.
    """

    actor: str
    fate: str = "ok"
    index: int = 0

    def __str__(self) -> str:
        text = self.actor if self.index == 0 else f"{self.actor}#{self.index}"
        return text if self.fate == "ok" else f"{text}:{self.fate}"

    @classmethod
    def parse(cls, text: str) -> Decision:
        """The decision written as ``str(decision)``; ``ValueError`` if malformed.

        Raises:
            ValueError: if ``text`` is malformed: no actor, or an unknown fate.
        """
        who, _, fate = text.partition(":")
        fate = fate or "ok"
        if fate not in FATES:
            raise ValueError(f"unknown fate {fate!r} in {text!r}; one of {', '.join(FATES)}")
        actor, _, index = who.partition("#")
        if not actor:
            raise ValueError(f"no actor in decision {text!r}")
        return cls(actor, fate, int(index) if index else 0)


def parse_schedule(text: str) -> list[Decision]:
    """Decisions from their space-separated text form (see :class:`Decision`)."""
    return [Decision.parse(part) for part in text.split()]


def format_schedule(decisions: Sequence[Decision]) -> str:
    """The text form of ``decisions`` that :func:`parse_schedule` reads back."""
    return " ".join(str(decision) for decision in decisions)


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Odds, per scheduled request, of each fate other than ``ok``.

    ``lost`` and ``disk_full`` apply to writes only. ``max_attempts`` is the retry layer's
    budget (small, so transient failures sometimes outlast it); ``slow_seconds`` how far the
    store's clock moves during a slow request.
    """

    crash: float = 0.02
    transient: float = 0.06
    lost: float = 0.04
    disk_full: float = 0.004
    slow: float = 0.03
    slow_seconds: float = 90.0
    max_attempts: int = 3


@dataclass(slots=True)
class CallRecord:
    """One store call an actor made: when it started and ended (steps), and how."""

    actor: str
    label: str
    start: int
    incarnation: int = 0
    end: int = -1
    result: Any = None
    error: BaseException | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether it returned (rather than raised)."""
        return self.error is None and self.end >= 0

    def describe(self) -> str:
        """``actor label -> result`` for reports."""
        outcome = (
            f"raised {type(self.error).__name__}: {self.error}" if self.error else repr(self.result)
        )
        extra = f" {self.info}" if self.info else ""
        return f"{self.actor} {self.label}{extra} [{self.start}..{self.end}] -> {outcome}"


class ActorContext:
    """What an actor's program gets: its name, incarnation, randomness, clock and helpers."""

    def __init__(self, world: World, name: str, incarnation: int, skew: float) -> None:
        self.world = world
        self.name = name
        self.incarnation = incarnation
        self.skew = skew
        self.rng = random.Random(f"{world.seed}/{name}/{incarnation}")
        self.memory: dict[str, Any] = world.actor_memory.setdefault(name, {})

    def clock(self) -> float:
        """This actor's local clock: the store's clock plus its skew."""
        return self.world.now + self.skew

    def backend(self) -> AsyncBackend:
        """A fresh backend over the simulated transport (one per store object, as a
        separate process would have), retrying transiently with instant sleeps."""
        return self.world.backend()

    async def call(
        self, label: str, operation: Callable[[], Awaitable[_T]], **info: Any
    ) -> CallRecord:
        """Run one store call, recording it; errors are captured in the record, not raised
        (a crash still ends the actor).

        Raises:
            SimulatedCrash: re-raised (an injected crash ends the actor).
            CancelledError: re-raised when the actor is cancelled.
        """
        record = CallRecord(self.name, label, self.world.step, self.incarnation, info=info)
        previous = CURRENT_LABEL.get()
        CURRENT_LABEL.set(label)
        try:
            record.result = await operation()
        except (asyncio.CancelledError, SimulatedCrash):
            raise
        except Exception as exc:
            record.error = exc
        finally:
            CURRENT_LABEL.set(previous)
        record.end = self.world.step
        self.world.completed.append(record)
        self.world.calls.append(record)
        return record

    async def think(self, seconds: float) -> None:
        """Pause for ``seconds`` of simulated time: a scheduling point of its own, after
        which the store's clock has moved on by ``seconds``."""
        await self.world.transport.think(seconds)


ActorProgram = Callable[[ActorContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """An actor: its name, its program, how often it may be restarted after a crash, and
    its clock skew in seconds."""

    name: str
    program: ActorProgram
    restarts: int = 1
    skew: float = 0.0


class Scenario:
    """A store, its actors and its promises. Subclass and override the hooks.

    ``actors(rng)`` chooses the cast from the seed; ``setup(world)`` prepares the store (runs
    outside the schedule); ``check_step`` runs after every step that wrote;
    ``check_call`` after every completed call; ``check_end`` once every actor is done.
    Hooks report a broken promise with ``world.fail(promise, detail)`` (or raise
    :class:`Violation`, which ends the hook even when the promise is ignored).
    """

    name = "scenario"
    max_steps = 120
    promises: frozenset[str] = frozenset()
    """The names of the promises the checks raise (for ``--only``)."""

    def actors(self, rng: random.Random) -> list[ActorSpec]:
        """The cast of one run, chosen with ``rng`` (the run's seed)."""
        raise NotImplementedError

    def fault_rates(self) -> FaultRates:
        """The fault odds of this scenario."""
        return FaultRates()

    async def setup(self, world: World) -> None:
        """Prepare the store before any actor runs (not scheduled, never faulted)."""

    async def check_step(self, world: World) -> None:
        """Check invariants over the store after a step that wrote."""

    async def check_call(self, world: World, record: CallRecord) -> None:
        """Check what a completed call returned."""

    async def check_end(self, world: World) -> None:
        """Check the store once every actor has finished (or the step budget ran out)."""


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs ``asyncio.to_thread`` work at once on the loop's thread, so no thread finishes
    at a time the seed does not decide."""

    def submit(
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class World:
    """One run's state: clock, store, actors, parked requests and history."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        *,
        inner: Transport | None = None,
        rates: FaultRates | None = None,
        ignore: frozenset[str] = frozenset(),
    ) -> None:
        self.scenario = scenario
        self.ignore = ignore
        self.ignored: list[Violation] = []
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock_rng = random.Random(f"{seed}/clock")
        self.nonce_rng = random.Random(f"{seed}/nonces")
        self.rates = rates or scenario.fault_rates()
        self.now = START_TIME
        self.step = 0
        self.inner = inner or MemoryTransport()
        self.parked: list[Request] = []
        self.transport = SimulatedTransport(self.inner, self._park)
        self.raw = AsyncBackend(self.inner, retry=_NoRetry(), verify_fencing=False)
        self.writes: list[WriteEvent] = []
        self.calls: list[CallRecord] = []
        self.completed: list[CallRecord] = []
        self.trace: list[str] = []
        self.decisions: list[Decision] = []
        self.actor_memory: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, Any] = {}
        self.dirty = True
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._incarnations: dict[str, int] = {}
        self._specs: dict[str, ActorSpec] = {}
        self._dead: set[str] = set()

    # -- time and randomness seen by the code under test ---------------------------------------

    def time(self) -> float:
        """``time.time()`` while the world runs: the store's clock plus the running actor's
        skew."""
        actor = CURRENT_ACTOR.get()
        spec = self._specs.get(actor) if actor is not None else None
        return self.now + (spec.skew if spec is not None else 0.0)

    def backend(self) -> AsyncBackend:
        """A backend over the simulated transport with instant, seeded retries."""
        policy = RetryPolicy(
            max_attempts=self.rates.max_attempts,
            sleep=_no_sleep,
            rng=random.Random(self.nonce_rng.random()),
        )
        return AsyncBackend(self.transport, retry=policy, verify_fencing=False)

    @contextlib.contextmanager
    def _deterministic(self) -> Iterator[None]:
        """Patch the process's clocks and random sources to the world's while it runs."""
        originals = (time.time, time.time_ns, os.urandom, uuid.uuid4)

        def urandom(size: int) -> bytes:
            return self.nonce_rng.randbytes(size)

        def uuid4() -> uuid.UUID:
            return uuid.UUID(int=self.nonce_rng.getrandbits(128), version=4)

        time.time = self.time
        time.time_ns = lambda: int(self.time() * 1e9)
        os.urandom = urandom
        uuid.uuid4 = uuid4
        try:
            yield
        finally:
            time.time, time.time_ns, os.urandom, uuid.uuid4 = originals

    def _park(self, request: Request) -> None:
        if request.actor in self._dead:
            raise SimulatedCrash(f"{request.actor} is dead")
        request.incarnation = self._incarnations.get(request.actor, 0)
        self.parked.append(request)

    # -- actors --------------------------------------------------------------------------------

    def _spawn(self, spec: ActorSpec) -> None:
        incarnation = self._incarnations.get(spec.name, -1) + 1
        self._incarnations[spec.name] = incarnation
        self._specs[spec.name] = spec
        self._dead.discard(spec.name)
        context = ActorContext(self, spec.name, incarnation, spec.skew)

        async def main() -> None:
            CURRENT_ACTOR.set(spec.name)
            with contextlib.suppress(asyncio.CancelledError, SimulatedCrash):
                await spec.program(context)

        self._tasks[spec.name] = asyncio.get_running_loop().create_task(main())
        self.trace.append(f"spawn {spec.name}#{incarnation} skew={spec.skew:+.0f}s")

    def _kill(self, actor: str, reason: str) -> None:
        self._dead.add(actor)
        for request in [r for r in self.parked if r.actor == actor]:
            self.parked.remove(request)
            request.future.cancel()
        self._tasks[actor].cancel()
        self.trace.append(f"{self.step}: {actor} dies ({reason})")
        self.notes.setdefault("crashes", []).append((self.step, actor, reason))

    async def _settle(self) -> None:
        """Let every actor run until each is parked at a request or finished.

        Raises:
            RuntimeError: if the actors have not settled after 100,000 event-loop turns (one keeps
                scheduling work).
        """
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        if ready is None:  # pragma: no cover - a loop without the CPython ready queue
            for _ in range(200):
                await asyncio.sleep(0)
            return
        for _ in range(100_000):
            await asyncio.sleep(0)
            if not ready:
                return
        raise RuntimeError("the simulated actors never settled")

    # -- the schedule --------------------------------------------------------------------------

    def _choose(self, forced: list[Decision]) -> tuple[Request, str] | None:
        """The next request and its fate: from ``forced`` while it lasts, else seeded."""
        while forced:
            decision = forced.pop(0)
            mine = [r for r in self.parked if r.actor == decision.actor]
            if decision.index < len(mine):
                fate = decision.fate
                if fate in ("lost", "disk-full") and not mine[decision.index].is_write:
                    fate = "ok"
                return mine[decision.index], fate
        if not self.parked:
            return None
        request = self.rng.choice(self.parked)
        return request, self._fate(request)

    def _fate(self, request: Request) -> str:
        rates = self.rates
        roll = self.rng.random()
        for fate, odds in (
            ("crash", rates.crash),
            ("transient", rates.transient),
            ("lost", rates.lost if request.is_write else 0.0),
            ("disk-full", rates.disk_full if request.is_write else 0.0),
            ("slow", rates.slow),
        ):
            if roll < odds:
                if fate == "crash":
                    return "crash-after" if self.rng.random() < 0.5 else "crash-before"
                return fate
            roll -= odds
        return "ok"

    async def _perform(self, request: Request, fate: str) -> None:
        mine = [r for r in self.parked if r.actor == request.actor]
        self.decisions.append(Decision(request.actor, fate, mine.index(request)))
        self.parked.remove(request)
        self.step += 1
        tick, slowness = self.clock_rng.uniform(0.001, 0.05), self.clock_rng.uniform(0.25, 1.0)
        self.now += tick
        if fate == "slow":
            self.now += slowness * self.rates.slow_seconds
        if request.operation == "think":
            self.now += request.pause
            fate = "ok" if fate not in ("crash-before", "crash-after") else "crash-before"
        line = f"{self.step}: {request.actor} {request.label} {request.operation} {request.key}"
        if fate == "crash-before":
            self.trace.append(line + " !crash-before")
            self._kill(request.actor, f"before {request.operation} {request.key}")
            return
        if request.future.done():
            self.trace.append(line + " !abandoned")
            return  # its caller was cancelled while it was parked
        if fate == "transient":
            self.trace.append(line + " !transient")
            request.future.set_exception(
                TransientStorageError("simulated transient failure", may_have_landed=False)
            )
            return
        if fate == "disk-full":
            self.trace.append(line + " !disk-full")
            request.future.set_exception(disk_full(request))
            return
        try:
            result = await request.perform()
        except Exception as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        if request.is_write:
            self.dirty = True
            self.writes.append(
                WriteEvent(
                    self.step,
                    request.actor,
                    request.incarnation,
                    request.label,
                    request.operation,
                    request.key,
                    request.data,
                    outcome[0],
                )
            )
        shown = "ok" if outcome[0] else type(outcome[1]).__name__
        self.trace.append(f"{line} -> {shown}" + ("" if fate == "ok" else f" !{fate}"))
        if fate == "crash-after":
            self._kill(request.actor, f"after {request.operation} {request.key}")
            return
        if request.future.done():
            return  # its caller gave up waiting (a sibling request failed): nobody to answer
        if fate == "lost" and outcome[0]:
            request.future.set_exception(TransientStorageError("simulated lost response"))
        elif outcome[0]:
            request.future.set_result(outcome[1])
        else:
            request.future.set_exception(outcome[1])

    async def _main(self, specs: list[ActorSpec], forced: list[Decision]) -> Violation | None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(_InlineExecutor())
        await self.scenario.setup(self)
        for spec in specs:
            self._spawn(spec)
        try:
            while True:
                await self._settle()
                spawned = False
                for name, task in list(self._tasks.items()):
                    if task.done() and name in self._dead:
                        del self._tasks[name]
                        spec = self._specs[name]
                        if self._incarnations[name] < spec.restarts:
                            self._spawn(spec)
                            spawned = True
                if spawned or any(name in self._dead for name in self._tasks):
                    continue  # let a new incarnation start, or a killed task unwind
                completed, self.completed = self.completed, []
                for record in completed:
                    await self._check(self.scenario.check_call(self, record))
                if self.dirty:
                    self.dirty = False
                    await self._check(self.scenario.check_step(self))
                if self.step >= self.scenario.max_steps or (
                    not self.parked and all(t.done() for t in self._tasks.values())
                ):
                    break
                choice = self._choose(forced)
                if choice is None:
                    stuck = [t for t in self._tasks.values() if not t.done()]
                    for task in stuck:
                        task.print_stack()
                    raise RuntimeError("deadlock: actors wait but no request is parked")
                await self._perform(*choice)
            for name in list(self._tasks):
                self._kill(name, "end of run")
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self.parked.clear()
            self.dirty = True
            await self._check(self.scenario.check_end(self))
        except Violation as violation:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            return violation
        return None

    def fail(self, promise: str, detail: str) -> None:
        """Report a broken promise: raises :class:`Violation`, unless the promise is ignored
        (then it is noted and the check goes on, so one known bug hides no other)."""
        violation = Violation(promise, detail)
        if promise not in self.ignore:
            raise violation
        self.ignored.append(violation)

    async def _check(self, check: Awaitable[None]) -> None:
        """Run one check; a violation of an ignored promise is noted, not raised.

        Raises:
            Violation: if the check finds a violation of a promise that is not ignored.
        """
        try:
            await check
        except Violation as violation:
            if violation.promise not in self.ignore:
                raise
            self.ignored.append(violation)


async def _no_sleep(_: float) -> None:
    """The retry layer's sleep in a simulation: time moves only with requests."""


@dataclass(frozen=True, slots=True)
class _NoRetry(RetryPolicy):
    """One attempt, without tenacity's overhead: the checks' reads never fail."""

    async def call(self, operation: Callable[[int], Awaitable[_T]], *, description: str) -> _T:
        return await operation(1)


@dataclass(slots=True)
class RunResult:
    """The outcome of one run: the decisions taken, the history, and any violation."""

    scenario: str
    seed: int
    actors: tuple[str, ...]
    decisions: list[Decision]
    violation: Violation | None
    trace: list[str]
    calls: list[CallRecord]
    steps: int
    ignore: frozenset[str] = frozenset()

    @property
    def failed(self) -> bool:
        """Whether a promise was broken."""
        return self.violation is not None

    def replay_command(self) -> str:
        """The command line that replays this run."""
        ignored = f" --ignore {','.join(sorted(self.ignore))}" if self.ignore else ""
        return (
            f"python -m objstore.testing.simulate --store {self.scenario} --seed {self.seed} "
            f"--actors {','.join(self.actors)}{ignored} "
            f"--replay '{format_schedule(self.decisions)}'"
        )


def run(
    scenario: Scenario,
    seed: int,
    *,
    decisions: Sequence[Decision] = (),
    actors: Sequence[str] | None = None,
    inner: Transport | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    ignore: frozenset[str] = frozenset(),
) -> RunResult:
    """Run ``scenario`` once from ``seed``; ``decisions`` force the first steps (replay) and
    ``actors`` keeps only the named actors of the seed's cast (shrinking); violations of the
    promises in ``ignore`` are not reported (to look past a known bug)."""
    world = World(scenario, seed, inner=inner, ignore=ignore)
    specs = scenario.actors(random.Random(f"{seed}/cast"))
    if actors is not None:
        specs = [spec for spec in specs if spec.name in actors]
    own_loop = loop is None
    loop = loop or asyncio.new_event_loop()
    try:
        with world._deterministic():
            violation = loop.run_until_complete(world._main(specs, list(decisions)))
    finally:
        if own_loop:
            loop.close()
    return RunResult(
        scenario.name,
        seed,
        tuple(spec.name for spec in specs),
        world.decisions,
        violation,
        world.trace,
        world.calls,
        world.step,
        ignore,
    )
