"""TRL ``reward_funcs``: rmserve as a reward function of GRPOTrainer (and RLOO, which calls them alike).

    from rmserve_client.adapters.trl import RMServeReward, AsyncRMServeReward
    trainer = GRPOTrainer(model=..., reward_funcs=[RMServeReward("grpc://rm-host:50051")], ...)

How TRL calls it (trl 1.x ``GRPOTrainer._calculate_rewards``; 0.2x the same, minus some kwargs)::

    reward_func(prompts=prompts, completions=completions, completion_ids=completion_ids_list,
                **reward_kwargs)  # -> list[float | None], one per completion; None -> NaN (unscorable)

- ``prompts``: strings (standard format) or lists of ``{"role", "content"}`` messages
  (conversational). For image datasets TRL has already put the images into the first user turn:
  ``content`` is then a list of blocks ``[{"type": "image", "image": <PIL>}, {"type": "text", ...}]``.
- ``completions``: strings, or ``[{"role": "assistant", "content": ...}]``.
- ``reward_kwargs``: every other dataset column, one value per completion (``images`` — a list per
  row — or ``image``, ground truths, ...), plus ``trainer_state``, ``log_extra``, ``log_metric`` and
  ``environments``. We use the images (when the prompt blocks do not carry them) and ignore the rest.
- Async callables (``AsyncRMServeReward``) run on the trainer's own event loop, in parallel with
  the other async reward functions. TRL names the reward after ``__name__`` (logged as
  ``rewards/<name>/mean``); both classes set it (default ``"rmserve"``).

Every policy output gets a reward: an empty or whitespace completion is scored as the empty
assistant turn, an over-long one is truncated (items go out with ``truncate: true``; pass
``truncate=False`` to have them refused instead). An item the server still rejects (a broken dataset
image) gets ``None`` (TRL: NaN, excluded from the group baseline) and one warning naming the field;
the rest of its batch is resent at once without it (one more request per bad item, never one request
per item). Anything else (server down after retries) raises, because silently training on missing
rewards is worse than stopping. Both classes pickle (the client is made again on first use), as
TRL's multiprocess paths need.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rmserve_client.client import AsyncRewardClient, RewardClient
from rmserve_client.exceptions import InvalidRequest

log = logging.getLogger("rmserve_client.trl")
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "user"}


def _text(content: Any, images: list[Any]) -> str:
    """A message's text; image blocks' payloads are appended to ``images``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(block.get("text") or "")
        elif block.get("type") == "image" and block.get("image") is not None:
            images.append(block["image"])
    return "\n".join(p for p in parts if p)


def to_item(prompt: Any, completion: Any, images: Any = None, *, truncate: bool = True) -> dict[str, Any]:
    """One (prompt, completion) in TRL's format -> an rmserve score item."""
    found: list[Any] = []
    if isinstance(completion, str):
        response = completion
    else:
        response = "".join(_text(m.get("content"), []) for m in completion if m.get("role") == "assistant")
    if isinstance(prompt, str):
        item: dict[str, Any] = {"prompt": prompt}
    else:
        messages = [{"role": ROLES.get(m["role"], "user"), "content": _text(m.get("content"), found)} for m in prompt]
        while messages and messages[-1]["role"] == "assistant":  # a pre-filled reply: part of the response
            response = messages.pop()["content"] + response
        item = {"messages": messages}
    if not found and images is not None:  # the dataset column, when the prompt blocks carry no pixels
        found = [im for im in (images if isinstance(images, list | tuple) else [images]) if im is not None]
    if found:
        item["images"] = found
    item["response"] = response
    item["truncate"] = truncate
    return item


def to_items(prompts: Sequence[Any], completions: Sequence[Any], kwargs: Mapping[str, Any], *,
             truncate: bool = True) -> list[dict[str, Any]]:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    column = kwargs.get("images", kwargs.get("image"))
    images = list(column) if column is not None else [None] * len(prompts)
    return [to_item(p, c, im, truncate=truncate) for p, c, im in zip(prompts, completions, images, strict=True)]


def _chunks(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


_ITEM = re.compile(r"^items\.(\d+)(?:\.|$)")


def rejected_index(exc: InvalidRequest, n: int) -> int | None:
    """The batch position the server's error names (``items.3.images.0`` -> 3), if it names one."""
    match = _ITEM.match(exc.param or "")
    return int(match.group(1)) if match and int(match.group(1)) < n else None


def _warn(exc: InvalidRequest, where: str) -> None:
    log.warning("rmserve rejected %s (%s): %s; its reward is None", where, exc.code or "invalid", exc.message)


class _RewardBase:
    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = "rmserve",
        returns: Sequence[str] | None = None,
        batch_size: int = 64,
        timeout: float | None = 120.0,
        truncate: bool = True,
        **client_options: Any,
    ):
        self.__name__ = name
        self.truncate = truncate
        self.url = url
        self.batch_size = batch_size
        self.timeout = timeout
        self.returns = returns
        self.client_options = client_options
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.__name__!r})"


class RMServeReward(_RewardBase):
    """Synchronous TRL reward function backed by rmserve (REST or gRPC, by the URL's scheme)."""

    @property
    def client(self) -> RewardClient:
        if self._client is None:
            self._client = RewardClient(self.url, timeout=self.timeout, **self.client_options)
        return self._client

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        chunks = _chunks(to_items(prompts, completions, kwargs, truncate=self.truncate), self.batch_size)
        if len(chunks) == 1:
            return self._score(chunks[0])
        with concurrent.futures.ThreadPoolExecutor(min(8, len(chunks))) as pool:
            return [r for chunk in pool.map(self._score, chunks) for r in chunk]

    def _score(self, items: list[dict[str, Any]]) -> list[float | None]:
        rewards: list[float | None] = [None] * len(items)
        pending = list(range(len(items)))  # positions still to score
        while pending:
            try:
                results = self.client.score([items[k] for k in pending], returns=self.returns)
            except InvalidRequest as exc:
                bad = rejected_index(exc, len(pending))
                if bad is None:  # about the request, not one item (wrong model name, limits): a setup error
                    raise
                _warn(exc, f"item {pending[bad]}")
                del pending[bad]  # the others go again at once, without it
                continue
            for k, result in zip(pending, results, strict=True):
                rewards[k] = result.reward
            return rewards
        return rewards

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class AsyncRMServeReward(_RewardBase):
    """Async TRL reward function: TRL awaits it on its event loop, concurrently with other async rewards."""

    @property
    def client(self) -> AsyncRewardClient:
        if self._client is None:
            self._client = AsyncRewardClient(self.url, timeout=self.timeout, **self.client_options)
        return self._client

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        chunks = _chunks(to_items(prompts, completions, kwargs, truncate=self.truncate), self.batch_size)
        scored = await asyncio.gather(*(self._score(chunk) for chunk in chunks))
        return [r for chunk in scored for r in chunk]

    async def _score(self, items: list[dict[str, Any]]) -> list[float | None]:
        rewards: list[float | None] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            try:
                results = await self.client.score([items[k] for k in pending], returns=self.returns)
            except InvalidRequest as exc:
                bad = rejected_index(exc, len(pending))
                if bad is None:
                    raise
                _warn(exc, f"item {pending[bad]}")
                del pending[bad]
                continue
            for k, result in zip(pending, results, strict=True):
                rewards[k] = result.reward
            return rewards
        return rewards

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def rmserve_reward_func(url: str | None = None, **options: Any) -> RMServeReward:
    """``reward_funcs=[rmserve_reward_func("http://rm:8000")]``; options as RMServeReward."""
    return RMServeReward(url, **options)


def rmserve_async_reward_func(url: str | None = None, **options: Any) -> Any:
    """An ``async def`` reward function (options as AsyncRMServeReward). TRL 0.27-1.0 detect async
    reward functions with ``asyncio.iscoroutinefunction``, which is False for a callable object; this
    plain coroutine function works with every TRL that supports async rewards. Not picklable: where
    that matters (TRL >= 1.1), pass ``AsyncRMServeReward(...)`` itself."""
    reward = AsyncRMServeReward(url, **options)

    async def rmserve_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return await reward(prompts, completions, **kwargs)

    rmserve_reward.__name__ = rmserve_reward.__qualname__ = reward.__name__
    rmserve_reward.reward = reward  # type: ignore[attr-defined]  # for aclose()
    return rmserve_reward
