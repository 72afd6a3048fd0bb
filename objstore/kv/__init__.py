"""KVStore: sorted bytes keys with a sequence-numbered batch log.

The contract is exoware's ``StoreEngine`` (DESIGN §4). Layout::

    {root}/kv/log/{seq:020d}              one committed batch (put pairs or deleted keys),
                                          or a tombstone once pruned
    {root}/kv/segments/{gen:020d}-{id}    an immutable sorted segment: checksummed,
                                          compressed blocks (~64 KiB) and their index,
                                          written by a compaction that read generation gen
    {root}/kv/manifest                    the compacted state (runs of segments, the batch
                                          they cover, a generation) and the prune marks
                                          (format 4)
    {root}/kv/snapshots/…                 whole-state snapshots of format 1-3 stores, read
                                          until their first compaction converts them
    {root}/kv/clock                       rewritten by a sweep to read the store's time

**Sequences.** A batch's sequence number is allocated by the write that commits it: one
create-if-absent of ``log/{seq}`` where ``seq`` is one past the newest batch the writer
knows. Whoever creates the object owns the number; a writer that loses re-reads the log tail
and tries the next number. So numbers are unique, consecutive from 1, and a steady-state
single writer pays exactly one request per batch. A create is atomic, so a sequence either
exists whole or was never allocated. Since writers only claim ``n + 1`` after seeing ``n``,
the log has no gaps; readers still apply only the contiguous run after what they know, so a
sequence is visible only when it and everything below it are durable.

**The compacted state** (learned from SlateDB's sorted runs, manifest and garbage
collector): batches ``1..S`` are folded into *runs* — each a list of disjoint segments in
key order, newest run first, a deleted key kept as a marker until the merge reaches the
oldest run. Segments stay far below single-PUT limits (``segment_bytes``, 16 MiB); the
manifest records each one's key range, size and where its index is, so a point read is at
most 2 ranged GETs per run whose range holds the key (index, then block; both cached), and
a scan reads only the blocks its range touches.

**Reading.** Open = GET manifest → LIST the log after ``S`` → GET those batches (kept in
memory as the tail). Afterwards a read catches up (unless ``max_staleness`` lets it serve
what it knows) with one LIST after the newest batch the store object knows; a full page of
new batches means it is far behind, so it GETs the manifest and jumps to the compacted state
instead of reading batch by batch. A segment that vanished under a read (replaced by a
compaction) makes the read re-read the manifest and start over. A store object always sees
its own batches.

**A committed batch returns its sequence.** Once the create landed, nothing after it is
reported as a failed write. A create that got no answer (transient errors past the retries)
may have landed; the store object remembers the bytes it sent, and when the caller retries
the *same* batch it reads that log object back first (1 GET) and returns its sequence if it
holds them (writer nonce) instead of appending the batch twice — or a tombstone keeping its
nonce, if a prune got there first. A tombstone that keeps no nonce (written before
tombstones did) cannot tell: :class:`~objstore.errors.OutcomeUnknownError` (with the
``sequence``), nothing appended. Another batch committing in between ends that window.

**Compaction never runs in ``put_batch``.** A writer starts a background task once
``compact_every`` batches follow the compacted state it knows (failures logged at WARNING
and retried later), or a service calls :meth:`AsyncKVStore.compact`. A pass reads the
manifest (generation ``g``) and a bounded part of the log tail, streams a merge of it with
the newest runs (size-tiered; all of them for ``compact()``) into new segments named after
``g``, and compare-and-swaps the manifest to ``g + 1`` — only if it still is at ``g``. Of
two compactions one wins; the loser deletes its segments, the winner those it replaced. A
crash at any step leaves the old manifest (plus unreferenced segments) or the new one.

**Sweeping** (:meth:`AsyncKVStore.sweep_snapshots`, and after every ``compact()``): an
unreferenced segment named after an older generation than the manifest's can never be
referenced again and goes at once. One of the current generation may belong to a
compaction in flight, so it goes only once :data:`DEFAULT_SNAPSHOT_GRACE_SECONDS` old by the
store's clock — object times, read against a fresh write of ``kv/clock`` — and only after a
compare-and-swap moved the manifest to the next generation, which makes every compaction in
flight lose. Safety never depends on clocks or the grace; the grace only spares live
compactions.

**Pruning** ``prune_batch_log(cutoff)``: compact through ``cutoff - 1`` if needed, CAS the
manifest's ``retained_from`` to the cutoff, overwrite every log object below it with a
tombstone keeping the batch's writer nonce (1 GET + 1 PUT each), then CAS
``tombstoned_below``. Resumable: any prune first finishes tombstoning up
to ``retained_from`` (a crashed prune's work), whatever its cutoff. Log objects are
tombstoned rather than deleted because deleting ``log/{n}`` would let a writer that has not
seen ``n`` create it again and be told it committed batch ``n`` — which every reader
ignores, as the compacted state already covers ``n``. The cost is one tiny object per batch
ever written; the tail listing never sees them.

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
    DEFAULT_CACHE_BYTES,
    DEFAULT_COMPACT_EVERY,
    DEFAULT_SNAPSHOT_GRACE_SECONDS,
    AsyncKVStore,
    KVStore,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_COMPACT_EVERY",
    "DEFAULT_SNAPSHOT_GRACE_SECONDS",
    "KV_FORMAT",
    "KV_MANIFEST_FORMAT",
    "AsyncKVStore",
    "KVBatch",
    "KVManifest",
    "KVStore",
]
