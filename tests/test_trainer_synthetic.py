"""The synthetic demo task: deterministic, balanced, faithful chosen answers, same phrasing on both sides."""

from __future__ import annotations

import json
import re

import numpy as np
from rmserve_trainer.data.pairwise import read_pairwise
from rmserve_trainer.data.placeholders import generate_placeholder_images
from rmserve_trainer.data.synthetic import (
    CATEGORIES,
    COLOURS,
    NUMBERS,
    SHAPES,
    demo_corpus,
    generate_demo_pairs,
    write_pairs_jsonl,
)
from rmserve_trainer.hazards import HAZARDS

# Words that carry the facts; masking them must leave chosen and rejected identical.
NOUNS = (*SHAPES, "shape")
FACT_WORDS = {*COLOURS, *NOUNS, *(s + "s" for s in NOUNS), *NUMBERS.values(), "a", "an", "is", "are"}


def _key(r):
    return (r.prompt, r.chosen, r.rejected, r.images[0].tobytes())


def _mask(text: str) -> str:
    return " ".join("_" if w.lower() in FACT_WORDS else w for w in re.findall(r"[\w']+|[.,?!:]", text))


def test_deterministic_prefix_stable_and_splits_disjoint():
    a, b = generate_demo_pairs(40, seed=1), generate_demo_pairs(40, seed=1)
    assert [_key(r) for r in a] == [_key(r) for r in b]
    assert [r.id for r in a] == [r.id for r in b] and len({r.id for r in a}) == 40
    assert [_key(r) for r in generate_demo_pairs(15, seed=1)] == [_key(r) for r in a[:15]]
    held_out = {_key(r) for r in generate_demo_pairs(200, seed=1, split="heldout")}
    assert not held_out & {_key(r) for r in generate_demo_pairs(200, seed=1)}
    assert [_key(r) for r in generate_demo_pairs(10, seed=2)] != [_key(r) for r in a[:10]]
    assert a[0].images[0].size == (112, 112)
    assert generate_demo_pairs(1, seed=1, image_size=56)[0].images[0].size == (56, 56)


def test_categories_safety_labels_and_critiques():
    records = generate_demo_pairs(600, seed=0)
    counts = {c: sum(r.category == c for r in records) for c in CATEGORIES}
    assert 0.05 <= counts["safety"] / 600 <= 0.15
    assert all(counts[c] / 600 >= 0.15 for c in CATEGORIES[:4]), counts
    for r in records:
        assert r.chosen != r.rejected
        assert r.chosen_safety == []
        assert r.chosen_reason.endswith("Score: high.") and r.rejected_reason.endswith("Score: low.")
        if r.category == "safety":
            assert len(r.rejected_safety) == 1 and r.rejected_safety[0] in HAZARDS
            assert r.rejected_safety[0] in r.rejected_reason
        else:
            assert r.rejected_safety == []
    assert {r.rejected_safety[0] for r in records if r.category == "safety"} >= {"S1", "S2", "S9", "S11"}


def test_chosen_is_faithful_and_shares_the_rejected_phrasing():
    records = generate_demo_pairs(400, seed=5)
    for r in records:
        if r.category in ("colour", "shape", "count"):
            assert _mask(r.chosen) == _mask(r.rejected), (r.chosen, r.rejected)
        if r.category == "safety":
            continue
        pixels = {tuple(p) for p in np.asarray(r.images[0]).reshape(-1, 3)[::3]}
        negated = re.search(r"\b(no|not)\b", r.chosen)
        for name, rgb in COLOURS.items():
            if re.search(rf"\b{name}\b", r.chosen) and not negated:
                assert rgb in pixels, (r.prompt, r.chosen)
    negation = [r for r in records if r.category == "negation"]
    affirmative = [r for r in negation if not re.search(r"\b(no|not)\b", r.chosen)]
    assert 0.3 < len(affirmative) / len(negation) < 0.7  # "there is no X" is chosen about half the time
    for category in CATEGORIES:  # at least two phrasings of every answer type
        assert len({_mask(r.chosen) for r in records if r.category == category}) >= 2


def test_corpus_covers_the_vocabulary():
    corpus = demo_corpus()
    assert corpus == demo_corpus()
    words = set(" ".join(corpus).lower().replace(".", " ").split())
    assert set(COLOURS) | set(SHAPES) | {"no", "score:", "high", "low"} <= words


def test_written_pairs_read_back_with_the_pairwise_reader(tmp_path):
    records = generate_demo_pairs(12, seed=3)
    path = write_pairs_jsonl(records, str(tmp_path))
    read, report = read_pairwise(path)
    assert report.kept == 12
    for a, b in zip(records, read, strict=True):
        assert (a.id, a.prompt, a.chosen, a.rejected, a.category) == (b.id, b.prompt, b.chosen, b.rejected, b.category)
        assert (a.rejected_safety, a.chosen_reason) == (b.rejected_safety, b.chosen_reason)
        assert a.images[0].tobytes() == b.images[0].tobytes()  # PNG is lossless


def test_placeholder_images(tmp_path):
    rows = [{"id": "1", "image": "mcq/a.png"}, {"id": "2", "image": "long/b.jpg"}, {"id": "3", "video": "video/clip"},
            {"ID": "4", "Image": "x/c.png"}, {"id": "5", "images": ["d.png", "mcq/a.png"]}]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    root = tmp_path / "images"
    assert generate_placeholder_images(str(path), str(root)) == 6  # 4 distinct images + 2 video frames
    assert generate_placeholder_images(str(path), str(root)) == 0  # present files are kept
    first = (root / "mcq/a.png").read_bytes()
    assert (root / "video/clip/frame_0000.png").exists() and (root / "long/b.jpg").read_bytes()[:2] == b"\xff\xd8"
    generate_placeholder_images(str(path), str(root), overwrite=True)
    assert (root / "mcq/a.png").read_bytes() == first  # deterministic
    assert first != (root / "x/c.png").read_bytes()  # the path picks the colours


def test_demo_difficulty_one_large_object_or_a_count_of_one_kind():
    records = generate_demo_pairs(300, seed=7, difficulty="demo")
    assert [_key(r) for r in records[:20]] == [_key(r) for r in generate_demo_pairs(20, seed=7, difficulty="demo")]
    assert {_key(r) for r in records[:50]}.isdisjoint(_key(r) for r in generate_demo_pairs(50, seed=7))
    safety = sum(r.category == "safety" for r in records) / len(records)
    assert 0.04 < safety < 0.18
    for r in records:
        image = np.asarray(r.images[0])
        colours = [name for name, rgb in COLOURS.items() if (image == rgb).all(-1).any()]
        assert len(colours) == 1, (r.prompt, colours)  # one kind of object per image
        size = (image == COLOURS[colours[0]]).all(-1).sum()
        if r.category != "count":
            assert size >= 0.5 * 40 * 40 / 2, (r.prompt, size)  # a large object (a triangle is half its box)
        if r.category in ("colour", "shape", "count"):
            assert _mask(r.chosen) == _mask(r.rejected), (r.chosen, r.rejected)
        if r.category != "safety" and not re.search(r"\b(no|not)\b", r.chosen):
            assert not any(re.search(rf"\b{c}\b", r.chosen) for c in COLOURS if c != colours[0]), r.chosen
    for category in CATEGORIES:  # at least two phrasings of every answer type
        assert len({_mask(r.chosen) for r in records if r.category == category}) >= 2
    assert any(r.chosen[0].isupper() and len(r.chosen.split()) == 3 for r in records)  # "A red circle."
