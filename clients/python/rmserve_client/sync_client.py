"""``RewardClient``: the blocking client, thread-safe (share one across threads). The requests it builds and
the replies it parses are ``BaseClient``'s (_base.py) and ``_operations.py``'s; this module adds the waiting:
blocking transport calls, a thread pool for REST streams, events for concurrent uploads of one image.

    with RewardClient("http://127.0.0.1:8000") as rm:          # or "grpc://127.0.0.1:50051"
        rm.score(prompt="What is shown?", images=[pil_image], response="A cat.").reward
        rm.score([{"prompt": p, "images": [img], "response": r} for r in group])   # -> list[ScoreResult]
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from rmserve_client._base import _DEFAULT, BaseClient
from rmserve_client._images import ImageData, load_image
from rmserve_client._operations import (
    ScoreStreamBook,
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
        routing = routed(route or self._route(body))
        attempt = 0
        while True:
            try:
                return self._transport.request(op, body, timeout=remaining(deadline), **routing)
            except RETRYABLE as exc:
                self._sleep(self._backoff(attempt, exc, deadline))
                attempt += 1

    def _upload_missing(self, items: Sequence[Mapping[str, Any]], deadline: float | None, prefix="items",
                        route: str | None = None) -> None:
        route = route or self._route({"items": list(items)})  # the upload goes where the requests using it will go
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
            event.wait(remaining(deadline))
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
            self._lost_images(exc, items)
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
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> ScoreResult | list[ScoreResult]:
        """Score one item (a dict, or keyword fields) -> ScoreResult, or a list of items -> list[ScoreResult]."""
        fields = {"prompt": prompt, "messages": messages, "response": response, "images": images}
        loaded, single, deadline = self._score_request(items, {**fields, "group": group, "truncate": truncate}, timeout)
        extra = {"verifier": verifier, "on_reject": on_reject, **judge_options(voting, return_judgment)}

        route = self._route({"items": loaded})  # the items' own group id, which their wire form leaves out

        def send(inline: bool) -> dict[str, Any]:
            body = self._score_body(loaded, returns, model, inline=inline, extra=extra)
            return self._call("score", body, deadline, route)

        results = self._parse_score(self._send(loaded, deadline, send), loaded)
        return results[0] if single else results

    def score_stream(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        returns: Sequence[str] | None = None,
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        timeout: float | None = _DEFAULT,
        concurrency: int = 64,
    ) -> Iterator[ScoreResult]:
        """Score items as they come (e.g. rollouts as they finish); yield results as they are ready, in
        any order, matched by ``result.id`` (an item's ``id``, else its position as a string). A failed
        item yields a result with ``error`` set instead of raising. gRPC: one ScoreStream call, routed by its
        first item's x-rmserve-group (one stream per GRPO group keeps each group on one replica); REST: up
        to ``concurrency`` single-item requests at once, each with its own key. ``voting`` / ``return_judgment``
        (generative judges, as for ``score``) apply to every item; each result then has its ``judgments``."""
        deadline = self._deadline(timeout)
        options = judge_options(voting, return_judgment)
        if self.kind == "grpc" and hasattr(self._transport, "score_stream"):
            yield from self._grpc_stream(items, returns, deadline, options)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            running: set[concurrent.futures.Future] = set()
            for index, item in enumerate(items):
                running.add(pool.submit(self._score_one, with_id(item, index), returns, deadline, options))
                if len(running) >= concurrency:
                    done, running = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
                    yield from (f.result() for f in done)
            for future in concurrent.futures.as_completed(running):
                yield future.result()

    def _score_one(self, item: Mapping[str, Any], returns: Sequence[str] | None, deadline: float | None,
                   options: Mapping[str, Any]) -> ScoreResult:
        try:
            return self.score([item], returns=returns, timeout=left_or_zero(deadline), **options)[0]
        except RMServeError as exc:
            return failed(item, exc)

    def _grpc_stream(
        self, items: Iterable[Mapping[str, Any]], returns: Sequence[str] | None, deadline: float | None,
        options: Mapping[str, Any],
    ) -> Iterator[ScoreResult]:
        book = ScoreStreamBook(self, returns, options)
        cache: dict[int, Any] = {}
        loaded_items = (self._load_item(with_id(item, index), index, cache) for index, item in enumerate(items))
        first = next(loaded_items, None)
        if first is None:
            return
        route = self._stream_route(first)

        def requests() -> Iterator[Any]:
            for loaded in itertools.chain([first], loaded_items):
                self._upload_missing([loaded], deadline, prefix="", route=route)
                yield book.request(loaded)

        for data in self._transport.score_stream(requests(), timeout=remaining(deadline), **routed(route)):
            if (result := book.result(data)) is not None:
                yield result
        for item in book.resend():  # their images were lost: scored again, inline
            yield self._score_one(item, returns, deadline, options)

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
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> CompareResult:
        fields = {**conversation(prompt, messages, images), "response_a": response_a, "response_b": response_b}
        fields.update(beta0=beta0, w=w, k=k, truncate=truncate, apply_safety=apply_safety,
                      **judge_options(voting, return_judgment))
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
        voting: Voting | Mapping[str, Any] | None = None,
        return_judgment: bool | None = None,
        model: str | None = None,
        timeout: float | None = _DEFAULT,
    ) -> RankResult:
        fields = {**conversation(prompt, messages, images), "responses": list(responses)}
        fields.update(top_k=top_k, min_margin=min_margin, truncate=truncate, apply_safety=apply_safety,
                      **judge_options(voting, return_judgment))
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
        fields = {**conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        if self.kind == "grpc":
            return collect_critique([chunk for chunk in self.stream_critique(**fields, model=model, timeout=timeout)])
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
        fields = {**conversation(prompt, messages, images), "response": response, "max_new_tokens": max_new_tokens}
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)
        self._upload_missing(items, deadline, prefix="")
        wire = self._single_wire(body, items)
        stream = self._transport.stream("critique", wire, timeout=remaining(deadline), **routed(self._route(wire)))
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
        fields = conversation(prompt, messages, images) | {"response": response}
        loaded, single, deadline = self._score_request(items, fields, timeout)
        route = self._route({"items": loaded})
        data = self._send(
            loaded,
            deadline,
            lambda inline: self._call("safety", self._score_body(loaded, None, model, inline=inline), deadline, route),
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
        body = get_reward_body(queries, prompts, labels)
        return self._call("get_reward", body, self._deadline(timeout))

    def _single(self, op: str, fields: dict[str, Any], model: str | None, timeout: Any) -> dict[str, Any]:
        body, items = self._single_body(fields, model)
        deadline = self._deadline(timeout)

        def send(inline: bool) -> dict[str, Any]:
            wire = self._single_wire(body, items, inline=inline)
            return self._call(op, wire, deadline)

        return self._send(items, deadline, send, prefix="")
