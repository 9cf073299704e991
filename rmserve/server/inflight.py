"""Requests in progress, counted by the transports (REST middleware, the gRPC call gate)."""

from __future__ import annotations


class InFlight:
    """Requests in progress by transport, and how many of them were admitted before draining began.

    Touched only from the event loop (middleware and the gRPC interceptor), so it needs no lock.
    """

    def __init__(self) -> None:
        self.by_transport: dict[str, int] = {"http": 0, "grpc": 0}
        self.admitted = 0  # in progress and begun before draining: what a drain waits for
        self.draining = False

    def in_progress(self) -> int:
        """Requests in progress over every transport (the engine's hint that more work is on its way)."""
        return sum(self.by_transport.values())

    def begin(self, transport: str) -> bool:
        """Count a request in; returns whether it counts as admitted work (pass it to ``end``)."""
        self.by_transport[transport] = self.by_transport.get(transport, 0) + 1
        if self.draining:
            return False
        self.admitted += 1
        return True

    def end(self, transport: str, admitted: bool) -> None:
        self.by_transport[transport] -= 1
        if admitted:
            self.admitted -= 1
