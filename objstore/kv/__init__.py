"""KVStore: sorted bytes keys with a sequence-numbered batch log.

The contract is exoware's ``StoreEngine`` (DESIGN §4). Layout::

    {root}/kv/log/{seq:020d}         one committed batch (put pairs or deleted keys), or a
                                     tombstone once pruned
    {root}/kv/snapshots/{seq:020d}   every live key, sorted, after batch ``seq``
    {root}/kv/manifest               the snapshot readers start from, the prune marks

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

**Compaction** (every ``compact_every`` batches, or :meth:`AsyncKVStore.compact`): write
``snapshots/{seq}`` create-if-absent (the state after batch ``seq`` is the same whoever writes
it), compare-and-swap the manifest forward to it (fields only ever grow: retries merge by
maximum), then delete the snapshot it replaced. A crash at any step leaves the old manifest
(and an unreferenced snapshot) or the new one.

**Pruning** ``prune_batch_log(cutoff)``: compact through ``cutoff - 1`` if needed, CAS the
manifest's ``retained_from`` to the cutoff, overwrite every log object below it with a
tombstone, then CAS ``tombstoned_below`` (so a crashed prune is finished by the next). Log
objects are tombstoned rather than deleted because deleting ``log/{n}`` would let a writer
that has not seen ``n`` create it again and be told it committed batch ``n`` — which every
reader ignores, as the snapshot already covers ``n``. The cost is one tiny object per batch
ever written; the tail listing never sees them.

**Delete batches and get_batch.** ``get_batch`` returns the pairs of a put batch and ``[]``
for a delete batch (it wrote no pairs); :meth:`AsyncKVStore.read_batch` returns either kind
with its keys.
"""

from objstore.kv._format import KV_FORMAT, KVBatch, KVManifest
from objstore.kv._store import DEFAULT_COMPACT_EVERY, AsyncKVStore, KVStore

__all__ = ["DEFAULT_COMPACT_EVERY", "KV_FORMAT", "AsyncKVStore", "KVBatch", "KVManifest", "KVStore"]
