"""Argument checks shared by the stores: integers that are really integers, in range."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["MAX_U64", "check_u64", "is_int"]

MAX_U64 = 2**64 - 1


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool`` (``True`` is no sequence number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_u64(value: object, what: str, *, minimum: int = 0) -> int:
    """Return ``value`` if it is an int in ``[minimum, 2**64 - 1]``.

    ``what`` names the argument in the message.

    Raises:
        TypeError: if ``value`` is not an int (bools included).
        ValueError: if ``value`` is outside ``[minimum, 2**64 - 1]``.
    """
    if not is_int(value):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not minimum <= value <= MAX_U64:
        raise ValueError(f"{what} must be within [{minimum}, 2**64 - 1], got {value}")
    return value
