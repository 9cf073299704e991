"""gRPC transport (grpc.aio): ``rmserve.v1.RewardService`` over the same ``ScoreService`` and ``AppState``
methods as REST.

    server.py      GrpcServer: the grpc.aio server, health, reflection, TLS
    call_gate.py   CallGate (request id, API keys, in-flight), our deserializers, the method handlers
    servicer.py    RewardServicer: one method per RPC, each calling one service method
    codec.py       proto <-> the REST wire types
    status.py      RMServeError -> status code, details, trailing metadata
"""

from rmserve.server.rpc.server import GrpcServer

__all__ = ["GrpcServer"]
