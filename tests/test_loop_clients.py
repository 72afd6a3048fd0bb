"""The per-event-loop client pool that the S3 and GCS transports share."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from objstore.backends._loop_clients import LoopClients


class FakeClient:
    """Stands for an aiobotocore client or a gcsfs session: remembers how it was closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.closed_on: asyncio.AbstractEventLoop | None = None


async def close(client: FakeClient, loop: asyncio.AbstractEventLoop) -> None:
    assert client.loop is loop
    client.closed_on = asyncio.get_running_loop()


def make_pool() -> tuple[LoopClients[FakeClient], list[FakeClient]]:
    built: list[FakeClient] = []
    return LoopClients("fake", close), built


def builder(built: list[FakeClient]) -> Callable[[], Awaitable[FakeClient]]:
    async def build() -> FakeClient:
        await asyncio.sleep(0.01)  # let concurrent first uses pile up
        client = FakeClient(asyncio.get_running_loop())
        built.append(client)
        return client

    return build


def test_seats_with_equal_configs_share_one_client_per_loop_and_the_last_closes_it() -> None:
    pool, built = make_pool()
    first = pool.seat("config-a", builder(built))
    second = pool.seat("config-a", builder(built))
    other = pool.seat("config-b", builder(built))

    async def scenario() -> None:
        clients = await asyncio.gather(*(seat.client() for seat in (first, second) * 4))
        assert len({id(client) for client in clients}) == 1  # built once, however many ask
        assert await other.client() is not clients[0]
        await first.release()
        assert clients[0].closed_on is None  # the second seat still uses it
        await second.release()
        assert clients[0].closed_on is asyncio.get_running_loop()
        await other.release()

    asyncio.run(scenario())
    assert len(built) == 2


def test_each_loop_gets_its_own_client_and_ended_loops_are_closed_here() -> None:
    pool, built = make_pool()
    seat = pool.seat("config", builder(built))
    other = pool.seat("config", builder(built))
    first = asyncio.run(seat.client())

    async def second_loop() -> tuple[FakeClient, asyncio.AbstractEventLoop]:
        # Any use of the pool closes the clients of loops that have ended, here.
        return await other.client(), asyncio.get_running_loop()

    second, second_runner = asyncio.run(second_loop())
    assert first is not second
    assert first.closed_on is second_runner
    assert second.closed_on is None

    async def release() -> asyncio.AbstractEventLoop:
        await seat.release()
        await other.release()
        return asyncio.get_running_loop()

    closing_loop = asyncio.run(release())
    assert second.closed_on is closing_loop
    assert (seat.loops(), other.loops()) == (0, 0)


def test_a_client_on_a_running_loop_in_another_thread_is_closed_there() -> None:
    pool, built = make_pool()
    seat = pool.seat("config", builder(built))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        client = asyncio.run_coroutine_threadsafe(seat.client(), loop).result(timeout=5)
        asyncio.run(seat.release())
        assert client.closed_on is loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def test_a_client_on_an_idle_loop_is_closed_without_it() -> None:
    pool, built = make_pool()
    seat = pool.seat("config", builder(built))
    idle = asyncio.new_event_loop()  # as LoopDriven: run_until_complete, then idle
    try:
        client = idle.run_until_complete(seat.client())
        asyncio.run(seat.release())
        assert client.closed_on is not None
        assert client.closed_on is not idle
    finally:
        idle.close()
