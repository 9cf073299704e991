"""OpenRLHF's remote reward model protocol: POST /get_reward, against a real uvicorn server and a real
tiny model, with queries built exactly as OpenRLHF builds them (chat template, then decode with
special tokens kept, pads around them).

Every reward must equal scoring (prompt, response) directly with ``model.score``. Tolerance 1e-5:
the server runs the items in padded batches of up to 32 (the test's own concurrency decides which
items share a batch), and a padded row's matmuls run on different shapes than a batch of one, which
moves the float32 reward by ~1e-7 (measured max 2e-7 here), so 1e-6 would pass too but with little
margin on other BLAS builds.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from rmserve.config import ServerConfig
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.types import ScoreItem
from rmserve.server import create_app
from tests.serving import asgi_client, uvicorn_server, wait_ready

pytestmark = pytest.mark.asyncio

TOLERANCE = 1e-5
QUESTIONS = [
    "What is 2+2?",
    "Describe the red circle.",
    "How many objects are there?",
    "Answer the question briefly.",
    "What colour is the shape above the square?",
]
ANSWERS = [
    "The answer is 4.",
    "It is a red circle to the left of the blue square.",
    "There are three green triangles and one small circle.",
    "I cannot help with that request.",
    "  Yellow, with a space before it.",
    "Line one\nline two, ending in a newline\n",
]


@pytest.fixture(scope="module")
def model():
    return build_tiny_reward_model("qwen2", seed=3)


def openrlhf_sample(model, k: int) -> tuple[dict, ScoreItem]:
    """One OpenRLHF-shaped request (query = decode(prompt ids + response ids)) and the item it means."""
    tok = model.tokenizer
    question, answer = QUESTIONS[k % len(QUESTIONS)], ANSWERS[k % len(ANSWERS)] + f" #{k}"
    if k % 4 == 1:  # multi-turn with a system prompt
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
        item = ScoreItem(messages=messages, response=answer)
    else:
        messages = [{"role": "user", "content": question}]
        item = ScoreItem(prompt=question, response=answer)
    prompt_text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tok(answer, add_special_tokens=False)["input_ids"]
    if k % 5 != 4:  # the actor stopped on its end-of-turn token; else it hit the length limit
        response_ids = response_ids + [tok.eos_token_id]
    left_pad = [tok.pad_token_id] * (k % 3)  # left-padded prompt batches
    right_pad = [tok.pad_token_id] * (k % 2)  # right-padded sequences
    query = tok.decode(left_pad + prompt_ids + response_ids + right_pad, skip_special_tokens=False)
    prompt = tok.decode(left_pad + prompt_ids, skip_special_tokens=False)
    payload = {"query": [query], "prompts": [prompt], "labels": [""]}
    if k % 7 == 6:  # old OpenRLHF: query only -> split at the last assistant turn
        payload = {"query": [query]}
    return payload, item


async def test_256_concurrent_single_sample_requests_match_direct_scoring(model):
    samples = [openrlhf_sample(model, k) for k in range(256)]
    expected = [out.reward for out in model.score([item for _, item in samples], batch_size=1)]
    app = create_app(ServerConfig(max_batch_size=32, max_wait_ms=5, preprocess_workers=2), model=model)
    with uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=256), timeout=60) as client:
            await wait_ready(client)
            start = time.monotonic()
            replies = await asyncio.gather(*(client.post("/get_reward", json=p) for p, _ in samples))
            elapsed = time.monotonic() - start
            metrics = (await client.get("/metrics")).text
    worst = 0.0
    for reply, want in zip(replies, expected, strict=True):
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body) == {"rewards", "scores", "extra_logs"}
        assert body["rewards"] == body["scores"] and len(body["rewards"]) == 1
        worst = max(worst, abs(body["rewards"][0] - want))
    assert worst <= TOLERANCE, worst
    batches = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("rmserve_batches_total")))
    assert batches < 256  # requests were batched across HTTP calls
    print(f"256 requests in {elapsed:.2f}s, {batches:.0f} batches, max |diff| {worst:.2e}")


async def test_multi_sample_request_labels_and_verifier(model):
    samples = [openrlhf_sample(model, k) for k in (0, 2, 3)]
    payload = {
        "query": [p["query"][0] for p, _ in samples],
        "prompts": [p["prompts"][0] for p, _ in samples],
        "labels": ["4", "no", ""],
        "datasources": ["math"] * 3,  # fields forks add are ignored, as OpenRLHF's own server does
    }
    direct = [o.reward for o in model.score([item for _, item in samples])]
    config = ServerConfig(max_wait_ms=1, compat_verifier="numeric_match")
    async with asgi_client(create_app(config, model=model)) as client:
        body = (await client.post("/get_reward", json=payload)).json()
    from rmserve.rewards import sigmoid

    # sample 0 answers "The answer is 4. #0" -> the last number is 0, not 4: unverified, sigmoid(r)
    assert body["extra_logs"]["verified"] == [0.0, 0.0, 0.0]
    assert body["extra_logs"]["raw_reward"] == pytest.approx(direct, abs=TOLERANCE)
    assert body["rewards"] == pytest.approx([sigmoid(r) for r in direct], abs=TOLERANCE)

    payload["query"][0] = payload["query"][0].replace(" #0", "")  # now "The answer is 4."
    async with asgi_client(create_app(config, model=model)) as client:
        body = (await client.post("/get_reward", json=payload)).json()
    assert body["rewards"][0] == 1.0 and body["extra_logs"]["verified"][0] == 1.0


@pytest.mark.parametrize(
    "payload, status, param, code",
    [
        ({"query": []}, 422, "query", "too_short"),
        ({"query": "not a list"}, 422, "query", "list_type"),
        ({"query": ["no chat markers here"]}, 422, "query.0", "unsplittable_query"),
        ({"query": ["a", "b"], "prompts": ["a"]}, 422, "prompts", "length_mismatch"),
        ({"query": ["x"], "labels": [1, 2]}, 422, "labels", "length_mismatch"),
        ({}, 422, "query", "missing"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(model, payload, status, param, code):
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        r = await client.post("/get_reward", json=payload)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == (param, code), error
        good, _ = openrlhf_sample(model, 0)
        assert (await client.post("/get_reward", json=good)).status_code == 200
