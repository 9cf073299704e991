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
  manager hands ``raw_prompt`` or ``multi_modal_data`` to ``compute_score``. Either put the prompt and
  its images into ``extra_info`` in your data preprocessing (``extra_info["images"]``: paths, bytes,
  PIL images or ``{"bytes", "path"}`` dicts; see the README), or use ``RMServeRewardLoopManager``
  (below), which reads ``raw_prompt`` itself.

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


def _block_image(block: Mapping[str, Any]) -> Any:
    """The pixels of one ``raw_prompt`` image block: ``RLHFDataset._build_messages`` stores a PIL image under
    ``"image"`` (a ``{"bytes"}`` dict is opened into it), next to the dataset's other keys."""
    for key in ("image", "bytes", "path", "url"):
        if block.get(key) is not None:
            return block[key]
    return None


def raw_prompt_item(raw_prompt: Any, response: str, *, truncate: bool = True) -> tuple[dict, int]:
    """The rmserve item for veRL's ``raw_prompt`` messages (image blocks carry the images), and the number
    of image blocks whose pixels were missing."""
    messages, images, missing = [], [], 0
    for message in list(raw_prompt):
        content = message["content"]
        if isinstance(content, str):
            text, tags = _content_text(content)
            missing += tags
        else:
            texts = []
            for block in content:
                if block.get("type") == "image":
                    image = _block_image(block)
                    if image is None:
                        missing += 1
                    else:
                        images.append(image)
                elif block.get("type") == "text":
                    texts.append(block.get("text") or "")
            text = "".join(texts)
        messages.append({"role": message["role"], "content": text})
    item: dict[str, Any] = {"messages": messages, "response": response, "truncate": truncate}
    if images:
        item["images"] = images
    return item, missing


class RMServeRewardLoopManager:
    """A veRL reward-loop manager that scores with rmserve, images included, without any data preparation.

    veRL's reward loop can load its manager from a file (``RewardLoopWorker._init_reward_fn``,
    verl/experimental/reward_loop/reward_loop.py)::

        reward_model.reward_loop_source=importlib
        reward_model.reward_loop_module_path=$(python -m rmserve_client.adapters.verl)
        reward_model.reward_loop_class_name=RMServeRewardLoopManager
        +reward_model.rmserve_url=http://RM:8000        # else $RMSERVE_URL (set in the Ray runtime env)

    (with no ``custom_reward_function.path`` and ``reward_model.enable=False``, the worker calls
    ``run_single``). It is built as ``cls(config, tokenizer, compute_score, reward_router_address,
    reward_model_tokenizer)`` and ``await``-ed per sample with a one-item ``DataProto``; it reads the
    sample's ``raw_prompt`` (the dataset's messages, whose image blocks hold the images: veRL's
    multi-modal data) and the decoded response, exactly as veRL's own managers decode it, and returns
    ``{"reward_score", "reward_extra_info"}``.
    """

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: Any = None,
                 reward_model_tokenizer: Any = None):
        reward_model = config.get("reward_model", {}) if hasattr(config, "get") else {}
        self.url = (reward_model.get("rmserve_url") if hasattr(reward_model, "get") else None) or None
        self.tokenizer = tokenizer

    async def run_single(self, data: Any) -> dict[str, Any]:
        global _warned_missing
        item = data[0]
        response_ids = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        response = self.tokenizer.decode(response_ids[:valid], skip_special_tokens=True)
        scored, missing = raw_prompt_item(item.non_tensor_batch["raw_prompt"], response)
        reward = (await _client(self.url, None, asynchronous=True).score(scored)).reward
        if missing and not _warned_missing:
            _warned_missing = True
            log.warning("a raw_prompt refers to %d image(s) without pixels: scored without them", missing)
        extra = {"rmserve_images": float(len(scored.get("images", ()))), "rmserve_images_missing": float(missing)}
        return {"reward_score": float(reward), "reward_extra_info": extra}


if __name__ == "__main__":
    print(os.path.abspath(__file__))
