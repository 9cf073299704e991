"""Decode untrusted MP4 videos with PyAV, sampling frames, with every limit checked before the work.

    probe_video(bytes)            container + stream headers only: size, frame count, rate (no frame decoded)
    plan_sampling(info, fps, n)   which frames to keep (uniform in time, ``fps`` per second, at most ``n``)
    decode_planned(bytes, plan)   decode up to the last kept frame; keep the planned ones as RGB images

The caller checks ``plan.num_frames x width x height`` (what the model will see) and
``info.total_frames x width x height`` (what decoding costs: every frame up to the last kept one
is decoded, kept or not) against its budgets between probing and decoding, so a video bomb (a
small file declaring a huge frame size or frame count) costs a header read. Decoding re-checks
what the headers claimed: a frame of another size, or more frames than declared, is an error.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

from PIL import Image

from ..errors import InvalidInput
from .types import VideoClip

# The mov/mp4 demuxer only: PyAV's other demuxers are attack surface the API does not need.
CONTAINER_FORMAT = "mp4"
DEFAULT_FPS = 2.0  # qwen-vl-utils' default sampling rate


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    total_frames: int
    fps: float  # the stream's average frame rate
    duration_s: float

    @property
    def pixels_per_frame(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class SamplingPlan:
    info: VideoInfo
    indices: tuple[int, ...]  # frame numbers to keep, increasing
    fps: float  # rate of the kept frames

    @property
    def num_frames(self) -> int:
        return len(self.indices)


def _invalid(message: str, param: str | None) -> InvalidInput:
    return InvalidInput(message, param=param, code="invalid_video")


def _open(raw: bytes, param: str | None):
    import av  # imported here: only servers that receive videos pay for loading FFmpeg

    try:
        return av.open(io.BytesIO(raw), mode="r", format=CONTAINER_FORMAT)
    except av.FFmpegError as exc:
        raise _invalid(f"bytes are not an MP4 video: {exc}", param) from None


def probe_video(raw: bytes, *, param: str | None = None) -> VideoInfo:
    """The first video stream's size, frame count and rate, from the headers only."""
    with _open(raw, param) as container:
        if not container.streams.video:
            raise _invalid("the file has no video stream", param)
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                    else (container.duration or 0) / 1_000_000)
        frames = stream.frames or (round(duration * rate) if duration and rate else 0)
    if width < 1 or height < 1:
        raise _invalid("the video stream declares no frame size", param)
    if frames < 1 or rate <= 0:
        raise _invalid("the video declares no frame count or frame rate", param)
    return VideoInfo(width=width, height=height, total_frames=frames, fps=rate,
                     duration_s=duration if duration > 0 else frames / rate)


def plan_sampling(info: VideoInfo, fps: float | None, max_frames: int) -> SamplingPlan:
    """``fps`` frames per second of video, uniformly spaced, at most ``max_frames`` (and at least one);
    the indices are ``arange(0, total, total / n)`` as the HF video processors sample."""
    want = (fps or DEFAULT_FPS) * info.duration_s
    n = max(1, min(max_frames, info.total_frames, math.floor(want + 0.5)))
    indices = tuple(sorted({int(i * info.total_frames / n) for i in range(n)}))
    return SamplingPlan(info=info, indices=indices, fps=info.fps * len(indices) / info.total_frames)


def decode_planned(raw: bytes, plan: SamplingPlan, *, param: str | None = None, key: str = "") -> VideoClip:
    """The planned frames as RGB images. ``key``: a content key for caches (default: sha256 of the bytes
    and the plan, so the same file sampled differently is a different video)."""
    import av

    wanted = set(plan.indices)
    last = plan.indices[-1]
    frames: list[Image.Image] = []
    with _open(raw, param) as container:
        stream = container.streams.video[0]
        try:
            for number, frame in enumerate(container.decode(stream)):
                if (frame.width, frame.height) != (plan.info.width, plan.info.height):
                    raise _invalid(f"frame {number} is {frame.width}x{frame.height}, not the "
                                   f"{plan.info.width}x{plan.info.height} the header declares", param)
                if number in wanted:
                    frames.append(frame.to_image())
                if number >= last:
                    break
        except av.FFmpegError as exc:
            raise _invalid(f"the video could not be decoded: {exc}", param) from None
    if len(frames) != len(plan.indices):
        raise _invalid(f"the video holds fewer frames than its header declares ({plan.info.total_frames})", param)
    if not key:
        digest = hashlib.sha256(raw)
        digest.update(repr(plan.indices).encode())
        key = digest.hexdigest()
    return VideoClip(frames=frames, fps=plan.fps, key=key)


def encode_mp4(frames: list[Image.Image], fps: int = 4, codec: str = "mpeg4") -> bytes:
    """MP4 bytes of ``frames`` (for tests, examples and benchmarks: small videos made on the spot).
    ``mpeg4`` intra-heavy at high quality keeps frames close to the input; H.264 is absent from some
    FFmpeg builds."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image.convert("RGB"))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
