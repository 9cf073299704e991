"""Helpers for gRPC tests: one process serving REST and gRPC (uvicorn in a thread), and stubs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import uvicorn
from rmserve_client.proto import reward_pb2_grpc as pb_grpc

from rmserve.server.state import AppState
from tests.fakes import FakeRewardModel
from tests.serving import free_port, make_app


@dataclass
class Served:
    rest_url: str  # http://127.0.0.1:PORT
    grpc_target: str  # 127.0.0.1:PORT
    state: AppState
    server: uvicorn.Server
    model: object

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.grpc_target}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.grpc_target)

    def stub(self, channel: grpc.Channel) -> pb_grpc.RewardServiceStub:
        return pb_grpc.RewardServiceStub(channel)

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not (self.state.ready and self.state.grpc is not None and self.state.grpc.ready()):
            if time.monotonic() > end:
                raise AssertionError(f"server not ready: {self.state.load_error}")
            time.sleep(0.01)


@contextmanager
def served(model=None, *, wait: bool = True, app=None, **config) -> Iterator[Served]:
    """REST + gRPC on two free loopback ports over one engine; stops (drains) on exit."""
    model = model if model is not None else FakeRewardModel()
    grpc_port = config.pop("grpc_port", None) or free_port()
    app = app or make_app(model, grpc_port=grpc_port, **config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    result = Served(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", app.state.rmserve, server, model)
    try:
        if wait:
            result.wait_ready()
        yield result
    finally:
        server.should_exit = True
        thread.join(timeout=30)
