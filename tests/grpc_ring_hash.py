"""Run as a process (the gRPC experiment flag must be set before gRPC starts): three in-process servers
behind one channel whose ``ring_hash`` policy hashes the ``x-rmserve-group`` metadata; prints, per key,
how many of its unary calls and of its one ScoreStream call each server got (JSON). Used by
tests/test_client_routing.py."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack

import httpx
from rmserve_client import RewardClient
from rmserve_client._grpc import GrpcTransport, group_hash_channel

from tests.fakes import FakeRewardModel
from tests.grpc_serving import served


def grpc_calls(url: str) -> float:
    lines = httpx.get(url + "/metrics", timeout=5).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("rmserve_requests_total{") and 'method="GRPC"' in line)


def main() -> int:
    with ExitStack() as stack:
        servers = [stack.enter_context(served(FakeRewardModel())) for _ in range(3)]
        target = "ipv4:" + ",".join(s.grpc_target for s in servers)
        channel = group_hash_channel(target)
        transport = GrpcTransport("grpc://" + servers[0].grpc_target, channel=channel)
        with RewardClient("grpc://" + servers[0].grpc_target, transport=transport) as c:
            out = {}
            for g in range(8):
                prompt = f"Group {g}: what is shown?"
                before = [grpc_calls(s.rest_url) for s in servers]
                for i in range(4):
                    c.score(prompt=prompt, response=f"Answer {i}.")
                middle = [grpc_calls(s.rest_url) for s in servers]
                # The same group as one ScoreStream (routed by its first item's key): one call, same backend.
                results = list(c.score_stream({"prompt": prompt, "response": f"Answer {i}."} for i in range(4)))
                assert len(results) == 4 and all(r.ok for r in results), results
                after = [grpc_calls(s.rest_url) for s in servers]
                out[g] = {"unary": [m - b for m, b in zip(middle, before, strict=True)],
                          "stream": [a - m for a, m in zip(after, middle, strict=True)]}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
