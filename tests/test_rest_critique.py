"""POST /v1/critique over HTTP: JSON, and server-sent events over a real uvicorn server."""

from __future__ import annotations

import json

import httpx
import pytest

from rmserve.config import ServerConfig
from rmserve.server import create_app
from tests.serving import asgi_client, uvicorn_server, wait_ready
from tests.test_api_critique import critique_model


@pytest.fixture(scope="module")
def model():
    return critique_model(seed=13, max_new_tokens=10)


REQUEST = {"prompt": "What is in the picture?", "response": "A red circle next to a blue square."}


async def test_json_answer(model):
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        r = await client.post("/v1/critique", json=REQUEST)
        listed = (await client.get("/v1/models")).json()["data"][0]
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"critique", "reward", "model", "usage"} and body["critique"]
    assert body["usage"]["completion_tokens"] == 10 and listed["critique"] is True


async def test_server_sent_events_end_with_the_reward(model):
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        whole = (await client.post("/v1/critique", json=REQUEST)).json()
    app = create_app(ServerConfig(max_wait_ms=1), model=model)
    with uvicorn_server(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await wait_ready(client)
            async with client.stream("POST", "/v1/critique", json={**REQUEST, "stream": True}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = [line async for line in r.aiter_lines()]
    events = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert all(line.startswith("data: ") or line == "" for line in lines)  # no error events
    *deltas, final = events
    assert len(deltas) >= 2 and all(e["object"] == "critique.chunk" and not e["done"] for e in deltas)
    assert final["done"] is True and final["reward"] == pytest.approx(whole["reward"], abs=1e-6)
    assert final["critique"] == whole["critique"] and final["usage"] == whole["usage"]
    assert "".join(e["delta"] for e in deltas).strip() == whole["critique"]


async def test_errors_after_the_stream_started_are_an_error_event(model):
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        # 1 ms: the deadline passes during generation, after the first event could have been sent
        r = await client.post(
            "/v1/critique", json={**REQUEST, "stream": True}, headers={"x-request-timeout-ms": "1"}
        )
        assert r.status_code in (200, 504)
        if r.status_code == 200:  # deadline hit after the first chunk: the stream ends with an error event
            assert "event: error" in r.text and "deadline_exceeded" in r.text
        else:
            assert r.json()["error"]["code"] == "deadline_exceeded"
        assert (await client.post("/v1/critique", json=REQUEST)).status_code == 200
