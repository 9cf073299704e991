"""Per-request context shared by every layer (no imports from the rest of rmserve).

``request_id_var`` holds the current request's id: the transports set it (server/middleware.py,
server/rpc/call_gate.py), tasks and preprocessing jobs inherit it, and the engine's worker sets it to
the ids of the requests in the batch it runs, so every log line names the request(s) it is about.
"""

from __future__ import annotations

import contextvars

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("rmserve_request_id", default=None)

__all__ = ["request_id_var"]
