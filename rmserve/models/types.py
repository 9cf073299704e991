"""The model library's contract: the data that crosses its boundary and the protocols a served model meets.

Torch-free on purpose (tests/test_layers.py checks it): the engine, the API layer and test fakes depend
on this module, not on ``RewardModel``.

    ScoreItem -> encode -> EncodedItem -> score_batch -> ScoreOutput      the engine's part (ScoringModel)
    ServedModel                                                           everything else the API and the
                                                                          server call (ServedModel)

Capabilities a backend may lack are methods that say so (``can_generate()``, ``turn_markers()`` None,
``pooled_hidden_items`` raising ``InvalidInput`` with code ``unsupported_task``), never attributes
that callers probe with ``hasattr``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class VideoClip:
    """A video as the model sees it: sampled RGB frames in time order, and their rate.

    ``fps`` is the rate of the *sampled* frames (Qwen2.5-VL spaces its temporal positions by
    it); ``key`` identifies the content (source bytes + sampling) for caches and prefix sharing.
    """

    frames: list[Image.Image]
    fps: float
    key: str = ""


@dataclass
class ScoreItem:
    """One (conversation, response) to score, already decoded from the wire.

    Exactly one of ``prompt`` or ``messages`` is set. ``messages`` are chat turns
    ``{"role": "system"|"user"|"assistant"|"tool", "content": str | list[part]}`` not ending with
    an assistant turn (``response`` is scored as the reply to them). A part is
    ``{"type": "text", "text": ...}``, ``{"type": "image"}`` (the next of ``images``) or
    ``{"type": "video"}`` (the next of ``videos``): each image and video sits where its part sits.
    When no message holds an image part, ``images`` go into the first user turn, in order (the
    original top-level ``images`` form).
    """

    response: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    images: list[Image.Image] = field(default_factory=list)
    truncate: bool = False  # if the sequence is too long: False -> InvalidInput, True -> drop oldest prompt tokens
    image_hashes: list[str] = field(default_factory=list)  # sha256 of each image's bytes, if known (cache keys)
    videos: list[VideoClip] = field(default_factory=list)


@dataclass
class EncodedItem:
    """A tokenized item ready for a batch: token ids plus this item's own vision tensors.

    ``vision`` holds per-item tensors keyed as the backbone wants them (e.g. ``pixel_values``
    and ``image_grid_thw`` for Qwen-VL, ``pixel_values`` and ``image_sizes`` for LLaVA-OV).
    ``image_keys`` are content hashes of the images, in order (for caches and prefix sharing).
    """

    input_ids: list[int]
    vision: dict[str, Any] = field(default_factory=dict)
    image_keys: tuple[str, ...] = ()
    video_keys: tuple[str, ...] = ()  # content keys of the videos, in order (prefix sharing, prompt cache)
    truncated: bool = False
    prefix_len: int = 0  # number of leading prompt tokens (shared by every response to the same prompt)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def prefix_key(self) -> tuple | None:
        """Items with equal keys have identical prompt tokens, images and videos (the engine batches them
        together, the model runs the prefix once); None = cannot share."""
        if self.prefix_len <= 0 or self.prefix_len >= self.num_tokens:
            return None
        return (tuple(self.input_ids[: self.prefix_len]), self.image_keys, self.video_keys)


@dataclass
class ScoreOutput:
    """What the heads say about one item."""

    reward: float
    attributes: dict[str, float] | None = None
    safety: dict[str, float] | None = None  # category -> probability


@dataclass
class ModelInfo:
    """Describes a loaded reward model (for /v1/models and logs)."""

    name: str
    family: str  # qwen2_5_vl | qwen2_vl | llava_onevision | causal_lm | seq_cls
    path: str
    heads: list[str]
    max_length: int
    device: str
    dtype: str
    multimodal: bool
    untrained: bool = False
    attribute_names: list[str] = field(default_factory=list)
    safety_categories: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServingOptions:
    """Serving-time switches a model applies to itself (``ServedModel.configure_serving``); a backend
    ignores those it has no use for (vLLM shares prefixes and caches on its own)."""

    share_prefix: bool = False  # run a GRPO group's shared prompt (+ images) once per batch
    max_forward_tokens: int | None = None  # cut a batch into forward calls of at most this many tokens
    vision_cache_bytes: int = 0  # vision-encoder outputs by image content; 0 disables
    prompt_cache_bytes: int = 0  # preprocessed image prompts by text + image hashes; 0 disables


@dataclass
class JudgePrompt:
    """One judgment to generate (``ServedModel.generate_judgments``): a judge prompt already encoded.

    ``prompt_ids``/``vision``: the judge's user turn (images in it, as ``encode_prompt`` gives them) and the
    generation prompt, followed by the answer prefix's ids when the judge answers directly (no reasoning).
    ``images``: the same images as PIL, for backends that process pixels themselves (vLLM).
    ``seed`` None: greedy; else sampled at ``temperature`` from a generator seeded with ``seed`` alone, so a
    row's text does not depend on its batch neighbours.
    """

    prompt_ids: list[int]
    vision: dict[str, Any] = field(default_factory=dict)
    images: list[Image.Image] = field(default_factory=list)
    image_keys: tuple[str, ...] = ()
    seed: int | None = None
    temperature: float = 1.0


@dataclass(frozen=True)
class JudgeDecoding:
    """How a judge checkpoint decodes (from its ``judge`` section, models/judge_format.py): what a backend needs.

    ``reasoning``: generate a judgment until the decoded text ends with ``answer_prefix`` (or
    ``max_new_tokens``); else the prompt already ends with the answer prefix and nothing is generated.
    ``choice_ids``: the answer tokens, one id each; their log-probabilities are read at the position right
    after the answer prefix. ``prefix_ids``: the answer prefix's tokens (appended to a judge prompt without
    reasoning).
    """

    answer_prefix: str
    prefix_ids: tuple[int, ...]
    choice_ids: tuple[int, ...]
    reasoning: bool
    max_new_tokens: int


@dataclass
class Judgment:
    """What a backend returns per ``JudgePrompt``; models/judge_format.py turns it into a reward.

    ``choice_logprobs``: log p(choice) over the whole vocabulary at the answer position, one per choice;
    None when the answer prefix never appeared in the generated text (then the text is parsed).
    ``sampled_choice``: for a sampled prompt without reasoning, the choice drawn from the choice
    distribution (majority voting reads it); None otherwise.
    """

    text: str
    choice_logprobs: list[float] | None
    completion_tokens: int = 0
    sampled_choice: int | None = None


@dataclass(frozen=True)
class TurnMarkers:
    """Where a chat template puts an assistant reply, learned by rendering a probe conversation.

    ``assistant_start``: the generation prompt (text that opens an assistant turn, e.g.
    ``<|im_start|>assistant\n``); ``response_prefix``: text the template adds between that and the
    reply's content (usually empty); ``assistant_end``: what closes the reply, trailing whitespace
    removed (e.g. ``<|im_end|>``), so ``response_prefix + reply + assistant_end`` is exactly the
    response text ``render`` produces for that reply.
    """

    assistant_start: str
    response_prefix: str
    assistant_end: str


class Tokenizer(Protocol):
    """The part of a (Hugging Face) tokenizer the API reads: special tokens for splitting templated text."""

    pad_token: str | None
    eos_token: str | None


class ScoringModel(Protocol):
    """What the engine calls (engine/engine.py), and all of it. ``encode`` runs in preprocessing threads and
    must be thread-safe; ``score_batch`` and ``warmup`` run on the engine's single worker thread."""

    @property
    def info(self) -> ModelInfo: ...

    def encode(self, item: ScoreItem) -> EncodedItem: ...

    def score_batch(self, batch: list[EncodedItem]) -> list[ScoreOutput]: ...

    def warmup(self) -> None: ...


@runtime_checkable
class ItemScheduler(Protocol):
    """A model that batches across requests itself (the vLLM backend: vLLM's scheduler). The engine's
    per-item dispatch (engine/dispatch.py) hands it each item as it arrives instead of forming batches.
    Optional, unlike ``ServedModel``'s members: a backend is one (``isinstance``) or is batched by rmserve."""

    def submit_item(self, item: EncodedItem) -> Future[ScoreOutput]:
        """Start scoring ``item`` now; thread-safe, never blocks on compute. Cancelling the future before
        it is done aborts the item's work in the backend."""
        ...


@dataclass(frozen=True)
class PromptSyntax:
    """How a model's chat template writes turns and images as text (learned by ``models/rendered.py``)."""

    chat_markers: tuple[str, ...]  # special tokens around turns, e.g. ("<|im_end|>", "<|im_start|>")
    image_open: str = ""  # text before the image token in one slot, e.g. "<|vision_start|>"
    image_token: str = ""  # the processor's image token, e.g. "<|image_pad|>" ("" for text-only models)
    image_close: str = ""  # e.g. "<|vision_end|>"

    @property
    def image_slot(self) -> str:
        return self.image_open + self.image_token + self.image_close


class ServedModel(ScoringModel, Protocol):
    """Everything the API and server layers call on a served model (``RewardModel``, ``VllmRewardModel``
    and tests/fakes.py implement all of it)."""

    name: str  # renamed by the server (``--model NAME=DIR``, ensemble members)
    max_length: int
    extra_config: dict  # the checkpoint's extra sections (``critique``)

    @property
    def tokenizer(self) -> Tokenizer: ...

    # ── serving switches and their caches (server/loading.py, server/metrics.py) ──
    def configure_serving(self, options: ServingOptions) -> None: ...

    def cache_stats(self) -> dict[str, dict[str, float]]:
        """Per cache the model holds (``vision``, ``prompt``): hits, misses, entries, bytes, hit_ratio."""
        ...

    # ── templated text (api/compat.py) ──
    def turn_markers(self) -> TurnMarkers | None:
        """Where the chat template puts an assistant reply; None without a chat template."""
        ...

    def prompt_syntax(self) -> PromptSyntax | None:
        """How the chat template writes turns and image slots as text; None without a chat template."""
        ...

    def encode_rendered(
        self,
        prompt_text: str,
        response: str,
        *,
        images: list | None = None,
        truncate: bool = False,
        image_hashes: Sequence[str] | None = None,
        param: str = "prompt",
    ) -> EncodedItem:
        """Encode text already rendered with the chat template (raises InvalidInput without one); image runs
        of any length in it are one image each and must match ``images`` (``param`` names the text)."""
        ...

    def pooled_hidden_items(self, items: list[EncodedItem]) -> Any:
        """(B, H) final hidden states at each item's last token, a tensor (worker thread only); raises
        InvalidInput(code="unsupported_task") when the backend cannot expose them."""
        ...

    # ── critique generation (api/critique.py, models/critique.py) ──
    def can_generate(self) -> bool: ...

    def encode_prompt(self, item: ScoreItem) -> tuple[list[int], dict, bool]:
        """The evaluator prompt's ids and vision inputs, and whether it was templated."""
        ...

    def decode_text(self, ids: list[int]) -> str:
        """Token ids as text, special tokens skipped; safe to call from any thread."""
        ...

    # ── generative judges (api/judge.py, models/judge.py, models/judge_format.py) ──
    def judge_decoding(self) -> JudgeDecoding | None:
        """How this judge checkpoint decodes (its ``judge`` section, checked at load); None for a model that
        is not a generative judge or cannot generate."""
        ...

    def generate_judgments(self, prompts: list[JudgePrompt], decoding: JudgeDecoding, *,
                           abandoned: Callable[[], bool] | None = None) -> list[Judgment]:
        """One ``Judgment`` per prompt, in order (worker thread only: the engine's judge batches): the
        judgment text (greedy, or sampled with the prompt's seed) and the answer tokens' log-probabilities at
        the answer position. ``abandoned`` (engine/judging.py ``Abandonment``) is polled between decode steps:
        once it returns True nobody waits for any of these judgments, and the backend may stop generating and
        return them cut short (the engine delivers none of them). Raises InvalidInput(code="unsupported_task")
        when the backend cannot."""
        ...
