"""The one builder of a checkpoint id's conflict errors (objstore/checkpoint/_conflicts.py)."""

from __future__ import annotations

import pickle

from objstore.checkpoint import manifest_key
from objstore.checkpoint._conflicts import id_taken
from objstore.errors import CheckpointConflict, FencedError


def test_a_newer_winner_fences_a_writer_only() -> None:
    fenced = id_taken(7, None, epoch=2, winner_epoch=3, newer_fences=True)
    assert type(fenced) is FencedError
    copy = id_taken(7, "not copying", epoch=2, winner_epoch=3)
    assert type(copy) is CheckpointConflict
    assert "not copying" in str(copy)


def test_an_older_equal_or_unknown_winner_is_a_plain_conflict() -> None:
    for winner in (None, 1, 2):
        error = id_taken(7, None, epoch=2, winner_epoch=winner, newer_fences=True)
        assert type(error) is CheckpointConflict
        assert (error.key, error.checkpoint_id, error.epoch, error.winner_epoch) == (
            manifest_key(7),
            7,
            2,
            winner,
        )


def test_the_errors_built_survive_pickling() -> None:
    error = id_taken(7, "detail", epoch=2, winner_epoch=5, newer_fences=True)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is FencedError
    assert (copy.checkpoint_id, copy.epoch, copy.winner_epoch) == (7, 2, 5)
