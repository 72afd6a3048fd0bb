"""Request faults for the local test servers (moto, gcp-storage-emulator).

A server fixture routes each object request through :meth:`ServerFaults.take`; a matching
fault answers with an error instead (``after=False``) or after handling the request
(``after=True``: a write that landed although its writer saw it fail).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["Fault", "ServerFaults"]


@dataclass
class Fault:
    """One pending fault: how many more requests it fails, and how."""

    remaining: int
    status: int
    code: str
    methods: frozenset[str] | None
    key_contains: str | None
    after: bool


@dataclass
class ServerFaults:
    """Pending faults of one server, consumed in the order they were added."""

    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    injected: int = 0
    """How many requests have been failed so far."""

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        code: str = "SlowDown",
        methods: set[str] | None = None,
        key_contains: str | None = None,
        after: bool = False,
    ) -> None:
        """Fail the next ``count`` requests matching ``methods`` and ``key_contains``
        (``code`` is the error code servers that have one put in the body)."""
        with self._lock:
            self._faults.append(
                Fault(
                    count,
                    status,
                    code,
                    frozenset(m.upper() for m in methods) if methods else None,
                    key_contains,
                    after,
                )
            )

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._faults.clear()

    def take(self, method: str, target: str) -> Fault | None:
        """The fault to apply to a request of ``method`` on ``target``, if any (consumed)."""
        with self._lock:
            for fault in self._faults:
                if fault.methods is not None and method not in fault.methods:
                    continue
                if fault.key_contains is not None and fault.key_contains not in target:
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                self.injected += 1
                return fault
        return None
