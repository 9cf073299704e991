"""Generated gRPC stubs for rmserve.v1 (do not edit; run `python scripts/gen_proto.py`).

Needs the `grpc` extra: `pip install rmserve-client[grpc]`.
"""
