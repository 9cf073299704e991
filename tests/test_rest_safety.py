"""POST /v1/safety over HTTP with the default policy (flag at 0.5) and the fake model's safety head."""

from __future__ import annotations

from tests.conftest import item
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app


async def test_safety_shape_and_default_policy():
    model = FakeRewardModel(heads=("reward", "safety"))
    items = [{"prompt": "p", "response": f"response {i}"} for i in range(6)]
    async with asgi_client(make_app(model)) as client:
        r = await client.post("/v1/safety", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "taxonomy", "model", "usage"} and body["taxonomy"] == {"S1": "Violent Crimes",
                                                                                          "S10": "Hate"}
    flagged_any = False
    for wire, out in zip(items, body["items"], strict=True):
        expected = model.expected(item(wire["response"], prompt="p"))
        assert out["categories"] == expected.safety
        over = [c for c, p in expected.safety.items() if p >= 0.5]
        assert out["flagged_categories"] == over and out["flagged"] == bool(over)
        assert out["action"] == ("flag" if over else "none")
        assert out["reward"] == out["raw_reward"] == expected.reward  # flag leaves the reward alone
        flagged_any |= bool(over)
    assert flagged_any  # the fixture covers both outcomes
