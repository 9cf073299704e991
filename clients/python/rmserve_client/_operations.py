"""The steps of one call that the sync and async clients share, with no I/O: the time left, the routing
argument, the gRPC ScoreStream bookkeeping, the critique stream's result, OpenRLHF's body.
``RewardClient`` (sync_client.py) and ``AsyncRewardClient`` (async_client.py) differ only in how they wait.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rmserve_client.exceptions import DeadlineExceeded, RMServeError
from rmserve_client.types import CritiqueChunk, CritiqueResult, ScoreResult, Voting

if TYPE_CHECKING:
    from rmserve_client._base import BaseClient


def remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no deadline); raises once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the call's timeout passed (client side)", status="DEADLINE_EXCEEDED")
    return left


def left_or_zero(deadline: float | None) -> float | None:
    """The timeout to hand one item of a stream: what is left, 0 when nothing is (that item then fails alone)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def routed(route: str | None) -> dict[str, str]:
    """The transport's ``route`` argument, only when there is one (custom transports may not take it)."""
    return {"route": route} if route else {}


def with_id(item: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A streamed item with its id: the caller's, else its position as a string (results are matched by it)."""
    return {**item, "id": str(item.get("id", index))}


def failed(item: Mapping[str, Any], error: RMServeError) -> ScoreResult:
    """A streamed item's result when it failed: streams yield errors instead of raising."""
    return ScoreResult(reward=float("nan"), id=item["id"], error=error)


def collect_critique(chunks: list[CritiqueChunk]) -> CritiqueResult:
    last = chunks[-1] if chunks else None
    if last is None or not last.done or last.reward is None:
        raise RMServeError("the critique stream ended without a result")
    return CritiqueResult(last.critique if last.critique is not None else "".join(c.text for c in chunks), last.reward)


def judge_options(voting: Voting | Mapping[str, Any] | None, return_judgment: bool | None) -> dict[str, Any]:
    """The generative-judge options of a score / compare / rank body (REST JSON; gRPC fills its Voting from it),
    only those given: a scalar-model server never sees them unless the caller asked (it refuses them)."""
    options: dict[str, Any] = {}
    if voting is not None:
        options["voting"] = voting.to_json() if isinstance(voting, Voting) else dict(voting)
    if return_judgment:
        options["return_judgment"] = True
    return options


def conversation(prompt: Any, messages: Any, images: Any) -> dict[str, Any]:
    return {"prompt": prompt, "messages": messages, "images": images}


def get_reward_body(queries: Sequence[str], prompts: Sequence[str] | None, labels: Sequence[Any] | None) -> dict:
    """OpenRLHF's payload; prompts and labels only when given (an empty list would not match the queries)."""
    body: dict[str, Any] = {"query": list(queries)}
    if prompts is not None:
        body["prompts"] = list(prompts)
    if labels is not None:
        body["labels"] = list(labels)
    return body


class ScoreStreamBook:
    """One gRPC ScoreStream call's bookkeeping: the items sent, by id, until their result comes back;
    the items whose referenced image the server lost (``lost``), to be scored again inline."""

    def __init__(self, client: BaseClient, returns: Sequence[str] | None, options: Mapping[str, Any] | None = None):
        self.client = client
        self.returns = returns
        self.options = dict(options or {})  # judge_options: each stream message carries them (per-item fields)
        self.sent: dict[str, dict[str, Any]] = {}
        self.lost: list[dict[str, Any]] = []

    def request(self, loaded: dict[str, Any]) -> Any:
        """The stream message for an item (its images already uploaded or inline)."""
        from rmserve_client._grpc import stream_item

        self.sent[loaded["id"]] = loaded
        return stream_item({**self.client._wire_items([loaded])[0], **self.options, "id": loaded["id"]}, self.returns)

    def result(self, data: Mapping[str, Any]) -> ScoreResult | None:
        """The result to yield for a stream message; None when its item goes to ``lost`` instead."""
        result = self.client._parse_stream_result(data)
        item = self.sent.pop(result.id, None) if result.id is not None else None
        if result.error is not None and self.client._is_image_not_found(result.error) and item is not None:
            self.lost.append(item)
            return None
        if item is not None and result.ok:
            self.client._sent([item])
        return result

    def resend(self) -> list[dict[str, Any]]:
        """The lost items, once the client has forgotten the images the server no longer holds."""
        if self.lost:
            self.client._image_not_found(self.lost)
        return self.lost


async def aiter_items(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if hasattr(items, "__aiter__"):
        async for item in items:  # type: ignore[union-attr]
            yield item
    else:
        for item in items:  # type: ignore[union-attr]
            yield item
