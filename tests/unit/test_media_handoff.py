"""The decode thread → event loop handoff: newest items kept, the producer never waits."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ingress_pod.inputs.handoff import DropOldestQueue


async def test_full_queue_drops_the_oldest() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(asyncio.get_running_loop(), maxlen=2)
    dropped = [queue.put(i) for i in range(5)]
    assert dropped == [False, False, True, True, True]
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == [3, 4]


async def test_newest_only_queue_keeps_the_latest_frame() -> None:
    queue: DropOldestQueue[str] = DropOldestQueue(asyncio.get_running_loop(), maxlen=1)
    queue.put("old")
    queue.put("new")
    assert await queue.get() == "new"


async def test_a_put_from_another_thread_wakes_the_waiting_consumer() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(asyncio.get_running_loop(), maxlen=10)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    threading.Thread(target=queue.put, args=(7,)).start()
    assert await asyncio.wait_for(getter, 2) == 7


async def test_items_from_a_fast_producer_arrive_in_order_without_blocking_it() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(asyncio.get_running_loop(), maxlen=1000)
    producer = threading.Thread(target=lambda: [queue.put(i) for i in range(500)])
    producer.start()
    got = [await asyncio.wait_for(queue.get(), 2) for _ in range(500)]
    producer.join()
    assert got == list(range(500))


async def test_maxlen_must_hold_an_item() -> None:
    with pytest.raises(ValueError):
        DropOldestQueue(asyncio.get_running_loop(), maxlen=0)
