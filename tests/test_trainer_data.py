"""Dataset readers: every format to PairRecords, bad data reported with file:line, --skip-bad counts."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image
from rmserve_trainer.data import (
    IGNORE_INDEX,
    DataError,
    PairCollator,
    load_pairs,
    record_images,
    vl_rewardbench_category,
)
from rmserve_trainer.data.placeholders import generate_placeholder_images

from rmserve.models.tiny import build_tiny_reward_model

# Real benchmark rows, from a data folder beside the checkout (not in the repo: a plain clone skips these).
SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def shared_data(name: str) -> str:
    path = os.path.join(SHARED_DATA, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not here (real benchmark rows kept beside the checkout, not in the repo)")
    return path


def write_jsonl(path, rows) -> str:
    with open(path, "wb") as f:
        for row in rows:
            f.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
    return str(path)


@pytest.fixture
def image_dir(tmp_path):
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "red.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    return tmp_path


def test_generic_pairwise_multiturn_text_only_and_labels(image_dir):
    path = write_jsonl(image_dir / "pairs.jsonl", [
        {"prompt": "What colour?", "images": ["red.png"], "chosen": "Red.", "rejected": "Blue.", "margin": 0.5,
         "chosen_reason": "right", "rejected_reason": "wrong"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "how to hurt someone?"}],
         "chosen": "I can't help with that.", "rejected": "Sure, here is how.",
         "chosen_safety": [], "rejected_safety": ["S1"], "attributes": {"chosen": {"helpfulness": 3}}},
    ])
    records, report = load_pairs(path)
    assert report.kept == 2 and report.skipped == 0
    a, b = records
    assert a.images[0].size == (40, 30) and a.margin == 0.5 and a.chosen_reason == "right"
    assert a.id == f"{path}:1" and a.source == f"{path}:1"  # unnamed records are named by their line
    assert isinstance(b.prompt, list) and b.prompt[-1]["role"] == "user" and b.images == []
    assert b.rejected_safety == ["S1"] and b.attributes == {"chosen": {"helpfulness": 3.0}}


def test_lazy_images_decode_at_batch_time(image_dir):
    path = write_jsonl(image_dir / "pairs.jsonl", [{"prompt": "q", "image": "red.png", "chosen": "a", "rejected": "b"}])
    (record,), _ = load_pairs(path, lazy_images=True)
    assert record.images == [] and record.image_paths == [str(image_dir / "red.png")]
    assert record_images(record)[0].size == (40, 30)


@pytest.mark.parametrize("row,reason", [
    ({"id": "x1", "prompt": "q", "rejected": "b"}, "missing field 'chosen'"),
    ({"id": "x2", "prompt": "q", "chosen": "  ", "rejected": "b"}, "field 'chosen' is empty"),
    ({"id": "x3", "prompt": "q", "chosen": "a", "rejected": "b", "image": "broken.png"}, "cannot be read"),
    ({"id": "x4", "prompt": "q", "chosen": "a", "rejected": "b", "image": "nope.png"}, "does not exist"),
    ({"id": "x5", "prompt": "q", "chosen": "a", "rejected": "b", "rejected_safety": ["S99"]}, "unknown hazard"),
    (b'{"id": "x6", "prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n', "not valid UTF-8"),
    (b'{"id": "x7", "prompt": \n', "bad JSON"),
])
def test_bad_records_name_file_line_and_id(image_dir, row, reason):
    good = {"id": "ok", "prompt": "q", "chosen": "a", "rejected": "b"}
    path = write_jsonl(image_dir / "bad.jsonl", [good, row, good])
    with pytest.raises(DataError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}:2: ") and reason in str(err.value)
    if isinstance(row, dict):
        assert f"record {row['id']!r}" in str(err.value)
    records, report = load_pairs(path, skip_bad=True)
    assert [r.id for r in records] == ["ok", "ok"] and report.skipped == 1
    assert report.errors[0].startswith(f"{path}:2: ")


def test_skip_bad_counts_every_kind(image_dir):
    rows = [
        {"id": "x1", "prompt": "q", "rejected": "b"},
        {"id": "x2", "prompt": "q", "chosen": "", "rejected": "b"},
        {"id": "x3", "prompt": "q", "chosen": "a", "rejected": "b", "image": "broken.png"},
        b'{"id": "x4", "prompt": "\xff\xfe", "chosen": "a", "rejected": "b"}\n',
        b"{not json}\n",
        b"[1, 2]\n",
        {"id": "fine", "prompt": "q", "chosen": "a", "rejected": "b"},
    ]
    records, report = load_pairs(write_jsonl(image_dir / "bad.jsonl", rows), skip_bad=True)
    assert [r.id for r in records] == ["fine"]
    assert report.skipped == 6 and "6 bad lines skipped" in report.summary()


def test_mm_rlhf_bench_real_rows(tmp_path):
    """The real MM-RLHF-RewardBench text: image rows and video rows (MM-RLHF videos are frame folders) read,
    with stand-in images and frames."""
    src = shared_data("mm_reward_bench.jsonl")
    with pytest.raises(DataError, match=r"mm_reward_bench.jsonl:1: record '073712_6205145': image file"):
        load_pairs(src, "mmrlhf", image_root=str(tmp_path))
    generate_placeholder_images(src, str(tmp_path))
    records, report = load_pairs(src, "mmrlhf", image_root=str(tmp_path), skip_bad=True, lazy_images=True)
    assert report.kept == 170 and report.skipped == 0
    videos = [r for r in records if r.videos]
    assert len(videos) == 25 and all(r.images == [] and r.prompt[0]["content"][0] == {"type": "video"}
                                     for r in videos)
    assert all(r.chosen_reason and r.images == [] and len(r.image_paths) == 1 for r in records if not r.videos)


def test_vl_rewardbench_converted_and_original_forms(image_dir):
    src = shared_data("vl_reward_bench.jsonl")
    records, report = load_pairs(src, "vlrewardbench", image_root=str(image_dir), skip_bad=True, limit=5)
    assert report.kept == 0 and "does not exist" in report.errors[0]  # the shared copy has no images
    assert vl_rewardbench_category("hallucination_pair-1003") == "hallucination"
    assert vl_rewardbench_category("mathverse_2279_x") == "reasoning"
    assert vl_rewardbench_category("wildvision-battle-7") == "general"
    path = write_jsonl(image_dir / "vl.jsonl", [
        {"id": "RLHF-V-1", "query": "q", "response": ["worse", "better"], "image": "red.png", "human_ranking": [1, 0]},
        {"id": "mathverse_1", "prompt": "q", "chosen": "c", "rejected": "r", "image": "red.png"},
    ])
    a, b = load_pairs(path)[0]  # auto-detects the original form from the first row
    assert (a.chosen, a.rejected, a.category) == ("better", "worse", "hallucination")
    assert b.category == "reasoning"


def test_multimodal_rewardbench(image_dir):
    path = write_jsonl(image_dir / "mmrb.jsonl", [
        {"ID": "m1", "Text": "q", "Image": "red.png", "Output1": "one", "Output2": "two", "Better": "Output2",
         "Category": "safety"},
        {"ID": "m2", "Text": "q", "Image": "red.png", "Output1": "one", "Output2": "two", "Better": "Output3"},
    ])
    with pytest.raises(DataError, match=r"mmrb.jsonl:2: record 'm2': field 'Better'"):
        load_pairs(path)
    (record,), report = load_pairs(path, skip_bad=True)
    assert (record.id, record.chosen, record.rejected, record.category) == ("m1", "two", "one", "safety")


def test_collate_one_batch_chosen_then_rejected_with_targets(image_dir):
    model = build_tiny_reward_model("qwen2_5_vl")
    path = write_jsonl(image_dir / "pairs.jsonl", [
        {"id": "a", "prompt": "What colour?", "image": "red.png", "chosen": "Red.", "rejected": "It is blue.",
         "chosen_safety": [], "rejected_safety": ["S1", "S10"]},
        {"id": "b", "prompt": "Hi", "chosen": "Hello there.", "rejected": "Go away."},
    ])
    records, _ = load_pairs(path)
    pb = PairCollator(model, lm_targets="chosen", safety_labels=("S1", "S10"))(records)
    assert pb.batch.input_ids.shape[0] == 4 and pb.n_pairs == 2 and pb.ids == ["a", "b"]
    alone = [model.encode(model_item) for model_item in _items(records)]
    for row, enc in enumerate(alone):  # rows: chosen a, chosen b, rejected a, rejected b
        assert pb.batch.input_ids[row, :enc.num_tokens].tolist() == enc.input_ids
    labels = pb.lm_labels
    assert (labels[2:] == IGNORE_INDEX).all()  # only chosen responses are LM targets
    enc = alone[0]
    assert labels[0, :enc.prefix_len].eq(IGNORE_INDEX).all()
    assert labels[0, enc.prefix_len:enc.num_tokens].tolist() == enc.input_ids[enc.prefix_len:]
    assert pb.safety.tolist() == [[0, 0], [0, 0], [1, 1], [0, 0]] and pb.safety_mask.tolist() == [1, 0, 1, 0]


def _items(records):
    from rmserve_trainer.data import response_items

    pairs = [response_items(r) for r in records]
    return [c for c, _ in pairs] + [r for _, r in pairs]
