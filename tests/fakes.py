"""A fake reward model for fast engine and server tests (no torch, no weights).

It implements the whole serving contract (``rmserve.models.types.ServedModel``) with a byte-level
"tokenizer": ``input_ids`` are the UTF-8 bytes of the prompt (or the rendered messages) followed by the response, plus
``image_tokens`` ids per image. The reward is a deterministic function of the ids and the
images' mean pixel values, independent of which other items share the batch, so a test can
compare any batched score with the score of the same item alone.

Test hooks: a response containing ``NAN_MARKER`` scores NaN, one containing ``RAISE_MARKER``
makes ``score_batch`` raise for any batch it is in; ``forward_sleep_s`` simulates compute;
``forward_gate`` (an Event) blocks every forward until set; ``warmup_gate`` blocks ``warmup``.
"""

from __future__ import annotations

import threading
import time
import zlib

from PIL import ImageStat

from rmserve.errors import InvalidInput
from rmserve.models.types import EncodedItem, ModelInfo, ScoreItem, ScoreOutput, ServingOptions

NAN_MARKER = "<<nan>>"
RAISE_MARKER = "<<raise>>"
IMAGE_TOKEN = 300  # outside the byte range, like a real image placeholder token
SEPARATOR = 256  # between prompt and response


class FakeRewardModel:
    def __init__(
        self,
        *,
        max_length: int = 512,
        image_tokens: int = 4,
        heads: tuple[str, ...] = ("reward",),
        attribute_names: tuple[str, ...] = ("helpfulness", "correctness"),
        safety_categories: tuple[str, ...] = ("S1", "S10"),
        forward_sleep_s: float = 0.0,
        forward_gate: threading.Event | None = None,
        warmup_gate: threading.Event | None = None,
        untrained: bool = False,
        name: str = "fake-rm",
    ):
        self.max_length = max_length
        self.image_tokens = image_tokens
        self.forward_sleep_s = forward_sleep_s
        self.forward_gate = forward_gate
        self.warmup_gate = warmup_gate
        self.info = ModelInfo(
            name=name,
            family="fake",
            path="<memory>",
            heads=list(heads),
            max_length=max_length,
            device="cpu",
            dtype="float32",
            multimodal=True,
            untrained=untrained,
            attribute_names=list(attribute_names) if "attributes" in heads else [],
            safety_categories=list(safety_categories) if "safety" in heads else [],
        )
        self.extra_config: dict = {}
        self.tokenizer = _ByteTokenizer()
        self.serving_options: ServingOptions | None = None  # what the server configured
        self.vision_cache = None  # tests may attach caches (anything with stats()) to see them in metrics
        self.prompt_cache = None
        self.batches: list[list[int]] = []  # num_tokens of each item, per score_batch call
        self.warmed_up = False
        self._lock = threading.Lock()
        self._in_forward = 0
        self.max_concurrent_forwards = 0  # must stay 1: score_batch is single-threaded by contract

    # ── RewardModel interface ──────────────────────────────────────────────────────────────

    def encode(self, item: ScoreItem) -> EncodedItem:
        if (item.prompt is None) == (item.messages is None):
            raise InvalidInput("exactly one of prompt or messages is required", param="prompt")
        prompt_text = item.prompt if item.prompt is not None else render_messages(item.messages or [])
        prompt_field = "prompt" if item.prompt is not None else "messages"
        response_ids = list(item.response.encode("utf-8"))
        image_ids = [IMAGE_TOKEN] * (self.image_tokens * len(item.images))
        prompt_ids = image_ids + list(prompt_text.encode("utf-8")) + [SEPARATOR]
        truncated = False
        if len(prompt_ids) + len(response_ids) > self.max_length:
            if len(response_ids) >= self.max_length:
                raise InvalidInput(
                    f"the response is {len(response_ids)} tokens, over the model's "
                    f"max_length {self.max_length}",
                    param="response",
                    code="too_long",
                )
            if not item.truncate:
                raise InvalidInput(
                    f"prompt + response is {len(prompt_ids) + len(response_ids)} tokens, "
                    f"over max_length {self.max_length}; shorten it or set truncate",
                    param=prompt_field,
                    code="too_long",
                )
            prompt_ids = prompt_ids[len(prompt_ids) + len(response_ids) - self.max_length :]
            truncated = True
        means = [_pixel_mean(im) for im in item.images]
        return EncodedItem(
            input_ids=prompt_ids + response_ids,
            vision={"pixel_means": means},
            image_keys=tuple(getattr(item, "image_hashes", None) or ()),
            truncated=truncated,
        )

    def score_batch(self, batch: list[EncodedItem]) -> list[ScoreOutput]:
        with self._lock:
            self._in_forward += 1
            self.max_concurrent_forwards = max(self.max_concurrent_forwards, self._in_forward)
            self.batches.append([item.num_tokens for item in batch])
        try:
            if self.forward_gate is not None:
                self.forward_gate.wait(timeout=30)
            if self.forward_sleep_s:
                time.sleep(self.forward_sleep_s)
            texts = [_text(item) for item in batch]
            if any(RAISE_MARKER in t for t in texts):
                raise RuntimeError("simulated CUDA error: device-side assert triggered")
            return [self.score_alone(item, text) for item, text in zip(batch, texts, strict=True)]
        finally:
            with self._lock:
                self._in_forward -= 1

    def warmup(self) -> None:
        if self.warmup_gate is not None:
            self.warmup_gate.wait(timeout=30)
        self.score_alone(EncodedItem(input_ids=[1, 2, 3]))  # not through the forward gate/sleep hooks
        self.warmed_up = True

    # ── the rest of the serving contract: what a backend without these features answers ──────

    @property
    def name(self) -> str:
        return self.info.name

    @name.setter
    def name(self, value: str) -> None:
        self.info.name = value

    def configure_serving(self, options: ServingOptions) -> None:
        self.serving_options = options

    def cache_stats(self) -> dict[str, dict[str, float]]:
        caches = {"vision": self.vision_cache, "prompt": self.prompt_cache}
        return {name: cache.stats() for name, cache in caches.items() if cache is not None}

    def turn_markers(self) -> None:
        return None  # no chat template

    def prompt_syntax(self) -> None:
        return None

    def encode_rendered(self, prompt_text, response, *, images=None, truncate=False, image_hashes=None,
                        param="prompt"):
        raise InvalidInput(
            f"model {self.name!r} cannot score templated text (no chat-template support)",
            param="model",
            code="unsupported_model",
        )

    def pooled_hidden_items(self, items: list[EncodedItem]):
        raise InvalidInput(
            f"model {self.name!r} does not expose its hidden states", param="task", code="unsupported_task"
        )

    def can_generate(self) -> bool:
        return False

    def encode_prompt(self, item: ScoreItem) -> tuple[list[int], dict, bool]:
        encoded = self.encode(ScoreItem(response="", prompt=item.prompt, messages=item.messages, images=item.images))
        return encoded.input_ids, encoded.vision, False

    def decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def judge_decoding(self) -> None:
        return None  # a scalar reward model, not a generative judge

    def generate_judgments(self, prompts, decoding, *, abandoned=None):
        raise InvalidInput(f"model {self.name!r} does not generate judgments", param="model", code="unsupported_task")

    # ── helpers for tests ──────────────────────────────────────────────────────────────────

    def score_alone(self, item: EncodedItem, text: str | None = None) -> ScoreOutput:
        """The score of one item, computed without any batch: what every batched score must equal."""
        text = _text(item) if text is None else text
        crc = zlib.crc32(bytes(min(i, 255) for i in item.input_ids))
        reward = (crc % 100_000) / 10_000.0 - 5.0 + sum(item.vision.get("pixel_means", [])) / 255.0
        if NAN_MARKER in text:
            reward = float("nan")
        attributes = {name: reward / (k + 2) for k, name in enumerate(self.info.attribute_names)} or None
        safety = {
            cat: ((crc >> (4 * k)) % 100) / 100.0 for k, cat in enumerate(self.info.safety_categories)
        } or None
        return ScoreOutput(reward=reward, attributes=attributes, safety=safety)

    def expected(self, item: ScoreItem) -> ScoreOutput:
        return self.score_alone(self.encode(item))


class _ByteTokenizer:
    pad_token = None
    eos_token = None

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def render_messages(messages: list[dict[str, str]]) -> str:
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)


def _text(item: EncodedItem) -> str:
    return bytes(i for i in item.input_ids if i < 256).decode("utf-8", errors="replace")


def _pixel_mean(image) -> float:
    return float(ImageStat.Stat(image.convert("L")).mean[0])
