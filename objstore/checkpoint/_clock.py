"""Time for orphan collection: the store's clock for the janitor, durations for the saver.

Whether an uncommitted sidecar may be deleted depends on how old it is, and "old" must mean
the same thing to the janitor that deletes it and to the writer that may still commit it,
whatever their wall clocks say. Both sides therefore measure against the *store*:

**The janitor** (:meth:`~objstore.checkpoint.AsyncCheckpointStore.cleanup_orphans`) reads
"store now" with :func:`read_store_clock`: an unconditional PUT of a tiny marker object
(:data:`STORE_CLOCK_KEY`) and a HEAD of it; the mtime the store gave it is the store's time.
Cost: those two requests per cleanup run, and only when the listing holds an uncommitted
directory whose age matters (none in the steady state). The janitor's own clock is never
compared with a store mtime. It deletes an orphan only if ``mtime <= store_now - grace``,
after re-checking that the manifest is still absent, with a delete conditional on the
version it judged (where the listing gives versions). A *plan* (dry run, ``objstore ls``)
writes nothing: it takes the newest mtime in the listing as "store now", a lower bound, so
a plan may show fewer deletable orphans than the cleanup deletes, never more.

**The saver** never reads a store time: it measures, with its own monotonic clock, the
duration from *before* it sent the sidecar's first request (so no later than the moment the
store stamped the sidecar's mtime) to the moment its manifest create was answered. Only
clock *rates* matter there, never offsets, so a skewed wall clock changes nothing.

Why a returned save can never have lost its sidecar. Let ``m`` be the sidecar's mtime,
``T_m`` the store time at which the manifest create landed and ``E`` the saver's measured
duration, so ``T_m - m <= E``. A janitor deletes the sidecar only after it read ``T_j``
(the marker) and then found no manifest at ``T_h >= T_j``, with ``m <= T_j - grace``; the
manifest was absent at ``T_h``, so ``T_m > T_h >= m + grace``, i.e. ``E > grace``. The
saver therefore (1) refuses to commit a sidecar already older than :data:`STAGED_FRACTION`
of the grace, deleting its own sidecar so the id can be staged again, and (2) after the
create, withdraws its manifest and raises if ``E >= COMMIT_FRACTION * grace``. A save that
returned had ``E < grace``: no janitor can have deleted its sidecar, and from ``T_m`` on
every janitor sees the manifest. A check-then-commit alone would not do: a janitor may have
judged the sidecar before the check and delete it after. Assumptions, met by configuration:
the janitor's grace is at least the writer's; clock rates agree (skew of any size is
harmless); and the 10% margin of :data:`COMMIT_FRACTION` absorbs the store's mtime
resolution (S3 stamps whole seconds, so graces of 10 s or more).

Since tombstones, this timing is no longer what keeps a commit whole; it keeps saves
*succeeding*. The janitor claims an orphan's id by creating ``manifest.json`` itself (a
tombstone, create-if-absent) before it deletes anything, so of a saver's manifest create and
the janitor's claim exactly one wins, however the requests are delayed: a check-then-delete
against a create cannot be made safe by timing alone (the saver may pass its check, then its
create may be delayed past any bound; simulator seed 73). The checks above still spare a
saver a conflict with the tombstone, and protect stores shared with janitors of versions
before tombstones.

Tests and the interleaving simulator inject both: ``clock=`` (the saver's durations) and
``store_clock=`` (an async callable returning store time) on the store; by default the
store clock is whatever mtime the backend sets, so a simulated backend controls it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from objstore.backends import AsyncBackend
from objstore.checkpoint._layout import CHECKPOINTS

__all__ = [
    "COMMIT_FRACTION",
    "STAGED_FRACTION",
    "STORE_CLOCK_KEY",
    "StoreClock",
    "commit_too_late",
    "read_store_clock",
    "staged_too_long",
]

STORE_CLOCK_KEY = f"{CHECKPOINTS}/.store-clock"
"""The marker whose mtime tells the janitor the store's time (not a checkpoint: readers and
listings of checkpoints ignore it, and it sorts before every checkpoint directory)."""
STAGED_FRACTION = 0.5
"""A sidecar written this fraction of the grace period ago or earlier is not committed."""
COMMIT_FRACTION = 0.9
"""A manifest that landed this fraction of the grace period after its sidecar's write
began is withdrawn: a janitor may have deleted the sidecar."""

StoreClock = Callable[[], Awaitable[float | None]]
"""Returns the store's current time in seconds since the epoch (``None``: unknown, and no
orphan is then deleted for its age)."""


async def read_store_clock(backend: AsyncBackend) -> float | None:
    """The store's current time: the mtime the store stamps on a marker written now.

    Two requests (PUT, HEAD). Raises what the backend raises (after retries); ``None`` if
    the store reports no mtime.
    """
    await backend.put(STORE_CLOCK_KEY, os.urandom(8).hex().encode("ascii"))
    return (await backend.head(STORE_CLOCK_KEY)).mtime


def staged_too_long(elapsed: float, grace_seconds: float) -> bool:
    """Whether a sidecar whose write began ``elapsed`` seconds ago is too old to commit."""
    return elapsed >= STAGED_FRACTION * grace_seconds


def commit_too_late(elapsed: float, grace_seconds: float) -> bool:
    """Whether a manifest answered ``elapsed`` seconds after its sidecar's write began may
    have lost the sidecar to a janitor (and must be withdrawn)."""
    return elapsed >= COMMIT_FRACTION * grace_seconds
