"""``rmserve.v1.RewardService``: each RPC is proto -> the REST request type (rpc/codec.py) -> the same
``ScoreService`` method REST calls -> proto.

Readiness, the deadline and the timing metadata come from ``AppState``'s methods (server/state.py),
as for REST. Deadlines: a call's remaining time becomes the service deadline, so work whose caller
has given up is dropped before compute; without one the server default (``request_timeout_s``)
applies. A call the client cancels (or whose deadline passes) cancels its service task, which drops
its queued items. Errors leave as statuses (rpc/status.py): details name the field
(``items.0.response: response must not be empty``), trailing metadata carries type, param and code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from rmserve_client.proto import reward_pb2 as pb
from rmserve_client.proto import reward_pb2_grpc as pb_grpc

from rmserve.api import CompareRequest, CritiqueRequest, RankRequest, SafetyRequest, ScoreService, Timings
from rmserve.errors import DeadlineExceeded, NotReady, RMServeError
from rmserve.server.rpc import codec
from rmserve.server.rpc.call_gate import SERVICE_NAME, Undecodable, check_decoded
from rmserve.server.rpc.status import as_rmserve_error, status_code, status_details, trailing_metadata
from rmserve.server.state import AppState

log = logging.getLogger("rmserve.grpc")


def _handled(kind: str) -> Callable:
    """Wrap an RPC method: auth, metrics, and every failure leaves as a status (never a stack trace)."""

    def wrap(method: Callable) -> Callable:
        name = f"/{SERVICE_NAME}/{method.__name__}"

        async def fail(self: RewardServicer, context: grpc.aio.ServicerContext, exc: Exception) -> None:
            error = as_rmserve_error(exc)
            if error is None:
                log.exception("unhandled error in %s", name)
                self._observe(name, 500)
                await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            if error.http_status >= 500:
                log.warning("%s -> %s: %s", name, error.grpc_code, error.message)
            self._observe(name, error.http_status)
            await context.abort(status_code(error), status_details(error), trailing_metadata(error))

        if kind == "unary":

            @functools.wraps(method)
            async def unary(self: RewardServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
                start = time.perf_counter()
                try:
                    check_decoded(request)
                    response = await method(self, request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    await fail(self, context, exc)
                self._observe(name, 200, time.perf_counter() - start)
                return response

            return unary

        @functools.wraps(method)
        async def streaming(self: RewardServicer, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
            start = time.perf_counter()
            try:
                check_decoded(request)
                async for message in method(self, request, context):
                    yield message
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await fail(self, context, exc)
            self._observe(name, 200, time.perf_counter() - start)

        return streaming

    return wrap


# ── the service ────────────────────────────────────────────────────────────────────────────────


class RewardServicer(pb_grpc.RewardServiceServicer):
    def __init__(self, state: AppState):
        self.state = state

    # ── plumbing shared by the RPCs ────────────────────────────────────────────────────────

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        """The caller's deadline as a ``time.monotonic()`` value; the server default without one."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed before it was read", code="deadline_exceeded")
        return self.state.deadline(remaining)

    def _observe(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        with contextlib.suppress(Exception):  # metrics must never fail a call
            self.state.metrics.observe_request(endpoint, "GRPC", status, seconds or 0.0)

    def _timings(self, context: grpc.aio.ServicerContext, timings: Timings) -> None:
        context.set_trailing_metadata(self.state.record_timings(timings))

    # ── RPCs ───────────────────────────────────────────────────────────────────────────────

    @_handled("unary")
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        service = self.state.service_or_raise()
        body = codec.score_request(request)
        result = await service.score(body, deadline=self._deadline(context))
        self._timings(context, result.timings)
        response = codec.encode(result.response, pb.ScoreResponse)
        for out, item in zip(response.items, request.items, strict=True):
            out.id = item.id  # gRPC only: the caller's ids, echoed
        return response

    @_handled("stream")
    async def ScoreStream(
        self, request_iterator: AsyncIterator[pb.ScoreItem], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResult]:
        """Each item is its own one-item request (batched with everything else by the engine); results
        are yielded as they finish. At most ``max_items_per_request`` items of one stream are in
        progress: beyond that the server stops reading and HTTP/2 flow control pushes back."""
        service = self.state.service_or_raise()
        results: asyncio.Queue[pb.ScoreResult | BaseException | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.state.config.max_items_per_request)
        tasks: set[asyncio.Task] = set()
        pending = 0

        async def one(item: pb.ScoreItem, deadline: float | None) -> None:
            try:
                results.put_nowait(await self._score_stream_item(service, item, deadline))
            except RMServeError as exc:
                results.put_nowait(pb.ScoreResult(id=item.id, error=codec.error_proto(exc, within=("items", 0))))
            except Exception as exc:  # a bug: report it on the item, keep the stream
                log.exception("ScoreStream item failed")
                results.put_nowait(pb.ScoreResult(id=item.id, error=pb.Error(message=str(exc), type="internal_error")))
            finally:
                slots.release()

        async def read() -> None:
            nonlocal pending
            try:
                async for item in request_iterator:
                    if isinstance(item, Undecodable) or self.state.draining:
                        # answered at once, without a slot: a bad message, or no new work while draining
                        refused = pb.ScoreResult(id="" if isinstance(item, Undecodable) else item.id)
                        error = item.error() if isinstance(item, Undecodable) else _draining()
                        refused.error.CopyFrom(codec.error_proto(error))
                        pending += 1
                        results.put_nowait(refused)
                        continue
                    await slots.acquire()
                    try:
                        deadline = self._deadline(context)
                    except DeadlineExceeded:
                        slots.release()
                        raise
                    pending += 1
                    task = asyncio.create_task(one(item, deadline))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                results.put_nowait(None)
            except Exception as exc:
                results.put_nowait(exc)

        reader = asyncio.create_task(read())
        try:
            done_reading = False
            while not (done_reading and pending == 0):
                result = await results.get()
                if result is None:
                    done_reading = True
                elif isinstance(result, BaseException):
                    raise result
                else:
                    pending -= 1
                    yield result
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()  # drops their queued items before compute

    async def _score_stream_item(
        self, service: ScoreService, item: pb.ScoreItem, deadline: float | None
    ) -> pb.ScoreResult:
        result = await service.score(codec.stream_item_request(item), deadline=deadline)
        self.state.record_timings(result.timings)
        out = codec.encode(result.response.items[0], pb.ScoreResult)
        out.id = item.id
        return out

    @_handled("unary")
    async def Compare(self, request: pb.CompareRequest, context: grpc.aio.ServicerContext) -> pb.CompareResponse:
        service = self.state.service_or_raise()
        return await self._unary(service.compare, request, context, CompareRequest, pb.CompareResponse)

    @_handled("unary")
    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        service = self.state.service_or_raise()
        return await self._unary(service.rank, request, context, RankRequest, pb.RankResponse)

    @_handled("unary")
    async def Safety(self, request: pb.SafetyRequest, context: grpc.aio.ServicerContext) -> pb.SafetyResponse:
        service = self.state.service_or_raise()
        return await self._unary(service.safety, request, context, SafetyRequest, pb.SafetyResponse)

    @_handled("stream")
    async def Critique(
        self, request: pb.CritiqueRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CritiqueChunk]:
        """The critique as it is generated; bad input fails the call before the first chunk."""
        service = self.state.service_or_raise()
        body = codec.decode(request, CritiqueRequest)
        async for chunk in service.critique_stream(body, deadline=self._deadline(context)):
            yield codec.encode(chunk, pb.CritiqueChunk)

    @_handled("unary")
    async def UploadImage(
        self, request: pb.UploadImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadImageResponse:
        service = self.state.service_or_raise()
        return codec.encode(await service.upload_image(request.data), pb.UploadImageResponse)

    async def _unary(
        self, method: Callable, request: Any, context: grpc.aio.ServicerContext, body_type: type, response_type: type
    ) -> Any:
        """The generic RPC: proto -> the REST request type -> ``method`` (a service method) -> proto."""
        body = codec.decode(request, body_type)
        return codec.encode(await method(body, deadline=self._deadline(context)), response_type)


def _draining() -> NotReady:
    return NotReady("the server is shutting down; retry on another replica", code="not_ready")
