"""Image-text processors that work without torchvision.

The stock Qwen2-VL / Qwen2.5-VL / LLaVA-OneVision processors insist on a video processor,
and importing any video processor needs torchvision, which cannot be imported on our CPU
machines. The subclasses here drop ``video_processor`` from ``__init__``'s signature (the
ProcessorMixin derives its sub-processor list from that signature), so they construct and
round-trip ``save_pretrained`` / ``from_pretrained`` with only a tokenizer and a PIL image
processor. ``AutoProcessor`` silently returns a bare tokenizer for such directories, so
``load_processor`` picks the class explicitly from the model type.

Checkpoints must still load outside rmserve with plain ``AutoProcessor.from_pretrained``, so
``save_processor`` names the standard transformers class (``Qwen2_5_VLProcessor``, ...) in the saved
files, not ours, and writes the video processor config that class needs (the image processor's
settings). With torchvision installed, plain transformers then builds the full processor; without
it, ``AutoProcessor`` fails loudly (ImportError naming torchvision) instead of quietly returning a
bare tokenizer.
"""

from __future__ import annotations

import json
import os

from transformers import AutoTokenizer
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

from .video_processors import frame_processor_for


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)
        self.video_processor = frame_processor_for("qwen2_vl", image_processor)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)
        self.video_processor = frame_processor_for("qwen2_5_vl", image_processor)


class LlavaOnevisionImageOnlyProcessor(LlavaOnevisionProcessor):
    # The named arguments are what save_pretrained writes to processor_config.json (it reads the signature).
    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None, vision_feature_select_strategy=None,
                 chat_template=None, image_token="<image>", video_token="<video>", vision_aspect_ratio="anyres_max_9",
                 **kwargs):
        kwargs.pop("video_processor", None)
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                         **kwargs)
        self.video_processor = frame_processor_for("llava_onevision", image_processor)


PROCESSOR_CLASSES = {
    "qwen2_vl": (Qwen2VLImageOnlyProcessor, Qwen2VLImageProcessorPil),
    "qwen2_5_vl": (Qwen2_5_VLImageOnlyProcessor, Qwen2VLImageProcessorPil),
    "llava_onevision": (LlavaOnevisionImageOnlyProcessor, LlavaOnevisionImageProcessorPil),
}


# our class -> (the standard transformers processor class, its video processor class)
STANDARD_CLASSES = {
    "Qwen2VLImageOnlyProcessor": ("Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "Qwen2_5_VLImageOnlyProcessor": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
    "LlavaOnevisionImageOnlyProcessor": ("LlavaOnevisionProcessor", "LlavaOnevisionVideoProcessor"),
}
VIDEO_CONFIG = "video_preprocessor_config.json"


def save_processor(processor, path: str) -> None:
    """``processor.save_pretrained(path)``, naming the standard transformers classes (module doc)."""
    processor.save_pretrained(path)
    standard = STANDARD_CLASSES.get(type(processor).__name__)
    if standard is None:
        return
    processor_class, video_class = standard
    for name in ("processor_config.json", "tokenizer_config.json"):
        file = os.path.join(path, name)
        if os.path.exists(file):
            with open(file) as f:
                saved = json.load(f)
            if "processor_class" in saved or name == "processor_config.json":
                saved["processor_class"] = processor_class
                with open(file, "w") as f:
                    json.dump(saved, f, indent=2, sort_keys=True)
                    f.write("\n")
    video = {k: v for k, v in processor.image_processor.to_dict().items() if k != "image_processor_type"}
    video["video_processor_type"] = video_class
    with open(os.path.join(path, VIDEO_CONFIG), "w") as f:
        json.dump(video, f, indent=2, sort_keys=True)
        f.write("\n")


def load_processor(path: str, model_type: str):
    """Load the processor of a checkpoint directory: a multimodal processor or a tokenizer."""
    if model_type in PROCESSOR_CLASSES:
        processor_cls, image_processor_cls = PROCESSOR_CLASSES[model_type]
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = image_processor_cls.from_pretrained(path)
        # from_pretrained on the processor class would try to resolve a video processor too.
        kwargs = {}
        if model_type == "llava_onevision":
            import json
            import os

            cfg_path = os.path.join(path, "processor_config.json")
            if os.path.exists(cfg_path):
                with open(cfg_path) as f:
                    saved = json.load(f)
                for key in ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio"):
                    if key in saved:
                        kwargs[key] = saved[key]
        processor = processor_cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=getattr(tokenizer, "chat_template", None),
            **kwargs,
        )
        processor.video_processor = frame_processor_for(model_type, image_processor, path)
        return processor
    return AutoTokenizer.from_pretrained(path)
