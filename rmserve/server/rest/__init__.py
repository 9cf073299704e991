"""REST transport (FastAPI): one router per thing served, all over the same ``AppState`` dependencies.

    rewards.py    /v1/score, /v1/compare, /v1/rank, /v1/safety, /v1/models
    critique.py   /v1/critique (JSON or server-sent events)
    images.py     /v1/images (upload once, refer by sha256)
    compat.py     /get_reward (OpenRLHF), /classify and /pooling (vLLM shapes)
    probes.py     /healthz, /readyz, /metrics
    deps.py       the dependencies every route takes: State, Service, Deadline; ``answer``

A new route family is a new module with a ``router``, listed in ``ROUTERS``.
"""

from rmserve.server.rest import compat, critique, images, probes, rewards

ROUTERS = (rewards.router, critique.router, images.router, compat.router, probes.router)

__all__ = ["ROUTERS"]
