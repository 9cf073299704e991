"""Image decoding: every limit holds before the work it protects; bad bytes are 4xx, never crashes."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
from PIL import Image, ImageFile

from rmserve.api.images import (
    DecodedImage,
    ImageCache,
    ImageLimits,
    ImageLoader,
    decode_base64_image,
    decode_image_bytes,
)
from rmserve.errors import InvalidInput
from tests.conftest import data_url, png_bytes
from tests.images_util import png_bomb

LIMITS = ImageLimits(max_pixels=1_000_000, max_bytes=1_000_000)


@pytest.fixture
def no_full_decode(monkeypatch):
    """Fail the test if any image's pixels get decoded."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("full decode attempted")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_data_url_decodes_to_rgb_with_content_hash():
    raw = png_bytes((6, 4), (10, 20, 30))
    image = ImageLoader(LIMITS).load(data_url(raw), param="images.0")
    assert image.image.mode == "RGB" and image.image.size == (6, 4)
    assert image.image.getpixel((0, 0)) == (10, 20, 30)
    assert image.sha256 == hashlib.sha256(raw).hexdigest()


def test_raw_base64_and_missing_padding_are_accepted():
    raw = png_bytes()
    text = base64.b64encode(raw).decode().rstrip("=")
    assert decode_base64_image(text, LIMITS) == raw


@pytest.mark.parametrize(
    "payload, code",
    [
        ("data:image/png;base64,@@@not-base64@@@", "invalid_base64"),
        ("data:image/png;base64,", "invalid_base64"),
        ("data:text/plain;base64,aGVsbG8=", "invalid_image"),
        ("data:image/png,rawbytes", "invalid_base64"),
        ("https://example.com/cat.png", "url_not_allowed"),
    ],
)
def test_malformed_inputs_name_the_field(payload, code):
    with pytest.raises(InvalidInput) as info:
        ImageLoader(LIMITS).load(payload, param="items.3.images.0")
    assert info.value.param == "items.3.images.0"
    assert info.value.code == code


def test_bytes_that_are_not_an_image():
    with pytest.raises(InvalidInput) as info:
        decode_image_bytes(b"hello, I am a text file" * 10, LIMITS, param="images.1")
    assert info.value.code == "invalid_image" and info.value.param == "images.1"


def test_truncated_image_is_invalid_not_a_crash():
    raw = png_bytes((64, 64))
    with pytest.raises(InvalidInput) as info:
        decode_image_bytes(raw[: len(raw) // 2], LIMITS)
    assert info.value.code == "invalid_image"


def test_decompression_bomb_is_refused_from_the_header(no_full_decode):
    bomb = png_bomb(30000, 30000)  # ~100 KB that would decode to 900 M pixels
    assert len(bomb) < LIMITS.max_bytes
    with pytest.raises(InvalidInput) as info:
        decode_image_bytes(bomb, ImageLimits(max_pixels=16_777_216, max_bytes=1_000_000), param="images.0")
    assert info.value.code == "image_too_large"


def test_our_pixel_limit_applies_below_pils_own(no_full_decode):
    bomb = png_bomb(5000, 5000)  # 25 M pixels: under PIL's bomb threshold, over ours
    with pytest.raises(InvalidInput) as info:
        decode_image_bytes(bomb, LIMITS)
    assert "5000x5000" in info.value.message and info.value.code == "image_too_large"


def test_encoded_size_is_capped_before_base64_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("base64 decode attempted")

    monkeypatch.setattr(base64, "b64decode", refuse)
    with pytest.raises(InvalidInput) as info:
        decode_base64_image("A" * 2_000_000, LIMITS, param="images.0")
    assert info.value.code == "image_too_large"


def test_transparent_pixels_become_white():
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (255, 0, 0, 0)).save(buf, format="PNG")
    image = decode_image_bytes(buf.getvalue(), LIMITS).image
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_cache_serves_references_and_evicts_least_recent():
    cache = ImageCache(max_bytes=3 * 8 * 8 * 4)  # room for three 8x8 RGB images (4 bytes a pixel in Pillow)
    loader = ImageLoader(LIMITS, cache)
    hashes = [loader.load(data_url(png_bytes(color=(i, 0, 0))), param="x").sha256 for i in range(4)]
    assert len(cache) == 3
    assert loader.load({"sha256": hashes[3]}, param="x").sha256 == hashes[3]
    with pytest.raises(InvalidInput) as info:
        loader.load({"sha256": hashes[0]}, param="items.0.images.2")  # evicted
    assert info.value.code == "image_not_found" and info.value.param == "items.0.images.2"
    assert "POST /v1/images" in info.value.message  # says how to get it back


def test_cache_returns_the_same_decoded_image_for_repeated_bytes():
    cache = ImageCache(max_bytes=10_000_000)
    loader = ImageLoader(LIMITS, cache)
    url = data_url(png_bytes())
    first, second = loader.load(url, param="a"), loader.load(url, param="b")
    assert first is second and cache.hits >= 1
    assert isinstance(first, DecodedImage)


def test_local_files_only_with_a_base_dir(tmp_path):
    (tmp_path / "cat.png").write_bytes(png_bytes((3, 3)))
    assert ImageLoader(LIMITS, base_dir=str(tmp_path)).load("cat.png", param="x").width == 3
    with pytest.raises(InvalidInput):  # the server never reads local paths
        ImageLoader(LIMITS).load("cat.png", param="x")


def test_a_group_loading_the_same_image_at_once_decodes_it_once(monkeypatch):
    """A GRPO group's G requests arrive together: one decode, the others wait for it (1 miss, G-1 hits)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from rmserve.api import images as images_module

    decodes = []
    real_decode = images_module.decode_image_bytes

    def slow_decode(raw, limits, *, param=None):
        decodes.append(param)
        time.sleep(0.3)
        return real_decode(raw, limits, param=param)

    monkeypatch.setattr(images_module, "decode_image_bytes", slow_decode)
    cache = ImageCache(max_bytes=10_000_000)
    loader = ImageLoader(LIMITS, cache)
    url = data_url(png_bytes(color=(9, 8, 7)))
    start = threading.Barrier(8)

    def load(i):
        start.wait()
        return loader.load(url, param=f"items.{i}.images.0")

    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(load, range(8)))
    assert len(decodes) == 1 and all(image is loaded[0] for image in loaded)
    assert (cache.hits, cache.misses) == (7, 1)
