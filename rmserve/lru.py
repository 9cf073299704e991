"""One byte-bounded LRU for every cache rmserve keeps (decoded images, vision features, prompts).

Thread-safe (preprocessing runs in several threads); ``stats()`` has the keys /metrics reads.
An entry larger than the whole bound is not stored; putting an existing key replaces it.

Counting: a *miss* is a lookup that had to compute its value (a decode, a preprocess, an encode); a *hit*
is a lookup served without computing, from the cache or from the same computation already running for
another caller (``get_or_compute``). So ``1 - misses / lookups`` is the share of work saved, whatever
the timing: a GRPO group's G requests arriving at once cost one computation and count 1 miss + G-1 hits,
exactly as if they had arrived one after the other.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class _Flight:
    """One computation in progress; callers that need the same key wait for it instead of repeating it."""

    __slots__ = ("done", "ok", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value = None


class ByteLRU(Generic[V]):
    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def peek(self, key: Hashable) -> V | None:
        """Like ``get`` but counts nothing (for callers that count uses themselves: ``record``)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def record(self, *, hits: int = 0, misses: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses

    def get_or_compute(self, key: Hashable, compute: Callable[[], tuple[V, int]]) -> V:
        """The entry for ``key``; on a miss ``compute()`` -> (value, size in bytes) is stored and returned.

        Single flight: callers that miss while another caller computes the same key wait for its value
        (and count a hit) instead of computing it again. If that computation raises, the waiters compute
        it themselves (each then gets its own error, naming its own field).
        """
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[0]
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
                    self.misses += 1
            if leader:
                break
            flight.done.wait()
            if flight.ok:
                self.record(hits=1)
                return flight.value  # type: ignore[return-value]
        try:
            value, size = compute()
        except BaseException:
            with self._lock:
                del self._flights[key]
            flight.done.set()
            raise
        with self._lock:
            self._store_locked(key, value, size)
            del self._flights[key]
        flight.value, flight.ok = value, True
        flight.done.set()
        return value

    def put(self, key: Hashable, value: V, size: int) -> None:
        with self._lock:
            self._store_locked(key, value, size)

    def _store_locked(self, key: Hashable, value: V, size: int) -> None:
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def clear(self) -> None:
        """Forget every entry (counters stay)."""
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict:
        with self._lock:
            lookups = self.hits + self.misses
            return {"entries": len(self._entries), "bytes": self.bytes, "hits": self.hits, "misses": self.misses,
                    "hit_ratio": self.hits / lookups if lookups else 0.0}


__all__ = ["ByteLRU"]
