"""TRL's own GRPOTrainer training a VLM policy with rmserve as its reward (``make test-integrations``).

The real ``trl`` from PyPI (requirements/constraints.txt pins 1.16.0), its ``GRPOTrainer.train()`` for 2
steps on CPU: a tiny random Qwen2.5-VL policy built from its config, a conversational dataset with an
``image`` column, ``reward_funcs=[RMServeReward(url)]`` (sync, REST) and ``[AsyncRMServeReward(url)]``
(async, gRPC) against a real rmserve (uvicorn + gRPC) serving a tiny Qwen2.5-VL reward model. Every
reward TRL received must be finite and equal a direct ``/v1/score`` of the same conversation, image
and completion (1e-4), and every image must have been uploaded to the server exactly once per run.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from collections import Counter

import httpx
import pytest
import trl  # noqa: F401  (requirements/dev.txt: `make test-integrations` must run this, never skip it)
from rmserve_client.adapters.trl import AsyncRMServeReward, RMServeReward

from rmserve.models.tiny import build_tiny_backbone, build_tiny_reward_model
from tests.conftest import random_image
from tests.grpc_serving import served

pytestmark = pytest.mark.integrations

QUESTIONS = ["What colour is it?", "Which shape is shown?", "Is there a circle?", "Describe the image."]


class Recording:
    """Keeps what TRL passed to the reward function and what it got back."""

    def __init__(self):
        self.calls: list[tuple[list, list, list[float | None]]] = []


class RecordingReward(RMServeReward):
    def __init__(self, url, record: Recording, **kw):
        super().__init__(url, **kw)
        self.record = record

    def __call__(self, prompts, completions, **kwargs):
        rewards = super().__call__(prompts, completions, **kwargs)
        self.record.calls.append((prompts, completions, rewards))
        return rewards


class RecordingAsyncReward(AsyncRMServeReward):
    def __init__(self, url, record: Recording, **kw):
        super().__init__(url, **kw)
        self.record = record

    async def __call__(self, prompts, completions, **kwargs):
        rewards = await super().__call__(prompts, completions, **kwargs)
        self.record.calls.append((prompts, completions, rewards))
        return rewards


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _direct_item(prompt: list[dict], completion: list[dict]) -> dict:
    """The conversation TRL built (image blocks in the user turn) as a plain /v1/score item."""
    (turn,) = prompt
    images = [b["image"] for b in turn["content"] if b.get("type") == "image"]
    text = "".join(b.get("text", "") for b in turn["content"] if b.get("type") == "text")
    return {"messages": [{"role": "user", "content": text}], "response": completion[0]["content"],
            "images": ["data:image/png;base64," + base64.b64encode(_png(im)).decode() for im in images]}


@pytest.fixture(scope="module")
def server():
    with served(build_tiny_reward_model("qwen2_5_vl", seed=5), max_wait_ms=2.0) as s:
        uploads: Counter = Counter()
        service = s.state.service
        original = service.upload_image

        async def counting_upload(data: bytes):
            answer = await original(data)
            uploads[answer.sha256] += 1
            return answer

        service.upload_image = counting_upload
        s.uploads = uploads
        yield s


def _train(reward_func, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    policy, processor = build_tiny_backbone("qwen2_5_vl", seed=7)
    # One image size: the policy's own loss forward in transformers 5.24 breaks on a batch of prompts whose
    # images differ in size (M-RoPE position shapes); that is the policy's side, the rewards do not care.
    rows = [{"prompt": [{"role": "user", "content": q}], "image": random_image(32, 32, k)}
            for k, q in enumerate(QUESTIONS)]
    # A random policy samples any token; a sampled <|vision_start|> / <|image_pad|> would make the policy's own
    # M-RoPE bookkeeping fail in transformers (not a reward question), so those are never sampled.
    vision = [policy.config.vision_start_token_id, policy.config.image_token_id, policy.config.video_token_id,
              getattr(policy.config, "vision_end_token_id", policy.config.vision_start_token_id)]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=2, use_cpu=True, report_to=[], logging_steps=1,
                      save_strategy="no", seed=0, dataloader_num_workers=0,
                      generation_kwargs={"suppress_tokens": vision})
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward_func], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=processor)
    trainer.train()
    return trainer


@pytest.mark.parametrize("mode", ["sync-rest", "async-grpc"])
def test_grpo_trainer_trains_on_rmserve_rewards_with_images(server, tmp_path, mode):
    record = Recording()
    server.uploads.clear()
    if mode == "sync-rest":
        reward = RecordingReward(server.rest_url, record, name="rmserve")
    else:
        reward = RecordingAsyncReward(server.grpc_url, record, name="rmserve")
    trainer = _train(reward, tmp_path)
    assert trainer.state.global_step == 2 and len(record.calls) >= 2  # one reward call per step at least
    logged = [h["rewards/rmserve/mean"] for h in trainer.state.log_history if "rewards/rmserve/mean" in h]
    assert len(logged) == 2 and all(math.isfinite(v) for v in logged)

    seen_images: set[str] = set()
    with httpx.Client(base_url=server.rest_url, timeout=60) as client:
        for prompts, completions, rewards in record.calls:
            assert len(rewards) == len(completions) and all(r is not None and math.isfinite(r) for r in rewards)
            items = [_direct_item(p, c) for p, c in zip(prompts, completions, strict=True)]
            direct = client.post("/v1/score", json={"items": items})
            assert direct.status_code == 200, direct.text
            want = [i["reward"] for i in direct.json()["items"]]
            assert rewards == pytest.approx(want, abs=1e-4)
            for p in prompts:
                for block in p[0]["content"]:
                    if block.get("type") == "image":
                        seen_images.add(hashlib.sha256(block["image"].convert("RGB").tobytes()).hexdigest())
    assert seen_images and len(server.uploads) == len(seen_images)  # each distinct image TRL scored went up
    assert set(server.uploads.values()) == {1}  # exactly once, though G completions (and steps) share it
