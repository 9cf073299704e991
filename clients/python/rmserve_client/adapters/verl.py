"""veRL custom reward function: rmserve as ``compute_score``.

    # ppo_trainer.yaml (or the matching command-line overrides)
    custom_reward_function:
      path: <site-packages>/rmserve_client/adapters/verl.py   # python -m rmserve_client.adapters.verl
      name: compute_score            # or compute_score_async
      reward_kwargs:
        url: grpc://rm-host:50051    # default: $RMSERVE_URL, else http://127.0.0.1:8000

What veRL passes (read in veRL's source, volcengine/verl@b178a3c):

- legacy managers (``verl/workers/reward_manager/naive.py``, ``NaiveRewardManager.__call__``) and the
  reward loop (``verl/experimental/reward_loop/reward_manager/naive.py``, ``run_single``) call
  ``compute_score(data_source=, solution_str=<decoded response, special tokens skipped>,
  ground_truth=, extra_info=<the row's extra_info dict>)``, the reward loop adding
  ``reward_router_address`` / ``reward_model_tokenizer`` (ignored here), and read a float or a dict
  with ``"score"`` (every other key is logged as reward extra info).
- The legacy managers call it synchronously and use the return value as the score; the reward loop
  awaits it when ``inspect.iscoroutinefunction`` says so (``get_custom_reward_fn`` wraps it in a
  ``functools.partial``), else runs it in a thread. ``compute_score_async`` works under both: it is
  marked as a coroutine function (Python >= 3.12) and returns a coroutine when called on a running
  event loop, and it scores synchronously (returning the dict) when called without one.
- Images never reach a custom reward function: ``RLHFDataset._build_messages`` pops the dataset's
  image column (``data.image_key``, default ``images``) into ``raw_prompt``'s content blocks, and no
  manager hands ``raw_prompt`` or ``multi_modal_data`` to ``compute_score``. So put the prompt and
  its images into ``extra_info`` in your data preprocessing (``extra_info["images"]``: paths, bytes,
  PIL images or ``{"bytes", "path"}`` dicts; see the README).

The prompt comes from ``extra_info``: ``messages`` (``{"role", "content"}`` dicts), else ``prompt``,
``question``, ``query`` or ``problem``. veRL's ``<image>`` tags in that text are removed (the images go
into the first user turn). When the prompt has more ``<image>`` tags than ``extra_info`` has images,
the text is still scored, but never silently: a warning (once per process) and the returned
``rmserve_images_missing`` count say so. The return value is ``{"score": reward, "rmserve_images":
images sent, "rmserve_images_missing": tags without an image}``.

Items go out with ``truncate: true`` (an over-long response is scored on a cut prompt). An item the
server rejects raises (veRL has no "no reward" value); pass ``error_score=0.0`` in ``reward_kwargs``
to score it that instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from rmserve_client.client import AsyncRewardClient, RewardClient
from rmserve_client.exceptions import InvalidRequest

log = logging.getLogger("rmserve_client.verl")
PROMPT_KEYS = ("prompt", "question", "query", "problem")
IMAGE_TAG = re.compile(r"<image>\s*")
_clients: dict[tuple[str, str | None, bool], Any] = {}
_lock = threading.Lock()
_warned_missing = False


def _client(url: str | None, api_key: str | None, *, asynchronous: bool) -> Any:
    url = url or os.environ.get("RMSERVE_URL") or "http://127.0.0.1:8000"
    key = (url, api_key, asynchronous)
    with _lock:
        if key not in _clients:
            cls = AsyncRewardClient if asynchronous else RewardClient
            _clients[key] = cls(url, api_key=api_key, timeout=float(os.environ.get("RMSERVE_TIMEOUT", "120")))
        return _clients[key]


def _content_text(content: Any) -> tuple[str, int]:
    """A message's text and its image count (``<image>`` tags or image blocks)."""
    if isinstance(content, str):
        return IMAGE_TAG.sub("", content), len(IMAGE_TAG.findall(content))
    texts, images = [], 0
    for block in content or []:
        if isinstance(block, Mapping) and block.get("type") == "image":
            images += 1
        elif isinstance(block, Mapping):
            text, tags = _content_text(block.get("text") or "")
            texts.append(text)
            images += tags
    return "".join(texts), images


def to_item(solution_str: str, extra_info: Mapping[str, Any] | None, *, truncate: bool = True) -> tuple[dict, int]:
    """The rmserve item for one veRL sample, and how many images its prompt refers to."""
    info = dict(extra_info or {})
    item: dict[str, Any] = {"response": solution_str, "truncate": truncate}
    messages = info.get("messages")
    if messages:
        item["messages"], referenced = [], 0
        for m in messages:
            text, n = _content_text(m["content"])
            item["messages"].append({"role": m["role"], "content": text})
            referenced += n
    else:
        prompt = next((info[k] for k in PROMPT_KEYS if isinstance(info.get(k), str)), None)
        if prompt is None:
            raise ValueError(
                "rmserve needs the prompt: put it in extra_info as 'prompt' (or 'question', 'query', "
                "'problem', or 'messages') in your veRL data preprocessing"
            )
        item["prompt"], referenced = _content_text(prompt)
    images = info.get("images", info.get("image"))
    if images is not None:
        images = list(images) if isinstance(images, list | tuple) else [images]
        images = [im for im in images if im is not None]
        if images:
            item["images"] = images
    return item, referenced


def _result(reward: float, item: dict[str, Any], referenced: int) -> dict[str, float]:
    global _warned_missing
    sent = len(item.get("images", ()))
    missing = max(0, referenced - sent)
    if missing and not _warned_missing:
        _warned_missing = True
        log.warning(
            "a prompt refers to %d image(s) but extra_info carries %d: it was scored without them (counted in "
            "rmserve_images_missing). veRL does not pass the dataset's image column to a custom reward "
            "function: copy the images into extra_info['images'] in your data preprocessing", referenced, sent)
    return {"score": float(reward), "rmserve_images": float(sent), "rmserve_images_missing": float(missing)}


def compute_score(
    data_source: Any = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    error_score: float | None = None,
    truncate: bool = True,
    **kwargs: Any,
) -> dict[str, float]:
    """The rmserve reward of ``solution_str`` for the prompt (and images) in ``extra_info``."""
    item, referenced = to_item(solution_str, extra_info, truncate=truncate)
    try:
        reward = _client(url, api_key, asynchronous=False).score(item).reward
    except InvalidRequest:
        if error_score is None:
            raise
        reward = error_score
    return _result(reward, item, referenced)


async def _compute_score_async(solution_str, extra_info, *, url, api_key, error_score, truncate) -> dict[str, float]:
    item, referenced = to_item(solution_str, extra_info, truncate=truncate)
    try:
        reward = (await _client(url, api_key, asynchronous=True).score(item)).reward
    except InvalidRequest:
        if error_score is None:
            raise
        reward = error_score
    return _result(reward, item, referenced)


def compute_score_async(
    data_source: Any = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    error_score: float | None = None,
    truncate: bool = True,
    **kwargs: Any,
) -> Any:
    """As compute_score, for veRL's reward loop (many samples in flight, batched by the server): a coroutine
    when called on a running event loop, the result itself when called without one (legacy managers)."""
    options = {"url": url, "api_key": api_key, "error_score": error_score, "truncate": truncate}
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return compute_score(data_source, solution_str, ground_truth, extra_info, **options)
    return _compute_score_async(solution_str, extra_info, **options)


if hasattr(inspect, "markcoroutinefunction"):  # Python >= 3.12: the reward loop awaits it on its own loop
    inspect.markcoroutinefunction(compute_score_async)


if __name__ == "__main__":
    print(os.path.abspath(__file__))
