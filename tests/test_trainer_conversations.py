"""Training and eval read conversations as the server takes them: parts in any turn, several images, videos
(MP4 files or MM-RLHF frame folders), tool turns; each pair's items score as the server scores them."""

from __future__ import annotations

import json

import pytest
from rmserve_trainer.data import DataError, load_pairs
from rmserve_trainer.data.collate import response_items

from rmserve.models import ScoreItem
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.models.video import decode_planned, encode_mp4, plan_sampling, probe_video
from tests.test_models_conversations import smooth_frame


@pytest.fixture
def data_dir(tmp_path):
    for seed in range(3):
        smooth_frame(seed).save(tmp_path / f"img{seed}.png")
    frames = tmp_path / "video" / "clip1"
    frames.mkdir(parents=True)
    for seed in range(5):
        smooth_frame(10 + seed, 28, 28).save(frames / f"{seed:03d}.jpg", quality=95)
    (tmp_path / "clip.mp4").write_bytes(encode_mp4([smooth_frame(s, 64, 48) for s in range(8)], fps=4))
    return tmp_path


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_multi_turn_parts_and_videos_become_records_that_score_like_the_server(data_dir):
    rows = [
        {"id": "turns", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                         {"type": "image", "image": "img0.png"}]},
            {"role": "assistant", "content": "A gradient."},
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4", "fps": 2}},
                                         {"type": "text", "text": "and now?"},
                                         {"type": "image_url", "image_url": {"url": "img1.png"}}]},
            {"role": "assistant", "content": "lookup()"}, {"role": "tool", "content": "3"}],
         "chosen": "Three.", "rejected": "Two."},
        {"id": "mmrlhf_video", "video": "video/clip1", "prompt": "What happens?", "chosen": "It moves.",
         "rejected": "Nothing."},
        {"id": "several", "prompt": "Compare them.", "images": ["img0.png", "img2.png"], "chosen": "a",
         "rejected": "b"},
    ]
    records, report = load_pairs(write(data_dir / "pairs.jsonl", rows))
    assert report.kept == 3
    turns, video_row, several = records
    assert [m["role"] for m in turns.prompt] == ["system", "user", "assistant", "user", "assistant", "tool"]
    assert turns.prompt[3]["content"] == [{"type": "video"}, {"type": "text", "text": "and now?"}, {"type": "image"}]
    assert len(turns.images) == 2 and len(turns.videos) == 1 and len(turns.videos[0].frames) == 4  # 2 s at 2 fps
    assert video_row.prompt == [{"role": "user", "content": [{"type": "video"},
                                                             {"type": "text", "text": "What happens?"}]}]
    assert len(video_row.videos[0].frames) == 5 and len(several.images) == 2

    model = build_tiny_reward_model("qwen2_5_vl")
    raw = (data_dir / "clip.mp4").read_bytes()
    clip = decode_planned(raw, plan_sampling(probe_video(raw), 2.0, 32))
    chosen, _ = response_items(turns)
    server_item = ScoreItem(response="Three.", messages=turns.prompt, images=turns.images, videos=[clip])
    assert model.score([chosen])[0].reward == pytest.approx(model.score([server_item])[0].reward, abs=1e-6)
    for record in records:  # every record encodes and scores
        a, b = response_items(record)
        assert all(abs(o.reward) < 1e6 for o in model.score([a, b]))


@pytest.mark.parametrize("message, reason", [
    ({"role": "user", "content": [{"type": "audio"}]}, "must be a text, image, image_url, video_url or video part"),
    ({"role": "user", "content": [{"type": "video_url", "video_url": {"url": "missing.mp4"}}]}, "does not exist"),
    ({"role": "narrator", "content": "x"}, "'role': system|user|assistant|tool"),
    ({"role": "user", "content": [{"type": "video", "frames": ["img0.png", "video/clip1/000.jpg"]}]}, "one size"),
])
def test_bad_parts_name_the_record_and_the_part(data_dir, message, reason):
    path = write(data_dir / "bad.jsonl", [{"id": "r1", "messages": [message], "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError) as err:
        load_pairs(path)
    assert f"{path}:1: record 'r1'" in str(err.value) and reason in str(err.value)


def test_eval_over_http_sends_media_where_their_parts_sit(data_dir):
    """rmserve-eval --url: the items' images and videos go back into their parts; the server's rewards equal
    the library's on the same items."""
    from rmserve_trainer.eval import _score_item
    from rmserve_trainer.scoring import HttpScorer

    from rmserve.config import ServerConfig
    from rmserve.server import create_app
    from tests.serving import uvicorn_server

    rows = [{"id": "t", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "image": "img0.png"}]},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "video", "frames": ["img1.png", "img2.png"], "fps": 1.0},
                                     {"type": "image", "image": "img2.png"}]}], "chosen": "c", "rejected": "d"},
        {"id": "v", "video": "video/clip1", "prompt": "q", "chosen": "c", "rejected": "d"}]
    records, _ = load_pairs(write(data_dir / "pairs.jsonl", rows))
    items = [_score_item(r, r.images, r.chosen) for r in records]
    model = build_tiny_reward_model("qwen2_5_vl", seed=2)
    local = [o.reward for o in model.score(items)]
    app = create_app(ServerConfig(max_wait_ms=2.0, preprocess_workers=1, warmup=False), model=model)
    with uvicorn_server(app) as url, HttpScorer(url) as scorer:
        served = scorer.score(items)
    assert not scorer.errors and served == pytest.approx(local, abs=1e-6)


def test_rmserve_score_reads_the_same_shapes_with_local_files(data_dir, monkeypatch):
    """`rmserve score` JSONL: parts naming image and MP4 files beside the input, a final assistant turn as the
    response; rewards equal the library's on the same conversation."""
    from rmserve import cli
    from rmserve.server import loading

    model = build_tiny_reward_model("qwen2_5_vl", seed=3)
    monkeypatch.setattr(loading, "load_model_from_config", lambda config: model)
    line = {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "img0.png"}},
                                     {"type": "text", "text": "and"},
                                     {"type": "video_url", "video_url": {"url": "clip.mp4", "max_frames": 3}}]},
        {"role": "assistant", "content": "It moves."}]}
    src, dst = data_dir / "items.jsonl", data_dir / "scores.jsonl"
    src.write_text(json.dumps(line) + "\n")
    assert cli.main(["score", "--input", str(src), "--output", str(dst), "--quiet"]) == 0
    raw = (data_dir / "clip.mp4").read_bytes()
    clip = decode_planned(raw, plan_sampling(probe_video(raw), 2.0, 3))
    from PIL import Image

    expected = model.score([ScoreItem(response="It moves.", messages=[{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "and"}, {"type": "video"}]}],
        images=[Image.open(data_dir / "img0.png").convert("RGB")], videos=[clip])])[0].reward
    assert json.loads(dst.read_text())["reward"] == pytest.approx(expected, abs=1e-6)
