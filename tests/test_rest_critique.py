"""POST /v1/critique over HTTP: JSON, and server-sent events over a real uvicorn server."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from rmserve.api import critique as critique_api
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


async def test_errors_after_the_stream_started_are_an_error_event(model, monkeypatch):
    """The deadline passes after the first chunk went out: the answer is already 200, so the stream ends
    with an ``event: error`` naming ``deadline_exceeded`` (and no final reward chunk)."""
    held = threading.Event()

    class HeldAfterFirstChunk(critique_api.TokenStream):
        def _send(self, item):
            super()._send(item)
            if isinstance(item, str) and not held.is_set():  # the first piece of text is on its way
                held.set()
                while time.monotonic() < self._deadline + 0.05:  # generation stalls past the deadline
                    time.sleep(0.01)

    monkeypatch.setattr(critique_api, "TokenStream", HeldAfterFirstChunk)
    # 3 s: ample for the first token on a loaded machine; the hold then outlasts it
    async with asgi_client(create_app(ServerConfig(max_wait_ms=1), model=model)) as client:
        r = await client.post(
            "/v1/critique", json={**REQUEST, "stream": True}, headers={"x-request-timeout-ms": "3000"}
        )
        assert held.is_set()
        assert r.status_code == 200, r.text
        blocks = [b for b in r.text.split("\n\n") if b]
        *chunks, last = blocks
        data = [json.loads(b.removeprefix("data: ")) for b in chunks]
        assert data and all(c["object"] == "critique.chunk" and c["delta"] and not c["done"] for c in data)
        event, payload = last.split("\n")
        assert event == "event: error"
        error = json.loads(payload.removeprefix("data: "))["error"]
        assert error["code"] == "deadline_exceeded" and error["type"] == "deadline_exceeded", error
        monkeypatch.undo()
        assert (await client.post("/v1/critique", json=REQUEST)).status_code == 200  # the worker is free again
