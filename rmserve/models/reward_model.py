"""RewardModel: a backbone's final hidden state at the last real token, read by named heads.

    item --encode--> EncodedItem --collate--> padded batch --forward--> {head: (B, out)}

``encode`` is CPU work that is safe to run in preprocessing threads; ``score_batch`` runs one
padded forward and is meant for a single worker thread. A sequence's scores do not depend on
its batch neighbours or on the padding side: positions are computed per item, unpadded.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..errors import InvalidInput
from .batch import Batch
from .chunking import ChunkPolicy, plan_chunks
from .families import detect_family, make_family
from .heads import Head, HeadSpec, build_heads
from .judge import generate_judgments, judge_decoding, warm_up_judge
from .pooling import causal_decoder, pool_last
from .prefix import find_groups, pooled_hidden_shared
from .prompt_cache import PromptCache
from .rendered import carries_template, collapse_image_slots, prompt_syntax
from .template import TurnMarkers, render, turn_markers
from .types import (
    EncodedItem,
    JudgeDecoding,
    JudgePrompt,
    Judgment,
    ModelInfo,
    PromptSyntax,
    ScoreItem,
    ScoreOutput,
    ServingOptions,
)
from .vision_cache import VisionFeatureCache, encode_images_cached

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class RewardModel(nn.Module):
    def __init__(self, backbone, processor, heads: dict[str, HeadSpec], *, family: str | None = None,
                 name: str = "reward-model", normalize: dict | None = None, max_length: int | None = None,
                 path: str = "", untrained: bool = False, extra_config: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.processor = processor
        self.family_name = family or detect_family(backbone.config)
        self.family = make_family(self.family_name, backbone, processor)
        self.tokenizer = self.family.tokenizer
        self.head_specs = dict(heads)
        self.heads = build_heads(self.head_specs, self.hidden_size, reward_required="judge" not in (extra_config or {}))
        self.normalize = normalize or {}
        self.name = name
        self.path = path
        self.untrained = untrained
        self.extra_config = extra_config or {}
        self.max_length = max_length or self._default_max_length()
        self.padding_side = "right"
        # Right-padded batches may skip the padding mask (pooled_hidden); decided once, from the architecture.
        self.causal_rows = causal_decoder(self.base_model())
        # Run a group's shared prompt (+ images) once when several responses to it are in one batch.
        self.share_prefix = False
        # Vision-encoder outputs by image content (Qwen-VL); None disables. See enable_vision_cache.
        self.vision_cache: VisionFeatureCache | None = None
        # Preprocessed prompts with images (GRPO: G requests, one prompt + image); None disables.
        self.prompt_cache: PromptCache | None = None
        # How a batch is cut into forward calls (length-sorted, padding vs per-call cost); None = one call.
        self.chunk_policy: ChunkPolicy | None = ChunkPolicy.for_device(self.device.type)
        # HF fast tokenizers mutate internal state per call; concurrent calls can raise "Already borrowed".
        self._tokenize_lock = threading.Lock()
        self._turn_markers: TurnMarkers | None | bool = False  # False: not probed yet
        self._prompt_syntax: PromptSyntax | None | bool = False
        self._judge_decoding: JudgeDecoding | None | bool = False
        self._placed: tuple[str, str] | None = None  # (device, dtype) for ``info``; None: look again

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone, processor, heads: dict[str, HeadSpec], **kw) -> RewardModel:
        return cls(backbone, processor, heads, **kw)

    @classmethod
    def from_sequence_classifier(cls, model, tokenizer, **kw) -> RewardModel:
        """Wrap an HF ``*ForSequenceClassification`` (num_labels=1) as it is: its score layer becomes the head."""
        score = model.score
        if score.out_features != 1:
            raise ValueError(f"expected num_labels=1, got {score.out_features}")
        spec = HeadSpec(kind="linear", bias=score.bias is not None)
        rm = cls(model, tokenizer, {"reward": spec}, family="seq_cls", **kw)
        if score.weight.is_meta:  # a weightless skeleton (load_reward_model(weights=False)): nothing to copy
            return rm
        with torch.no_grad():
            rm.heads["reward"].layers[0].weight.copy_(score.weight.float())
            if score.bias is not None:
                rm.heads["reward"].layers[0].bias.copy_(score.bias.float())
        return rm

    @property
    def hidden_size(self) -> int:
        cfg = self.backbone.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return text_cfg.hidden_size

    def _default_max_length(self) -> int:
        cfg = self.backbone.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        limits = [getattr(text_cfg, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]
        return min(limits) if limits else 4096

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _placement(self) -> tuple[str, str]:
        """(device, dtype) for ``info``, read several times per request: finding them walks the module tree (25-80
        us a time, bench/README.md), so they are kept until the model moves (``to_device``, or ``_apply``)."""
        if self._placed is None:
            self._placed = (str(self.device), str(self.backbone.dtype).replace("torch.", ""))
        return self._placed

    def _apply(self, fn, *args, **kwargs):
        self._placed = None
        return super()._apply(fn, *args, **kwargs)

    @property
    def info(self) -> ModelInfo:
        device, dtype = self._placement()
        return ModelInfo(
            name=self.name, family=self.family_name, path=self.path, heads=list(self.head_specs),
            max_length=self.max_length, device=device, dtype=dtype,
            multimodal=self.family.multimodal, untrained=self.untrained,
            attribute_names=list(self.head_specs["attributes"].labels) if "attributes" in self.head_specs else [],
            safety_categories=list(self.head_specs["safety"].labels) if "safety" in self.head_specs else [],
        )

    # ---- encoding (CPU, thread-safe) ------------------------------------------------------------
    def encode_prompt(self, item: ScoreItem) -> tuple[list[int], dict, bool]:
        prompt_text, _, templated = render(self.tokenizer, item, response="")
        with self._tokenize_lock:
            ids, vision = self.family.tokenize_prompt(prompt_text, item.images, add_special_tokens=not templated,
                                                      videos=item.videos)
        return ids, vision, templated

    def encode(self, item: ScoreItem) -> EncodedItem:
        # An empty (or whitespace) response is a legitimate policy output: it is scored as the empty
        # assistant turn (the template's end-of-turn tokens), like any other reply.
        if item.images and not self.family.multimodal:
            raise InvalidInput(f"model {self.name!r} is text-only and takes no images", param="images")
        if item.videos and not self.family.multimodal:
            raise InvalidInput(f"model {self.name!r} is text-only and takes no videos", param="messages",
                               code="videos_not_supported")
        syntax = self.prompt_syntax()
        if item.prompt is not None and syntax is not None and carries_template(item.prompt, syntax):
            return self._encode_templated_prompt(item, syntax)
        prompt_text, response_text, templated = render(self.tokenizer, item)
        return self._encode_texts(prompt_text, response_text, templated, item)

    def turn_markers(self) -> TurnMarkers | None:
        """The chat template's assistant-turn markers (None without a chat template); probed once."""
        if self._turn_markers is False:
            self._turn_markers = turn_markers(self.tokenizer)
        return self._turn_markers  # type: ignore[return-value]

    def prompt_syntax(self) -> PromptSyntax | None:
        """How the chat template writes turns and image slots as text (None without a chat template)."""
        if self._prompt_syntax is False:
            markers = self.turn_markers()
            self._prompt_syntax = None if markers is None else prompt_syntax(
                self.tokenizer, markers.assistant_start, markers.assistant_end,
                getattr(self.processor, "image_token", None) if self.family.multimodal else None)
        return self._prompt_syntax  # type: ignore[return-value]

    def _encode_templated_prompt(self, item: ScoreItem, syntax: PromptSyntax) -> EncodedItem:
        """A ``prompt`` the caller already rendered with the chat template: scored as rendered (the same ids
        as the plain request) when it ends with the generation prompt, else refused; never templated twice."""
        markers = self.turn_markers()
        assert markers is not None  # syntax implies markers
        if not item.prompt.endswith(markers.assistant_start):
            raise InvalidInput(
                f"prompt already carries the chat template ({', '.join(syntax.chat_markers)}) but does not end with "
                f"its generation prompt {markers.assistant_start!r}: send the plain question (rmserve applies the "
                "template), or `messages`, or the rendered text with add_generation_prompt=True",
                param="prompt", code="templated_prompt")
        return self.encode_rendered(item.prompt, item.response, images=item.images, truncate=item.truncate,
                                    image_hashes=item.image_hashes, param="prompt")

    def encode_rendered(self, prompt_text: str, response: str, *, images: list | None = None,
                        truncate: bool = False, image_hashes: list[str] | None = None,
                        param: str = "prompt") -> EncodedItem:
        """Encode a prompt that is already templated text (e.g. the prompt part of a decoded OpenRLHF
        query) and the reply's plain text (no end-of-turn marker). The ids equal ``encode`` of the
        conversation whose template rendering is ``prompt_text``, with ``response`` as the reply.

        Image runs in the text (a policy's expanded ``<|vision_start|><|image_pad|>...<|vision_end|>``,
        any length) collapse to one slot per image first; the slots must match ``images`` one to one
        (``param`` names the text in that error)."""
        images = list(images or [])
        if images and not self.family.multimodal:
            raise InvalidInput(f"model {self.name!r} is text-only and takes no images", param="images")
        syntax = self.prompt_syntax()
        if syntax is not None and syntax.image_token:
            prompt_text, slots = collapse_image_slots(prompt_text, syntax)
            if slots != len(images):
                if not images:
                    raise InvalidInput(
                        f"{param} has {slots} image placeholder(s) ({syntax.image_slot}) but no images were sent; "
                        "send the image(s) with the item, or the text without placeholders",
                        param="images", code="missing_images")
                raise InvalidInput(f"{param} has {slots} image placeholder(s) for {len(images)} image(s)",
                                   param="images", code="image_count_mismatch")
        item = ScoreItem(response=response, prompt=prompt_text, images=images, truncate=truncate,
                         image_hashes=list(image_hashes or []))
        markers = self.turn_markers()
        if markers is not None:
            return self._encode_texts(prompt_text, markers.response_prefix + response + markers.assistant_end,
                                      True, item)
        return self._encode_texts(prompt_text, response + (self.tokenizer.eos_token or ""), False, item)

    def _encode_texts(self, prompt_text: str, response_text: str, templated: bool, item: ScoreItem) -> EncodedItem:
        prompt_ids, vision, prompt_positions = self._tokenize_prompt_cached(prompt_text, templated, item)
        with self._tokenize_lock:
            response_ids = self.tokenizer(response_text, add_special_tokens=False)["input_ids"]
            if set(response_ids) & set(self.family.image_token_ids):
                # A policy may write image-placeholder text in its answer (decoded with special tokens kept).
                # Images only come from `images`: score such text as the characters it is.
                response_ids = self.tokenizer(response_text, add_special_tokens=False,
                                              split_special_tokens=True)["input_ids"]
        if not response_ids:
            raise InvalidInput("response tokenizes to nothing", param="response")
        prompt_ids, response_ids, truncated = self._fit_length(prompt_ids, list(response_ids), item.truncate)
        input_ids = prompt_ids + response_ids
        # A truncated prompt is not the cached one: its positions are computed afresh.
        vision.update(self.family.item_positions(input_ids, vision, None if truncated else prompt_positions))
        return EncodedItem(input_ids=input_ids, vision=vision, truncated=truncated, prefix_len=len(prompt_ids),
                           image_keys=self._image_keys(item, vision), video_keys=self._video_keys(item))

    def _tokenize_prompt_cached(self, prompt_text: str, templated: bool,
                                item: ScoreItem) -> tuple[list[int], dict, dict | None]:
        """Prompt ids, processor tensors and (when cached) the prompt's own positions, from ``prompt_cache`` when
        the same prompt + images came before or is being processed now; positions are worked out once per group."""
        keyed = len(item.image_hashes) == len(item.images) and all(v.key for v in item.videos)
        if self.prompt_cache is None or not (item.images or item.videos) or not keyed:
            return (*self._tokenize_prompt(prompt_text, templated, item), None)
        key = (prompt_text, templated, tuple(item.image_hashes), tuple(v.key for v in item.videos))

        def compute():
            ids, vision = self._tokenize_prompt(prompt_text, templated, item)
            return PromptCache.entry(ids, vision, self.family.item_positions(ids, vision) or None)

        # A group's G requests preprocess at the same time: one runs the processor, the others wait for it.
        ids, vision, positions = self.prompt_cache.get_or_compute(key, compute)
        return list(ids), dict(vision), positions  # the entry is shared: callers get their own containers

    def _tokenize_prompt(self, prompt_text: str, templated: bool, item: ScoreItem) -> tuple[list[int], dict]:
        with self._tokenize_lock:
            return self.family.tokenize_prompt(prompt_text, item.images, add_special_tokens=not templated,
                                               videos=item.videos)

    def enable_prompt_cache(self, max_bytes: int) -> None:
        """Cache preprocessed prompts that carry images (by prompt text + image content hashes)."""
        if self.family.multimodal and max_bytes > 0:
            self.prompt_cache = PromptCache(max_bytes)

    def _image_keys(self, item: ScoreItem, vision: dict) -> tuple[str, ...]:
        """One content key per image: the wire's sha256 when known, else a hash of its pixels."""
        if item.image_hashes and len(item.image_hashes) == len(item.images):
            return tuple(item.image_hashes)
        return tuple(hashlib.sha1(t.numpy().tobytes()).hexdigest() for t in self.family.split_images(vision))

    def _video_keys(self, item: ScoreItem) -> tuple[str, ...]:
        """One content key per video (prefixed, so never equal to an image's): its own key, else a pixel hash."""
        keys = []
        for clip in item.videos:
            if not clip.key:
                digest = hashlib.sha1(f"{clip.fps}".encode())
                for frame in clip.frames:
                    digest.update(frame.tobytes())
                keys.append(f"video:{digest.hexdigest()}")
            else:
                keys.append(f"video:{clip.key}")
        return tuple(keys)

    def _fit_length(self, prompt_ids: list[int], response_ids: list[int],
                    truncate: bool) -> tuple[list[int], list[int], bool]:
        """Length policy: refuse by default; with ``truncate`` drop the oldest prompt text tokens.

        Truncation never removes image tokens: it drops text right after the last image token (or from
        the start, for text-only prompts), i.e. the beginning of the question. Only when the response
        alone does not fit beside the images (a policy's runaway answer) is the whole question dropped
        (the generation prompt kept) and the response cut from its start: its end, where the reward is
        read, stays.
        """
        total = len(prompt_ids) + len(response_ids)
        if total <= self.max_length:
            return prompt_ids, response_ids, False
        if not truncate:
            raise InvalidInput(
                f"prompt + response is {total} tokens, over this model's limit of {self.max_length}; "
                "shorten it or set 'truncate': true to drop the oldest prompt tokens",
                param="response", code="too_long")
        protected = 0
        for i, tok in enumerate(prompt_ids):
            if tok in self.family.image_token_ids:
                protected = i + 1
        excess = total - self.max_length
        if len(prompt_ids) - protected >= excess:
            return prompt_ids[:protected] + prompt_ids[protected + excess:], response_ids, True
        opener = prompt_ids[max(protected, len(prompt_ids) - self._generation_prompt_tokens()):]
        room = self.max_length - protected - len(opener)
        if room < 1:
            raise InvalidInput(
                f"cannot truncate to {self.max_length} tokens: the images alone need {protected}",
                param="response", code="too_long")
        return prompt_ids[:protected] + opener, response_ids[-room:], True

    def _generation_prompt_tokens(self) -> int:
        markers = self.turn_markers()
        if markers is None:
            return 0
        with self._tokenize_lock:
            return len(self.tokenizer(markers.assistant_start, add_special_tokens=False)["input_ids"])

    # ---- batching and forward -----------------------------------------------------------------
    def collate(self, items: list[EncodedItem], padding_side: str | None = None,
                rows_per_item: list[int] | None = None) -> Batch:
        """``rows_per_item``: how many scored rows each item stands for (a group's prefix: its G responses)."""
        side = padding_side or self.padding_side
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        length = max(it.num_tokens for it in items)
        input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, it in enumerate(items):
            n = it.num_tokens
            sl = slice(0, n) if side == "right" else slice(length - n, length)
            input_ids[row, sl] = torch.tensor(it.input_ids)
            attention_mask[row, sl] = 1
        rows = rows_per_item or [1] * len(items)
        with_pixels = [(it, n) for it, n in zip(items, rows, strict=True) if "pixel_values" in it.vision]
        return Batch(input_ids, attention_mask, self.family.batch_inputs(items, input_ids, attention_mask),
                     image_keys=[k for it, _ in with_pixels for k in it.image_keys],
                     video_keys=[k for it in items for k in it.video_keys],
                     image_uses=[n for it, n in with_pixels for _ in it.image_keys],
                     video_uses=[n for it, n in zip(items, rows, strict=True) for _ in it.video_keys])

    def base_model(self):
        return getattr(self.backbone, "model", None) or self.backbone.base_model

    def backbone_inputs(self, batch: Batch) -> dict:
        """The batch's extra backbone inputs, with cached vision features in place of pixels when possible."""
        inputs = batch.model_inputs
        if self.vision_cache is None:
            return self.family.encoder_inputs(self.base_model(), inputs)
        images_ok = "image_grid_thw" not in inputs or len(batch.image_keys) == inputs["image_grid_thw"].shape[0]
        videos_ok = "video_grid_thw" not in inputs or len(batch.video_keys) == inputs["video_grid_thw"].shape[0]
        if not (images_ok and videos_ok) or not ({"image_grid_thw", "video_grid_thw"} & inputs.keys()):
            return inputs
        # The forward takes cached features or pixels, not both: both modalities go through the cache.
        inputs = dict(inputs)
        outputs = {}
        if "image_grid_thw" in inputs:
            feats = encode_images_cached(self.base_model(), self.vision_cache, inputs.pop("pixel_values"),
                                         inputs["image_grid_thw"], batch.image_keys, uses=batch.image_uses)
            outputs["image"] = BaseModelOutputWithPooling(pooler_output=feats)
        if "video_grid_thw" in inputs:
            feats = encode_images_cached(self.base_model(), self.vision_cache, inputs.pop("pixel_values_videos"),
                                         inputs["video_grid_thw"], batch.video_keys, uses=batch.video_uses,
                                         encode="get_video_features")
            outputs["video"] = BaseModelOutputWithPooling(pooler_output=feats)
        inputs["mm_encoder_outputs"] = outputs
        return inputs

    def pooled_hidden(self, batch: Batch) -> torch.Tensor:
        """(B, H) final hidden state at each row's last real token.

        A right-padded batch on a causal decoder runs without its padding mask (``causal_decoder``: the real
        tokens compute the same values). Hugging Face then builds no (B, 1, L, L) mask and SDPA runs its causal
        kernel, the one a row alone gets: 1.5-2% faster per forward on the CPU bench model, same rewards."""
        mask_free = self.causal_rows and bool(batch.attention_mask[:, 0].all())  # every row starts real: right padding
        out = self.base_model()(input_ids=batch.input_ids,
                                attention_mask=None if mask_free else batch.attention_mask,
                                use_cache=False, **self.backbone_inputs(batch))
        return pool_last(out.last_hidden_state, batch.attention_mask)

    def apply_heads(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {name: head(pooled) for name, head in self.heads.items()}
        out["reward"] = self.normalize_reward(out["reward"][:, 0])  # (B,)
        return out

    def normalize_reward(self, reward: torch.Tensor) -> torch.Tensor:
        """(B,) raw reward -> (B,) with the checkpoint's normalisation (mean, std) applied, if any."""
        if self.normalize:
            reward = (reward - self.normalize.get("mean", 0.0)) / self.normalize.get("std", 1.0)
        return reward

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.apply_heads(self.pooled_hidden(batch.to(self.device)))

    def pooled_hidden_items(self, items: list[EncodedItem]) -> torch.Tensor:
        """(B, H) pooled states for encoded items, running shared prompt prefixes once when enabled.

        Rows are computed in forward calls planned by ``chunk_policy`` (length-sorted; on CPU a
        32-item batch becomes a few ~1k-token calls); every row's result is the same either way.
        """
        groups, rest = find_groups(items) if self.share_prefix else ([], list(range(len(items))))
        calls = (plan_chunks([items[i].num_tokens for i in rest], self.chunk_policy) if self.chunk_policy
                 else [list(range(len(rest)))] if rest else [])
        if not groups and len(calls) == 1:
            return self.pooled_hidden(self.collate(items).to(self.device))
        pooled = torch.empty((len(items), self.hidden_size), device=self.device)
        if groups:
            shared_rows = [i for g in groups for i in g]
            pooled[shared_rows] = pooled_hidden_shared(self, items, groups, self.chunk_policy).to(pooled.dtype)
        for call in calls:
            rows = [rest[k] for k in call]
            pooled[rows] = self.pooled_hidden(self.collate([items[i] for i in rows]).to(self.device)).to(pooled.dtype)
        return pooled

    @torch.inference_mode()
    def score_batch(self, items: list[EncodedItem]) -> list[ScoreOutput]:
        if "reward" not in self.head_specs:  # a generative judge: its reward comes from generate_judgments
            raise InvalidInput(f"model {self.name!r} has no reward head: it is a generative judge, served by "
                               "/v1/score, /v1/compare and /v1/rank", param="model", code="judge_model")
        return self.score_outputs(self.apply_heads(self.pooled_hidden_items(items)))

    def score_outputs(self, out: dict[str, torch.Tensor]) -> list[ScoreOutput]:
        """Head outputs (``apply_heads``'s dict) -> one ``ScoreOutput`` per row (safety as probabilities)."""
        rewards = out["reward"].tolist()
        attrs = out["attributes"].tolist() if "attributes" in out else None
        safety = torch.sigmoid(out["safety"]).tolist() if "safety" in out else None
        attr_names = self.head_specs["attributes"].labels if attrs is not None else []
        categories = self.head_specs["safety"].labels if safety is not None else []
        return [
            ScoreOutput(
                reward=rewards[i],
                attributes=dict(zip(attr_names, attrs[i], strict=True)) if attrs is not None else None,
                safety=dict(zip(categories, safety[i], strict=True)) if safety is not None else None,
            )
            for i in range(len(rewards))
        ]

    def score(self, items: list[ScoreItem], batch_size: int = 16) -> list[ScoreOutput]:
        """Convenience: encode and score in order (no server)."""
        encoded = [self.encode(it) for it in items]
        out: list[ScoreOutput] = []
        for i in range(0, len(encoded), batch_size):
            out.extend(self.score_batch(encoded[i:i + batch_size]))
        return out

    def warmup(self) -> None:
        from PIL import Image

        images = [Image.new("RGB", (56, 56), (128, 64, 32))] if self.family.multimodal else []
        if "reward" in self.head_specs:
            self.score([ScoreItem(prompt="warm up", response="ok", images=images)])
        if self.judge_decoding() is not None:
            warm_up_judge(self, images)

    def enable_vision_cache(self, max_bytes: int) -> None:
        """Cache vision-encoder outputs by image content (Qwen-VL families only; others ignore it)."""
        if self.family_name in ("qwen2_vl", "qwen2_5_vl") and max_bytes > 0:
            self.vision_cache = VisionFeatureCache(max_bytes)

    # ---- the rest of the serving contract (rmserve.models.types.ServedModel) ------------------------
    def configure_serving(self, options: ServingOptions) -> None:
        self.share_prefix = options.share_prefix
        self.chunk_policy = ChunkPolicy.for_device(self.device.type, options.max_forward_tokens)
        if options.vision_cache_bytes:
            self.enable_vision_cache(options.vision_cache_bytes)
        if options.prompt_cache_bytes:
            self.enable_prompt_cache(options.prompt_cache_bytes)

    def cache_stats(self) -> dict[str, dict[str, float]]:
        caches = {"vision": self.vision_cache, "prompt": self.prompt_cache}
        return {name: cache.stats() for name, cache in caches.items() if cache is not None}

    def can_generate(self) -> bool:
        """An HF backbone with ``generate`` and a language-model head (critique checkpoints)."""
        get_lm_head = getattr(self.backbone, "get_output_embeddings", None)  # HF backbones differ here
        has_head = get_lm_head is not None and get_lm_head() is not None
        return callable(getattr(self.backbone, "generate", None)) and has_head

    def decode_text(self, ids: list[int]) -> str:
        with self._tokenize_lock:  # fast tokenizers are not safe to use from two threads at once
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    def judge_decoding(self) -> JudgeDecoding | None:
        """The ``judge`` section's decoding, worked out once (models/judge.py); None for a scalar model."""
        if self._judge_decoding is False:
            with self._tokenize_lock:
                self._judge_decoding = judge_decoding(self)
        return self._judge_decoding  # type: ignore[return-value]

    def generate_judgments(self, prompts: list[JudgePrompt], decoding: JudgeDecoding, *,
                           abandoned: Callable[[], bool] | None = None) -> list[Judgment]:
        return generate_judgments(self, prompts, decoding, abandoned=abandoned)

    def to_device(self, device: str, dtype: str = "float32") -> RewardModel:
        self.backbone.to(device=device, dtype=DTYPES[dtype])
        self._placed = None
        self.heads.to(device=device, dtype=torch.float32)
        self.chunk_policy = ChunkPolicy.for_device(self.device.type)
        return self


__all__ = ["RewardModel", "Batch", "Head", "DTYPES"]
