"""gRPC transports (``grpc://host:port``, ``grpcs://`` for TLS): the same operations and the same JSON-shaped
dicts as REST, carried as rmserve.v1 protobuf messages. Needs ``pip install 'rmserve-client[grpc]'``.

Requests are filled field by field from the REST-shaped body (the .proto uses the JSON names),
images straight from bytes; answers go back to REST-shaped dicts, so one parser serves both
transports. Errors: the status code picks the exception class; details, and the trailing metadata
``rmserve-error-{type,param,code}`` and ``retry-after``, fill it in.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from rmserve_client._base import ROUTING_HEADER
from rmserve_client._images import ImageData, ImageRef
from rmserve_client._parts import pb_message
from rmserve_client.exceptions import InvalidRequest, RMServeError, Unsupported, error_for_grpc

try:
    import grpc
    from google.protobuf import json_format
    from google.protobuf.message import Message

    from rmserve_client.proto import reward_pb2 as pb
    from rmserve_client.proto import reward_pb2_grpc as pb_grpc
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"grpc:// URLs need the gRPC extra: pip install 'rmserve-client[grpc]' ({exc})"
    ) from exc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# op -> (RPC, request message)
UNARY = {
    "score": ("Score", pb.ScoreRequest),
    "compare": ("Compare", pb.CompareRequest),
    "rank": ("Rank", pb.RankRequest),
    "safety": ("Safety", pb.SafetyRequest),
    "upload_image": ("UploadImage", pb.UploadImageRequest),
}
STREAMING = {"critique": ("Critique", pb.CritiqueRequest)}
OUTPUTS = {"reward": pb.OUTPUT_REWARD, "attributes": pb.OUTPUT_ATTRIBUTES, "safety": pb.OUTPUT_SAFETY}


# ── codec (pure) ───────────────────────────────────────────────────────────────────────────────


def pb_image(image: Any) -> pb.Image:
    if isinstance(image, ImageData):
        return pb.Image(data=image.data)
    if isinstance(image, ImageRef):
        return pb.Image(sha256=image.sha256)
    raise TypeError(f"not a loaded image: {type(image).__name__}")


def fill(message: Message, body: Mapping[str, Any], path: str = "") -> Message:
    """Set ``message``'s fields from a REST-shaped dict (names match); unknown names are an InvalidRequest."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in body.items():
        where = f"{path}{key}"
        if value is None:
            continue
        if key not in fields:
            raise InvalidRequest(f"{where}: not a field of rmserve.v1.{message.DESCRIPTOR.name}", param=where)
        field = fields[key]
        if key == "images":
            getattr(message, key).extend(pb_image(im) for im in value)
        elif key == "messages":
            getattr(message, key).extend(pb_message(pb, m) for m in value)
        elif key == "verifier" and isinstance(value, str):  # REST takes the bare name too
            message.verifier.name = value
        elif key == "return":
            getattr(message, key).extend(OUTPUTS[name] for name in value)
        elif field.message_type is not None and _is_repeated(field):
            target = getattr(message, key)
            for j, entry in enumerate(value):
                fill(target.add(), entry, f"{where}.{j}.")
        elif field.message_type is not None:
            fill(getattr(message, key), value, f"{where}.")
        elif _is_repeated(field):
            getattr(message, key).extend(value)
        elif field.type == field.TYPE_BYTES and isinstance(value, ImageData):
            setattr(message, key, value.data)
        else:
            setattr(message, key, value)
    return message


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def score_result_json(result: pb.ScoreResult) -> dict[str, Any]:
    """A ScoreResult as the REST item (unset optional fields left out, as REST leaves out nulls)."""
    data: dict[str, Any] = {"id": result.id or None, "reward": result.reward}
    for name in ("attributes", "safety", "model_rewards"):
        if getattr(result, name):
            data[name] = dict(getattr(result, name))
    for name in ("raw_reward", "verified", "flagged", "error"):
        if result.HasField(name):
            value = getattr(result, name)
            data[name] = to_json(value) if name == "error" else value
    if result.flagged_categories:
        data["flagged_categories"] = list(result.flagged_categories)
    if result.safety_action:
        data["safety_action"] = result.safety_action
    if result.judgments:
        data["judgments"] = [to_json(j) for j in result.judgments]
    return data


def to_json(message: Message) -> dict[str, Any]:
    if isinstance(message, pb.ScoreResponse):
        return {
            "items": [score_result_json(r) for r in message.items],
            "model": message.model,
            "usage": {
                "items": message.usage.items,
                "prompt_tokens": message.usage.prompt_tokens,
                "total_tokens": message.usage.total_tokens,
            },
        }
    if isinstance(message, pb.ScoreResult):
        return score_result_json(message)
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def stream_item(item: Mapping[str, Any], returns: Iterable[str] | None) -> pb.ScoreItem:
    message = fill(pb.ScoreItem(), item)
    if returns:
        getattr(message, "return").extend(OUTPUTS[name] for name in returns)
    return message


def error_from_rpc(error: grpc.RpcError) -> RMServeError:
    code = error.code() if hasattr(error, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    # (key, value) pairs: _Metadatum namedtuples (sync) or tuples (grpc.aio.Metadata)
    pairs = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    meta = {key: value for key, value in (pairs or ())}
    retry = meta.get("retry-after")
    param = meta.get("rmserve-error-param")
    message = (error.details() if hasattr(error, "details") else None) or name
    if param and message.startswith(f"{param}: "):  # the status details lead with the field; .param has it
        message = message[len(param) + 2 :]
    return error_for_grpc(name)(
        message,
        status=name,
        type=meta.get("rmserve-error-type"),
        param=param,
        code=meta.get("rmserve-error-code"),
        retry_after=float(retry) if retry else None,
    )


def target_of(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}; use grpc://host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 50051}", parts.scheme.lower() == "grpcs"


def _options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def _routed(metadata: tuple[tuple[str, str], ...], route: str | None) -> tuple[tuple[str, str], ...]:
    """The call's metadata with the routing key (x-rmserve-group) a proxy hashes on, when there is one."""
    return (*metadata, (ROUTING_HEADER, route)) if route else metadata


# Client-side affinity without a proxy: gRPC's ring_hash policy over every address of the target (a
# headless Service: dns:///rmserve-headless.NAMESPACE:50051) hashes each call's x-rmserve-group
# metadata onto one backend. grpcio reads requestHashHeader only with the environment variable
# GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY=true set before the process starts gRPC.
RING_HASH_FLAG = "GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY"
GROUP_HASH_SERVICE_CONFIG = {"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": ROUTING_HEADER}}]}


def group_hash_channel(target: str, credentials: Any = None) -> Any:
    """A channel that sends calls with the same x-rmserve-group to the same backend of ``target``
    (pass it as ``GrpcTransport(url, channel=...)``). A ScoreStream is one call: its first item's key routes it.

    Refuses to start without ``GRPC_EXPERIMENTAL_RING_HASH_SET_REQUEST_HASH_KEY=true`` in the environment:
    without it grpcio ignores ``requestHashHeader`` and picks a random backend per call, silently."""
    if os.environ.get(RING_HASH_FLAG, "").lower() != "true":
        raise RuntimeError(f"group_hash_channel needs {RING_HASH_FLAG}=true in the environment before gRPC starts "
                           "(without it grpcio ignores the x-rmserve-group metadata and spreads a group's calls)")
    options = [*_options(), ("grpc.service_config", json.dumps(GROUP_HASH_SERVICE_CONFIG))]
    if credentials is not None:
        return grpc.secure_channel(target, credentials, options=options)
    return grpc.insecure_channel(target, options=options)


def _request(op: str, body: Mapping[str, Any]) -> tuple[str, Message]:
    if op not in UNARY and op not in STREAMING:
        raise Unsupported(f"{op} is not offered over gRPC; use an http:// URL", status="UNIMPLEMENTED")
    rpc, cls = UNARY.get(op) or STREAMING[op]
    return rpc, fill(cls(), body)


# ── transports ─────────────────────────────────────────────────────────────────────────────────


class GrpcTransport:
    def __init__(self, url: str, *, api_key: str | None = None, channel: Any = None):
        target, secure = target_of(url)
        if channel is None:
            if secure:
                channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=_options())
            else:
                channel = grpc.insecure_channel(target, options=_options())
        self.channel = channel
        self.stub = pb_grpc.RewardServiceStub(channel)
        self.metadata = _metadata(api_key)

    def request(
        self, op: str, body: Mapping[str, Any], *, timeout: float | None, route: str | None = None
    ) -> dict[str, Any]:
        rpc, message = _request(op, body)
        try:
            return to_json(getattr(self.stub, rpc)(message, timeout=timeout, metadata=_routed(self.metadata, route)))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def stream(
        self, op: str, body: Mapping[str, Any], *, timeout: float | None, route: str | None = None
    ) -> Iterator[dict[str, Any]]:
        rpc, message = _request(op, body)
        try:
            for chunk in getattr(self.stub, rpc)(message, timeout=timeout, metadata=_routed(self.metadata, route)):
                yield to_json(chunk)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def score_stream(
        self, items: Iterator[pb.ScoreItem], *, timeout: float | None, route: str | None = None
    ) -> Iterator[dict[str, Any]]:
        call = self.stub.ScoreStream(items, timeout=timeout, metadata=_routed(self.metadata, route))
        try:
            for result in call:
                yield score_result_json(result)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    def close(self) -> None:
        self.channel.close()


class AsyncGrpcTransport:
    """grpc.aio; the channel is made in (and kept for) the event loop that uses it."""

    def __init__(self, url: str, *, api_key: str | None = None):
        self.target, self.secure = target_of(url)
        self.metadata = _metadata(api_key)
        self._channel: Any = None
        self._stub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            if self.secure:
                credentials = grpc.ssl_channel_credentials()
                self._channel = grpc.aio.secure_channel(self.target, credentials, options=_options())
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=_options())
            self._stub = pb_grpc.RewardServiceStub(self._channel)
            self._loop = loop
        return self._stub

    async def request(
        self, op: str, body: Mapping[str, Any], *, timeout: float | None, route: str | None = None
    ) -> dict[str, Any]:
        rpc, message = _request(op, body)
        try:
            call = getattr(self._get(), rpc)(message, timeout=timeout, metadata=_routed(self.metadata, route))
            return to_json(await call)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    async def stream(
        self, op: str, body: Mapping[str, Any], *, timeout: float | None, route: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        rpc, message = _request(op, body)
        try:
            call = getattr(self._get(), rpc)(message, timeout=timeout, metadata=_routed(self.metadata, route))
            async for chunk in call:
                yield to_json(chunk)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    async def score_stream(
        self, items: AsyncIterable[pb.ScoreItem], *, timeout: float | None, route: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        call = self._get().ScoreStream(items, timeout=timeout, metadata=_routed(self.metadata, route))
        try:
            async for result in call:
                yield score_result_json(result)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    async def aclose(self) -> None:
        if self._channel is not None and self._loop is asyncio.get_running_loop():
            await self._channel.close()
        self._channel = self._stub = None
