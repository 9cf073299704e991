"""gRPC transport (grpc.aio): ``rmserve.v1.RewardService`` over the same service objects as REST.

    GrpcServer(state)              started and stopped by the app's lifespan (server/app.py), on
                                   config.host:config.grpc_port beside the REST port, same engine
      RewardServicer               each RPC: proto -> REST pydantic request (grpc_convert) -> the
                                   service method -> proto; RMServeError -> status (errors.py grpc_code)
      grpc.health.v1.Health        SERVING only while the model is ready; NOT_SERVING while loading,
                                   draining, or after an engine thread died (re-checked every second)
      reflection                   lists rmserve.v1.RewardService, grpc.health.v1.Health, reflection

Every call passes one interceptor (``CallGate``) before its method: it takes the request id from
``x-request-id`` metadata (or makes one), sends it back as initial metadata and stamps every log line
of the call with it; with API keys configured it refuses calls without ``authorization: Bearer <key>``
(UNAUTHENTICATED) on every service but ``grpc.health.v1.Health`` (reflection needs a key too). The
gate is deny-by-default, so a service or method added later is covered without further code.
Requests are parsed by our own deserializers: bytes that are not a valid message become
INVALID_ARGUMENT (gRPC's own handling would answer UNKNOWN).

With ``--tls-cert/--tls-key`` the port speaks TLS only (``grpc.ssl_server_credentials``).

Deadlines: a call's remaining time becomes the service deadline, so work whose caller has given up
is dropped before compute; without one the server default (``request_timeout_s``) applies. A call
the client cancels (or whose deadline passes) cancels its service task, which drops its queued
items. Errors: the status code from the error table, details naming the field
(``items.0.response: response must not be empty``), and trailing metadata ``rmserve-error-type``,
``rmserve-error-param``, ``rmserve-error-code`` and ``retry-after`` (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError
from rmserve_client._proto import reward_pb2 as pb
from rmserve_client._proto import reward_pb2_grpc as pb_grpc

from rmserve.api.critique import CritiqueRequest
from rmserve.api.pairs import CompareRequest, RankRequest
from rmserve.api.protocol import invalid_input_from_errors
from rmserve.api.safety import SafetyRequest
from rmserve.errors import DeadlineExceeded, InvalidInput, NotReady, RMServeError
from rmserve.server import grpc_convert as convert
from rmserve.server.logs import request_id, request_id_var
from rmserve.server.middleware import api_key_matches

if TYPE_CHECKING:
    from rmserve.server.app import AppState

log = logging.getLogger("rmserve.grpc")

SERVICE = pb.DESCRIPTOR.services_by_name["RewardService"]
SERVICE_NAME = SERVICE.full_name  # rmserve.v1.RewardService
HEALTH_RECHECK_S = 1.0
# Orchestrators probe health without a key; every other service (reflection too) needs one.
OPEN_SERVICES = frozenset({health.SERVICE_NAME})


# ── errors ─────────────────────────────────────────────────────────────────────────────────────


def status_code(exc: RMServeError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)


def status_details(exc: RMServeError) -> str:
    """The message, led by the field it is about unless it names it already."""
    if exc.param and not exc.message.startswith(exc.param):
        return f"{exc.param}: {exc.message}"
    return exc.message


def trailing_metadata(exc: RMServeError) -> tuple[tuple[str, str], ...]:
    pairs = [("rmserve-error-type", exc.error_type)]
    if exc.param:
        pairs.append(("rmserve-error-param", exc.param))
    if exc.code:
        pairs.append(("rmserve-error-code", exc.code))
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        pairs.append(("retry-after", str(max(1, math.ceil(retry)))))
    return tuple(pairs)


def _as_rmserve_error(exc: Exception) -> RMServeError | None:
    if isinstance(exc, RMServeError):
        return exc
    if isinstance(exc, ValidationError):
        return invalid_input_from_errors(exc.errors())
    return None


def _handled(kind: str) -> Callable:
    """Wrap an RPC method: auth, metrics, and every failure leaves as a status (never a stack trace)."""

    def wrap(method: Callable) -> Callable:
        name = f"/{SERVICE_NAME}/{method.__name__}"

        async def fail(self: RewardServicer, context: grpc.aio.ServicerContext, exc: Exception) -> None:
            error = _as_rmserve_error(exc)
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
                    _check_decoded(request)
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
                _check_decoded(request)
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

    def _service(self) -> Any:
        state = self.state
        if not state.ready or state.service is None:
            if state.load_error:
                reason = f"the model failed to load: {state.load_error}"
            else:
                reason = "the server is shutting down" if state.draining else "the model is still loading"
            raise NotReady(reason, code="not_ready")
        return state.service

    def _method(self, name: str) -> Callable:
        """``service.<name>``; UNIMPLEMENTED if this build's service lacks it."""
        method = getattr(self._service(), name, None)
        if method is None:
            raise _Unimplemented(f"{name} is not available on this server yet (the service has no `{name}` method)")
        return method

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        """The caller's deadline as a ``time.monotonic()`` value; the server default without one."""
        remaining = context.time_remaining()
        if remaining is not None:
            if remaining <= 0:
                raise DeadlineExceeded("the call's deadline passed before it was read", code="deadline_exceeded")
            return time.monotonic() + remaining
        default = self.state.config.request_timeout_s
        return time.monotonic() + default if default else None

    def _observe(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        with contextlib.suppress(Exception):  # metrics must never fail a call
            self.state.metrics.observe_request(endpoint, "GRPC", status, seconds or 0.0)

    def _timings(self, context: grpc.aio.ServicerContext, timings: Any) -> None:
        self.state.metrics.observe_timings(timings.queue_ms, timings.inference_ms)
        context.set_trailing_metadata(
            (
                ("x-queue-time-ms", f"{timings.queue_ms:.2f}"),
                ("x-inference-time-ms", f"{timings.inference_ms:.2f}"),
                ("x-total-time-ms", f"{timings.total_ms:.2f}"),
            )
        )

    # ── RPCs ───────────────────────────────────────────────────────────────────────────────

    @_handled("unary")
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        service = self._service()
        body = convert.score_request(request)
        result = await service.score(body, deadline=self._deadline(context))
        self._timings(context, result.timings)
        return convert.score_response(result.response, [item.id for item in request.items])

    @_handled("stream")
    async def ScoreStream(
        self, request_iterator: AsyncIterator[pb.ScoreItem], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResult]:
        """Each item is its own one-item request (batched with everything else by the engine); results
        are yielded as they finish. At most ``max_items_per_request`` items of one stream are in
        progress: beyond that the server stops reading and HTTP/2 flow control pushes back."""
        service = self._service()
        results: asyncio.Queue[pb.ScoreResult | BaseException | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.state.config.max_items_per_request)
        tasks: set[asyncio.Task] = set()
        pending = 0

        async def one(item: pb.ScoreItem, deadline: float | None) -> None:
            try:
                results.put_nowait(await self._score_stream_item(service, item, deadline))
            except RMServeError as exc:
                results.put_nowait(pb.ScoreResult(id=item.id, error=convert.error_proto(exc, strip_prefix="items.0")))
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
                        refused.error.CopyFrom(convert.error_proto(error))
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

    async def _score_stream_item(self, service: Any, item: pb.ScoreItem, deadline: float | None) -> pb.ScoreResult:
        result = await service.score(convert.stream_item_request(item), deadline=deadline)
        self.state.metrics.observe_timings(result.timings.queue_ms, result.timings.inference_ms)
        return convert.score_result(result.response.items[0], id=item.id)

    @_handled("unary")
    async def Compare(self, request: pb.CompareRequest, context: grpc.aio.ServicerContext) -> pb.CompareResponse:
        return await self._unary("compare", request, context, CompareRequest, pb.CompareResponse)

    @_handled("unary")
    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        return await self._unary("rank", request, context, RankRequest, pb.RankResponse)

    @_handled("unary")
    async def Safety(self, request: pb.SafetyRequest, context: grpc.aio.ServicerContext) -> pb.SafetyResponse:
        return await self._unary("safety", request, context, SafetyRequest, pb.SafetyResponse)

    @_handled("stream")
    async def Critique(
        self, request: pb.CritiqueRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CritiqueChunk]:
        """The critique as it is generated; bad input fails the call before the first chunk."""
        method = self._method("critique_stream")
        body = convert.request(request, CritiqueRequest)
        async for chunk in method(body, deadline=self._deadline(context)):
            yield convert.to_proto(chunk, pb.CritiqueChunk)

    @_handled("unary")
    async def UploadImage(
        self, request: pb.UploadImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadImageResponse:
        method = self._method("upload_image")
        return convert.to_proto(await method(request.data), pb.UploadImageResponse)

    async def _unary(
        self, name: str, request: Any, context: grpc.aio.ServicerContext, body_type: type, response_type: type
    ) -> Any:
        """The generic RPC: proto -> the REST request type -> ``service.<name>`` -> proto."""
        method = self._method(name)
        body = convert.request(request, body_type)
        return convert.to_proto(await method(body, deadline=self._deadline(context)), response_type)


def _draining() -> NotReady:
    return NotReady("the server is shutting down; retry on another replica", code="not_ready")


class _Unimplemented(RMServeError):
    """An RPC whose service method does not exist in this build."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"
    error_type = "not_implemented"


# ── parsing and the call gate ──────────────────────────────────────────────────────────────────


class Undecodable:
    """What our deserializer returns for bytes that are not a valid request message."""

    def __init__(self, type_name: str, reason: str):
        self.type_name, self.reason = type_name, reason

    def error(self) -> InvalidInput:
        return InvalidInput(
            f"the request is not a valid {self.type_name} message: {self.reason}", code="invalid_message"
        )


def _check_decoded(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise request.error()


def _deserializer(message_type: type) -> Callable[[bytes], Any]:
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return Undecodable(name, str(exc) or type(exc).__name__)

    return parse


_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def reward_service_handler(servicer: RewardServicer) -> grpc.GenericRpcHandler:
    """RewardService's handlers built from its descriptor (as the generated code does), with our parsers."""
    handlers = {}
    for method in SERVICE.methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        make = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_deserializer(request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


class CallGate(grpc.aio.ServerInterceptor):
    """Request id, API key and in-flight accounting for every call on the server (deny by default)."""

    def __init__(self, state: AppState, api_keys: Sequence[str]):
        self.state = state
        self.api_keys = tuple(api_keys)

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED
            return None
        metadata = {m[0]: m[1] for m in details.invocation_metadata or ()}
        rid = request_id(metadata.get("x-request-id") if isinstance(metadata.get("x-request-id"), str) else None)
        service = details.method.strip("/").split("/", 1)[0]
        refusal = None
        if self.api_keys and service not in OPEN_SERVICES:
            given = metadata.get("authorization")
            if not api_key_matches(given if isinstance(given, str) else None, self.api_keys):
                refusal = "missing API key" if given is None else "invalid API key"
                refusal += "; send metadata `authorization: Bearer <key>`"
        return self._wrap(handler, details.method, rid, refusal)

    def _wrap(self, handler: Any, method: str, rid: str, refusal: str | None) -> Any:
        kind = ("stream_" if handler.request_streaming else "unary_") + (
            "stream" if handler.response_streaming else "unary"
        )
        behavior = getattr(handler, kind)
        inflight, metrics = self.state.inflight, self.state.metrics

        async def enter(context: grpc.aio.ServicerContext) -> bool:
            request_id_var.set(rid)  # each call runs in its own task: this context is the call's
            await context.send_initial_metadata((("x-request-id", rid),))
            if refusal is not None:
                with contextlib.suppress(Exception):
                    metrics.observe_request(method, "GRPC", 401, 0.0)
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    refusal,
                    (("rmserve-error-type", "authentication_error"), ("rmserve-error-code", "invalid_api_key")),
                )
            return inflight.begin("grpc")

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
                counted = await enter(context)
                try:
                    async for message in behavior(request, context):
                        yield message
                finally:
                    inflight.end("grpc", counted)

            return handler._replace(**{kind: stream})

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            counted = await enter(context)
            try:
                return await behavior(request, context)
            finally:
                inflight.end("grpc", counted)

        return handler._replace(**{kind: call})


# ── the server ─────────────────────────────────────────────────────────────────────────────────


class GrpcServer:
    """The grpc.aio server of one app: RewardService + health + reflection on ``host:port``."""

    def __init__(self, state: AppState, *, host: str, port: int):
        self.state = state
        self.address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        limit = state.config.max_body_bytes
        self.server = grpc.aio.server(
            interceptors=[CallGate(state, state.config.api_keys())],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
            ],
        )
        self.server.add_generic_rpc_handlers((reward_service_handler(RewardServicer(state)),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port: int | None = None
        self._watch: asyncio.Task | None = None
        self._serving: bool | None = None

    async def start(self) -> int:
        config = self.state.config
        if config.tls_cert and config.tls_key:
            with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            self.port = self.server.add_secure_port(self.address, credentials)
        else:
            self.port = self.server.add_insecure_port(self.address)
        if not self.port:
            raise RuntimeError(f"gRPC could not bind {self.address}; pick another --grpc-port")
        await self.refresh_health()
        await self.server.start()
        self._watch = asyncio.create_task(self._watch_health())
        log.info("gRPC serving %s on %s%s", SERVICE_NAME, self.address, " (TLS)" if config.tls_cert else "")
        return self.port

    def ready(self) -> bool:
        state = self.state
        engines = list(state.engines.values()) or ([state.engine] if state.engine is not None else [])
        return bool(state.ready and not state.draining and engines and all(e.health().accepting for e in engines))

    async def refresh_health(self) -> None:
        serving = self.ready()
        if serving == self._serving:
            return
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_RECHECK_S)
            with contextlib.suppress(Exception):
                await self.refresh_health()

    def on_change(self) -> None:
        """Readiness may have changed (model up, draining): update health now, not at the next re-check."""
        with contextlib.suppress(RuntimeError):  # no running loop: the re-check will catch it
            asyncio.get_running_loop().create_task(self.refresh_health())

    async def stop(self, grace: float) -> None:
        """NOT_SERVING at once, refuse new calls, give running calls ``grace`` seconds."""
        if self._watch is not None:
            self._watch.cancel()
        self._serving = None
        await self.refresh_health()
        await self.server.stop(grace)
        log.info("gRPC stopped")
