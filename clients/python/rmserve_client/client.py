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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from rmserve_client._base import _DEFAULT, BaseClient
from rmserve_client._images import ImageData, load_image
from rmserve_client.exceptions import (
    RETRYABLE,
    DeadlineExceeded,
    InvalidRequest,
    RMServeError,
    Unsupported,
)
from rmserve_client.types import (
    CompareResult,
    CritiqueChunk,
    CritiqueResult,
    RankResult,
    SafetyResult,
    ScoreResult,
    UploadResult,
)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the call's timeout passed (client side)", status="DEADLINE_EXCEEDED")
    return left


def _routed(route: str | None) -> dict[str, str]:
    """The transport's ``route`` argument, only when there is one (custom transports may not take it)."""
    return {"route": route} if route else {}


def _collect(chunks: list[CritiqueChunk]) -> CritiqueResult:
    last = chunks[-1] if chunks else None
    if last is None or not last.done or last.reward is None:
        raise RMServeError("the critique stream ended without a result")
    return CritiqueResult(last.critique if last.critique is not None else "".join(c.text for c in chunks), last.reward)


def _conversation(prompt: Any, messages: Any, images: Any) -> dict[str, Any]:
    return {"prompt": prompt, "messages": messages, "images": images}


class RewardClient(BaseClient):
    """Blocking client; thread-safe (share one across threads)."""

    def __init__(self, url: str | None = None, *, transport: Any = None, **options: Any):
        super().__init__(url, **options)
        self._transport = self._make_transport(transport)
        self._sleep: Callable[[float], None] = time.sleep
        self._lock = threading.Lock()
        self._uploading: dict[str, threading.Event] = {}

    def _make_transport(self, transport: Any) -> Any:
        if transport is not None and hasattr(transport, "request") and hasattr(transport, "close"):
            return transport  # an rmserve transport (tests, custom channels)
        if self.kind == "grpc":
            from rmserve_client._grpc import GrpcTransport

            return GrpcTransport(self.url, api_key=self.api_key)
        from rmserve_client._http import HTTPTransport

        return HTTPTransport(self.url, api_key=self.api_key, headers=self.headers, transport=transport)

    # ── lifecycle ──────────────────────────────────────────────────────────────────────────

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ── the I/O path ───────────────────────────────────────────────────────────────────────

    def _call(
        self, op: str, body: Mapping[str, Any] | None, deadline: float | None, route: str | None = None
    ) -> dict[str, Any]:
        """``route``: the routing key (x-rmserve-group); by default the body's own (``routing_key``)."""
        routed = _routed(route or self._route(body))
        attempt = 0
        while True:
            try:
                return self._transport.request(op, body, timeout=_remaining(deadline), **routed)
            except RETRYABLE as exc:
                delay = self._retry_delay(attempt, exc, deadline)
                if delay is None:
                    raise
                self._sleep(delay)
                attempt += 1

    def _upload_missing(self, items: Sequence[Mapping[str, Any]], deadline: float | None, prefix="items") -> None:
        route = self._route({"items": list(items)})  # the upload goes where the requests using it will go
        for image, where in self._to_upload(items, prefix):
            if not self._uploads_supported:
                return
            try:
                self._upload_once(image, deadline, route)
            except InvalidRequest as exc:
                raise self._upload_error(exc, where) from None

    def _upload_once(self, image: ImageData, deadline: float | None, route: str | None = None) -> None:
        """Upload unless the server holds it; concurrent callers of one image wait for a single upload."""
        with self._lock:
            if image.sha256 in self.images:
                return
            event = self._uploading.get(image.sha256)
            owner = event is None
            if owner:
                event = self._uploading[image.sha256] = threading.Event()
        if not owner:
            event.wait(_remaining(deadline))
            return
        try:
            self._uploaded(image, self._call("upload_image", {"data": image}, deadline, route))
        except Unsupported:
            self._uploads_supported = False  # an older server: send images inline from now on
        finally:
            with self._lock:
                del self._uploading[image.sha256]
            event.set()

    def _send(
        self, items: Sequence[Mapping[str, Any]], deadline: float | None, send: Callable[[bool], Any], prefix="items"
    ) -> Any:
        """Upload what the server lacks, send; if it lost a referenced image, resend inline once."""
        self._upload_missing(items, deadline, prefix)
        try:
            data = send(False)
        except InvalidRequest as exc:
            if not self._is_image_not_found(exc):
                raise
            self._image_not_found(items)
            data = send(True)
        self._sent(items)
        return data

    # ── operations ─────────────────────────────────────────────────────────────────────────

    def score(
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
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> ScoreResult | list[ScoreResult]:
        """Score one item (a dict, or keyword fields) -> ScoreResult, or a list of items -> list[ScoreResult]."""
        fields = {"prompt": prompt, "messages": messages, "response": response, "images": images}
        raw, single = self._collect_items(items, {**fields, "group": group, "truncate": truncate})
        loaded = self._score_items(raw)
        deadline = self._deadline(timeout)
        extra = {"verifier": verifier, "on_reject": on_reject}

        def send(inline: bool) -> dict[str, Any]:
            return self._call("score", self._score_body(loaded, returns, model, inline=inline, extra=extra), deadline)

        results = self._parse_score(self._send(loaded, deadline, send), loaded)
        return results[0] if single else results

    def score_stream(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        returns: Sequence[str] | None = None,
        timeout: float | None = _DEFAULT,
        concurrency: int = 64,
    ) -> Iterator[ScoreResult]:
        """Score items as they come (e.g. rollouts as they finish); yield results as they are ready, in
        any order, matched by ``result.id`` (an item's ``id``, else its position as a string). A failed
        item yields a result with ``error`` set instead of raising. gRPC: one ScoreStream call; REST: up
        to ``concurrency`` single-item requests at once."""
        deadline = self._deadline(timeout)
        if self.kind == "grpc" and hasattr(self._transport, "score_stream"):
            yield from self._grpc_stream(items, returns, deadline)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            running: set[concurrent.futures.Future] = set()
            for index, item in enumerate(items):
                item = {**item, "id": str(item.get("id", index))}
                running.add(pool.submit(self._score_one, item, returns, deadline))
                if len(running) >= concurrency:
                    done, running = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
                    yield from (f.result() for f in done)
            for future in concurrent.futures.as_completed(running):
                yield future.result()

    def _score_one(self, item: Mapping[str, Any], returns: Sequence[str] | None, deadline: float | None) -> ScoreResult:
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            return self.score([item], returns=returns, timeout=remaining)[0]
        except RMServeError as exc:
            return ScoreResult(reward=float("nan"), id=item["id"], error=exc)

    def _grpc_stream(
        self, items: Iterable[Mapping[str, Any]], returns: Sequence[str] | None, deadline: float | None
    ) -> Iterator[ScoreResult]:
        from rmserve_client._grpc import stream_item

        sent: dict[str, dict[str, Any]] = {}

        def requests() -> Iterator[Any]:
            cache: dict[int, Any] = {}
            for index, item in enumerate(items):
                loaded = self._load_item({**item, "id": str(item.get("id", index))}, index, cache)
                self._upload_missing([loaded], deadline, prefix="")
                sent[loaded["id"]] = loaded
                yield stream_item({**self._wire_items([loaded])[0], "id": loaded["id"]}, returns)

        lost = []
        for data in self._transport.score_stream(requests(), timeout=_remaining(deadline)):
            result = self._parse_stream_result(data)
            item = sent.pop(result.id, None) if result.id is not None else None
            if result.error is not None and self._is_image_not_found(result.error) and item is not None:
                lost.append(item)  # rescored inline below
                continue
            if item is not None and result.ok:
                self._sent([item])
            yield result
        if lost:
            self._image_not_found(lost)
            for item in lost:
                yield self._score_one(item, returns, deadline)

    def compare(
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
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> CompareResult:
        fields = {**_conversation(prompt, messages, images), "response_a": response_a, "response_b": response_b}
        fields.update(beta0=beta0, w=w, k=k, truncate=truncate, apply_safety=apply_safety)
        return self.parse_compare(self._single("compare", fields, model, timeout))

    def rank(
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
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> RankResult:
        fields = {**_conversation(prompt, messages, images), "responses": list(responses)}
        fields.update(top_k=top_k, min_margin=min_margin, truncate=truncate, apply_safety=apply_safety)
        return self.parse_rank(self._single("rank", fields, model, timeout))

    def critique(
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
        """The critique text and the reward scored with it (collected from the stream over gRPC)."""
        fields = {**_conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        if self.kind == "grpc":
            return _collect([chunk for chunk in self.stream_critique(**fields, model=model, timeout=timeout)])
        return self.parse_critique(self._single("critique", fields, model, timeout))

    def stream_critique(
        self,
        prompt: str | None = None,
        *,
        response: str,
        messages: Sequence[Mapping[str, Any]] | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> Iterator[CritiqueChunk]:
        fields = {**_conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)
        self._upload_missing(items, deadline, prefix="")
        wire = {**body, **(self._wire_items(items)[0] if "images" in body else {})}
        stream = self._transport.stream("critique", wire, timeout=_remaining(deadline), **_routed(self._route(wire)))
        for data in stream:
            yield CritiqueChunk.from_json(data)

    def safety(
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
        raw, single = self._collect_items(items, _conversation(prompt, messages, images) | {"response": response})
        loaded = self._score_items(raw)
        deadline = self._deadline(timeout)
        data = self._send(
            loaded,
            deadline,
            lambda inline: self._call("safety", self._score_body(loaded, None, model, inline=inline), deadline),
        )
        results = self._parse_safety(data)
        return results[0] if single else results

    def upload_image(self, image: Any, *, timeout: float | None = _DEFAULT) -> UploadResult:
        """Upload an image; refer to it as ``{"sha256": result.sha256}`` (the client does this by itself)."""
        loaded = load_image(image)
        if not isinstance(loaded, ImageData):
            raise ValueError("upload_image needs the image itself, not a sha256 reference")
        return self._uploaded(loaded, self._call("upload_image", {"data": loaded}, self._deadline(timeout)))

    def get_reward(
        self, queries: Sequence[str], prompts: Sequence[str] | None = None, labels: Sequence[Any] | None = None,
        *, timeout: float | None = _DEFAULT,
    ) -> dict[str, Any]:
        """OpenRLHF's remote-RM call (``POST /get_reward``, REST only): ``{"rewards", "scores", "extra_logs"}``."""
        body = _get_reward_body(queries, prompts, labels)
        return self._call("get_reward", body, self._deadline(timeout))

    def _single(self, op: str, fields: dict[str, Any], model: str | None, timeout: Any) -> dict[str, Any]:
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)

        def send(inline: bool) -> dict[str, Any]:
            wire = {**body, **(self._wire_items(items, inline=inline)[0] if "images" in body else {})}
            return self._call(op, wire, deadline)

        return self._send(items, deadline, send, prefix="")


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
        routed = _routed(route or self._route(body))
        attempt = 0
        while True:
            try:
                return await self._transport.request(op, body, timeout=_remaining(deadline), **routed)
            except RETRYABLE as exc:
                delay = self._retry_delay(attempt, exc, deadline)
                if delay is None:
                    raise
                await self._sleep(delay)
                attempt += 1

    async def _upload_missing(self, items: Sequence[Mapping[str, Any]], deadline: float | None, prefix="items") -> None:
        missing = self._to_upload(items, prefix)
        route = self._route({"items": list(items)})  # the upload goes where the requests using it will go
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
            await asyncio.wait_for(asyncio.shield(self._uploading[key]), _remaining(deadline))
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
            if not self._is_image_not_found(exc):
                raise
            self._image_not_found(items)
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
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> ScoreResult | list[ScoreResult]:
        fields = {"prompt": prompt, "messages": messages, "response": response, "images": images}
        raw, single = self._collect_items(items, {**fields, "group": group, "truncate": truncate})
        loaded = self._score_items(raw)
        deadline = self._deadline(timeout)
        extra = {"verifier": verifier, "on_reject": on_reject}

        async def send(inline: bool) -> dict[str, Any]:
            body = self._score_body(loaded, returns, model, inline=inline, extra=extra)
            return await self._call("score", body, deadline)

        results = self._parse_score(await self._send(loaded, deadline, send), loaded)
        return results[0] if single else results

    async def score_stream(
        self,
        items: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        *,
        returns: Sequence[str] | None = None,
        timeout: float | None = _DEFAULT,
        concurrency: int = 64,
    ) -> AsyncIterator[ScoreResult]:
        """As RewardClient.score_stream; ``items`` may be an async iterable (rollouts as they finish)."""
        deadline = self._deadline(timeout)
        if self.kind == "grpc" and hasattr(self._transport, "score_stream"):
            async for result in self._grpc_stream(_aiter(items), returns, deadline):
                yield result
            return
        slots = asyncio.Semaphore(max(1, concurrency))
        results: asyncio.Queue[ScoreResult | BaseException | None] = asyncio.Queue()
        pending = 0

        async def one(item: dict[str, Any]) -> None:
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                results.put_nowait((await self.score([item], returns=returns, timeout=remaining))[0])
            except RMServeError as exc:
                results.put_nowait(ScoreResult(reward=float("nan"), id=item["id"], error=exc))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                results.put_nowait(exc)
            finally:
                slots.release()

        tasks: set[asyncio.Future] = set()

        async def feed() -> None:
            nonlocal pending
            index = 0
            async for item in _aiter(items):
                await slots.acquire()
                pending += 1
                task = asyncio.ensure_future(one({**item, "id": str(item.get("id", index))}))
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

    async def _grpc_stream(
        self, items: AsyncIterator[Mapping[str, Any]], returns: Sequence[str] | None, deadline: float | None
    ) -> AsyncIterator[ScoreResult]:
        from rmserve_client._grpc import stream_item

        sent: dict[str, dict[str, Any]] = {}

        async def requests() -> AsyncIterator[Any]:
            cache: dict[int, Any] = {}
            index = 0
            async for item in items:
                loaded = self._load_item({**item, "id": str(item.get("id", index))}, index, cache)
                await self._upload_missing([loaded], deadline, prefix="")
                sent[loaded["id"]] = loaded
                yield stream_item({**self._wire_items([loaded])[0], "id": loaded["id"]}, returns)
                index += 1

        lost = []
        async for data in self._transport.score_stream(requests(), timeout=_remaining(deadline)):
            result = self._parse_stream_result(data)
            item = sent.pop(result.id, None) if result.id is not None else None
            if result.error is not None and self._is_image_not_found(result.error) and item is not None:
                lost.append(item)
                continue
            if item is not None and result.ok:
                self._sent([item])
            yield result
        if lost:
            self._image_not_found(lost)
            for item in lost:
                try:
                    yield (await self.score([item], returns=returns, timeout=_remaining(deadline)))[0]
                except RMServeError as exc:
                    yield ScoreResult(reward=float("nan"), id=item["id"], error=exc)

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
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> CompareResult:
        fields = {**_conversation(prompt, messages, images), "response_a": response_a, "response_b": response_b}
        fields.update(beta0=beta0, w=w, k=k, truncate=truncate, apply_safety=apply_safety)
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
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> RankResult:
        fields = {**_conversation(prompt, messages, images), "responses": list(responses)}
        fields.update(top_k=top_k, min_margin=min_margin, truncate=truncate, apply_safety=apply_safety)
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
        fields = {**_conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        if self.kind == "grpc":
            return _collect([chunk async for chunk in self.stream_critique(**fields, model=model, timeout=timeout)])
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
        fields = {**_conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)
        await self._upload_missing(items, deadline, prefix="")
        wire = {**body, **(self._wire_items(items)[0] if "images" in body else {})}
        stream = self._transport.stream("critique", wire, timeout=_remaining(deadline), **_routed(self._route(wire)))
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
        raw, single = self._collect_items(items, _conversation(prompt, messages, images) | {"response": response})
        loaded = self._score_items(raw)
        deadline = self._deadline(timeout)

        async def send(inline: bool) -> dict[str, Any]:
            return await self._call("safety", self._score_body(loaded, None, model, inline=inline), deadline)

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
        body = _get_reward_body(queries, prompts, labels)
        return await self._call("get_reward", body, self._deadline(timeout))

    async def _single(self, op: str, fields: dict[str, Any], model: str | None, timeout: Any) -> dict[str, Any]:
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)

        async def send(inline: bool) -> dict[str, Any]:
            wire = {**body, **(self._wire_items(items, inline=inline)[0] if "images" in body else {})}
            return await self._call(op, wire, deadline)

        return await self._send(items, deadline, send, prefix="")


def _get_reward_body(queries: Sequence[str], prompts: Sequence[str] | None, labels: Sequence[Any] | None) -> dict:
    """OpenRLHF's payload; prompts and labels only when given (an empty list would not match the queries)."""
    body: dict[str, Any] = {"query": list(queries)}
    if prompts is not None:
        body["prompts"] = list(prompts)
    if labels is not None:
        body["labels"] = list(labels)
    return body


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if hasattr(items, "__aiter__"):
        async for item in items:  # type: ignore[union-attr]
            yield item
    else:
        for item in items:  # type: ignore[union-attr]
            yield item
