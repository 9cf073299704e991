"""Replicas behind a real proxy (nginx, HAProxy from Debian's packages): `make test-replicas`.

- affinity: the client's ``x-rmserve-group`` keeps each GRPO group on one replica (REST through both
  proxies, gRPC through nginx: unary calls, and a ScoreStream by its first item's key);
- failover: three replicas under GRPO load with images, one ``kill -9``-ed mid-run: the proxy sends the
  requests it had in flight there to another replica (scoring is idempotent), nothing is lost, every
  reward is the model's own.
"""

from __future__ import annotations

import asyncio
import random
import sys

import pytest
from rmserve_client import AsyncRewardClient, RewardClient
from rmserve_client._base import RetryPolicy

from scripts.replicas import Cluster, total
from tests.conftest import random_image

pytestmark = pytest.mark.replicas

SERVE = ["--log-level", "warning", "--max-wait-ms", "5", "--preprocess-workers", "1"]


def _score_counts(cluster: Cluster, grpc: bool = False, rpc: str = "Score") -> list[float]:
    parts = ('method="GRPC"', f'{rpc}"') if grpc else ('endpoint="/v1/score"',)
    return [total(m, "rmserve_requests_total", *parts) for m in cluster.metrics()]


@pytest.mark.parametrize("proxy", ["nginx", "haproxy"])
def test_a_group_stays_on_one_replica(default_model_dir, proxy):
    with Cluster(3, proxy, serve_args=["--model", default_model_dir, *SERVE]) as cluster:
        transports = [("rest", f"http://127.0.0.1:{cluster.port}")]
        if proxy == "nginx":
            transports.append(("grpc", f"grpc://{cluster.grpc_target}"))
        for kind, url in transports:
            homes = []
            with RewardClient(url) as client:
                for g in range(12):
                    image = random_image(32, 32, seed=g)
                    before = _score_counts(cluster, grpc=kind == "grpc")
                    for i in range(4):  # a GRPO group, one response per request
                        client.score(prompt=f"Group {g}: what is shown?", images=[image], response=f"Answer {i}.")
                    after = _score_counts(cluster, grpc=kind == "grpc")
                    moved = [round(b - a) for a, b in zip(before, after, strict=True)]
                    assert sorted(moved) == [0, 0, 4], (kind, g, moved)  # all four on one replica
                    homes.append(moved.index(4))
                    if kind == "grpc":  # the group again as one ScoreStream: its first item's key, same replica
                        before = _score_counts(cluster, grpc=True, rpc="ScoreStream")
                        stream = [{"prompt": f"Group {g}: what is shown?", "images": [image], "response": f"Again {i}."}
                                  for i in range(4)]
                        assert all(r.ok for r in client.score_stream(stream))
                        after = _score_counts(cluster, grpc=True, rpc="ScoreStream")
                        streamed = [round(b - a) for a, b in zip(before, after, strict=True)]
                        assert streamed == [int(n == 4) for n in moved], (g, moved, streamed)
            assert len(set(homes)) >= 2, (kind, homes)  # and the groups spread over the replicas


async def _grpo_load(url: str, seconds: float, kill_at: float, kill, results: list, errors: list) -> None:
    """16 workers, each sending GRPO groups (G=8, a fresh image per group, the G requests at once)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    retry = RetryPolicy(max_retries=8, backoff=0.1, max_backoff=1.0)
    async with AsyncRewardClient(url, retry=retry, timeout=60) as client:

        async def worker(w: int) -> None:
            g = 0
            while loop.time() - start < seconds:
                image = random_image(48, 48, seed=w * 1000 + g)
                prompt = f"Worker {w} group {g}: what is shown?"
                calls = [client.score(prompt=prompt, images=[image], response=f"Answer {i}.") for i in range(8)]
                for i, outcome in enumerate(await asyncio.gather(*calls, return_exceptions=True)):
                    if isinstance(outcome, BaseException):
                        errors.append(f"{w}/{g}/{i}: {outcome!r}")
                    else:
                        results.append((w, g, i, outcome.reward, loop.time() - start))
                g += 1

        async def killer() -> None:
            await asyncio.sleep(kill_at)
            await asyncio.to_thread(kill)

        await asyncio.gather(*(worker(w) for w in range(16)), killer())


def test_kill_9_a_replica_under_grpo_load_loses_nothing(default_model_dir):
    launcher = (sys.executable, "-m", "tests.ops_server", "--forward-sleep-ms", "100")  # requests stay in flight
    with Cluster(3, "nginx", serve_args=["--model", default_model_dir, *SERVE], launcher=launcher) as cluster:
        before = _score_counts(cluster)
        killed: list[float] = []

        def kill() -> None:
            busiest = max(range(3), key=lambda k: _score_counts(cluster)[k] - before[k])
            for _ in range(500):  # at a moment when it has requests in flight (the scrape counts itself)
                in_flight = total(cluster.metrics()[busiest], "rmserve_requests_in_flight", 'transport="http"') - 1
                if in_flight >= 2:
                    break
            killed.extend([busiest, in_flight])
            cluster.kill(busiest)

        results: list = []
        errors: list = []
        asyncio.run(_grpo_load(cluster.url, seconds=12.0, kill_at=5.0, kill=kill, results=results, errors=errors))
        proxy_log = cluster.proxy_log()
        survivors = [k for k in range(3) if k != killed[0]]
        served_after = [round(c) for c in _score_counts(cluster)]
    after_kill = [r for r in results if r[4] > 5.5]
    print(f"failover: {len(results)} rewards, {len(errors)} errors, replica {killed[0]} killed with "
          f"{killed[1]:.0f} requests in flight, {len(after_kill)} rewards after the kill, per replica {served_after}")
    assert not errors, errors[:5]
    assert killed[1] >= 2, "nothing was in flight on the killed replica: the test proved nothing"
    assert after_kill and all(served_after[k] > 0 for k in survivors)
    # nginx saw the dead replica fail (reset mid-request, then refused) and went on to the next one
    failed = [line for line in proxy_log.splitlines() if "[error]" in line and "upstream" in line]
    print(f"nginx: {len(failed)} upstream failures retried on the next replica, e.g.", *failed[:3], sep="\n  ")
    assert failed, proxy_log[-2000:]
    # the rewards are the model's own, whichever replica computed them
    sample = random.Random(0).sample(results, 12)
    with Cluster(1, "none", serve_args=["--model", default_model_dir, *SERVE]) as reference:
        with RewardClient(reference.url) as client:
            for w, g, i, reward, _ in sample:
                image = random_image(48, 48, seed=w * 1000 + g)
                expected = client.score(prompt=f"Worker {w} group {g}: what is shown?", images=[image],
                                        response=f"Answer {i}.").reward
                assert abs(reward - expected) <= 1e-4, (w, g, i, reward, expected)
