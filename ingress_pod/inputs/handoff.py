"""Handing media from the decode thread to the event loop without ever blocking the thread.

A live session must not accumulate latency: when the loop falls behind, the oldest queued
item is dropped to make room for the newest, and the producer never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded queue filled from any thread and drained by one coroutine on `loop`; when it
    is full, `put` drops the oldest item."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._loop = loop
        self._maxlen = maxlen
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._taken = asyncio.Event()  # set by the consumer each time it takes an item
        # True while the consumer waits for an item: only then does a put cross threads to wake it.
        self._armed = False

    def put(self, item: T) -> bool:
        """Queue `item` (from any thread); True when an older item was dropped for it."""
        with self._lock:
            dropped = len(self._items) >= self._maxlen
            if dropped:
                self._items.popleft()
            self._items.append(item)
            wake, self._armed = self._armed, False
        if wake:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(self._ready.set)
        return dropped

    async def get(self) -> T:
        """The oldest queued item, waiting for one if the queue is empty."""
        while True:
            self._ready.clear()
            with self._lock:
                if self._items:
                    self._taken.set()
                    return self._items.popleft()
                self._armed = True
            await self._ready.wait()

    def clear(self) -> int:
        """Drop every queued item; how many there were."""
        with self._lock:
            count = len(self._items)
            self._items.clear()
        return count

    async def drained(self) -> None:
        """Wait until the consumer has taken every queued item (once nothing more is put)."""
        while self._items:
            self._taken.clear()
            await self._taken.wait()

    def __len__(self) -> int:
        return len(self._items)
