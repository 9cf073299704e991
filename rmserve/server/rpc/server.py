"""The grpc.aio server beside REST: ``rmserve.v1.RewardService``, health and reflection, on one port.

    GrpcServer(state)              started and stopped by the app's lifespan (server/app.py), on
                                   config.host:config.grpc_port beside the REST port, same engines
      RewardServicer               rpc/servicer.py
      grpc.health.v1.Health        SERVING only while ``state.serving()``; NOT_SERVING while loading,
                                   draining, or after an engine thread died (re-checked every second)
      reflection                   lists rmserve.v1.RewardService, grpc.health.v1.Health, reflection

With ``--tls-cert/--tls-key`` the port speaks TLS only (``grpc.ssl_server_credentials``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rmserve.server.rpc.call_gate import SERVICE_NAME, CallGate, reward_service_handler
from rmserve.server.rpc.servicer import RewardServicer
from rmserve.server.state import AppState

log = logging.getLogger("rmserve.grpc")

HEALTH_RECHECK_S = 1.0



class GrpcServer:
    """The grpc.aio server of one app: RewardService + health + reflection on ``host:port``."""

    def __init__(self, state: AppState, *, host: str, port: int):
        self.state = state
        self.address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        limit = state.config.max_body_bytes
        self.server = grpc.aio.server(
            interceptors=[CallGate(state, state.config.api_keys())],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
            ],
        )
        self.server.add_generic_rpc_handlers((reward_service_handler(RewardServicer(state)),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port: int | None = None
        self._watch: asyncio.Task | None = None
        self._serving: bool | None = None

    async def start(self) -> int:
        config = self.state.config
        if config.tls_cert and config.tls_key:
            with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            self.port = self.server.add_secure_port(self.address, credentials)
        else:
            self.port = self.server.add_insecure_port(self.address)
        if not self.port:
            raise RuntimeError(f"gRPC could not bind {self.address}; pick another --grpc-port")
        await self.refresh_health()
        await self.server.start()
        self._watch = asyncio.create_task(self._watch_health())
        log.info("gRPC serving %s on %s%s", SERVICE_NAME, self.address, " (TLS)" if config.tls_cert else "")
        return self.port

    def ready(self) -> bool:
        return self.state.serving()

    async def refresh_health(self) -> None:
        serving = self.ready()
        if serving == self._serving:
            return
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_RECHECK_S)
            with contextlib.suppress(Exception):
                await self.refresh_health()

    def on_change(self) -> None:
        """Readiness may have changed (model up, draining): update health now, not at the next re-check."""
        with contextlib.suppress(RuntimeError):  # no running loop: the re-check will catch it
            asyncio.get_running_loop().create_task(self.refresh_health())

    async def stop(self, grace: float) -> None:
        """NOT_SERVING at once, refuse new calls, give running calls ``grace`` seconds."""
        if self._watch is not None:
            self._watch.cancel()
        self._serving = None
        await self.refresh_health()
        await self.server.stop(grace)
        log.info("gRPC stopped")
