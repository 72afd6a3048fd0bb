"""KVStore: sorted bytes keys with a sequence-numbered batch log.

The contract is exoware's ``StoreEngine`` (DESIGN §4). Layout::

    {root}/kv/log/{seq:020d}              one committed batch (put pairs or deleted keys),
                                          or a tombstone once pruned
    {root}/kv/snapshots/{seq:020d}-{id}   every live key, sorted, after batch ``seq``, written
                                          by compaction ``id`` (format-1 stores:
                                          ``snapshots/{seq:020d}``, still read)
    {root}/kv/manifest                    the snapshot readers start from, the prune marks,
                                          the snapshots a sweep retired (format 3)
    {root}/kv/clock                       rewritten by a sweep to read the store's time

**Sequences.** A batch's sequence number is allocated by the write that commits it: one
create-if-absent of ``log/{seq}`` where ``seq`` is one past the newest batch the writer
knows. Whoever creates the object owns the number; a writer that loses re-reads the log tail
and tries the next number. So numbers are unique, consecutive from 1, and a steady-state
single writer pays exactly one request per batch. A create is atomic, so a sequence either
exists whole or was never allocated. Since writers only claim ``n + 1`` after seeing ``n``,
the log has no gaps; readers still apply only the contiguous run after what they know, so a
sequence is visible only when it and everything below it are durable.

**Reading.** Open = GET manifest → GET its snapshot → LIST the log after it (``list_after``,
so only the tail is listed) → GET those batches. Afterwards every call catches up with one
LIST after the newest batch the store object knows. If a batch it reads turned out pruned,
or the snapshot the manifest named was replaced, the reader starts over.

**A committed batch returns its sequence.** Once the create landed, nothing after it —
compaction, sweeping, even a full disk (``OSError``) — is reported as a failed write:
housekeeping failures are logged at WARNING and retried after a few more batches. A create
that got no answer (transient errors past the retries) may have landed; the store object
remembers the bytes it sent, and when the caller retries the *same* batch it reads that log
object back first (1 GET) and returns its sequence if it holds them (writer nonce) instead
of appending the batch twice — or a tombstone keeping its nonce, if a prune got there
first. A tombstone that keeps no nonce (written before tombstones did) cannot tell:
:class:`~objstore.errors.OutcomeUnknownError` (with the ``sequence``), nothing appended.
Another batch committing in between ends that window.

**Compaction** (every ``compact_every`` batches, or :meth:`AsyncKVStore.compact`): write
``snapshots/{seq}-{id}`` (create-if-absent, a key of its own: no two compactions share a
snapshot), compare-and-swap the manifest forward to it (fields only ever grow: retries
merge by maximum; of two snapshots of the same batch the stored one stays), then delete the
snapshot it replaced — or, if another compaction's snapshot won, its own: once the manifest
is past a snapshot it can never reference it again. A crash at any step leaves the old
manifest (and an unreferenced snapshot) or the new one.

**Sweeping** (:meth:`AsyncKVStore.sweep_snapshots`, and after every compaction): snapshots
older than the manifest's go at once; newer unreferenced ones (a crashed compaction's, or a
running one's) only once :data:`DEFAULT_SNAPSHOT_GRACE_SECONDS` old by the store's clock —
object times, read against a fresh write of ``kv/clock``, never the local clock — and only
after a compare-and-swap of the manifest has *retired* them. The manifest never moves to a
retired snapshot, so a sweep can never delete one the manifest references or will: either
the compaction's swap landed first (the sweep's CAS fails, its retry sees the snapshot
referenced and keeps it) or the retire did (the compaction's swap fails its precondition,
its retry finds its snapshot retired and it loses, as to another compaction). Safety does
not depend on clocks, the grace or how long a swap is held in flight; the grace only spares
live compactions that work. A compaction that has not moved the manifest within half the
grace (by its own monotonic clock) gives up early. Retired entries leave the manifest once
its snapshot passes them.

**Pruning** ``prune_batch_log(cutoff)``: compact through ``cutoff - 1`` if needed, CAS the
manifest's ``retained_from`` to the cutoff, overwrite every log object below it with a
tombstone keeping the batch's writer nonce (1 GET + 1 PUT each), then CAS
``tombstoned_below``. Resumable: any prune first finishes tombstoning up
to ``retained_from`` (a crashed prune's work), whatever its cutoff. Log objects are
tombstoned rather than deleted because deleting ``log/{n}`` would let a writer that has not
seen ``n`` create it again and be told it committed batch ``n`` — which every reader
ignores, as the snapshot already covers ``n``. The cost is one tiny object per batch ever
written; the tail listing never sees them.

**Delete batches and get_batch.** ``get_batch`` returns the pairs of a put batch and ``[]``
for a delete batch (it wrote no pairs); :meth:`AsyncKVStore.read_batch` returns either kind
with its keys.
"""

from objstore.kv._format import KV_FORMAT, KV_MANIFEST_FORMAT, KVBatch, KVManifest

# Building blocks the test kit's simulator reads stored KV objects with: re-exported here (the
# ``X as X`` form) so no module outside this package imports a private module, but kept out
# of ``__all__``: they are not part of the stable API.
from objstore.kv._format import LOG_PREFIX as LOG_PREFIX
from objstore.kv._format import MANIFEST_KEY as MANIFEST_KEY
from objstore.kv._format import SNAPSHOT_PREFIX as SNAPSHOT_PREFIX
from objstore.kv._format import decode_batch as decode_batch
from objstore.kv._format import decode_manifest as decode_manifest
from objstore.kv._format import sequence_of as sequence_of
from objstore.kv._segment import SEGMENT_PREFIX as SEGMENT_PREFIX
from objstore.kv._store import (
    DEFAULT_COMPACT_EVERY,
    DEFAULT_SNAPSHOT_GRACE_SECONDS,
    AsyncKVStore,
    KVStore,
)

__all__ = [
    "DEFAULT_COMPACT_EVERY",
    "DEFAULT_SNAPSHOT_GRACE_SECONDS",
    "KV_FORMAT",
    "KV_MANIFEST_FORMAT",
    "AsyncKVStore",
    "KVBatch",
    "KVManifest",
    "KVStore",
]
