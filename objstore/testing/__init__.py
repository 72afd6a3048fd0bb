"""Tools for testing code that uses objstore (and objstore itself).

* :class:`FaultInjectingTransport` — crash before/after the Nth request, transient errors,
  lost responses, flipped bytes, and a call log for counting requests.
* :mod:`objstore.testing.contract` — the backend contract suite (needs pytest), which any
  transport, including your own, can subclass to prove it is honest.
"""

from objstore.testing._faults import (
    READ_OPERATIONS,
    WRITE_OPERATIONS,
    Call,
    FaultInjectingTransport,
    SimulatedCrash,
)

__all__ = [
    "READ_OPERATIONS",
    "WRITE_OPERATIONS",
    "Call",
    "FaultInjectingTransport",
    "SimulatedCrash",
]
