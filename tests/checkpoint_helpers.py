"""Helpers shared by the checkpoint tests."""

from __future__ import annotations

from objstore import CheckpointManifest, CheckpointStore
from objstore.backends import AsyncBackend, Backend, RetryPolicy, open_backend, open_transport
from objstore.checkpoint import LATEST
from objstore.checkpoint._layout import parse_pointer
from objstore.testing import FaultInjectingTransport


async def no_sleep(_: float) -> None:
    """Backoff that does not wait, so retry tests run instantly."""


def instant_retry() -> RetryPolicy:
    """The default retry policy without the waiting."""
    return RetryPolicy(sleep=no_sleep)


def faulty_store(url: str, **options: object) -> tuple[CheckpointStore, FaultInjectingTransport]:
    """A store on ``url`` whose every request goes through a fault injector.

    The capability probe has already run, so the call log holds only the store's requests.
    """
    faults = FaultInjectingTransport(open_transport(url))
    backend = Backend(AsyncBackend(faults, retry=instant_retry()))
    assert backend.probe().ok
    faults.clear_calls()
    return CheckpointStore(backend, **options), faults


def sub_url(url: str, name: str) -> str:
    """A separate, empty store next to ``url`` (same bucket or directory tree)."""
    if url.startswith("memory://"):
        return f"{url}-{name}"
    return f"{url}/{name}"


def manifest(checkpoint_id: int, epoch: int = 1, **fields: object) -> CheckpointManifest:
    """A manifest with recognisable source offsets."""
    return CheckpointManifest(
        checkpoint_id=checkpoint_id,
        epoch=epoch,
        source_offsets={"events": {"partition-0": checkpoint_id * 10}},
        **fields,  # type: ignore[arg-type]
    )


def state_for(checkpoint_id: int) -> dict[str, bytes]:
    """Operator state that differs per checkpoint."""
    return {
        "counts": f"counts-{checkpoint_id}-".encode() * 50,
        "window": bytes([checkpoint_id % 256]) * 300,
    }


def joined_state(checkpoint_id: int) -> bytes:
    """What load_state_data returns for :func:`state_for`."""
    return b"".join(state_for(checkpoint_id).values())


def pointed_id(url: str) -> int | None:
    """The checkpoint id ``latest.txt`` names, in either pointer format (raw read)."""
    record = parse_pointer(open_backend(url).get(LATEST)[0])
    return record.checkpoint_id if record is not None else None
