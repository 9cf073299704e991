"""The overhead benchmarks' load drivers (bench/client.py raw + httpx, bench/grpc_client.py) and the
no-model floor server: the same items give the model's own rewards over every driver, and failures
are counted as errors with their status, never as rewards."""

from __future__ import annotations

import asyncio
import json
import random

from bench.client import drive, split_groups
from bench.floor_server import create_app as floor_app
from bench.grpc_client import drive_grpc, requests_for
from bench.workloads import image_data_url, make_image
from rmserve.api.images import ImageLimits, decode_base64_image, decode_image_bytes
from rmserve.models.types import ScoreItem
from tests.grpc_serving import served
from tests.serving import uvicorn_server


def _groups() -> list[list[dict]]:
    rng = random.Random(7)
    out = []
    for g in range(3):
        image = image_data_url(make_image(rng, 32))
        out.append([{"prompt": f"prompt {g}", "images": [image], "response": f"answer {g}.{k}" * (1 + k)}
                    for k in range(4)])
    return out


def _expected(model, wire: dict) -> float:
    limits = ImageLimits()
    images = [decode_image_bytes(decode_base64_image(url, limits), limits) for url in wire["images"]]
    return model.expected(ScoreItem(prompt=wire["prompt"], response=wire["response"],
                                    images=[d.image for d in images], image_hashes=[d.sha256 for d in images])).reward


def _bodies(groups: list[list[dict]]) -> list[list[bytes]]:
    return [[json.dumps({"items": [item]}).encode() for item in group] for group in groups]


def test_every_driver_gets_the_models_rewards_and_counts_failures():
    groups = _groups()
    # Three zero bytes are not an image: 422 over REST, INVALID_ARGUMENT over gRPC.
    bad = [{"prompt": "p", "images": ["data:image/png;base64,AAAA"], "response": "r"}]
    with served() as srv:
        expected = [_expected(srv.model, item) for group in groups for item in group]
        raw = asyncio.run(drive(srv.rest_url, _bodies(groups + [bad]), concurrency=4))
        via_httpx = asyncio.run(drive(srv.rest_url, _bodies(groups), concurrency=4, client="httpx"))
        via_grpc = asyncio.run(drive_grpc(srv.grpc_target, requests_for(groups + [bad]), concurrency=4))
    assert raw.rewards[:-1] == via_httpx.rewards == via_grpc.rewards[:-1]
    assert all(abs(got - want) < 1e-6 for got, want in zip(raw.rewards[:-1], expected, strict=True))
    assert raw.rewards[-1] is None and len(raw.errors) == 1 and raw.errors[0].startswith("HTTP 422")
    assert via_grpc.rewards[-1] is None and via_grpc.errors[0].startswith("gRPC INVALID_ARGUMENT")
    assert raw.ok == via_grpc.ok == len(expected) and not via_httpx.errors
    assert len(raw.queue_ms) == raw.ok and len(via_grpc.queue_ms) == via_grpc.ok  # server timings read back


def test_floor_server_parses_and_decodes_and_groups_split_to_fit():
    groups = _groups()
    assert [len(g) for g in split_groups(groups, 3)] == [3, 1, 3, 1, 3, 1]
    with uvicorn_server(floor_app()) as url:
        result = asyncio.run(drive(url, _bodies(split_groups(groups, 3)), concurrency=3))
        broken = [[json.dumps({"items": [{"prompt": "p", "response": "r", "respones": "typo"}]}).encode()]]
        refused = asyncio.run(drive(url, broken, concurrency=1))
    assert result.ok == 12 and result.rewards == [0.0] * 12
    assert refused.errors[0].startswith("HTTP 422")  # the same ScoreRequest type: unknown fields refused


def test_progress_lines_carry_the_servers_batch_counters():
    """A time-boxed run that never writes its JSON (scripts/gpu_run.sh) still logs what bound each row."""
    from bench.run import _batch_summary

    row = {"seconds": 5.0, "server_batches": 25, "server_mean_batch": 31.0, "server_batch_ms": 190.0,
           "server_cpu_s": 9.5}
    assert _batch_summary(row) == ("; server batches 31.0 items x 190 ms, worker in a batch 95% of the run"
                                   "; server CPU 1.90 cores")
    assert _batch_summary({"seconds": 5.0}) == ""  # servers without counters (naive, vLLM's own) log none
