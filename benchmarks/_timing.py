"""Timing helpers: repeated measurements summarised as median with min-max."""

from __future__ import annotations

import contextlib
import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import xxhash

__all__ = ["MB", "Samples", "hashing_cpu"]

MB = 1_000_000
"""Throughputs are in MB/s of raw state, MB = 10**6 bytes."""


@dataclass
class Samples:
    """Repeated timings of one operation; ``size`` bytes turn seconds into MB/s.

    Each sample also records the CPU seconds this process spent (all its threads), which
    shows how much of a wall-clock figure was work and how much was waiting, and, when a
    ``server`` process is given, the CPU seconds that process spent meanwhile.
    """

    size: int | None = None
    server: psutil.Process | None = None
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    server_cpu_seconds: list[float] = field(default_factory=list)

    def measure(self, action: Callable[[], object]) -> Any:
        """Run ``action`` once (after a garbage collection, so none runs inside it), record
        its wall and CPU time, and return its result."""
        gc.collect()
        server = _cpu(self.server) if self.server is not None else 0.0
        cpu = time.process_time()
        start = time.perf_counter()
        result = action()
        self.seconds.append(time.perf_counter() - start)
        self.cpu_seconds.append(time.process_time() - cpu)
        if self.server is not None:
            self.server_cpu_seconds.append(_cpu(self.server) - server)
        return result

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, seconds: float) -> float:
        assert self.size is not None
        return self.size / seconds / MB

    @property
    def median_rate(self) -> float:
        """MB/s at the median time (the median of the rates, for an odd count)."""
        return self.rate(self.median_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def median_server_cpu_s(self) -> float:
        return statistics.median(self.server_cpu_seconds)

    def cpu_rate_text(self) -> str:
        """MB of raw state per CPU-second of this process (median)."""
        assert self.size is not None
        return f"{self.size / self.median_cpu_s / MB:,.0f}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "n": len(self.seconds),
            "median_s": self.median_s,
            "min_s": min(self.seconds),
            "max_s": max(self.seconds),
            "samples_s": self.seconds,
            "cpu_s": self.cpu_seconds,
        }
        if self.server_cpu_seconds:
            data["server_cpu_s"] = self.server_cpu_seconds
        if self.size is not None:
            data.update(
                bytes=self.size,
                median_mb_s=self.median_rate,
                min_mb_s=self.rate(max(self.seconds)),
                max_mb_s=self.rate(min(self.seconds)),
            )
        return data

    def rate_text(self) -> str:
        """``median (min-max)`` in MB/s."""
        low, high = self.rate(max(self.seconds)), self.rate(min(self.seconds))
        return f"{self.median_rate:,.0f} ({low:,.0f}-{high:,.0f})"

    def ms_text(self) -> str:
        """``median (min-max)`` in milliseconds."""
        low, high = min(self.seconds) * 1e3, max(self.seconds) * 1e3
        return f"{self.median_s * 1e3:,.2f} ({low:,.2f}-{high:,.2f})"


@contextlib.contextmanager
def hashing_cpu() -> Iterator[dict[str, float]]:
    """Measure the CPU time spent in xxh3-128 while the block runs, by calling module.

    objstore calls ``xxhash.xxh3_128_hexdigest`` and ``xxhash.xxh3_128`` through the
    module, so replacing them there sees every call, in every thread; each call's thread CPU
    time is added to the calling module's total (e.g. ``objstore.checkpoint._sidecar``).
    """
    totals: dict[str, float] = {}
    lock = threading.Lock()
    digest, hasher_type = xxhash.xxh3_128_hexdigest, xxhash.xxh3_128

    def charge(start: float) -> None:
        caller = sys._getframe(2).f_globals.get("__name__", "?")
        spent = time.thread_time() - start
        with lock:
            totals[caller] = totals.get(caller, 0.0) + spent

    def timed_digest(data: Any) -> str:
        start = time.thread_time()
        try:
            return str(digest(data))
        finally:
            charge(start)

    class TimedHasher:
        def __init__(self) -> None:
            self._hasher = hasher_type()

        def update(self, data: Any) -> None:
            start = time.thread_time()
            try:
                self._hasher.update(data)
            finally:
                charge(start)

        def hexdigest(self) -> str:
            return str(self._hasher.hexdigest())

    xxhash.xxh3_128_hexdigest, xxhash.xxh3_128 = timed_digest, TimedHasher
    try:
        yield totals
    finally:
        xxhash.xxh3_128_hexdigest, xxhash.xxh3_128 = digest, hasher_type


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)
