"""Shared (content-addressed) objects of incremental checkpoints and the rule that collects
them: layout, the GC record, and the pure decisions of the writer and the collector.

Layout::

    shared/{xxh3-128 of the raw chunk}-{save call nonce}.zst   one zstd frame
    shared/.gc.json                                             the GC record
    checkpoints/checkpoint_N/refs-{call nonce}-{n}.json         a save call's pins

A shared object is written create-if-absent, never overwritten, and referenced by the
frames of any number of manifests. Its name carries a nonce drawn fresh by every save call
that uploads it, so **a key is never created twice**: once deleted it never reappears, and a
delayed delete can never hit a younger object of the same name. ``shared/`` is a sibling of
``checkpoints/``: no checkpoint listing (recovery, prune, orphan cleanup, ``rm``, ``recover
--repair``, quarantine) pages through it, and only the shared-object GC deletes there
(never ``.gc.json``, which is not a shared object's name).

The GC record (canonical JSON, compare-and-swapped, never deleted)::

    {"format_version": 1, "generation": k, "record_id": r, "doomed": [key, ...]}

``record_id`` is drawn at random when the record is created (generation 1) and kept by
every later generation. No tool deletes the record, but should it ever be deleted and
written again its generations restart; writers compare ``(record_id, generation)``, so a
recreated record is never taken for the one they read (ABA).

The protocol ("doom list", a Dekker-style handshake; no clock is trusted: ages only choose
which objects are worth dooming):

GC run (:func:`plan_doomed`, ``AsyncCheckpointStore.collect_shared``):
  1. read the record: generation ``k0`` and doomed list ``D0`` (absent: 0 and empty);
  2. list ``shared/`` (the objects), then ``checkpoints/``; read every manifest, every *pin*
     (also beside a manifest: another writer of the same id may commit it once that manifest
     is pruned), then every quarantined manifest -> referenced set ``R`` (a read failing
     with anything but not-found, or a manifest or pin that cannot be parsed, aborts the
     run: its references are unknown); candidates = listed objects not in ``R`` older than
     the grace, plus every listed object of ``D0`` (carried forward, referenced or not);
  3. CAS the record to ``{generation: k0 + 1, doomed: candidates}`` (lost CAS, even an
     answer lost in transit: abort);
  4. list and read manifests and pins again -> ``R'``; final = candidates - ``R'``;
  5. read the record again: generation other than ``k0 + 1`` -> abort, delete nothing;
  6. delete final.

Incremental save (``AsyncCheckpointStore.save_incremental``):
  a. read the record: ``Gs``, ``Ds``;
  b. after (a), read the base manifest and list the shared objects; a chunk may reuse a
     base frame only if its object is listed (with its length) and not in ``Ds``;
  c. upload the other chunks under fresh keys (create-if-absent);
  p. *pin* the keys it will commit: create ``checkpoint_N/refs-{call nonce}-{n}.json``
     listing them (in the checkpoint's own directory; the call nonce is the manifest part's
     ``writer_nonce``, so a prune deletes only the pins of the save call whose manifest it
     deletes, and the orphan janitor removes the others after tombstoning the id; a
     repair's new pin replaces the call's previous one, and a call that can never commit
     -- it raised a conflict, or gave up repairing, or completed an earlier call's commit
     -- drops its pin; after an unknown outcome the pin stays, a delayed create may land);
  e. read the record again (``Ge``, ``De``): safe (:func:`refs_safe`) if it is the record
     read in (a) (same ``record_id``, or none was there) and ``Ge == Gs``, or
     ``Ge == Gs + 1`` and ``De`` holds none of the keys. Otherwise repair *before anything is
     committed*: run (a)-(b) again, re-upload every key no longer reusable under a fresh key
     (copied, or compressed again from in-memory state; a streamed state whose bytes are
     gone raises, nothing committed), and pin and check again;
  d. commit the manifest (the commit protocol, create-if-absent), then move the pointer.

Why a committed manifest never loses a shared object while it exists (so a manifest is never
committed with its state gone, and a save that returned stays restorable). Record writes are
totally ordered (CAS); generation ``j`` is written once, by a GC that read ``j - 1``; keys
are never re-created. Let GC ``g`` write generation ``k + 1`` (doom list ``D``) and delete
``X``, a key of manifest ``M`` (its pin ``J`` created at ``t_J``, its check (e) read at
``t_e > t_J``, committed after ``t_e``). ``g`` deleted ``X`` because its relist (4) found
neither ``M`` nor ``J`` naming ``X``; ``J`` exists from ``t_J`` until the directory is
pruned by a prune that read ``M`` (a prune deletes only the pins of the call that committed
the manifest it read: ``M`` is then gone, nothing owed) or the id aborted (tombstoned first:
``M`` can never commit), ``M`` from its commit on; the GC reads every pin, also one beside
another writer's manifest of the same id. So the relist listed before ``t_J``, and ``g``'s
doom write came before it: ``k + 1 <= Ge``. The check passed, so ``Ge`` is ``Gs`` or ``Gs +
1``: ``k + 1 = Gs`` puts ``X`` in ``Ds`` (never reused, and new keys are created after (a),
so ``g`` cannot have listed them), ``k + 1 = Gs + 1`` puts it in ``De`` (check fails). Hence
``k + 1 < Gs``, and ``g``'s step (5) saw ``k + 1`` before generation ``k + 2`` was written,
before our (a): ``g`` listed and relisted before (a). ``X`` was listed by ``g`` so it is not
one of our new uploads; it was reused from the base ``B``, whose manifest we read at ``t_b``
after (a). ``B`` did not name ``X`` at ``g``'s relist, yet names it at ``t_b`` and frames
never change under a manifest, so ``B`` (or its pin) appeared after ``g``'s relist: apply
the same argument to ``B``'s save, whose check came after ``g``'s doom write. Down the chain
of bases (finite: each is older), the save that first uploaded ``X`` created it after its
own (a) — but ``g`` listed ``X`` before its doom write, which then came after that save's
(a), so that save's check saw ``k + 1`` with ``X`` in it, or a later generation: it failed.
Contradiction.

A repair (keeping its own earlier uploads) and ``objstore cp`` (reusing any object already
on the destination) reuse keys no manifest names, so the chain above has no base to follow;
there the *carry lemma* closes it: an object of ``D_j`` that still exists when the GC writing
``j + 1`` lists is in ``D_{j+1}`` (step 2 carries it), so by induction a key doomed by ``g``
and still listed by our (b), after (a), was listed by the GC of generation ``Gs`` and is in
``Ds``: never reused. For plain reuse from a base the listing and the carried list are
defence in depth.

Two concurrent GCs: the CAS lets one write ``k0 + 1``; the other aborts at (3), or at (5) if
a later one wrote meanwhile. A GC that crashes midway leaves a doom record and perhaps some
deletions done: its list stays in force (writers avoid it, the next GC carries what still
exists) and what it did not delete is collected by a later run. A writer that crashes
leaves new objects and a pin: the orphan janitor removes the pin with the id (tombstone
first), and the next GC collects the objects.

Known limit: a quarantined manifest being *restored* (copied back, then its quarantine
record deleted) between a GC's listing of ``checkpoints/`` and of ``quarantine/`` is missed
by that listing; restore quarantined checkpoints while no GC runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from objstore.checkpoint._layout import SHARED
from objstore.codec import canonical_json, checksum, parse_json
from objstore.errors import CorruptionError

__all__ = [
    "GC_FORMAT",
    "GC_RECORD",
    "SHARED",
    "GcRecord",
    "SharedGcResult",
    "decode_gc_record",
    "encode_gc_record",
    "is_shared_key",
    "plan_doomed",
    "raw_digest_of",
    "refs_safe",
    "shared_key",
]

GC_RECORD = f"{SHARED}/.gc.json"
GC_FORMAT = 1

_KEY = re.compile(r"([0-9a-f]{32})-([0-9a-f]{8,64})\.zst")


def shared_key(raw_digest: str, nonce: str) -> str:
    """``shared/{raw_digest}-{nonce}.zst``."""
    return f"{SHARED}/{raw_digest}-{nonce}.zst"


def raw_digest_of(key: str) -> str | None:
    """The raw chunk's xxh3-128 a shared key names; ``None`` if ``key`` is not one."""
    if not key.startswith(SHARED + "/"):
        return None
    match = _KEY.fullmatch(key[len(SHARED) + 1 :])
    return match.group(1) if match else None


def is_shared_key(key: str) -> bool:
    """Whether ``key`` is a shared object (not the GC record, nor anything else)."""
    return raw_digest_of(key) is not None


@dataclass(frozen=True, slots=True)
class GcRecord:
    """What ``shared/.gc.json`` says (``version``: its version token; ``None``
    when absent, generation 0; ``record_id``: drawn when the record was created, kept by
    every generation)."""

    generation: int = 0
    doomed: frozenset[str] = frozenset()
    version: str | None = None
    record_id: str | None = None


def encode_gc_record(generation: int, doomed: Iterable[str], record_id: str) -> bytes:
    """Canonical JSON of a GC record, with its checksum."""
    body: dict[str, Any] = {
        "doomed": sorted(set(doomed)),
        "format_version": GC_FORMAT,
        "generation": generation,
        "record_id": record_id,
    }
    body["checksum"] = checksum(canonical_json(body))
    return canonical_json(body)


def decode_gc_record(data: bytes, version: str) -> GcRecord:
    """Parse a GC record.

    Raises:
        CorruptionError: not a GC record of a supported format with a matching checksum (an
            unreadable record stops incremental saves and GC runs: nobody can know what is
            doomed; an operator must look).
    """
    body = parse_json(data, key=GC_RECORD)
    if not isinstance(body, dict):
        raise CorruptionError(GC_RECORD, "GC record is not a JSON object")
    stated = body.pop("checksum", None)
    if stated != checksum(canonical_json(body)):
        raise CorruptionError(GC_RECORD, "GC record checksum mismatch")
    generation, doomed = body.get("generation"), body.get("doomed")
    record_id = body.get("record_id")
    if (
        body.get("format_version") != GC_FORMAT
        or not isinstance(record_id, str)
        or not record_id
        or not isinstance(generation, int)
        or isinstance(generation, bool)
        or generation < 1
        or not isinstance(doomed, list)
        or not all(isinstance(key, str) for key in doomed)
    ):
        raise CorruptionError(GC_RECORD, "GC record fields are invalid")
    return GcRecord(generation, frozenset(doomed), version, record_id)


def refs_safe(start: GcRecord, end: GcRecord, refs: Iterable[str]) -> bool:
    """Step (e): whether refs chosen after reading ``start`` (none of them in its doomed
    list) and committed before reading ``end`` are safe from every GC (module doc). A
    record other than the one read at the start (``record_id``: it was recreated) is
    never safe."""
    if start.record_id is not None and end.record_id != start.record_id:
        return False
    if end.generation == start.generation:
        return True
    if end.generation == start.generation + 1:
        return end.doomed.isdisjoint(refs)
    return False


def plan_doomed(
    record: GcRecord,
    listed: Mapping[str, float | None],
    referenced: Iterable[str],
    *,
    store_now: float | None,
    grace_seconds: float,
) -> list[str]:
    """Step (2): the doom list of the next generation.

    ``listed`` maps each shared object to its mtime (store clock). An unreferenced object is
    doomed once its age is known to be at least ``grace_seconds`` (an efficiency filter that
    spares in-flight saves a repair, never the safety argument); every listed object of the
    previous doom list is carried forward whatever its age or references (the carry lemma).
    """
    used = set(referenced)
    doomed = {key for key in listed if key in record.doomed}
    for key, mtime in listed.items():
        if key in used:
            continue
        if grace_seconds <= 0 or (
            store_now is not None and mtime is not None and store_now - mtime >= grace_seconds
        ):
            doomed.add(key)
    return sorted(doomed)


@dataclass(frozen=True, slots=True)
class SharedGcResult:
    """What a shared-object GC run saw, planned and did.

    ``generation`` is the record generation it wrote (``None``: it wrote none: a dry run,
    nothing to doom, or it lost the record's CAS), ``listed`` the shared objects it saw,
    ``referenced`` how many of them retained (or quarantined) manifests reference, ``planned``
    the keys it doomed, ``deleted`` those it deleted, ``reclaimed_bytes`` their size and
    ``aborted`` why it deleted nothing although it planned something (another GC ran).
    """

    grace_seconds: float
    listed: int
    referenced: int
    planned: tuple[str, ...]
    deleted: tuple[str, ...]
    reclaimed_bytes: int
    generation: int | None
    aborted: str | None = None
    dry_run: bool = False
