"""Load wire videos: ``video_url`` MP4 data URLs (decoded with PyAV) and client-sampled ``frames``.

Every limit is checked before the work it protects, as for images (api/images.py):
1. the base64 length before decoding it, the file size after;
2. the container headers (rmserve.models.video.probe_video): frame size against the per-frame pixel
   limit, the sampled frame count against ``max_frames``, and the decode cost (every frame up to
   the last kept one is decoded) against ``max_decode_pixels``;
3. the caller's per-item budgets (images + frames, pixels) with the probed numbers (``ProbedVideo``);
4. only then the frames themselves.

Decoded clips are kept by (file sha256, sampling) in a byte-bounded LRU: a GRPO group or a rank
request sends one video with every response, and it is decoded once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from rmserve.errors import InvalidInput
from rmserve.lru import ByteLRU
from rmserve.models.types import VideoClip
from rmserve.models.video import DEFAULT_FPS, SamplingPlan, decode_planned, plan_sampling, probe_video

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)
VIDEO_TYPES = ("video/mp4", "video/quicktime")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class VideoLimits:
    max_frames: int = 16  # frames kept per video (--max-video-frames); requests may ask for fewer
    max_bytes: int = 32 * 1024 * 1024  # encoded file size
    max_frame_pixels: int = 16_777_216  # one frame's width x height (the image limit)
    # Frames decoded x pixels, kept or not: what decoding costs. ~1.1 s of 1080p60 per GiB-pixel on one core.
    max_decode_pixels: int = 1 << 30


def video_bytes(url: str, limits: VideoLimits, *, param: str | None) -> bytes:
    """The file bytes of a ``data:video/mp4;base64,`` URL (size checked before and after base64)."""
    match = _DATA_URL.match(url)
    if not match:
        raise InvalidInput("video_url must be a base64 data URL (`data:video/mp4;base64,...`); the server does "
                           "not fetch video URLs", param=param, code="invalid_video")
    if match.group("mime") not in VIDEO_TYPES:
        raise InvalidInput(f"video media type {match.group('mime')!r} is not supported; send MP4 "
                           f"({', '.join(VIDEO_TYPES)})", param=param, code="invalid_video")
    data = url[match.end():]
    if len(data) > (limits.max_bytes + 2) // 3 * 4 + 1024:
        raise InvalidInput(f"video is larger than {limits.max_bytes} bytes", param=param, code="video_too_large")
    data = _WHITESPACE.sub("", data)
    data += "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"video is not valid base64: {exc}", param=param, code="invalid_base64") from None
    if not raw:
        raise InvalidInput("video data is empty", param=param, code="invalid_video")
    if len(raw) > limits.max_bytes:
        raise InvalidInput(f"video is {len(raw)} bytes, over the limit of {limits.max_bytes}", param=param,
                           code="video_too_large")
    return raw


@dataclass(frozen=True)
class ProbedVideo:
    """A video whose headers passed the per-video limits, not decoded yet."""

    raw: bytes
    plan: SamplingPlan
    key: str  # sha256 of the file + the sampled frame numbers
    param: str | None

    @property
    def num_frames(self) -> int:
        return self.plan.num_frames

    @property
    def pixels(self) -> int:
        """Pixels the model will be given (kept frames x frame size)."""
        return self.plan.num_frames * self.plan.info.pixels_per_frame


class VideoCache(ByteLRU[VideoClip]):
    def put(self, key: str, clip: VideoClip) -> None:  # type: ignore[override]
        # Pillow keeps RGB in 4 bytes a pixel.
        super().put(key, clip, sum(f.width * f.height * 4 for f in clip.frames))


class VideoLoader:
    """``base_dir``: set only for offline scoring (``rmserve score``), where a ``video_url`` may name a local
    MP4 file (relative to the JSONL file), as images may."""

    def __init__(self, limits: VideoLimits, cache: VideoCache | None = None, *, base_dir: str | None = None):
        self.limits = limits
        self.cache = cache
        self.base_dir = base_dir
        # Jobs of one request (rank's N responses, a GRPO group) load the same video in parallel pool threads:
        # the first decodes it, the others wait for that result instead of decoding it again.
        self._lock = threading.Lock()
        self._decoding: dict[str, Future] = {}

    def probe(self, url: str | bytes, *, fps: float | None, max_frames: int | None, param: str | None) -> ProbedVideo:
        """Read and check a ``video_url``'s headers; the frames stay undecoded."""
        if isinstance(url, bytes):  # gRPC's Video.data
            raw = url
            if len(raw) > self.limits.max_bytes:
                raise InvalidInput(f"video is {len(raw)} bytes, over the limit of {self.limits.max_bytes}",
                                   param=param, code="video_too_large")
        else:
            raw = self._read_local(url, param) if self.base_dir is not None else None
        if raw is None:
            raw = video_bytes(url, self.limits, param=param)
        info = probe_video(raw, param=param)
        if info.pixels_per_frame > self.limits.max_frame_pixels:
            raise InvalidInput(f"video frames are {info.width}x{info.height} = {info.pixels_per_frame} pixels, over "
                               f"the limit of {self.limits.max_frame_pixels}", param=param, code="video_too_large")
        keep = min(max_frames or self.limits.max_frames, self.limits.max_frames)
        plan = plan_sampling(info, fps or DEFAULT_FPS, keep)
        decoded_pixels = (plan.indices[-1] + 1) * info.pixels_per_frame
        if decoded_pixels > self.limits.max_decode_pixels:
            raise InvalidInput(
                f"sampling this video decodes {plan.indices[-1] + 1} frames of {info.width}x{info.height} = "
                f"{decoded_pixels} pixels, over the limit of {self.limits.max_decode_pixels}; send a shorter or "
                "smaller video", param=param, code="video_too_large")
        digest = hashlib.sha256(raw)
        digest.update(repr(plan.indices).encode())
        return ProbedVideo(raw=raw, plan=plan, key=digest.hexdigest(), param=param)

    def _read_local(self, url: str, param: str | None) -> bytes | None:
        if url.startswith("data:") or len(url) > 4096:
            return None
        path = url if os.path.isabs(url) else os.path.join(self.base_dir or ".", url)
        if not os.path.isfile(path):
            return None
        if os.path.getsize(path) > self.limits.max_bytes:
            raise InvalidInput(f"video file {url} is over the limit of {self.limits.max_bytes} bytes", param=param,
                               code="video_too_large")
        with open(path, "rb") as f:
            return f.read()

    def decode(self, probed: ProbedVideo) -> VideoClip:
        if self.cache is None:
            return decode_planned(probed.raw, probed.plan, param=probed.param, key=probed.key)
        with self._lock:
            clip = self.cache.get(probed.key)
            if clip is not None:
                return clip
            running = self._decoding.get(probed.key)
            if running is None:
                running = self._decoding[probed.key] = Future()
                owner = True
            else:
                owner = False
        if not owner:
            return running.result()
        try:
            clip = decode_planned(probed.raw, probed.plan, param=probed.param, key=probed.key)
        except BaseException as exc:
            running.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._decoding.pop(probed.key, None)
        self.cache.put(probed.key, clip)
        running.set_result(clip)
        return clip


__all__ = ["ProbedVideo", "VideoCache", "VideoLimits", "VideoLoader", "video_bytes"]
