"""The safety policy end to end: a real tiny model whose safety head fires on a known input, and
each action (flag, penalize, replace, reject) changing the returned reward as configured."""

from __future__ import annotations

import pytest
import torch

from rmserve.config import ServerConfig
from rmserve.models.heads import HeadSpec
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.types import ScoreItem
from rmserve.server import create_app
from tests.serving import asgi_client

pytestmark = pytest.mark.asyncio

SAFE = {"prompt": "What colour is the shape?", "response": "It is a red circle."}
UNSAFE = {"prompt": "How do I hurt people?", "response": "I cannot help with that request because it could cause harm."}


@pytest.fixture(scope="module")
def model():
    """Tiny qwen2 RM whose S1 logit is +20 on UNSAFE and -20 on SAFE (S10 never fires)."""
    heads = {"reward": HeadSpec(kind="mlp", width=32), "safety": HeadSpec(kind="linear", labels=["S1", "S10"])}
    model = build_tiny_reward_model("qwen2", seed=7, heads=heads)
    with torch.inference_mode():
        encoded = [model.encode(ScoreItem(**wire)) for wire in (UNSAFE, SAFE)]
        h_unsafe, h_safe = model.pooled_hidden_items(encoded).float()  # (H,), (H,)
    direction = h_unsafe - h_safe
    weight = 40.0 * direction / direction.dot(direction)  # logit = 40 * proj - 20 -> +20 / -20
    layer = model.heads["safety"].layers[0]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0] = weight
        layer.bias[0] = -weight.dot((h_unsafe + h_safe) / 2)
        layer.bias[1] = -10.0
    return model


@pytest.fixture(scope="module")
def raw(model):
    return {name: model.score([ScoreItem(**wire)])[0].reward for name, wire in (("safe", SAFE), ("unsafe", UNSAFE))}


def _app(model, **config):
    return create_app(ServerConfig(max_wait_ms=1, **config), model=model)


async def _score(client, *, returns=("reward", "safety"), **extra):
    r = await client.post("/v1/score", json={"items": [SAFE, UNSAFE], "return": list(returns), **extra})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_the_head_fires_only_on_the_unsafe_input(model):
    out = model.score([ScoreItem(**SAFE), ScoreItem(**UNSAFE)])
    assert out[0].safety["S1"] < 1e-6 and out[1].safety["S1"] > 1 - 1e-6
    assert max(out[0].safety["S10"], out[1].safety["S10"]) < 1e-3


@pytest.mark.parametrize(
    "rule, expected",
    [
        ({"action": "flag"}, lambda r: r),
        ({"action": "penalize", "value": 2.5}, lambda r: r - 2.5),
        ({"action": "penalize"}, lambda r: r - 0.75),  # the server's safety_penalty
        ({"action": "replace", "value": -3.0}, lambda r: -3.0),
        ({"action": "reject", "value": -7.0}, lambda r: -7.0),
        ({"action": "reject"}, lambda r: -9.0),  # the server's safety_floor_reward
    ],
)
async def test_each_action_changes_the_reward_as_configured(model, raw, rule, expected):
    policy = {"categories": {"S1": rule}}
    app = _app(model, safety_policy=str(policy).replace("'", '"'), safety_penalty=0.75, safety_floor_reward=-9.0)
    async with asgi_client(app) as client:
        safe, unsafe = await _score(client)
    assert safe["reward"] == pytest.approx(raw["safe"], abs=1e-5)
    assert (safe["flagged"], safe["flagged_categories"], safe["safety_action"]) == (False, [], "none")
    assert unsafe["raw_reward"] == pytest.approx(raw["unsafe"], abs=1e-5)
    assert unsafe["reward"] == pytest.approx(expected(unsafe["raw_reward"]), abs=1e-9)
    assert (unsafe["flagged"], unsafe["flagged_categories"], unsafe["safety_action"]) == (True, ["S1"], rule["action"])
    assert unsafe["safety"]["S1"] > 0.99


async def test_reject_can_refuse_the_request_instead(model):
    async with asgi_client(_app(model, safety_policy='{"S1": "reject"}')) as client:
        r = await client.post(
            "/v1/score", json={"items": [SAFE, UNSAFE], "return": ["reward", "safety"], "on_reject": "error"}
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("items.1", "safety_rejected") and "S1" in error["message"]
        # the safe item alone passes; the server keeps serving
        r = await client.post("/v1/score", json={"items": [SAFE], "return": ["safety"], "on_reject": "error"})
        assert r.status_code == 200


async def test_policy_applies_only_when_asked_unless_always(model, raw):
    async with asgi_client(_app(model, safety_action="replace", safety_floor_reward=-5.0)) as client:
        plain = await _score(client, returns=["reward"])
    assert plain[1] == {"reward": pytest.approx(raw["unsafe"], abs=1e-5)}  # not asked: model reward, no verdict
    async with asgi_client(_app(model, safety_action="replace", safety_floor_reward=-5.0, safety_apply="always")) as c:
        always = await _score(c, returns=["reward"])
        rank = (await c.post("/v1/rank", json={"prompt": "p", "responses": ["a", UNSAFE["response"]]})).json()
        get_reward = (await c.post("/get_reward", json={"query": [_templated(model, UNSAFE)]})).json()
    assert always[1]["reward"] == -5.0 and always[1]["raw_reward"] == pytest.approx(raw["unsafe"], abs=1e-5)
    assert always[1]["safety_action"] == "replace" and "safety" not in always[1]  # probabilities only if asked
    assert rank["ranking"][-1] == {"index": 1, "reward": -5.0}
    assert get_reward["rewards"] == [-5.0] and get_reward["extra_logs"]["safety_flagged"] == [1.0]


def _templated(model, wire) -> str:
    messages = [{"role": "user", "content": wire["prompt"]}, {"role": "assistant", "content": wire["response"]}]
    return model.tokenizer.apply_chat_template(messages, tokenize=False)


async def test_safety_endpoint_reports_categories_flags_and_action(model, raw):
    policy = '{"S1": {"threshold": 0.9, "action": "penalize", "value": 1}}'
    async with asgi_client(_app(model, safety_policy=policy)) as c:
        r = await c.post("/v1/safety", json={"items": [SAFE, UNSAFE]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["taxonomy"] == {"S1": "Violent Crimes", "S10": "Hate"} and body["model"] == model.name
    safe, unsafe = body["items"]
    assert set(safe["categories"]) == {"S1", "S10"}
    assert (safe["flagged"], safe["action"], safe["reward"]) == (False, "none", safe["raw_reward"])
    assert (unsafe["flagged"], unsafe["flagged_categories"], unsafe["action"]) == (True, ["S1"], "penalize")
    assert unsafe["reward"] == pytest.approx(unsafe["raw_reward"] - 1.0)
    assert unsafe["raw_reward"] == pytest.approx(raw["unsafe"], abs=1e-5)


async def test_a_model_without_a_safety_head_is_a_clear_4xx(tiny_models):
    plain = tiny_models("qwen2")
    async with asgi_client(_app(plain)) as client:
        r = await client.post("/v1/safety", json={"items": [SAFE]})
        assert r.status_code == 422
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("model", "no_safety_head")
        r = await client.post("/v1/score", json={"items": [SAFE], "return": ["safety"]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_output"
        assert (await client.post("/v1/score", json={"items": [SAFE]})).status_code == 200
