"""OpenRLHF remote reward function file: pass THIS FILE as ``--reward.remote_url``.

    RMSERVE_URL=http://rm-host:8000 python -m openrlhf.cli.train_ppo_ray ... \\
        --reward.remote_url "$(python -m rmserve_client.adapters.openrlhf)"   # prints this file's path

OpenRLHF's contract (``openrlhf/utils/agent.py``, ``SingleTurnAgentExecutor``): a ``--reward.remote_url``
ending in ``.py`` is loaded with ``importlib`` (module name ``reward_func``) and its
``reward_func(queries, prompts, labels)`` is called once per sample, from worker threads
(``asyncio.to_thread``), many samples at once. ``queries`` are the decoded prompt+response with
special tokens kept; it must return ``{"rewards", "scores", "extra_logs"}`` (OpenRLHF reads
``rewards`` for the advantage, ``scores`` for dynamic filtering, falling back to ``rewards``).

Here each call becomes one ``POST /get_reward`` to rmserve (the same shape OpenRLHF would send to
an HTTP remote RM, whose chat-template parsing lives in the server), through the shared
``RewardClient``: retries with backoff on overload, a deadline, the API key. Settings come from
the environment, since OpenRLHF passes none: ``RMSERVE_URL`` (default http://127.0.0.1:8000; must
be http(s): /get_reward is a REST route), ``RMSERVE_API_KEY``, ``RMSERVE_TIMEOUT`` (seconds, 180).
Lists come back, exactly what the HTTP path gives OpenRLHF (no torch needed here).

Images: OpenRLHF sends no pixels (a VLM policy's query only holds its expanded image-pad run), so the
dataset's label column (``--data.label_key``) must carry them, as a JSON object (or a string holding
one) ``{"images": [data URL | {"sha256": ...}], "ground_truth": ...}``; the label goes to the server
as it is. Ray: this file runs inside the vLLM rollout actors, so ``RMSERVE_URL`` must be in the job's
runtime env (``ray job submit --runtime-env-json '{"env_vars": {"RMSERVE_URL": "http://rm:8000"}}'``)
and ``rmserve-client`` installed on every node.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from rmserve_client.client import RewardClient

_client: RewardClient | None = None
_lock = threading.Lock()


def client() -> RewardClient:
    """The client every call shares (thread-safe), made from the environment on first use."""
    global _client
    with _lock:
        if _client is None:
            _client = RewardClient(
                os.environ.get("RMSERVE_URL", "http://127.0.0.1:8000"),
                timeout=float(os.environ.get("RMSERVE_TIMEOUT", "180")),
            )
        return _client


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any) -> dict:
    """OpenRLHF's remote reward function: ``{"rewards": [float], "scores": [float], "extra_logs": {...}}``."""
    result = client().get_reward(list(queries), list(prompts), list(labels))
    rewards = [float(r) for r in result["rewards"]]
    scores = result.get("scores")
    return {
        "rewards": rewards,
        "scores": [float(s) for s in scores] if scores is not None else rewards,
        "extra_logs": result.get("extra_logs") or {},
    }


if __name__ == "__main__":
    print(os.path.abspath(__file__))
