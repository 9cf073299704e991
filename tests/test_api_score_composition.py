"""/v1/score with hybrid rewards: a request-level verifier checks each item's ground_truth
(1 if it matches, else sigmoid(model reward)), composed with the safety policy after it."""

from __future__ import annotations

import pytest

from rmserve.rewards import sigmoid
from tests.conftest import item
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app

ITEMS = [
    {"prompt": "2+2?", "response": "Let me think. The answer is 4.", "ground_truth": "4"},
    {"prompt": "3+3?", "response": "The answer is 7.", "ground_truth": "6"},
    {"prompt": "Say hi.", "response": "hi"},  # no ground truth: sigmoid(reward), the same scale
    {"prompt": "Pick one.", "response": "I choose (B).", "ground_truth": "B"},
]


def _raw(model, wire):
    return model.expected(item(wire["response"], prompt=wire["prompt"])).reward


async def test_hybrid_reward_with_a_named_verifier():
    model = FakeRewardModel()
    async with asgi_client(make_app(model)) as client:
        numeric = (await client.post("/v1/score", json={"items": ITEMS[:3], "verifier": "numeric_match"})).json()
        letter = (
            await client.post("/v1/score", json={"items": ITEMS[3:], "verifier": {"name": "choice_letter"}})
        ).json()
        loose = (
            await client.post(
                "/v1/score",
                json={"items": [ITEMS[1]], "verifier": {"name": "numeric_match", "tolerance": 2}},
            )
        ).json()
    out = numeric["items"]
    assert [o.get("verified") for o in out] == [True, False, None]  # null fields are left out
    assert out[0]["reward"] == 1.0
    assert out[1]["reward"] == pytest.approx(sigmoid(_raw(model, ITEMS[1])))
    assert out[2]["reward"] == pytest.approx(sigmoid(_raw(model, ITEMS[2])))
    assert [o["raw_reward"] for o in out] == [_raw(model, w) for w in ITEMS[:3]]
    assert "flagged" not in out[0]  # no safety asked for
    assert letter["items"][0]["reward"] == 1.0 and letter["items"][0]["verified"] is True
    assert loose["items"][0]["verified"] is True  # |7 - 6| <= tolerance 2


async def test_verifier_then_safety_policy():
    model = FakeRewardModel(heads=("reward", "safety"))
    expected = model.expected(item(ITEMS[0]["response"], prompt=ITEMS[0]["prompt"]))
    category = max(expected.safety, key=expected.safety.get)
    threshold = expected.safety[category] / 2
    policy = f'{{"{category}": {{"threshold": {threshold}, "action": "penalize", "value": 0.25}}}}'
    async with asgi_client(make_app(model, safety_policy=policy)) as client:
        body = (
            await client.post(
                "/v1/score", json={"items": ITEMS[:1], "verifier": "numeric_match", "return": ["reward", "safety"]}
            )
        ).json()
    (out,) = body["items"]
    assert out["verified"] is True and out["safety_action"] == "penalize" and category in out["flagged_categories"]
    assert out["reward"] == pytest.approx(1.0 - 0.25)  # verified 1.0, then the penalty
    assert out["raw_reward"] == expected.reward


@pytest.mark.parametrize(
    "payload, param, code",
    [
        ({"items": ITEMS[:1]}, "items.0.ground_truth", "verifier_required"),
        ({"items": ITEMS[:1], "verifier": "vibes"}, "verifier.name", "literal_error"),
        ({"items": ITEMS[:1], "verifier": {"name": "boxed", "tolerance": -1}}, "verifier.tolerance",
         "greater_than_equal"),
        ({"items": ITEMS[:1], "verifier": {"name": "boxed", "strict": True}}, "verifier.strict", "unknown_field"),
        ({"items": ITEMS[:1], "verifier": "boxed", "on_reject": "ignore"}, "on_reject", "literal_error"),
    ],
)
async def test_bad_composition_input_names_the_field(payload, param, code):
    async with asgi_client(make_app()) as client:
        r = await client.post("/v1/score", json=payload)
        assert r.status_code == 422, r.text
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == (param, code)
        assert (await client.post("/v1/score", json={"items": ITEMS[2:3]})).status_code == 200
