"""The one gRPC codec: proto messages <-> the REST wire types (pydantic), for every RPC alike.

Requests: ``decode(message, RestType)`` walks the message by its descriptor into the REST body and lets
the REST pydantic type validate it: one set of rules, and errors name fields with the same dotted paths
(``items.0.response``). Field names in the .proto are the JSON names (tests/test_grpc_contract.py), so
no per-message code is needed. Image ``data`` stays ``bytes`` all the way to the image loader (no base64
in between); ``{"sha256": h}`` stays a reference. A turn's ``parts`` become REST content parts (an MP4's
``data`` stays bytes too, to the video loader).

Proto3 has no "unset" for plain scalars, so the walk keeps fields with presence (``optional``, message
fields, oneofs) only when set, and every other field as it is, except: an empty ``model`` or ``on_reject``
(the server's default), empty ``messages`` (the prompt is used), an empty ``return`` and a false
``return_judgment`` (REST's defaults), and a ScoreItem's ``id`` (gRPC only). A ScoreItem's ``return``,
``voting`` and ``return_judgment`` are ScoreStream's per-item options: ``stream_item_request`` lifts them to
the one-item request (the same ScoreRequest fields Score takes, so the same rules and errors), and Score
refuses them on an item. ``Output`` enums become their REST names.

Responses: ``encode(value, ProtoType)`` sets the message's fields from the REST response's dump (fields
the proto lacks are dropped; non-finite floats go through as they are).
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message as ProtoMessage
from pydantic import BaseModel, ValidationError
from rmserve_client.proto import reward_pb2 as pb

from rmserve.api.protocol import ScoreRequest, invalid_input_from_errors
from rmserve.errors import InvalidInput, Loc, RMServeError

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=ProtoMessage)

OUTPUT_NAMES = {pb.OUTPUT_REWARD: "reward", pb.OUTPUT_ATTRIBUTES: "attributes", pb.OUTPUT_SAFETY: "safety"}
# "" / [] / false means "the server's default" (REST leaves the field out)
_DEFAULT_WHEN_EMPTY = frozenset({"model", "on_reject", "messages", "return", "return_judgment"})
_GRPC_ONLY = frozenset({"id"})
# ScoreItem fields that are ScoreRequest fields for one ScoreStream item (Score takes them on the request).
STREAM_ITEM_OPTIONS = ("return", "voting", "return_judgment")


# ── requests ───────────────────────────────────────────────────────────────────────────────────


def decode(message: ProtoMessage, model: type[M]) -> M:
    """A request message as the REST request type (InvalidInput naming the field if it is not one)."""
    return validate(model, to_body(message, ()))


def validate(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_input_from_errors(exc.errors()) from None


def to_body(message: ProtoMessage, loc: Loc) -> dict[str, Any]:
    """The REST JSON body of ``message`` (``loc``: where it sits in the request, for errors)."""
    body: dict[str, Any] = {}
    for name, field, presence, kind in _plan(message.DESCRIPTOR):
        if presence and not message.HasField(name):
            continue
        value = getattr(message, name)
        if kind == _MAP:
            value = dict(value)
        elif kind == _REPEATED:
            value = [_scalar(field, v, (*loc, name, i)) for i, v in enumerate(value)]
        elif kind == _NESTED:
            value = _scalar(field, value, (*loc, name))
        if name in _DEFAULT_WHEN_EMPTY and not value:
            continue
        if name == "response" and not value and _ends_with_reply(message):
            continue  # the final assistant turn is the scored response (REST: `response` left out)
        body[name] = value
    return body


_PLAIN, _MAP, _REPEATED, _NESTED = range(4)


@functools.cache
def _plan(descriptor: Any) -> tuple[tuple[str, FieldDescriptor, bool, int], ...]:
    """Per message type, once: each field's name, presence and how to convert it (the hot path reads this)."""
    plan = []
    for field in descriptor.fields:
        if field.name in _GRPC_ONLY:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            kind = _MAP
        elif field.is_repeated:
            kind = _REPEATED
        elif field.message_type is not None or field.enum_type is not None:
            kind = _NESTED
        else:
            kind = _PLAIN
        plan.append((field.name, field, field.has_presence, kind))
    return tuple(plan)


def _scalar(field: FieldDescriptor, value: Any, loc: Loc) -> Any:
    if field.message_type is pb.Image.DESCRIPTOR:
        return _image(value, loc)
    if field.message_type is pb.Message.DESCRIPTOR:
        return _message(value, loc)
    if field.message_type is not None:
        return to_body(value, loc)
    if field.enum_type is pb.Output.DESCRIPTOR:
        name = OUTPUT_NAMES.get(value)
        if name is None:
            raise InvalidInput(
                f"unknown output {value}; use OUTPUT_REWARD, OUTPUT_ATTRIBUTES or OUTPUT_SAFETY",
                param=loc,
                code="invalid_output",
            )
        return name
    return value


def _image(image: pb.Image, loc: Loc) -> bytes | dict[str, str]:
    kind = image.WhichOneof("source")
    if kind == "data":
        return image.data  # raw bytes: the loader decodes them as they are (an empty one fails there)
    if kind == "sha256":
        return {"sha256": image.sha256}
    raise InvalidInput("image has neither `data` nor `sha256` set", param=loc, code="invalid_image")


def _ends_with_reply(message: ProtoMessage) -> bool:
    turns = getattr(message, "messages", None) if "messages" in message.DESCRIPTOR.fields_by_name else None
    return bool(turns) and turns[-1].role == "assistant"


def _message(message: pb.Message, loc: Loc) -> dict[str, Any]:
    """A turn as REST has it: ``parts`` become ``content`` as a list of parts (errors name ``content.K``)."""
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.parts:
        if message.content:
            raise InvalidInput("give `content` or `parts`, not both", param=(*loc, "parts"), code="invalid_part")
        body["content"] = [_part(part, (*loc, "content", k)) for k, part in enumerate(message.parts)]
    for name in ("name", "tool_call_id"):
        if message.HasField(name):
            body[name] = getattr(message, name)
    return body


def _part(part: pb.ContentPart, loc: Loc) -> dict[str, Any]:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image":
        return {"type": "image", "image": _image(part.image, loc)}
    if kind != "video":
        raise InvalidInput("content part has none of `text`, `image`, `video` set", param=loc, code="invalid_part")
    video = part.video
    options = {name: getattr(video, name) for name in ("fps", "max_frames") if video.HasField(name)}
    source = video.WhichOneof("source")
    if source == "frames":
        if "max_frames" in options:
            raise InvalidInput("`max_frames` is for MP4 `data`; send fewer frames", param=(*loc, "max_frames"),
                               code="invalid_part")
        frames = [_image(f, (*loc, "frames", j)) for j, f in enumerate(video.frames.frames)]
        return {"type": "video", "frames": frames, **options}
    if source == "data":  # bytes to the video loader as they are (no base64 round trip)
        return {"type": "video_url", "video_url": {"url": video.data, **options}}
    raise InvalidInput("video has neither `data` nor `frames` set", param=loc, code="invalid_video")


def score_request(message: pb.ScoreRequest) -> ScoreRequest:
    """Score takes its outputs and judge options from the request; a per-item one is a mistake worth naming
    (it would be ignored otherwise)."""
    for i, item in enumerate(message.items):
        for name in STREAM_ITEM_OPTIONS:
            if _is_set(item, name):
                raise InvalidInput(
                    f"per-item `{name}` is for ScoreStream; set `{name}` on the ScoreRequest",
                    param=("items", i, name),
                    code="invalid_output" if name == "return" else "stream_only_option",
                )
    return decode(message, ScoreRequest)


def _is_set(message: ProtoMessage, name: str) -> bool:
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        return len(getattr(message, name)) > 0
    return message.HasField(name) if field.has_presence else bool(getattr(message, name))


def stream_item_request(item: pb.ScoreItem) -> ScoreRequest:
    """One ScoreStream item as a one-item ScoreRequest: its ``return``, ``voting`` and ``return_judgment``
    become the request's (the fields Score takes, so the same validation and the same judge path). Errors
    name fields as ``items.0...`` or ``voting.k``; the stream reports them relative to the item (``error_proto``
    strips ``items.0``), so both read as the item's own fields."""
    fields = to_body(item, ("items", 0))
    body: dict[str, Any] = {name: fields.pop(name) for name in STREAM_ITEM_OPTIONS if name in fields}
    body["items"] = [fields]
    return validate(ScoreRequest, body)


# ── responses ──────────────────────────────────────────────────────────────────────────────────


def encode(value: BaseModel | dict[str, Any], cls: type[P]) -> P:
    """A REST response (pydantic model or its dump) as a proto message; fields the proto lacks are dropped
    (tests/test_grpc_contract.py keeps the two in step)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True, by_alias=True)
    message = cls()
    _fill(message, value)
    return message


def _fill(message: ProtoMessage, values: dict[str, Any]) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        field = fields.get(name)
        if field is None or value is None:
            continue
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target.update(value)
        elif field.is_repeated:
            if field.message_type is not None:
                for element in value:
                    _fill(target.add(), element)
            else:
                target.extend(value)
        elif field.message_type is not None:
            _fill(target, value)
        else:
            setattr(message, name, value)


def error_proto(exc: RMServeError, *, within: Loc = ()) -> pb.Error:
    """The error as a ScoreStream result's ``error``; ``within``: the location its fields are relative to."""
    exc = exc.within(within)
    return pb.Error(
        message=exc.message,
        type=exc.error_type,
        param=exc.param or "",
        code=exc.code or "",
        retry_after_s=float(getattr(exc, "retry_after_s", 0.0) or 0.0),
    )


__all__ = ["STREAM_ITEM_OPTIONS", "decode", "encode", "error_proto", "score_request", "stream_item_request", "validate"]
