"""The gRPC load driver: ``RewardService.Score``, one item per request, a fixed number in flight.

The same grouping and clock as the REST driver (bench/client.py ``drive_with``), over one
``grpc.aio`` channel (HTTP/2 multiplexes the concurrent calls) with the public stubs of
``rmserve_client.proto``. Requests are built from the same REST-shaped items before the clock
starts (images as raw bytes, as gRPC carries them), so the client does no encoding work while
timed; the server's ``x-*-time-ms`` trailing metadata is read like REST's headers.
"""

from __future__ import annotations

import base64

import grpc
from rmserve_client.proto import reward_pb2 as pb
from rmserve_client.proto import reward_pb2_grpc as pb_grpc

from .client import LoadResult, SendFailed, Sent, drive_with

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def image_bytes(data_url: str) -> bytes:
    """The file bytes of a ``data:image/...;base64,`` URL (gRPC's ``Image.data`` carries bytes, not base64)."""
    return base64.b64decode(data_url.split(",", 1)[1])


def score_request(item: dict) -> pb.ScoreRequest:
    """A one-item ``ScoreRequest`` for a REST-shaped workload item (``prompt``, ``images``, ``response``)."""
    return pb.ScoreRequest(items=[pb.ScoreItem(
        prompt=item["prompt"], response=item["response"],
        images=[pb.Image(data=image_bytes(url)) for url in item.get("images", [])],
    )])


def requests_for(groups: list[list[dict]]) -> list[list[pb.ScoreRequest]]:
    return [[score_request(item) for item in group] for group in groups]


async def drive_grpc(target: str, groups: list[list[pb.ScoreRequest]], *, concurrency: int = 64,
                     timeout_s: float = 600.0) -> LoadResult:
    """Call Score with every request (``target``: ``host:port``, plaintext); at most ``concurrency`` in flight."""
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await channel.channel_ready()
        stub = pb_grpc.RewardServiceStub(channel)

        async def send(request: pb.ScoreRequest) -> Sent:
            call = stub.Score(request, timeout=timeout_s)
            try:
                response = await call
            except grpc.aio.AioRpcError as exc:
                raise SendFailed(f"gRPC {exc.code().name}: {exc.details()}") from None
            trailing = {key: value for key, value in (await call.trailing_metadata() or ())}
            return response.items[0].reward, trailing

        return await drive_with(send, groups, concurrency=concurrency)


__all__ = ["drive_grpc", "requests_for", "score_request"]
