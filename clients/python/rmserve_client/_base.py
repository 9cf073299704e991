"""What both clients share, with no I/O: configuration, request bodies, response parsing, the retry
policy and the image bookkeeping. ``RewardClient`` (sync_client.py) and ``AsyncRewardClient``
(async_client.py) add only the I/O path, with mirrored method names.

A request body is the REST JSON body of the operation, except that images are ``ImageData`` (bytes
to send inline) or ``ImageRef`` (a sha256 the server holds); each transport encodes those its own
way (a data URL in JSON, bytes in protobuf).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rmserve_client._images import ImageData, ImageRef, ImageRegistry, load_image
from rmserve_client._parts import load_messages
from rmserve_client.exceptions import InvalidRequest, RMServeError, error_for_type
from rmserve_client.types import (
    CompareResult,
    CritiqueResult,
    RankResult,
    SafetyResult,
    ScoreResult,
    UploadResult,
)

DEFAULT_TIMEOUT = 60.0
# The key a proxy in front of several replicas hashes on (nginx `hash $http_x_rmserve_group consistent`,
# HAProxy `balance hdr(x-rmserve-group)`): a GRPO group's requests share it, so they land on one replica
# and share its prefix, image, vision-feature and prompt caches. REST header; gRPC metadata of the same name.
ROUTING_HEADER = "x-rmserve-group"
RETURNS = ("reward", "attributes", "safety")
_ITEM_KEYS = frozenset({"prompt", "messages", "response", "images", "group", "truncate", "ground_truth", "id"})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for Overloaded (429 / RESOURCE_EXHAUSTED), Unavailable (503 / UNAVAILABLE) and
    TransportError: exponential backoff with full jitter, ``backoff * 2**attempt`` capped at
    ``max_backoff``; a server's Retry-After wins over the backoff. Never sleeps past the call's deadline."""

    max_retries: int = 4
    backoff: float = 0.25
    max_backoff: float = 10.0

    def delay(self, attempt: int, error: RMServeError, rng: random.Random) -> float:
        if error.retry_after is not None and error.retry_after > 0:
            return float(error.retry_after) * (1.0 + 0.1 * rng.random())  # a little spread, never earlier
        return rng.uniform(0.0, min(self.max_backoff, self.backoff * (2**attempt)))


def transport_kind(url: str) -> str:
    """``http(s)://`` -> "rest", ``grpc(s)://`` -> "grpc"."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return "rest"
    if scheme in ("grpc", "grpcs"):
        return "grpc"
    raise ValueError(f"unsupported URL {url!r}: use http(s)://host:port (REST) or grpc://host:port (gRPC)")


def _key_part(value: Any) -> Any:
    """JSON for hashing: images by their sha256 (bytes or a reference hash the same), anything else by type."""
    if isinstance(value, ImageData | ImageRef):
        return {"sha256": value.sha256}
    return f"<{type(value).__name__}>"


def routing_key(body: Mapping[str, Any]) -> str | None:
    """``x-rmserve-group`` for a request body: its first item's ``group`` when the caller gave one, else a
    hash of the first item's prompt side (``prompt`` or ``messages``, and its images' sha256). The
    responses are left out: the G responses of a group share the key. None when there is no prompt side."""
    item: Any = body
    if isinstance(body.get("items"), list | tuple) and body["items"]:
        item = body["items"][0]
    elif isinstance(body.get("prompts"), list | tuple) and body["prompts"]:  # OpenRLHF's /get_reward
        item = {"prompt": body["prompts"][0]}
    if not isinstance(item, Mapping):
        return None
    if item.get("group") is not None:
        side: Any = {"group": str(item["group"])}
    else:
        side = {k: item[k] for k in ("prompt", "messages", "images") if item.get(k) is not None}
        if not side:
            return None
    text = json.dumps(side, sort_keys=True, default=_key_part, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class BaseClient:
    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        upload_images: bool = True,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        routing: bool = True,
    ):
        url = url or os.environ.get("RMSERVE_URL") or "http://127.0.0.1:8000"
        self.url = url.rstrip("/")
        self.kind = transport_kind(self.url)
        self.api_key = api_key if api_key is not None else os.environ.get("RMSERVE_API_KEY") or None
        self.timeout = timeout
        retry = retry or RetryPolicy()
        if max_retries is not None:
            retry = RetryPolicy(max_retries, retry.backoff, retry.max_backoff)
        self.retry = retry
        self.model = model
        self.headers = dict(headers or {})
        self.images = ImageRegistry()
        self.upload_images = upload_images
        self._uploads_supported = True  # until the server says otherwise (404 / UNIMPLEMENTED)
        self._inline_cached = True  # the server keeps inline images by hash (its default); learnt otherwise
        self._rng = random.Random()
        self.routing = routing  # send x-rmserve-group (routing_key) with every request

    def _route(self, body: Mapping[str, Any] | None) -> str | None:
        return routing_key(body) if self.routing and body is not None else None

    def _stream_route(self, first: Mapping[str, Any]) -> str | None:
        """A ScoreStream's routing key: its first item's (``group``, else prompt side). gRPC sends metadata
        once, when the call starts, so a stream has one key and every item of it goes to that replica (and
        its images are uploaded there): a stream that mixes groups is scored correctly, but only the first
        group's requests meet the rest of that group on its replica. One stream per group keeps them all."""
        return self._route({"items": [first]})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ── deadlines and retries ──────────────────────────────────────────────────────────────

    def _deadline(self, timeout: float | None | object) -> float | None:
        seconds = self.timeout if timeout is _DEFAULT else timeout
        return None if seconds is None else time.monotonic() + float(seconds)  # type: ignore[arg-type]

    def _retry_delay(self, attempt: int, error: RMServeError, deadline: float | None) -> float | None:
        """Seconds to sleep before retry number ``attempt + 1``, or None to give up and raise."""
        if attempt >= self.retry.max_retries:
            return None
        delay = self.retry.delay(attempt, error, self._rng)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return None
        return delay

    def _backoff(self, attempt: int, error: RMServeError, deadline: float | None) -> float:
        """Seconds to sleep before retrying after ``error``; re-raises it when the policy or deadline says stop."""
        delay = self._retry_delay(attempt, error, deadline)
        if delay is None:
            raise error
        return delay

    # ── items and images ───────────────────────────────────────────────────────────────────

    def _collect_items(self, items: Any, fields: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """Items from ``items`` (one dict, or an iterable of dicts) or from keyword fields; and whether
        the caller gave a single item (so gets a single result back)."""
        given = {k: v for k, v in fields.items() if v is not None}
        if items is None:
            if "response" not in given:
                raise TypeError("give items, or response= (with prompt= or messages=)")
            return [given], True
        if given:
            raise TypeError(f"give items or keyword fields, not both (got {', '.join(given)})")
        if isinstance(items, Mapping):
            return [dict(items)], True
        out = [dict(item) for item in items]
        if not out:
            raise ValueError("items is empty")
        return out, False

    def _load_item(self, item: Mapping[str, Any], index: int, cache: dict[int, ImageData | ImageRef]) -> dict[str, Any]:
        unknown = set(item) - _ITEM_KEYS
        if unknown:
            raise ValueError(f"items.{index}: unknown field(s) {', '.join(sorted(unknown))}")
        out = {k: v for k, v in item.items() if v is not None and k != "images"}
        if item.get("messages") is not None:
            out["messages"] = load_messages(item["messages"], f"items.{index}.messages", cache)
        images = item.get("images")
        if images is not None:
            if isinstance(images, str | bytes) or hasattr(images, "save") or isinstance(images, Mapping):
                images = [images]  # one image given without a list
            loaded = []
            for j, image in enumerate(images):
                key = id(image)  # the same object repeated (a GRPO group) is encoded and hashed once
                if key not in cache:
                    cache[key] = load_image(image, param=f"items.{index}.images.{j}")
                loaded.append(cache[key])
            out["images"] = loaded
        return out

    def _score_request(
        self, items: Any, fields: dict[str, Any], timeout: Any
    ) -> tuple[list[dict[str, Any]], bool, float | None]:
        """score / safety: the loaded items, whether the caller gave a single one, and the call's deadline."""
        raw, single = self._collect_items(items, fields)
        return self._score_items(raw), single, self._deadline(timeout)

    def _score_items(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        cache: dict[int, ImageData | ImageRef] = {}
        return [self._load_item(item, i, cache) for i, item in enumerate(items)]

    def _to_upload(self, items: Sequence[Mapping[str, Any]], prefix: str = "items") -> list[tuple[ImageData, str]]:
        """Distinct images the server does not hold yet, to upload before the request refers to them,
        each with where it first appears (``items.3.images.0``: upload errors name that field)."""
        if not (self.upload_images and self._uploads_supported):
            return []
        found: dict[str, tuple[ImageData, str]] = {}
        for i, item in enumerate(items):
            for j, image in enumerate(item.get("images", ())):
                if isinstance(image, ImageData) and image.sha256 not in self.images:
                    where = f"{prefix}.{i}.images.{j}" if prefix else f"images.{j}"
                    found.setdefault(image.sha256, (image, where))
        return list(found.values())

    @staticmethod
    def _upload_error(error: InvalidRequest, where: str) -> InvalidRequest:
        """An upload refused (bad image): the same error, about the request field the image came from."""
        return type(error)(
            error.message, status=error.status, type=error.type, param=where, code=error.code
        )

    def _wire_items(self, items: Sequence[Mapping[str, Any]], *, inline: bool = False) -> list[dict[str, Any]]:
        """Items with each image as a reference where the server holds it, else inline (``inline``: always)."""
        wire = []
        for item in items:
            # ``group`` only routes (x-rmserve-group, from routing_key): servers ignore it in the body.
            out = {k: v for k, v in item.items() if k not in ("id", "group")}
            if "images" in item:
                out["images"] = [
                    ImageRef(im.sha256)
                    if isinstance(im, ImageData) and self.upload_images and not inline and im.sha256 in self.images
                    else im
                    for im in item["images"]
                ]
            wire.append(out)
        return wire

    def _sent(self, items: Sequence[Mapping[str, Any]]) -> None:
        """A request with these items succeeded: the server now holds its inline images (if it caches)."""
        if not (self.upload_images and self._inline_cached):
            return
        for item in items:
            for image in item.get("images", ()):
                if isinstance(image, ImageData):
                    self.images.add(image.sha256)

    def _uploaded(self, image: ImageData, data: Mapping[str, Any]) -> UploadResult:
        result = UploadResult.from_json(data)
        self.images.add(result.sha256)
        return result

    def _image_not_found(self, items: Sequence[Mapping[str, Any]]) -> None:
        """The server lost images we referred to (restart, eviction, image cache off): forget them all;
        if nothing was ever uploaded, stop assuming inline images are kept."""
        for item in items:
            for image in item.get("images", ()):
                if isinstance(image, ImageData | ImageRef):
                    self.images.forget(image.sha256)
        if not self._uploads_supported or not self.upload_images:
            self._inline_cached = False

    @staticmethod
    def _is_image_not_found(error: RMServeError) -> bool:
        return error.code == "image_not_found"

    def _lost_images(self, error: InvalidRequest, items: Sequence[Mapping[str, Any]]) -> None:
        """A request was refused: when for an image the server lost, forget its images (the caller then
        resends them inline once); any other refusal is re-raised."""
        if not self._is_image_not_found(error):
            raise error
        self._image_not_found(items)

    # ── bodies ─────────────────────────────────────────────────────────────────────────────

    def _score_body(
        self,
        items: Sequence[Mapping[str, Any]],
        returns: Sequence[str] | None,
        model: str | None,
        *,
        inline: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"items": self._wire_items(items, inline=inline)}
        body.update({k: v for k, v in (extra or {}).items() if v is not None})
        if returns:
            bad = [r for r in returns if r not in RETURNS]
            if bad:
                raise ValueError(f"return: unknown output(s) {bad}; choose from {RETURNS}")
            body["return"] = list(returns)
        if model or self.model:
            body["model"] = model or self.model
        return body

    def _single_body(self, fields: dict[str, Any], model: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Compare / rank / critique bodies: one conversation + response(s); returns the body and a
        pseudo item list (for image bookkeeping)."""
        body = {k: v for k, v in fields.items() if v is not None}
        cache: dict[int, ImageData | ImageRef] = {}
        if "images" in body:
            body = {**body, **self._load_item({"images": body["images"]}, 0, cache)}
        if "messages" in body:
            body["messages"] = load_messages(body["messages"], "messages", cache)
        if model or self.model:
            body["model"] = model or self.model
        return body, [body]

    def _single_wire(self, body: dict[str, Any], items: list[dict[str, Any]], *, inline: bool = False) -> dict:
        """A compare / rank / critique body with its images as references or inline (as ``_wire_items``)."""
        return {**body, **(self._wire_items(items, inline=inline)[0] if "images" in body else {})}

    # ── parsing ────────────────────────────────────────────────────────────────────────────

    @staticmethod
    def _parse_score(data: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> list[ScoreResult]:
        out = data.get("items") or []
        if len(out) != len(items):
            raise RMServeError(f"server returned {len(out)} results for {len(items)} items")
        return [ScoreResult.from_json(o, id=item.get("id")) for o, item in zip(out, items, strict=True)]

    @staticmethod
    def _parse_stream_result(data: Mapping[str, Any]) -> ScoreResult:
        error = data.get("error")
        if error:
            cls = error_for_type(error.get("type"))
            exc = cls(
                error.get("message") or "item failed",
                type=error.get("type") or None,
                param=error.get("param") or None,
                code=error.get("code") or None,
                retry_after=error.get("retry_after_s") or None,
            )
            return ScoreResult(reward=math.nan, id=data.get("id"), error=exc)
        return ScoreResult.from_json(data, id=data.get("id"))

    parse_compare = staticmethod(CompareResult.from_json)
    parse_rank = staticmethod(RankResult.from_json)
    parse_critique = staticmethod(CritiqueResult.from_json)

    @staticmethod
    def _parse_safety(data: Mapping[str, Any]) -> list[SafetyResult]:
        return [SafetyResult.from_json(item) for item in data.get("items") or []]


class _Default:
    def __repr__(self) -> str:
        return "<client default>"


_DEFAULT: Any = _Default()  # "use the client's timeout" (None means "no timeout")
