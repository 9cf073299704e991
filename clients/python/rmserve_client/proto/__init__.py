"""rmserve.v1's wire contract: the gRPC stubs generated from proto/rmserve/v1/reward.proto (do not edit;
run `make proto`). The one public home of the contract: the client (rmserve_client) and the server
(rmserve.server.rpc) both import these.

Needs the `grpc` extra: `pip install rmserve-client[grpc]`.
"""
