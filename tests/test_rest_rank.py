"""POST /v1/rank over HTTP: ranking best first, chosen/rejected with min_margin, top_k."""

from __future__ import annotations

from tests.conftest import item
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client, make_app

RESPONSES = [f"answer number {i}" for i in range(8)]


async def test_rank_best_of_n():
    model = FakeRewardModel()
    rewards = [model.expected(item(r, prompt="Q?")).reward for r in RESPONSES]
    best_first = sorted(range(8), key=lambda i: -rewards[i])
    async with asgi_client(make_app(model)) as client:
        body = (await client.post("/v1/rank", json={"prompt": "Q?", "responses": RESPONSES, "top_k": 3})).json()
        strict = (
            await client.post("/v1/rank", json={"prompt": "Q?", "responses": RESPONSES, "min_margin": 1e6})
        ).json()
        one = (await client.post("/v1/rank", json={"prompt": "Q?", "responses": ["only"]})).json()
    assert set(body) == {"ranking", "chosen_index", "rejected_index", "margin", "model", "usage"}
    assert body["ranking"] == [{"index": i, "reward": rewards[i]} for i in best_first[:3]]
    assert (body["chosen_index"], body["rejected_index"]) == (best_first[0], best_first[-1])
    assert body["margin"] == rewards[best_first[0]] - rewards[best_first[-1]]
    assert body["usage"]["items"] == 8
    assert len(strict["ranking"]) == 8 and strict["rejected_index"] == -1 and strict["margin"] is None
    assert (one["chosen_index"], one["rejected_index"]) == (0, -1)
    assert max(len(b) for b in model.batches) > 1  # the N responses ride in one batch
