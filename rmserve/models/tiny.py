"""Tiny reward models built from configs (tests, demo, default model). Nothing is downloaded.

Every family the library serves has a builder here, so tests exercise the real
architectures (M-RoPE, anyres patching, sequence-classification heads) in milliseconds.
The tokenizer is a byte-level BPE trained in memory on a fixed corpus: deterministic.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2TokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .heads import HeadSpec
from .processors import (
    LlavaOnevisionImageOnlyProcessor,
    Qwen2_5_VLImageOnlyProcessor,
    Qwen2VLImageOnlyProcessor,
)

FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava_onevision", "qwen2", "llama", "qwen2_seq_cls")

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<image>",
    "<video>",
]

# ChatML with content lists; IMAGE and VIDEO are replaced by the family's placeholder strings.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE{% elif part['type'] == 'video' %}VIDEO"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_PLACEHOLDERS = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llava_onevision": "<image>\n",
}

_CORPUS = [
    "You are a helpful assistant. Describe the image in detail.",
    "The red circle is to the left of the blue square, and there are three green triangles.",
    "What colour is the shape? How many objects are there? Answer the question briefly.",
    "I cannot help with that request because it could cause harm to people.",
    "The answer is 42. Let me think step by step about the question before answering.",
    "yellow purple orange black white grey small large above below next to inside",
    "Evaluation: the response is accurate, helpful and faithful to the image content.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] : ; , . ! ? ' \" \n",
]


VIDEO_PLACEHOLDERS = {
    "qwen2_vl": "<|vision_start|><|video_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|video_pad|><|vision_end|>",
    "llava_onevision": "<video>\n",
}


def chat_template_for(family: str) -> str:
    return (_CHAT_TEMPLATE.replace("IMAGE", IMAGE_PLACEHOLDERS.get(family, ""))
            .replace("VIDEO", VIDEO_PLACEHOLDERS.get(family, "")))


def build_tiny_tokenizer(vocab_size: int = 600, family: str = "qwen2_5_vl",
                         corpus: list[str] | None = None) -> Qwen2TokenizerFast:
    """Byte-level BPE trained in memory on the fixed corpus, plus ``corpus`` (a task's own texts:
    whole words become single tokens, so the demo's sequences are short)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4 + list(corpus or []), trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = chat_template_for(family)
    tokenizer.model_max_length = 2048
    return tokenizer


def _text_kwargs(tokenizer, hidden: int, layers: int, heads: int, kv_heads: int) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_backbone(family: str, *, hidden: int = 64, layers: int = 2, vision_hidden: int = 32,
                        vision_depth: int = 1, seed: int = 0, max_pixels: int = 112 * 112,
                        min_pixels: int = 28 * 28, vision_patch: int = 14,
                        tokenizer_corpus: list[str] | None = None):
    """Return ``(hf_model, processor_or_tokenizer)`` for a tiny randomly initialised backbone.

    Qwen-VL only: images are resized to between ``min_pixels`` and ``max_pixels`` (equal values: every
    image to about that area, whatever its size), cut into ``vision_patch``-pixel patches.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    tokenizer = build_tiny_tokenizer(family=family, corpus=tokenizer_corpus)
    tid = tokenizer.convert_tokens_to_ids
    heads = max(2, hidden // 32)
    text = _text_kwargs(tokenizer, hidden, layers, heads, 1)
    torch.manual_seed(seed)
    if family in ("qwen2_5_vl", "qwen2_vl"):
        head_dim = hidden // heads
        # mrope_section must sum to head_dim / 2 (docs/architecture.md, "Checkpoint format").
        spatial = 3 * (head_dim // 2) // 8  # Qwen's own split is [16, 24, 24] of 64
        mrope = [head_dim // 2 - 2 * spatial, spatial, spatial]
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope}
        ids = dict(
            image_token_id=tid("<|image_pad|>"),
            video_token_id=tid("<|video_pad|>"),
            vision_start_token_id=tid("<|vision_start|>"),
            vision_end_token_id=tid("<|vision_end|>"),
        )
        if family == "qwen2_5_vl":
            vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                          num_heads=2, out_hidden_size=hidden, patch_size=vision_patch, spatial_merge_size=2,
                          temporal_patch_size=2, window_size=4 * vision_patch,
                          fullatt_block_indexes=[vision_depth - 1])
            config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
            model = Qwen2_5_VLForConditionalGeneration(config)
            proc_cls = Qwen2_5_VLImageOnlyProcessor
        else:
            vision = dict(depth=vision_depth, embed_dim=vision_hidden, hidden_size=hidden, mlp_ratio=2,
                          num_heads=2, patch_size=vision_patch, spatial_merge_size=2, temporal_patch_size=2)
            config = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
            model = Qwen2VLForConditionalGeneration(config)
            proc_cls = Qwen2VLImageOnlyProcessor
        image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels,
                                                   patch_size=vision_patch)
        processor = proc_cls(image_processor=image_processor, tokenizer=tokenizer,
                             chat_template=tokenizer.chat_template)
    elif family == "llava_onevision":
        image_size, patch = 28, 14
        vision = dict(model_type="siglip_vision_model", hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                      num_hidden_layers=vision_depth + 1, num_attention_heads=2, image_size=image_size,
                      patch_size=patch)
        pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
        config = LlavaOnevisionConfig(
            text_config={"model_type": "qwen2", **text}, vision_config=vision,
            image_token_id=tid("<image>"), video_token_id=tid("<video>"),
            image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full",
            vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
        )
        model = LlavaOnevisionForConditionalGeneration(config)
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": image_size, "width": image_size}, crop_size={"height": image_size, "width": image_size},
            image_grid_pinpoints=pinpoints, do_pad=True,
        )
        processor = LlavaOnevisionImageOnlyProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
            num_image_tokens=(image_size // patch) ** 2, vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
        )
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**text))
        processor = tokenizer
    elif family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**text))
        processor = tokenizer
    else:  # qwen2_seq_cls: an HF sequence-classification reward model as people publish them
        model = Qwen2ForSequenceClassification(Qwen2Config(num_labels=1, **text))
        processor = tokenizer
    model.eval()
    return model, processor


def build_tiny_reward_model(family: str = "qwen2_5_vl", *, seed: int = 0, heads: dict[str, HeadSpec] | None = None,
                            **backbone_kwargs):
    """A tiny ``RewardModel`` of the given family with freshly initialised heads."""
    from .reward_model import RewardModel

    backbone, processor = build_tiny_backbone(family, seed=seed, **backbone_kwargs)
    if family == "qwen2_seq_cls":
        return RewardModel.from_sequence_classifier(backbone, processor, name=f"tiny-{family}")
    if heads is None:
        heads = {"reward": HeadSpec(kind="mlp", width=32, activation="silu")}
    torch.manual_seed(seed + 1)
    return RewardModel.from_backbone(backbone, processor, heads=heads, name=f"tiny-{family}")


def build_tiny_judge(family: str = "qwen2", judge: dict | None = None, *, seed: int = 0, **backbone_kwargs):
    """A tiny generative judge (no reward head; its ``judge`` section, docs/architecture.md): random weights,
    so its judgments are arbitrary but real generations of a real architecture."""
    from .judge_format import JudgeConfig
    from .reward_model import RewardModel

    if family == "qwen2_seq_cls":
        raise ValueError("a judge needs a backbone that can generate, not a sequence classifier")
    config = JudgeConfig.from_dict(judge or TINY_JUDGE)
    backbone, processor = build_tiny_backbone(family, seed=seed, **backbone_kwargs)
    return RewardModel.from_backbone(backbone, processor, heads={}, name=f"tiny-judge-{family}",
                                     extra_config={"judge": config.to_dict()})


TINY_JUDGE = {  # a pointwise judge over the tiny tokenizer's single-token digits
    "mode": "pointwise",
    "template": "Question: {prompt}\nResponse: {response}\nRate the response from 1 to 5.",
    "answer_prefix": "Score:",
    "choices": ["1", "2", "3", "4", "5"],
    "values": [1, 2, 3, 4, 5],
    "reasoning": False,
    "max_new_tokens": 16,
    "answer_pattern": r"(\d)\s*/\s*5",
}
