"""Key groups (Flink's model): ranges per subtask, part names, and rescaling assignments."""

from __future__ import annotations

import pytest

from objstore import assign_parts, key_group_parts, key_group_range
from objstore.checkpoint import Assignment, part_name


@pytest.mark.parametrize(
    ("parallelism", "max_key_groups", "expected"),
    [
        (1, 128, [(0, 127)]),
        (3, 128, [(0, 42), (43, 85), (86, 127)]),  # Flink's computeKeyGroupRangeForOperatorIndex
        (4, 10, [(0, 2), (3, 4), (5, 7), (8, 9)]),
        (5, 5, [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]),
    ],
)
def test_key_group_ranges_are_flinks(
    parallelism: int, max_key_groups: int, expected: list[tuple[int, int]]
) -> None:
    ranges = [key_group_range(i, parallelism, max_key_groups) for i in range(parallelism)]
    assert ranges == expected


@pytest.mark.parametrize("parallelism", [1, 2, 3, 7, 8, 31, 32])
def test_ranges_are_contiguous_disjoint_and_even(parallelism: int) -> None:
    ranges = [key_group_range(i, parallelism, 32) for i in range(parallelism)]
    covered = [g for first, last in ranges for g in range(first, last + 1)]
    assert covered == list(range(32))
    sizes = {last - first + 1 for first, last in ranges}
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, 0, 8), ValueError),
        ((0, 9, 8), ValueError),
        ((3, 3, 8), ValueError),
        ((-1, 3, 8), ValueError),
        ((0, 1, 0), ValueError),
        ((0, 1.0, 8), TypeError),
        ((True, 2, 8), TypeError),
    ],
)
def test_bad_ranges_are_refused(args: tuple[object, object, object], error: type) -> None:
    with pytest.raises(error):
        key_group_range(*args)  # type: ignore[arg-type]


def test_part_names_carry_their_range_and_sort_in_key_group_order() -> None:
    parts = key_group_parts(8, 128)
    assert list(parts) == sorted(parts)
    assert parts["kg-0016-0031"] == (16, 31)
    assert part_name((0, 9)) == "kg-0000-0009"
    assert len(parts) == 8


def test_four_subtasks_restore_what_eight_wrote() -> None:
    stored = key_group_parts(8, 128)
    plan = assign_parts(stored, 4)
    assert plan == [
        Assignment(0, (0, 31), ("kg-0000-0015", "kg-0016-0031")),
        Assignment(1, (32, 63), ("kg-0032-0047", "kg-0048-0063")),
        Assignment(2, (64, 95), ("kg-0064-0079", "kg-0080-0095")),
        Assignment(3, (96, 127), ("kg-0096-0111", "kg-0112-0127")),
    ]


def test_scaling_out_reads_a_part_from_every_subtask_it_overlaps() -> None:
    stored = key_group_parts(3, 12)  # (0,3) (4,7) (8,11)
    plan = assign_parts(stored, 4, 12)  # (0,2) (3,5) (6,8) (9,11)
    assert [a.parts for a in plan] == [
        ("kg-0000-0003",),
        ("kg-0000-0003", "kg-0004-0007"),
        ("kg-0004-0007", "kg-0008-0011"),
        ("kg-0008-0011",),
    ]
    every = {name for a in plan for name in a.parts}
    assert every == set(stored)


def test_unkeyed_parts_are_dealt_out_once_each_and_stored_order_is_kept() -> None:
    stored = [("meta-0", None), *key_group_parts(2, 8).items(), ("meta-1", None), ("meta-2", None)]
    plan = assign_parts(stored, 2)
    assert plan[0].parts == ("meta-0", "kg-0000-0003", "meta-2")
    assert plan[1].parts == ("kg-0004-0007", "meta-1")
    assert assign_parts({"only": None}, 3)[0].parts == ("only",)


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ({"a": (0, 5), "b": (5, 9)}, "overlap"),
        ({"a": (3, 1)}, "bad key-group range"),
        ({"a": (-1, 4)}, "bad key-group range"),
    ],
)
def test_inconsistent_stored_ranges_are_refused(
    stored: dict[str, tuple[int, int]], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        assign_parts(stored, 2)


def test_a_stored_range_beyond_max_key_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="beyond max_key_groups"):
        assign_parts({"a": (0, 15)}, 2, 8)
    with pytest.raises(ValueError, match="parallelism must be within"):
        assign_parts({"a": (0, 1)}, 5)  # 2 key groups cannot go to 5 subtasks
