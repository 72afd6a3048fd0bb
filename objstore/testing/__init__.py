"""Tools for testing code that uses objstore (and objstore itself).

* :class:`FaultInjectingTransport` — crash before/after the Nth request, transient errors,
  lost responses, flipped bytes, and a call log for counting requests.
* :mod:`objstore.testing.contract` — the backend contract suite (needs pytest), which any
  transport, including your own, can subclass to prove it is honest.
* :mod:`objstore.testing.simulate` — the deterministic interleaving simulator: actors over one
  scheduled transport, seeded crashes/faults/skew, the stores' promises checked after every
  step, failures printed as a replayable schedule (``python -m objstore.testing.simulate``).
  Its main names are re-exported here on first use.
"""

from typing import Any

from objstore.testing._faults import (
    READ_OPERATIONS,
    WRITE_OPERATIONS,
    Call,
    FaultInjectingTransport,
    SimulatedCrash,
)

_SIMULATOR_NAMES = frozenset(
    {"ActorContext", "ActorSpec", "Decision", "Scenario", "Violation", "explore", "run"}
)

__all__ = [
    "READ_OPERATIONS",
    "WRITE_OPERATIONS",
    "ActorContext",
    "ActorSpec",
    "Call",
    "Decision",
    "FaultInjectingTransport",
    "Scenario",
    "SimulatedCrash",
    "Violation",
    "explore",
    "run",
]


def __getattr__(name: str) -> Any:
    """The simulator's names, imported only when used (it imports every store).

    Raises:
        AttributeError: for any name that is not one of the simulator's.
    """
    if name in _SIMULATOR_NAMES:
        from objstore.testing import simulate

        return getattr(simulate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
