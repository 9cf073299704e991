"""``AsyncRewardClient``: the asyncio client, with RewardClient's methods as coroutines (``aclose`` for
``close``). The requests it builds and the replies it parses are ``BaseClient``'s (_base.py) and
``_operations.py``'s; this module adds the waiting: awaited transport calls, tasks for REST streams, futures for
concurrent uploads of one image.

    async with AsyncRewardClient("grpc://127.0.0.1:50051", api_key=...) as rm:
        results = await rm.score(items, timeout=5.0)
        async for result in rm.score_stream(rollouts):     # results as they finish, matched by .id
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from rmserve_client._base import _DEFAULT, BaseClient
from rmserve_client._images import ImageData, load_image
from rmserve_client._operations import (
    ScoreStreamBook,
    aiter_items,
    collect_critique,
    conversation,
    failed,
    get_reward_body,
    judge_options,
    left_or_zero,
    remaining,
    routed,
    with_id,
)
from rmserve_client.exceptions import RETRYABLE, InvalidRequest, RMServeError, Unsupported
from rmserve_client.types import (
    CompareResult,
    CritiqueChunk,
    CritiqueResult,
    RankResult,
    SafetyResult,
    ScoreResult,
    UploadResult,
    Voting,
)


class AsyncRewardClient(BaseClient):
    """asyncio client: the same methods as RewardClient, as coroutines (``aclose`` for ``close``)."""

    def __init__(self, url: str | None = None, *, transport: Any = None, **options: Any):
        super().__init__(url, **options)
        self._transport = self._make_transport(transport)
        self._sleep: Callable[[float], Any] = asyncio.sleep
        self._uploading: dict[tuple[int, str], asyncio.Future] = {}

    def _make_transport(self, transport: Any) -> Any:
        if transport is not None and hasattr(transport, "request") and hasattr(transport, "aclose"):
            return transport
        if self.kind == "grpc":
            from rmserve_client._grpc import AsyncGrpcTransport

            return AsyncGrpcTransport(self.url, api_key=self.api_key)
        from rmserve_client._http import AsyncHTTPTransport

        return AsyncHTTPTransport(self.url, api_key=self.api_key, headers=self.headers, transport=transport)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def _call(
        self, op: str, body: Mapping[str, Any] | None, deadline: float | None, route: str | None = None
    ) -> dict[str, Any]:
        """``route``: the routing key (x-rmserve-group); by default the body's own (``routing_key``)."""
        routing = routed(route or self._route(body))
        attempt = 0
        while True:
            try:
                return await self._transport.request(op, body, timeout=remaining(deadline), **routing)
            except RETRYABLE as exc:
                await self._sleep(self._backoff(attempt, exc, deadline))
                attempt += 1

    async def _upload_missing(self, items: Sequence[Mapping[str, Any]], deadline: float | None, prefix="items",
                              route: str | None = None) -> None:
        missing = self._to_upload(items, prefix)
        route = route or self._route({"items": list(items)})  # the upload goes where the requests using it will go
        outcomes = await asyncio.gather(*(self._upload_once(image, deadline, route) for image, _ in missing),
                                        return_exceptions=True)
        for (_, where), outcome in zip(missing, outcomes, strict=True):
            if isinstance(outcome, InvalidRequest):
                raise self._upload_error(outcome, where) from None
            if isinstance(outcome, BaseException):
                raise outcome

    async def _upload_once(self, image: ImageData, deadline: float | None, route: str | None = None) -> None:
        key = (id(asyncio.get_running_loop()), image.sha256)
        if image.sha256 in self.images or not self._uploads_supported:
            return
        if key in self._uploading:
            await asyncio.wait_for(asyncio.shield(self._uploading[key]), remaining(deadline))
            return
        future = self._uploading[key] = asyncio.get_running_loop().create_future()
        try:
            self._uploaded(image, await self._call("upload_image", {"data": image}, deadline, route))
        except Unsupported:
            self._uploads_supported = False
        finally:
            del self._uploading[key]
            future.set_result(None)

    async def _send(
        self, items: Sequence[Mapping[str, Any]], deadline: float | None, send: Callable, prefix="items"
    ) -> Any:
        await self._upload_missing(items, deadline, prefix)
        try:
            data = await send(False)
        except InvalidRequest as exc:
            self._lost_images(exc, items)
            data = await send(True)
        self._sent(items)
        return data

    async def score(
        self,
        items: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        response: str | None = None,
        images: Sequence[Any] | None = None,
        group: str | None = None,
        truncate: bool | None = None,
        returns: Sequence[str] | None = None,
        verifier: str | Mapping[str, Any] | None = None,
        on_reject: str | None = None,
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> ScoreResult | list[ScoreResult]:
        fields = {"prompt": prompt, "messages": messages, "response": response, "images": images}
        loaded, single, deadline = self._score_request(items, {**fields, "group": group, "truncate": truncate}, timeout)
        extra = {"verifier": verifier, "on_reject": on_reject, **judge_options(voting, return_judgment)}

        route = self._route({"items": loaded})  # the items' own group id, which their wire form leaves out

        async def send(inline: bool) -> dict[str, Any]:
            body = self._score_body(loaded, returns, model, inline=inline, extra=extra)
            return await self._call("score", body, deadline, route)

        results = self._parse_score(await self._send(loaded, deadline, send), loaded)
        return results[0] if single else results

    async def score_stream(
        self,
        items: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        *,
        returns: Sequence[str] | None = None,
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        timeout: float | None = _DEFAULT,
        concurrency: int = 64,
    ) -> AsyncIterator[ScoreResult]:
        """As RewardClient.score_stream; ``items`` may be an async iterable (rollouts as they finish)."""
        deadline = self._deadline(timeout)
        options = judge_options(voting, return_judgment)
        if self.kind == "grpc" and hasattr(self._transport, "score_stream"):
            async for result in self._grpc_stream(aiter_items(items), returns, deadline, options):
                yield result
            return
        slots = asyncio.Semaphore(max(1, concurrency))
        results: asyncio.Queue[ScoreResult | BaseException | None] = asyncio.Queue()
        pending = 0

        async def one(item: dict[str, Any]) -> None:
            try:
                results.put_nowait(await self._score_one(item, returns, deadline, options))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                results.put_nowait(exc)
            finally:
                slots.release()

        tasks: set[asyncio.Future] = set()

        async def feed() -> None:
            nonlocal pending
            index = 0
            async for item in aiter_items(items):
                await slots.acquire()
                pending += 1
                task = asyncio.ensure_future(one(with_id(item, index)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            results.put_nowait(None)

        feeder = asyncio.ensure_future(feed())
        done = False
        try:
            while not (done and pending == 0):
                got = await results.get()
                if got is None:
                    done = True
                    continue
                if isinstance(got, BaseException):
                    raise got
                pending -= 1
                yield got
            await feeder
        finally:
            feeder.cancel()
            for task in list(tasks):  # the consumer left early: stop the requests still running
                task.cancel()

    async def _score_one(
        self, item: Mapping[str, Any], returns: Sequence[str] | None, deadline: float | None,
        options: Mapping[str, Any],
    ) -> ScoreResult:
        try:
            return (await self.score([item], returns=returns, timeout=left_or_zero(deadline), **options))[0]
        except RMServeError as exc:
            return failed(item, exc)

    async def _grpc_stream(
        self, items: AsyncIterator[Mapping[str, Any]], returns: Sequence[str] | None, deadline: float | None,
        options: Mapping[str, Any],
    ) -> AsyncIterator[ScoreResult]:
        book = ScoreStreamBook(self, returns, options)
        cache: dict[int, Any] = {}
        try:
            item = await anext(items)
        except StopAsyncIteration:
            return
        first = self._load_item(with_id(item, 0), 0, cache)
        route = self._stream_route(first)

        async def loaded_items() -> AsyncIterator[dict[str, Any]]:
            yield first
            index = 1
            async for item in items:
                yield self._load_item(with_id(item, index), index, cache)
                index += 1

        async def requests() -> AsyncIterator[Any]:
            async for loaded in loaded_items():
                await self._upload_missing([loaded], deadline, prefix="", route=route)
                yield book.request(loaded)

        async for data in self._transport.score_stream(requests(), timeout=remaining(deadline), **routed(route)):
            if (result := book.result(data)) is not None:
                yield result
        for item in book.resend():  # their images were lost: scored again, inline
            yield await self._score_one(item, returns, deadline, options)

    async def compare(
        self,
        prompt: str | None = None,
        *,
        response_a: str,
        response_b: str,
        messages: Sequence[Mapping[str, Any]] | None = None,
        images: Sequence[Any] | None = None,
        beta0: float | None = None,
        w: float | None = None,
        k: float | None = None,
        truncate: bool | None = None,
        apply_safety: bool | None = None,
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> CompareResult:
        fields = {**conversation(prompt, messages, images), "response_a": response_a, "response_b": response_b}
        fields.update(beta0=beta0, w=w, k=k, truncate=truncate, apply_safety=apply_safety,
                      **judge_options(voting, return_judgment))
        return self.parse_compare(await self._single("compare", fields, model, timeout))

    async def rank(
        self,
        prompt: str | None = None,
        *,
        responses: Sequence[str],
        messages: Sequence[Mapping[str, Any]] | None = None,
        images: Sequence[Any] | None = None,
        top_k: int | None = None,
        min_margin: float | None = None,
        truncate: bool | None = None,
        apply_safety: bool | None = None,
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> RankResult:
        fields = {**conversation(prompt, messages, images), "responses": list(responses)}
        fields.update(top_k=top_k, min_margin=min_margin, truncate=truncate, apply_safety=apply_safety,
                      **judge_options(voting, return_judgment))
        return self.parse_rank(await self._single("rank", fields, model, timeout))

    async def critique(
        self,
        prompt: str | None = None,
        *,
        response: str,
        messages: Sequence[Mapping[str, Any]] | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> CritiqueResult:
        fields = {**conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        if self.kind == "grpc":
            chunks = self.stream_critique(**fields, model=model, timeout=timeout)
            return collect_critique([chunk async for chunk in chunks])
        return self.parse_critique(await self._single("critique", fields, model, timeout))

    async def stream_critique(
        self,
        prompt: str | None = None,
        *,
        response: str,
        messages: Sequence[Mapping[str, Any]] | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> AsyncIterator[CritiqueChunk]:
        fields = {**conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)
        await self._upload_missing(items, deadline, prefix="")
        wire = self._single_wire(body, items)
        stream = self._transport.stream("critique", wire, timeout=remaining(deadline), **routed(self._route(wire)))
        async for data in stream:
            yield CritiqueChunk.from_json(data)

    async def safety(
        self,
        items: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        response: str | None = None,
        images: Sequence[Any] | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> SafetyResult | list[SafetyResult]:
        fields = conversation(prompt, messages, images) | {"response": response}
        loaded, single, deadline = self._score_request(items, fields, timeout)

        route = self._route({"items": loaded})

        async def send(inline: bool) -> dict[str, Any]:
            return await self._call("safety", self._score_body(loaded, None, model, inline=inline), deadline, route)

        results = self._parse_safety(await self._send(loaded, deadline, send))
        return results[0] if single else results

    async def upload_image(self, image: Any, *, timeout: float | None = _DEFAULT) -> UploadResult:
        loaded = load_image(image)
        if not isinstance(loaded, ImageData):
            raise ValueError("upload_image needs the image itself, not a sha256 reference")
        return self._uploaded(loaded, await self._call("upload_image", {"data": loaded}, self._deadline(timeout)))

    async def get_reward(
        self, queries: Sequence[str], prompts: Sequence[str] | None = None, labels: Sequence[Any] | None = None,
        *, timeout: float | None = _DEFAULT,
    ) -> dict[str, Any]:
        body = get_reward_body(queries, prompts, labels)
        return await self._call("get_reward", body, self._deadline(timeout))

    async def _single(self, op: str, fields: dict[str, Any], model: str | None, timeout: Any) -> dict[str, Any]:
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)

        async def send(inline: bool) -> dict[str, Any]:
            wire = self._single_wire(body, items, inline=inline)
            return await self._call(op, wire, deadline)

        return await self._send(items, deadline, send, prefix="")
