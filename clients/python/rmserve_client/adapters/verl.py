"""veRL custom reward function: rmserve as ``compute_score``.

    # ppo_trainer.yaml (or the matching command-line overrides)
    custom_reward_function:
      path: <site-packages>/rmserve_client/adapters/verl.py   # python -m rmserve_client.adapters.verl
      name: compute_score            # or compute_score_async (the reward loop awaits it)
      reward_kwargs:
        url: grpc://rm-host:50051    # default: $RMSERVE_URL, else http://127.0.0.1:8000

veRL's contract (``verl/workers/reward_manager/naive.py``, ``experimental/reward_loop``): one call per
sample, ``compute_score(data_source=..., solution_str=<decoded response>, ground_truth=...,
extra_info=<the row's extra_info dict>, **reward_kwargs)`` (the reward loop adds
``reward_router_address`` / ``reward_model_tokenizer``; ignored here); returns a float or a dict
with ``"score"``. veRL hands over only the response, so the prompt must be in ``extra_info``: the
first of ``messages`` (a list of ``{"role", "content"}``), ``prompt``, ``question``, ``query`` or
``problem``; images, optional, in ``extra_info["images"]`` / ``["image"]`` (paths, bytes, PIL or
``{"bytes", "path"}``). Put them there in your data preprocessing.

An item the server rejects raises (veRL has no "no reward" value); pass ``error_score=0.0`` in
``reward_kwargs`` to score it that instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from rmserve_client.client import AsyncRewardClient, RewardClient
from rmserve_client.exceptions import InvalidRequest

PROMPT_KEYS = ("prompt", "question", "query", "problem")
_clients: dict[tuple[str, str | None, bool], Any] = {}
_lock = threading.Lock()


def _client(url: str | None, api_key: str | None, *, asynchronous: bool) -> Any:
    url = url or os.environ.get("RMSERVE_URL") or "http://127.0.0.1:8000"
    key = (url, api_key, asynchronous)
    with _lock:
        if key not in _clients:
            cls = AsyncRewardClient if asynchronous else RewardClient
            _clients[key] = cls(url, api_key=api_key, timeout=float(os.environ.get("RMSERVE_TIMEOUT", "120")))
        return _clients[key]


def to_item(solution_str: str, extra_info: Mapping[str, Any] | None) -> dict[str, Any]:
    info = dict(extra_info or {})
    item: dict[str, Any] = {"response": solution_str}
    messages = info.get("messages")
    if messages:
        item["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        prompt = next((info[k] for k in PROMPT_KEYS if isinstance(info.get(k), str)), None)
        if prompt is None:
            raise ValueError(
                "rmserve needs the prompt: put it in extra_info as 'prompt' (or 'question', 'query', "
                "'problem', or 'messages') in your veRL data preprocessing"
            )
        item["prompt"] = prompt
    images = info.get("images", info.get("image"))
    if images is not None:
        item["images"] = list(images) if isinstance(images, list | tuple) else [images]
    return item


def compute_score(
    data_source: Any = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    error_score: float | None = None,
    **kwargs: Any,
) -> float:
    """The rmserve reward of ``solution_str`` for the prompt in ``extra_info``."""
    client = _client(url, api_key, asynchronous=False)
    try:
        return client.score(to_item(solution_str, extra_info)).reward
    except InvalidRequest:
        if error_score is None:
            raise
        return float(error_score)


async def compute_score_async(
    data_source: Any = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    error_score: float | None = None,
    **kwargs: Any,
) -> float:
    """As compute_score, for veRL's async reward loop (many samples in flight, batched by the server)."""
    client = _client(url, api_key, asynchronous=True)
    try:
        return (await client.score(to_item(solution_str, extra_info))).reward
    except InvalidRequest:
        if error_score is None:
            raise
        return float(error_score)


if __name__ == "__main__":
    print(os.path.abspath(__file__))
