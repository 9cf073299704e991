"""Score (prompt, images, response) items with a local checkpoint or a running rmserve server.

Both scorers have one method, ``score(items) -> list[float | None]``: None marks an item that
could not be scored (too long, refused by the server), and ``errors`` maps its index to why, so
one bad item costs only itself. ``eval`` and ``pairs`` take either.

    scorer = LocalScorer.from_path("models/demo")               # load_reward_model
    scorer = HttpScorer("http://127.0.0.1:8000", batch_size=32)  # POST {url}/v1/score
    rewards = scorer.score([ScoreItem(prompt="What colour?", images=[img], response="Red.")])
"""

from __future__ import annotations

import base64
import io
import time
from typing import Protocol

import httpx
from PIL import Image

from rmserve.errors import RMServeError
from rmserve.models import RewardModel, ScoreItem, load_reward_model


class Scorer(Protocol):
    name: str
    errors: dict[int, str]

    def score(self, items: list[ScoreItem]) -> list[float | None]: ...


class LocalScorer:
    """Scores in-process with a ``RewardModel``; items are length-sorted into batches (less padding)."""

    def __init__(self, model: RewardModel, *, batch_size: int = 16):
        self.model = model
        self.batch_size = batch_size
        self.name = model.name
        self.errors: dict[int, str] = {}

    @classmethod
    def from_path(cls, path: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 16) -> LocalScorer:
        return cls(load_reward_model(path, device=device, dtype=dtype), batch_size=batch_size)

    def score(self, items: list[ScoreItem]) -> list[float | None]:
        self.errors = {}
        encoded = {}
        for i, item in enumerate(items):
            try:
                encoded[i] = self.model.encode(item)
            except RMServeError as e:
                self.errors[i] = e.message
        order = sorted(encoded, key=lambda i: encoded[i].num_tokens)
        out: list[float | None] = [None] * len(items)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, result in zip(chunk, self.model.score_batch([encoded[i] for i in chunk]), strict=True):
                out[i] = result.reward
        return out


def image_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def wire_item(item: ScoreItem, image_urls: dict[int, str]) -> dict:
    """An item as a /v1/score row (images as PNG data URLs; ``image_urls`` caches them by ``id(image)``, so
    the caller keeps the images alive while it holds the cache: ids of freed objects can be reused)."""
    row: dict = {"response": item.response}
    urls = [image_urls.setdefault(id(im), image_data_url(im)) for im in item.images]
    placed = item.messages is not None and any(
        isinstance(m["content"], list) and any(p["type"] in ("image", "video") for p in m["content"])
        for m in item.messages)
    if placed:  # media parts: each image / video goes back where its part sits, as the server takes them
        images, videos = iter(urls), iter(item.videos)
        row["messages"] = [{**m, "content": [_wire_part(p, images, videos, image_urls) for p in m["content"]]}
                           if isinstance(m["content"], list) else m for m in item.messages]
    elif item.messages is not None:
        row["messages"] = item.messages
    else:
        row["prompt"] = item.prompt
    if item.truncate:
        row["truncate"] = True
    if urls and not placed:
        row["images"] = urls
    return row


def _wire_part(part: dict, images, videos, image_urls: dict[int, str]) -> dict:
    if part["type"] == "image":
        return {"type": "image_url", "image_url": {"url": next(images)}}
    if part["type"] == "video":
        clip = next(videos)
        frames = [image_urls.setdefault(id(f), image_data_url(f)) for f in clip.frames]
        return {"type": "video", "frames": frames, "fps": clip.fps}
    return part


def wire_pair(chosen: ScoreItem, rejected: ScoreItem, image_urls: dict[int, str]) -> dict:
    """Two items of one conversation as a /v1/compare body (``response_a`` = the first)."""
    body = wire_item(chosen, image_urls)
    del body["response"]
    return {**body, "response_a": chosen.response, "response_b": rejected.response}


class HttpScorer:
    """Scores through ``POST {url}/v1/score`` in batches of ``batch_size`` items.

    Overloaded (429) and unavailable (503) answers are retried with backoff; a batch refused as
    invalid (4xx) is retried item by item so that only the offending items come back as None.
    ``transport`` is for tests (e.g. ``httpx.MockTransport``).
    """

    RETRY_STATUS = (429, 503)
    FATAL_STATUS = (401, 403, 404, 405, 429)  # 4xx answers about the request as a whole, not its items

    def __init__(self, url: str, *, batch_size: int = 16, timeout: float = 120.0, api_key: str | None = None,
                 model: str | None = None, retries: int = 5, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.model = model
        self.retries = retries
        self.name = model or self.url
        self.errors: dict[int, str] = {}
        self.pairwise = False  # a pairwise judge is measured with compare(), not score() (make_scorer sets it)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._image_urls: dict[int, str] = {}  # id(image) -> data URL, for images shared by many items

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wire(self, item: ScoreItem) -> dict:
        return wire_item(item, self._image_urls)

    def _post(self, rows: list[dict]) -> httpx.Response:
        return self._request("/v1/score", {"items": rows})

    def _request(self, path: str, body: dict) -> httpx.Response:
        if self.model:
            body = {**body, "model": self.model}
        for attempt in range(self.retries + 1):
            response = self.client.post(f"{self.url}{path}", json=body)
            if response.status_code not in self.RETRY_STATUS or attempt == self.retries:
                return response
            time.sleep(min(8.0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _error_message(response: httpx.Response) -> str:
        try:
            error = response.json().get("error", {})
            return f"HTTP {response.status_code}: {error.get('message', response.text)}"
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:200]}"

    def _score_rows(self, rows: list[dict], offset: int, out: list[float | None]) -> None:
        response = self._post(rows)
        status = response.status_code
        if status == 200:
            results = response.json()["items"]
            if len(results) != len(rows):
                raise RuntimeError(f"{self.url}/v1/score returned {len(results)} items for {len(rows)}")
            for k, result in enumerate(results):
                out[offset + k] = float(result["reward"])
        elif 400 <= status < 500 and status not in self.FATAL_STATUS:  # the content was refused
            if len(rows) == 1:
                self.errors[offset] = self._error_message(response)
            else:
                for k, row in enumerate(rows):  # isolate the offending item(s)
                    self._score_rows([row], offset + k, out)
        else:
            raise RuntimeError(f"scoring at {self.url} failed: {self._error_message(response)}")

    def score(self, items: list[ScoreItem]) -> list[float | None]:
        self.errors = {}
        out: list[float | None] = [None] * len(items)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            self._score_rows([self._wire(it) for it in chunk], start, out)
        self._image_urls.clear()
        return out


    def compare(self, pairs: list[tuple[ScoreItem, ScoreItem]]) -> list[float | None]:
        """``prob_a_better`` of ``POST {url}/v1/compare`` per (first, second) pair: with a pairwise judge,
        P(first better) from both orders. A pair the server refuses is None, its reason in ``errors``."""
        self.errors = {}
        out: list[float | None] = [None] * len(pairs)
        for i, (first, second) in enumerate(pairs):
            response = self._request("/v1/compare", wire_pair(first, second, self._image_urls))
            status = response.status_code
            if status == 200:
                out[i] = float(response.json()["prob_a_better"])
            elif 400 <= status < 500 and status not in self.FATAL_STATUS:
                self.errors[i] = self._error_message(response)
            else:
                raise RuntimeError(f"comparing at {self.url} failed: {self._error_message(response)}")
        self._image_urls.clear()
        return out

    def judge_mode(self) -> str | None:
        """The served model's judge mode (``GET /v1/models``: "pairwise" | "pointwise"), None for a scalar model."""
        response = self.client.get(f"{self.url}/v1/models")
        if response.status_code != 200:
            raise RuntimeError(f"listing the models at {self.url} failed: {self._error_message(response)}")
        cards = response.json()["data"]
        card = next((c for c in cards if c["id"] == self.model), None) if self.model else next(
            (c for c in cards if c.get("default")), cards[0] if cards else None)
        return card.get("judge") if card else None


def make_scorer(*, model: str | None = None, url: str | None = None, batch_size: int = 16, device: str = "cpu",
                dtype: str = "float32", api_key: str | None = None, timeout: float = 120.0) -> Scorer:
    """Exactly one of ``model`` (a checkpoint directory) or ``url`` (a running server). A generative judge
    checkpoint gets a ``LocalJudgeScorer`` (rmserve_trainer.judging); a judge behind ``url`` is asked
    through /v1/compare when it is pairwise."""
    if (model is None) == (url is None):
        raise ValueError("give exactly one of --model (a checkpoint directory) or --url (a running rmserve)")
    if model is not None:
        rm = load_reward_model(model, device=device, dtype=dtype)
        if "judge" in rm.extra_config:  # a generative judge: scored by rmserve's in-process judge path
            from .judging import LocalJudgeScorer

            return LocalJudgeScorer(rm, batch_size=batch_size)
        return LocalScorer(rm, batch_size=batch_size)
    scorer = HttpScorer(url, batch_size=batch_size, api_key=api_key, timeout=timeout)
    scorer.pairwise = scorer.judge_mode() == "pairwise"  # then pairs go to /v1/compare (eval.score_pairs)
    return scorer


def close_scorer(scorer: Scorer) -> None:
    """Release a scorer's connections (HTTP); a no-op for local models."""
    close = getattr(scorer, "close", None)
    if close is not None:
        close()


def add_scorer_arguments(parser) -> None:
    group = parser.add_argument_group("scoring (one of --model or --url)")
    group.add_argument("--model", help="checkpoint directory (rmserve format or HF sequence classifier)")
    group.add_argument("--url", help="base URL of a running rmserve, e.g. http://127.0.0.1:8000")
    group.add_argument("--batch-size", type=int, default=16, help="items per forward / per request")
    group.add_argument("--device", default="cpu", help="with --model")
    group.add_argument("--dtype", default="float32", help="with --model: float32 | bfloat16 | float16")
    group.add_argument("--api-key", default=None, help="with --url: sent as a Bearer token")
    group.add_argument("--timeout", type=float, default=120.0, help="with --url: seconds per request")


def scorer_from_args(args) -> Scorer:
    return make_scorer(model=args.model, url=args.url, batch_size=args.batch_size, device=args.device,
                       dtype=args.dtype, api_key=args.api_key, timeout=args.timeout)


__all__ = ["Scorer", "LocalScorer", "HttpScorer", "make_scorer", "close_scorer", "image_data_url",
           "add_scorer_arguments", "scorer_from_args", "wire_item", "wire_pair"]
