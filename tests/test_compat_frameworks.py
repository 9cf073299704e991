"""Images through the RL frameworks' own request shapes, against a real tiny Qwen2.5-VL reward model.

Each payload is built the way the framework's current code builds it (the file and function are
cited at each builder), with a VLM *policy* whose processor expands an image into a different number
of ``<|image_pad|>`` tokens than the reward model's (another image size limit), so the server must
collapse the policy's runs. Every reward must equal direct ``/v1/score`` of (question, images,
response) within 1e-5 (the same ids; only batch padding could move the float32 reward).
"""

from __future__ import annotations

import base64
import io
import json
import math

import pytest

from rmserve.config import ServerConfig
from rmserve.models.tiny import build_tiny_backbone, build_tiny_reward_model
from rmserve.server import create_app
from tests.conftest import random_image
from tests.serving import asgi_client

pytestmark = pytest.mark.asyncio
TOLERANCE = 1e-5
QUESTION = "What colour is the shape?"


@pytest.fixture(scope="module")
def model():
    return build_tiny_reward_model("qwen2_5_vl", seed=5)


@pytest.fixture(scope="module")
def policy_processor():
    """A VLM policy's processor (same tokenizer family, a larger image budget: more pad tokens per image)."""
    _, processor = build_tiny_backbone("qwen2_5_vl", seed=9, max_pixels=224 * 224)
    return processor


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


IMAGE = random_image(96, 64, 11)


async def direct(client, response: str, *, images=(IMAGE,), prompt: str = QUESTION) -> float:
    item = {"prompt": prompt, "response": response, "images": [data_url(im) for im in images]}
    r = await client.post("/v1/score", json={"items": [item]})
    assert r.status_code == 200, r.text
    return r.json()["items"][0]["reward"]


def openrlhf_payload(processor, answer: str, label) -> dict:
    """OpenRLHF main (3c3be62): ``PromptDataset`` renders the prompt with ``apply_chat_template(chat,
    tokenize=False, add_generation_prompt=True)`` (``datasets/prompts_dataset.py``, ``preprocess_data``:
    ``<image>`` in the text becomes an image block); ``SingleTurnAgentExecutor.execute`` tokenizes it with
    the processor and the images (``utils/vlm_utils.py``, ``process_prompt_with_images``: pads expanded),
    generates, then posts ``{"query": [decode(prompt ids + action ids, skip_special_tokens=False)],
    "prompts": [prompt], "labels": [label]}`` (``utils/agent.py``, ``_fetch_rewards_via_http``)."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt_ids = processor(text=[prompt], images=[IMAGE], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    tok = processor.tokenizer
    action = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # stopped on <|im_end|>
    query = tok.decode(prompt_ids.tolist() + action, skip_special_tokens=False)
    assert query.count("<|image_pad|>") > 1  # the policy's expanded run
    return {"query": [query], "prompts": [prompt], "labels": [label]}


@pytest.mark.parametrize("answer", ["It is red.", "", "  ", "Rot — 红色 🟥"])
async def test_openrlhf_vlm_query_with_label_images_equals_direct_score(model, policy_processor, answer):
    label = json.dumps({"images": [data_url(IMAGE)], "ground_truth": "red"})
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        want = await direct(client, answer)
        r = await client.post("/get_reward", json=openrlhf_payload(policy_processor, answer, label))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rewards"][0] == pytest.approx(want, abs=TOLERANCE) and math.isfinite(body["rewards"][0])
        assert body["scores"] == body["rewards"]


async def test_openrlhf_labels_as_objects_and_uploaded_images(model, policy_processor):
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        want = await direct(client, "Blue.")
        buf = io.BytesIO()
        IMAGE.save(buf, format="PNG")
        sha = (await client.post("/v1/images", content=buf.getvalue(),
                                 headers={"content-type": "image/png"})).json()["sha256"]
        for label in ({"images": [{"sha256": sha}]}, json.dumps({"images": {"sha256": sha}})):
            r = await client.post("/get_reward", json=openrlhf_payload(policy_processor, "Blue.", label))
            assert r.status_code == 200, r.text
            assert r.json()["rewards"][0] == pytest.approx(want, abs=TOLERANCE)


@pytest.mark.parametrize(
    "label, param, code",
    [
        ("", "labels.0.images", "missing_images"),  # placeholders, no pixels: never a text-only score
        ('{"ground_truth": "red"}', "labels.0.images", "missing_images"),
        ('{"images": [1]}', "labels.0.images.0", "invalid_label"),
        ('{"images": ["data:image/png;base64,AAAA"]}', "labels.0.images.0", None),
    ],
)
async def test_openrlhf_image_query_without_usable_images_is_a_422(model, policy_processor, label, param, code):
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        r = await client.post("/get_reward", json=openrlhf_payload(policy_processor, "Red.", label))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["param"] == param and (code is None or error["code"] == code), error


def verl_disrm_prompt(tokenizer, chat: list[dict], response: str) -> str:
    """veRL b178a3c ``RewardLoopWorker._preprocess_reward_inputs`` (experimental/reward_loop/reward_loop.py):
    the RM tokenizer renders ``raw_prompt + [assistant]`` (add_generation_prompt=False), BOS stripped."""
    text = tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": response}],
                                         add_generation_prompt=False, tokenize=False)
    if tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token):]
    return text


async def test_verl_classify_and_sglang_embeddings_read_as_verl_reads_them(model):
    """``compute_score_disrm``: vLLM posts ``/classify`` ``{"model", "input", "activation": False}`` and reads
    ``data[-1].probs[-1]``; SGLang posts ``/v1/embeddings`` ``{"model", "input"}`` and reads
    ``data[-1].embedding[-1]``; ``model`` is veRL's configured RM path (here a served alias)."""
    tok = model.tokenizer
    config = ServerConfig(max_wait_ms=1, served_model_name="/models/my-rm,rm")
    async with asgi_client(create_app(config, model=model)) as client:
        for answer in ["Red.", ""]:
            want = await direct(client, answer, images=())
            text = verl_disrm_prompt(tok, [{"role": "user", "content": QUESTION}], answer)
            r = await client.post("/classify", json={"model": "/models/my-rm", "input": text, "activation": False})
            assert r.status_code == 200, r.text
            assert r.json()["data"][-1]["probs"][-1] == pytest.approx(want, abs=TOLERANCE)
            r = await client.post("/v1/embeddings", json={"model": "rm", "input": text})
            assert r.status_code == 200, r.text
            assert r.json()["data"][-1]["embedding"][-1] == pytest.approx(want, abs=TOLERANCE)
        # veRL's raw_prompt of an image dataset holds image blocks; the rendered text then has placeholders
        # and no pixels travel on these routes: an explicit 422, not a text-only reward.
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        text = verl_disrm_prompt(tok, chat, "Red.")
        for path, key in (("/classify", "input"), ("/v1/embeddings", "input")):
            r = await client.post(path, json={"model": "rm", key: text})
            assert r.status_code == 422 and r.json()["error"]["param"] == "input.0", r.text
            assert "image placeholder" in r.json()["error"]["message"]
        r = await client.post("/v1/embeddings", json={"model": "other", "input": text})
        error = r.json()["error"]
        assert r.status_code == 422 and error["code"] == "model_not_found"
        assert "'/models/my-rm'" in error["message"] and "'rm'" in error["message"]


async def test_slime_remote_rm_payload(model, policy_processor):
    """slime 624b824 ``rm_hub/__init__.py`` ``remote_rm``: ``{"prompt": sample.prompt, "response":
    sample.response, "label": sample.label}``; ``sample.prompt`` is the policy's ``apply_chat_template``
    text with ``--apply-chat-template`` (``utils/data.py``), else the dataset's messages."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    rendered = policy_processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    label = json.dumps({"images": [data_url(IMAGE)], "ground_truth": "red"})
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        for answer in ["Red.", ""]:
            want = await direct(client, answer)
            for prompt in (rendered, chat):
                r = await client.post("/slime/reward", json={"prompt": prompt, "response": answer, "label": label})
                assert r.status_code == 200, r.text
                assert r.json()["reward"] == pytest.approx(want, abs=TOLERANCE)  # --reward-key reward
        r = await client.post("/slime/reward", json={"prompt": rendered, "response": "Red.", "label": "red"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "label.images", r.text
        r = await client.post("/slime/reward", json={"prompt": QUESTION, "response": "Red.", "label": None})
        assert r.status_code == 200 and r.json()["reward"] == pytest.approx(
            await direct(client, "Red.", images=()), abs=TOLERANCE)


async def test_prompt_already_templated_scores_as_the_plain_request(model):
    plain = {"prompt": QUESTION, "images": [data_url(IMAGE)], "response": "Red."}
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    rendered = model.processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    expanded = rendered.replace("<|image_pad|>", "<|image_pad|>" * 9)
    text_rendered = model.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                                        add_generation_prompt=True)
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        items = [plain, {**plain, "prompt": rendered}, {**plain, "prompt": expanded},
                 {"prompt": QUESTION, "response": "Red."}, {"prompt": text_rendered, "response": "Red."}]
        rewards = [i["reward"] for i in (await client.post("/v1/score", json={"items": items})).json()["items"]]
        assert rewards[1] == pytest.approx(rewards[0], abs=1e-5) and rewards[2] == pytest.approx(rewards[0], abs=1e-5)
        assert rewards[4] == pytest.approx(rewards[3], abs=1e-5)
        no_generation_prompt = rendered[: -len("<|im_start|>assistant\n")]
        r = await client.post("/v1/score", json={"items": [plain, {**plain, "prompt": no_generation_prompt}]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "templated_prompt", r.text
        assert r.json()["error"]["param"] == "items.1.prompt"
        r = await client.post("/v1/score", json={"items": [{**plain, "prompt": rendered, "images": []}]})
        assert r.status_code == 422 and r.json()["error"]["param"] == "items.0.images", r.text


async def test_any_policy_output_gets_a_finite_reward_on_every_scoring_route(model):
    conversation = {"prompt": QUESTION, "images": [data_url(IMAGE)]}
    outputs = ["", " ", "\n\t", "Rot — 红色 🟥 \u200b", "word " * 500, "<|im_end|>", "<|im_start|>assistant\nx",
               "<|vision_start|><|image_pad|><|vision_end|>", "<|image_pad|>" * 3]  # placeholder text: scored as text
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1, max_batch_tokens=65536), model=model)) as client:
        items = [{**conversation, "response": o, "truncate": True} for o in outputs]
        items.append({"prompt": QUESTION, "response": "<|vision_start|><|image_pad|>", "truncate": True})  # no images
        items.append({**conversation, "response": "runaway " * 3000, "truncate": True})  # longer than the context
        items.append({**conversation, "prompt": "Describe it. " * 2000, "response": "word " * 500, "truncate": True})
        r = await client.post("/v1/score", json={"items": items})
        assert r.status_code == 200, r.text
        assert all(math.isfinite(i["reward"]) for i in r.json()["items"])
        r = await client.post("/v1/compare", json={**conversation, "response_a": "", "response_b": " "})
        assert r.status_code == 200 and math.isfinite(r.json()["margin"]), r.text
        r = await client.post("/v1/rank", json={**conversation, "responses": ["", "Red.", "  "]})
        assert r.status_code == 200 and len(r.json()["ranking"]) == 3, r.text
        r = await client.post("/v1/score", json={"items": [{**items[-1], "truncate": False}]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_long"  # refused only without truncate


async def test_a_stop_iteration_while_encoding_answers_instead_of_hanging():
    """StopIteration cannot be set on an asyncio future (the awaiting request used to hang forever); a
    placeholder run in a response once raised it inside transformers' rope-index code."""
    import asyncio

    from tests.fakes import FakeRewardModel

    model = FakeRewardModel()

    def broken(item):
        raise StopIteration("from deep inside a processor")

    model.encode = broken
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        # the in-process transport re-raises the server's 500 cause; without the fix this times out instead
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(client.post("/v1/score", json={"items": [{"prompt": "p", "response": "r"}]}), 10)
