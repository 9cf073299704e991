"""How calls reach the servicer: our deserializers, and one interceptor (``CallGate``) before every method.

``CallGate`` takes the request id from ``x-request-id`` metadata (or makes one), sends it back as
initial metadata and stamps every log line of the call with it; with API keys configured it refuses
calls without ``authorization: Bearer <key>`` (UNAUTHENTICATED) on every service but
``grpc.health.v1.Health`` (reflection needs a key too), and it counts calls in flight for the drain.
The gate is deny-by-default, so a service or method added later is covered without further code.
Requests are parsed by our own deserializers: bytes that are not a valid message become
INVALID_ARGUMENT (gRPC's own handling would answer UNKNOWN).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health
from rmserve_client.proto import reward_pb2 as pb

from rmserve.errors import InvalidInput, Unauthenticated
from rmserve.server.logs import request_id, request_id_var
from rmserve.server.middleware import require_api_key
from rmserve.server.rpc.status import status_code, status_details, trailing_metadata
from rmserve.server.state import AppState

SERVICE = pb.DESCRIPTOR.services_by_name["RewardService"]
SERVICE_NAME = SERVICE.full_name  # rmserve.v1.RewardService
# Orchestrators probe health without a key; every other service (reflection too) needs one.
OPEN_SERVICES = frozenset({health.SERVICE_NAME})



class Undecodable:
    """What our deserializer returns for bytes that are not a valid request message."""

    def __init__(self, type_name: str, reason: str):
        self.type_name, self.reason = type_name, reason

    def error(self) -> InvalidInput:
        return InvalidInput(
            f"the request is not a valid {self.type_name} message: {self.reason}", code="invalid_message"
        )


def check_decoded(request: Any) -> None:
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


def reward_service_handler(servicer: object) -> grpc.GenericRpcHandler:
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
            try:
                require_api_key(given if isinstance(given, str) else None, self.api_keys,
                                "metadata `authorization: Bearer <key>`")
            except Unauthenticated as exc:  # answered once the call starts (enter): interceptors cannot abort
                refusal = exc
        return self._wrap(handler, details.method, rid, refusal)

    def _wrap(self, handler: Any, method: str, rid: str, refusal: Unauthenticated | None) -> Any:
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
                    metrics.observe_request(method, "GRPC", refusal.http_status, 0.0)
                await context.abort(status_code(refusal), status_details(refusal), trailing_metadata(refusal))
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


