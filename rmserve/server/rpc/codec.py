"""proto <-> the REST wire types (pydantic), so gRPC calls the same service methods as REST.

Requests become the REST JSON body first, then the REST pydantic type validates them: one set of
rules, and validation errors name fields with the same dotted paths (``items.0.response``).
Field names in the .proto match the JSON names, so the generic path is
``json_format.MessageToDict`` -> a few fix-ups -> ``Model.model_validate`` and, for responses,
``model_dump`` -> ``json_format.ParseDict``. Score, the hot path, converts field by field.

Fix-ups from proto to JSON: image ``data`` bytes become raw base64 (the REST inline form),
``{"sha256": h}`` stays a reference; empty ``model`` / ``messages`` / stream-only ``id`` and
``return`` are dropped (proto3 has no "unset" for them); ``Output`` enums become names.
"""

from __future__ import annotations

import base64
import math
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from pydantic import BaseModel, ValidationError
from rmserve_client._proto import reward_pb2 as pb

from rmserve.api.protocol import ScoreItemOut, ScoreRequest, ScoreResponse, invalid_input_from_errors
from rmserve.errors import InvalidInput, Loc, RMServeError

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=ProtoMessage)

OUTPUT_NAMES = {pb.OUTPUT_REWARD: "reward", pb.OUTPUT_ATTRIBUTES: "attributes", pb.OUTPUT_SAFETY: "safety"}
_ENUM_NAMES = {pb.Output.Name(k): v for k, v in OUTPUT_NAMES.items()}


def validate(model: type[M], body: dict[str, Any]) -> M:
    """``model.model_validate(body)`` with pydantic's errors turned into one InvalidInput naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_input_from_errors(exc.errors()) from None


# ── Score (field by field: the hot path) ───────────────────────────────────────────────────────


def image_to_wire(image: pb.Image, *, param: str) -> str | dict[str, str]:
    kind = image.WhichOneof("source")
    if kind == "data":
        # Raw base64 is the loader's inline form; an empty image fails there with invalid_base64.
        return base64.b64encode(image.data).decode("ascii")
    if kind == "sha256":
        return {"sha256": image.sha256}
    raise InvalidInput("image has neither `data` nor `sha256` set", param=param, code="invalid_image")


def outputs_to_wire(values: Any, *, param: str) -> list[str]:
    names = []
    for j, value in enumerate(values):
        name = OUTPUT_NAMES.get(value)
        if name is None:
            raise InvalidInput(
                f"unknown output {value}; use OUTPUT_REWARD, OUTPUT_ATTRIBUTES or OUTPUT_SAFETY",
                param=f"{param}.{j}",
                code="invalid_output",
            )
        names.append(name)
    return names


def item_to_wire(item: pb.ScoreItem, *, param: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "response": item.response,
        "images": [image_to_wire(im, param=f"{param}.images.{j}") for j, im in enumerate(item.images)],
        "truncate": item.truncate,
    }
    if item.HasField("prompt"):
        body["prompt"] = item.prompt
    if item.messages:
        body["messages"] = [{"role": m.role, "content": m.content} for m in item.messages]
    if item.HasField("group"):
        body["group"] = item.group
    if item.HasField("ground_truth"):
        body["ground_truth"] = item.ground_truth
    return body


def score_request(message: pb.ScoreRequest) -> ScoreRequest:
    body: dict[str, Any] = {"items": []}
    for i, item in enumerate(message.items):
        if len(getattr(item, "return")):
            raise InvalidInput(
                "per-item `return` is for ScoreStream; set `return` on the ScoreRequest",
                param=f"items.{i}.return",
                code="invalid_output",
            )
        body["items"].append(item_to_wire(item, param=f"items.{i}"))
    if message.model:
        body["model"] = message.model
    returns = getattr(message, "return")
    if len(returns):
        body["return"] = outputs_to_wire(returns, param="return")
    if message.HasField("verifier"):
        verifier: dict[str, Any] = {"name": message.verifier.name}
        if message.verifier.HasField("tolerance"):
            verifier["tolerance"] = message.verifier.tolerance
        body["verifier"] = verifier
    if message.on_reject:
        body["on_reject"] = message.on_reject
    return validate(ScoreRequest, body)


def stream_item_request(item: pb.ScoreItem) -> ScoreRequest:
    """One ScoreStream item as a one-item ScoreRequest (errors name fields as ``items.0...``)."""
    body: dict[str, Any] = {"items": [item_to_wire(item, param="items.0")]}
    returns = getattr(item, "return")
    if len(returns):
        body["return"] = outputs_to_wire(returns, param="items.0.return")
    return validate(ScoreRequest, body)


def score_result(out: ScoreItemOut, *, id: str = "") -> pb.ScoreResult:
    result = pb.ScoreResult(id=id, reward=out.reward)
    for name in ("attributes", "safety", "model_rewards"):  # maps
        value = getattr(out, name, None)
        if value:
            getattr(result, name).update(value)
    for name in ("raw_reward", "verified", "flagged", "safety_action"):  # optional scalars
        value = getattr(out, name, None)
        if value is not None:
            setattr(result, name, value)
    if getattr(out, "flagged_categories", None):
        result.flagged_categories.extend(out.flagged_categories)
    return result


def score_response(response: ScoreResponse, ids: list[str]) -> pb.ScoreResponse:
    usage = response.usage
    return pb.ScoreResponse(
        items=[score_result(out, id=i) for out, i in zip(response.items, ids, strict=True)],
        model=response.model,
        usage=pb.Usage(items=usage.items, prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens),
    )


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


# ── generic (Compare, Rank, Critique, Safety, UploadImage) ─────────────────────────────────────


def to_wire(message: ProtoMessage) -> dict[str, Any]:
    """A request message as its REST JSON body."""
    body = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _fix_request(body)


def request(message: ProtoMessage, model: type[M]) -> M:
    return validate(model, to_wire(message))


def to_proto(value: BaseModel | dict[str, Any], cls: type[P]) -> P:
    """A REST response (pydantic model or its dump) as a proto message; fields the proto lacks are dropped
    (tests/test_grpc_contract.py keeps the two in step)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True, by_alias=True)
    message = cls()
    json_format.ParseDict(_jsonable(value), message, ignore_unknown_fields=True)
    return message


def _fix_request(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "model" and v == "":
                continue
            if k in ("messages", "id") and not v:
                continue
            if k == "return":
                if not v:
                    continue
                v = [_ENUM_NAMES.get(name, name) for name in v]
            out[k] = _fix_request(v, k)
        return out
    if isinstance(value, list):
        if key == "images":
            return [_image_json(v) for v in value]
        return [_fix_request(v) for v in value]
    return value


def _image_json(value: Any) -> Any:
    # MessageToDict writes bytes as standard base64: exactly the REST inline form.
    if isinstance(value, dict) and set(value) == {"data"}:
        return value["data"]
    return value


def _jsonable(value: Any) -> Any:
    """Drop None; non-finite floats as the proto JSON strings ("NaN", "Infinity")."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value
