"""``RewardClient`` (sync) and ``AsyncRewardClient`` (asyncio): the I/O halves over ``BaseClient``.

    with RewardClient("http://127.0.0.1:8000") as rm:          # or "grpc://127.0.0.1:50051"
        rm.score(prompt="What is shown?", images=[pil_image], response="A cat.").reward
        rm.score([{"prompt": p, "images": [img], "response": r} for r in group])   # -> list[ScoreResult]

    async with AsyncRewardClient("grpc://127.0.0.1:50051", api_key=...) as rm:
        results = await rm.score(items, timeout=5.0)
        async for result in rm.score_stream(rollouts):     # results as they finish, matched by .id
            ...

Every call takes ``timeout=`` (seconds for the whole call, retries included; the server is told
the remaining time so it drops expired work). Overloaded / unavailable / transport failures are
retried with exponential backoff and jitter, honouring Retry-After. Images are uploaded once and
then referred to by sha256 (``upload_images=False``: always inline). The two classes have the same
methods; the async ones are coroutines, ``close`` is ``aclose``.

This module is where both are imported from (``rmserve_client.client``, as before the split); they live in
sync_client.py and async_client.py, over the shared request building of _base.py and _operations.py.
"""

from rmserve_client.async_client import AsyncRewardClient
from rmserve_client.sync_client import RewardClient

__all__ = ["AsyncRewardClient", "RewardClient"]
