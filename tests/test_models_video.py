"""MP4 decoding with PyAV: headers before frames, uniform sampling, errors for what is not a video."""

from __future__ import annotations

import numpy as np
import pytest

from rmserve.errors import InvalidInput
from rmserve.models.video import decode_planned, encode_mp4, plan_sampling, probe_video
from tests.test_models_conversations import smooth_frame


@pytest.fixture(scope="module")
def mp4() -> tuple[bytes, list]:
    frames = [smooth_frame(s, 64, 48) for s in range(12)]
    return encode_mp4(frames, fps=4), frames


def test_probe_reads_size_count_and_rate_from_the_headers(mp4):
    info = probe_video(mp4[0])
    assert (info.width, info.height, info.total_frames, info.fps) == (64, 48, 12, 4.0)
    assert info.duration_s == pytest.approx(3.0)


@pytest.mark.parametrize("fps, max_frames, expected", [
    (2.0, 32, (0, 2, 4, 6, 8, 10)),  # 3 s at 2 fps
    (4.0, 5, (0, 2, 4, 7, 9)),  # capped: arange(0, 12, 12 / 5)
    (100.0, 32, tuple(range(12))),  # never more than the video holds
    (0.1, 32, (0,)),  # at least one frame
])
def test_sampling_is_uniform_in_time_within_the_caps(mp4, fps, max_frames, expected):
    plan = plan_sampling(probe_video(mp4[0]), fps, max_frames)
    assert plan.indices == expected
    assert plan.fps == pytest.approx(4.0 * len(expected) / 12)


def test_decoded_frames_are_the_sampled_frames(mp4):
    raw, frames = mp4
    plan = plan_sampling(probe_video(raw), 2.0, 32)
    clip = decode_planned(raw, plan)
    assert len(clip.frames) == 6 and clip.fps == pytest.approx(2.0) and clip.key
    for kept, index in zip(clip.frames, plan.indices, strict=True):
        errors = [np.abs(np.asarray(kept, float) - np.asarray(f, float)).mean() for f in frames]
        assert int(np.argmin(errors)) == index and errors[index] < 20  # lossy codec, but this frame (others: > 50)
    other = decode_planned(raw, plan_sampling(probe_video(raw), 4.0, 32))
    assert other.key != clip.key  # the same file sampled differently is a different video to the caches


@pytest.mark.parametrize("raw", [b"", b"not a video at all" * 20, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64])
def test_what_is_not_an_mp4_video_is_invalid_input(raw):
    with pytest.raises(InvalidInput) as err:
        probe_video(raw, param="messages.0.content.1")
    assert err.value.code == "invalid_video" and err.value.param == "messages.0.content.1"


def test_a_truncated_video_fails_cleanly(mp4):
    raw = mp4[0]
    with pytest.raises(InvalidInput) as err:
        cut = raw[: len(raw) // 2]
        decode_planned(cut, plan_sampling(probe_video(cut), 4.0, 32))
    assert err.value.code == "invalid_video"
