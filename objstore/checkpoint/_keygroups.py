"""Key groups: how keyed state is split into parts, and reassigned when parallelism changes.

The model is Flink's. Every key hashes into one of ``max_key_groups`` key groups (fixed for the
life of a job); a job of parallelism ``n`` gives subtask ``i`` the contiguous range
:func:`key_group_range` ``(i, n, max_key_groups)``. Each subtask writes one part named after
its range (:func:`part_name`), and the manifest records the range (``PartEntry.key_groups``).
A job restored with another parallelism asks :func:`assign_parts` which stored parts every
new subtask must read: those whose ranges overlap its own (it keeps the keys of its range
and drops the rest). Pure functions, no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from objstore._checks import is_int

__all__ = [
    "Assignment",
    "assign_parts",
    "key_group_parts",
    "key_group_range",
    "part_name",
]

KeyGroups = tuple[int, int]


def _check_parallelism(parallelism: object, max_key_groups: object) -> tuple[int, int]:
    if not is_int(parallelism) or not is_int(max_key_groups):
        raise TypeError("parallelism and max_key_groups must be ints")
    if max_key_groups < 1:
        raise ValueError(f"max_key_groups must be at least 1, got {max_key_groups}")
    if not 1 <= parallelism <= max_key_groups:
        raise ValueError(
            f"parallelism must be within [1, max_key_groups={max_key_groups}], got {parallelism}"
        )
    return parallelism, max_key_groups


def key_group_range(index: int, parallelism: int, max_key_groups: int) -> KeyGroups:
    """The inclusive key-group range ``(first, last)`` of subtask ``index`` of
    ``parallelism`` (Flink's ``computeKeyGroupRangeForOperatorIndex``): the ranges of all
    subtasks are contiguous, disjoint, cover ``[0, max_key_groups)`` and differ in size by
    at most one.

    Raises:
        TypeError: an argument is not an int.
        ValueError: ``max_key_groups`` < 1, ``parallelism`` outside ``[1, max_key_groups]``
            or ``index`` outside ``[0, parallelism)``.
    """
    parallelism, max_key_groups = _check_parallelism(parallelism, max_key_groups)
    if not is_int(index):
        raise TypeError("index must be an int")
    if not 0 <= index < parallelism:
        raise ValueError(f"index must be within [0, {parallelism}), got {index}")
    first = (index * max_key_groups + parallelism - 1) // parallelism
    last = ((index + 1) * max_key_groups - 1) // parallelism
    return first, last


def part_name(key_groups: KeyGroups) -> str:
    """The conventional name of the part holding ``key_groups``: ``kg-{first:04d}-{last:04d}``
    (names sort in key-group order for up to 10 000 key groups)."""
    first, last = key_groups
    return f"kg-{first:04d}-{last:04d}"


def key_group_parts(parallelism: int, max_key_groups: int) -> dict[str, KeyGroups]:
    """Part name → key-group range for every subtask of ``parallelism`` (what to pass as
    ``parts`` to ``begin_parallel``), in subtask order.

    Raises:
        TypeError: an argument is not an int.
        ValueError: ``parallelism`` is outside ``[1, max_key_groups]``.
    """  # noqa: DOC502 - raised by _check_parallelism
    parallelism, max_key_groups = _check_parallelism(parallelism, max_key_groups)
    ranges = [key_group_range(i, parallelism, max_key_groups) for i in range(parallelism)]
    return {part_name(groups): groups for groups in ranges}


@dataclass(frozen=True, slots=True)
class Assignment:
    """What new subtask ``index`` restores: its key-group range and the stored parts to read
    (those overlapping the range, plus its share of the unkeyed parts), in stored order."""

    index: int
    key_groups: KeyGroups
    parts: tuple[str, ...]


def assign_parts(
    parts: Mapping[str, KeyGroups | None] | Iterable[tuple[str, KeyGroups | None]],
    new_parallelism: int,
    max_key_groups: int | None = None,
) -> list[Assignment]:
    """Map stored parts onto ``new_parallelism`` subtasks (rescaling).

    ``parts`` is name → key-group range as stored (``{p.name: p.key_groups for p in
    manifest.parts}``); ``max_key_groups`` defaults to one past the highest key group
    stored. Subtask ``i`` gets :func:`key_group_range` ``(i, new_parallelism,
    max_key_groups)`` and every part whose range overlaps it: scaling in (8 → 4), each new
    subtask reads two whole parts; scaling out, a part is read by every subtask it overlaps,
    each keeping only its own key groups. Unkeyed parts (range ``None``) are dealt out
    round-robin, each to exactly one subtask.

    Raises:
        TypeError: an argument is not an int.
        ValueError: ``new_parallelism`` is outside ``[1, max_key_groups]``, a stored range
            is not ``(first, last)`` with ``0 <= first <= last``, lies beyond
            ``max_key_groups``, or two stored ranges overlap.
    """  # noqa: DOC502 - TypeError raised by _check_parallelism
    listed = list(parts.items()) if isinstance(parts, Mapping) else list(parts)
    keyed = [(name, groups) for name, groups in listed if groups is not None]
    for name, (first, last) in keyed:
        if not (is_int(first) and is_int(last)) or not 0 <= first <= last:
            raise ValueError(f"part {name!r}: bad key-group range {(first, last)!r}")
    if max_key_groups is None:
        max_key_groups = max((last for _, (_, last) in keyed), default=new_parallelism - 1) + 1
    new_parallelism, max_key_groups = _check_parallelism(new_parallelism, max_key_groups)
    ordered = sorted(keyed, key=lambda item: item[1])
    for (name_a, (_, last_a)), (name_b, (first_b, _)) in itertools.pairwise(ordered):
        if first_b <= last_a:
            raise ValueError(f"parts {name_a!r} and {name_b!r} overlap in key groups")
    if ordered and ordered[-1][1][1] >= max_key_groups:
        raise ValueError(f"part {ordered[-1][0]!r} lies beyond max_key_groups={max_key_groups}")
    unkeyed = [name for name, groups in listed if groups is None]
    result = []
    for index in range(new_parallelism):
        first, last = key_group_range(index, new_parallelism, max_key_groups)
        mine = {name for name, (p_first, p_last) in keyed if p_first <= last and first <= p_last}
        mine.update(unkeyed[index::new_parallelism])
        ordered_names = tuple(name for name, _ in listed if name in mine)
        result.append(Assignment(index, (first, last), ordered_names))
    return result
