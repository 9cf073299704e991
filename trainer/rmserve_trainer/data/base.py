"""What every reader shares: JSONL lines with file:line errors, field checks, image loading, skip counts.

A reader is one function ``parse(fields: Fields) -> PairRecord`` over one JSON object; ``read_jsonl``
runs it over a file. Every problem is a ``DataError`` whose message starts with ``file:line`` and
names the record id when there is one; with ``skip_bad`` such lines are skipped and counted in the
``ReadReport`` instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from PIL import Image, UnidentifiedImageError

from rmserve.errors import InvalidInput
from rmserve.models.types import VideoClip
from rmserve.models.video import DEFAULT_FPS, decode_planned, plan_sampling, probe_video

from ..hazards import HAZARDS
from ..records import PairRecord

ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """Bad input data. ``source`` is ``file:line``; ``record_id`` the record's id, if it has one."""

    def __init__(self, source: str, reason: str, record_id: str | None = None):
        self.source = source
        self.reason = reason
        self.record_id = record_id
        where = f"{source}: record {record_id!r}: " if record_id else f"{source}: "
        super().__init__(where + reason)


@dataclass
class ReadReport:
    """What a read did: records kept, lines skipped (with ``skip_bad``) and the first few reasons."""

    path: str
    kept: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # at most MAX_ERRORS messages

    MAX_ERRORS = 20

    def add_error(self, err: DataError) -> None:
        self.skipped += 1
        if len(self.errors) < self.MAX_ERRORS:
            self.errors.append(str(err))

    def summary(self) -> str:
        text = f"{self.path}: {self.kept} pairs read, {self.skipped} bad lines skipped"
        return text + "".join(f"\n  {e}" for e in self.errors)


# ---- images ---------------------------------------------------------------------------------------
def resolve_image_path(path: str, image_root: str) -> str:
    return path if os.path.isabs(path) else os.path.join(image_root, path)


def open_image(path: str, source: str = "", record_id: str | None = None) -> Image.Image:
    """Decode an image file to RGB (fully read, file closed); errors name the record."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(source, f"image file {path!r} does not exist", record_id) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(source, f"image file {path!r} cannot be read: {e}", record_id) from None


def check_image(path: str, source: str, record_id: str | None) -> None:
    """Cheap readability check for lazy loading: the file exists and its header parses."""
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - the header is parsed on open; touch it to be explicit
    except FileNotFoundError:
        raise DataError(source, f"image file {path!r} does not exist", record_id) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(source, f"image file {path!r} cannot be read: {e}", record_id) from None


def record_images(record: PairRecord) -> list[Image.Image]:
    """A record's images, decoding lazily-read paths now (errors name the record's file:line and id)."""
    if record.images or not record.image_paths:
        return record.images
    return [open_image(p, record.source, record.id) for p in record.image_paths]


# ---- one JSON object's fields -----------------------------------------------------------------------
@dataclass
class Fields:
    """Typed access to one JSON object; every failure is a DataError naming file:line and the record id."""

    obj: dict[str, Any]
    source: str
    image_root: str
    lazy_images: bool = False
    id_key: str = "id"
    max_frames: int = 16  # frames kept per video (the server's --max-video-frames default)

    @property
    def id(self) -> str:
        value = self.obj.get(self.id_key)
        return "" if value is None else str(value)

    def fail(self, reason: str) -> NoReturn:
        raise DataError(self.source, reason, self.id or None)

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def text(self, key: str, *, required: bool = True) -> str | None:
        """A non-empty string (required) or None (optional and absent)."""
        value = self.obj.get(key)
        if value is None:
            if required:
                self.fail(f"missing field {key!r}")
            return None
        if not isinstance(value, str):
            self.fail(f"field {key!r} must be a string, got {type(value).__name__}")
        if required and not value.strip():
            self.fail(f"field {key!r} is empty")
        return value

    def number(self, key: str, default: float = 0.0) -> float:
        value = self.obj.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"field {key!r} must be a number, got {value!r}")
        return float(value)

    def prompt(self, key: str = "prompt") -> str | list[dict]:
        """A prompt string, or a list of chat messages ending with a user turn (multi-turn)."""
        value = self.obj.get(key)
        if isinstance(value, list):
            return self.messages(key)
        return self.text(key)

    def messages(self, key: str) -> list[dict]:
        """Chat turns (system, user, assistant, tool) not ending with an assistant turn; content is a string or
        a list of parts whose media are collected by ``conversation``."""
        return self.conversation(key)[0]

    def conversation(self, key: str) -> tuple[list[dict], list[str], list]:
        """``(messages, image paths, videos)``: media parts become placeholders (``{"type": "image"}``,
        ``{"type": "video"}``) and their media are returned in conversation order. Parts as the server takes
        them (OpenAI style), with file paths (relative to --image-root) where the server takes data URLs:
        ``{"type": "image", "image": path}``, ``{"type": "image_url", "image_url": {"url": path}}``,
        ``{"type": "video_url", "video_url": {"url": path, "fps"?, "max_frames"?}}``,
        ``{"type": "video", "frames": [path, ...], "fps"?}``."""
        value = self.obj.get(key)
        if not isinstance(value, list) or not value:
            self.fail(f"field {key!r} must be a non-empty list of messages")
        out, image_paths, videos = [], [], []
        for i, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                self.fail(f"{key}[{i}] must be {{'role': {'|'.join(ROLES)}, 'content': str | [parts]}}")
            content = m.get("content")
            if isinstance(content, list) and content:
                content = [self._part(part, f"{key}[{i}].content[{k}]", image_paths, videos)
                           for k, part in enumerate(content)]
            elif not isinstance(content, str):
                self.fail(f"{key}[{i}].content must be a string or a non-empty list of parts")
            out.append({"role": m["role"], "content": content})
        if out[-1]["role"] == "assistant":
            self.fail(f"the last message of {key!r} must not be an assistant turn (the responses are the replies)")
        return out, image_paths, videos

    def _part(self, part: Any, where: str, image_paths: list[str], videos: list) -> dict:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            return {"type": "text", "text": part["text"]}
        if kind in ("image", "image_url"):
            path = part.get("image") if kind == "image" else (part.get("image_url") or {}).get("url")
            if not isinstance(path, str) or not path:
                self.fail(f"{where} must name an image file")
            image_paths.append(path)
            return {"type": "image"}
        if kind == "video_url":
            spec = part.get("video_url") or {}
            videos.append(self.video(spec.get("url"), where, fps=spec.get("fps"), max_frames=spec.get("max_frames")))
            return {"type": "video"}
        if kind == "video":
            frames = part.get("frames")
            if not isinstance(frames, list) or not frames or not all(isinstance(p, str) for p in frames):
                self.fail(f"{where}.frames must be a non-empty list of image files")
            images = [open_image(resolve_image_path(p, self.image_root), self.source, self.id or None) for p in frames]
            if len({im.size for im in images}) > 1:
                self.fail(f"{where}: a video's frames must all have one size")
            videos.append(VideoClip(images, fps=float(part.get("fps") or DEFAULT_FPS), key=""))
            return {"type": "video"}
        self.fail(f"{where} must be a text, image, image_url, video_url or video part")

    def video(self, path: Any, where: str, *, fps: float | None = None, max_frames: int | None = None):
        """A video file (MP4), sampled as the server samples it (``fps`` a second, at most ``max_frames``), or a
        folder of frame images (MM-RLHF ships videos as extracted frames): at most ``max_frames`` of them,
        evenly spaced, taken to be ``fps`` apart."""
        if not isinstance(path, str) or not path:
            self.fail(f"{where} must name a video file")
        resolved = resolve_image_path(path, self.image_root)
        if os.path.isdir(resolved):
            names = sorted(n for n in os.listdir(resolved) if not n.startswith("."))
            if not names:
                self.fail(f"{where}: video folder {path!r} holds no frames")
            keep = min(len(names), max_frames or self.max_frames)
            picked = [names[int(i * len(names) / keep)] for i in range(keep)]
            frames = [open_image(os.path.join(resolved, n), self.source, self.id or None) for n in picked]
            if len({im.size for im in frames}) > 1:
                self.fail(f"{where}: the frames in {path!r} must all have one size")
            return VideoClip(frames, fps=float(fps or DEFAULT_FPS), key="")
        try:
            with open(resolved, "rb") as f:
                raw = f.read()
            plan = plan_sampling(probe_video(raw), fps or DEFAULT_FPS, max_frames or self.max_frames)
            return decode_planned(raw, plan)
        except FileNotFoundError:
            self.fail(f"{where}: video file {path!r} does not exist")
        except InvalidInput as e:
            self.fail(f"{where}: video file {path!r} cannot be read: {e.message}")

    def safety(self, key: str) -> list[str] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            self.fail(f"field {key!r} must be a list of hazard codes like ['S1']")
        unknown = [c for c in value if c not in HAZARDS]
        if unknown:
            self.fail(f"field {key!r} has unknown hazard codes {unknown}")
        return list(value)

    def attributes(self, key: str = "attributes") -> dict[str, dict[str, float]] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        ok = isinstance(value, dict) and set(value) <= {"chosen", "rejected"} and all(
            isinstance(v, dict) and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in v.values())
            for v in value.values())
        if not ok:
            self.fail(f"field {key!r} must be {{'chosen'|'rejected': {{name: number}}}}")
        return {side: {k: float(s) for k, s in scores.items()} for side, scores in value.items()}

    def image_list(self, *keys: str) -> list[str]:
        """Image paths from the first present key; a key may hold one path or a list of paths."""
        for key in keys:
            value = self.obj.get(key)
            if value is None:
                continue
            paths = [value] if isinstance(value, str) else value
            if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
                self.fail(f"field {key!r} must be an image path or a list of image paths")
            return paths
        return []

    def load_images(self, paths: list[str]) -> tuple[list[Image.Image], list[str]]:
        """``(images, paths)``: decoded now, or (lazy) only checked and decoded at batch time."""
        resolved = [resolve_image_path(p, self.image_root) for p in paths]
        if self.lazy_images:
            for p in resolved:
                check_image(p, self.source, self.id or None)
            return [], resolved
        return [open_image(p, self.source, self.id or None) for p in resolved], resolved


Parser = Callable[[Fields], PairRecord]


def iter_jsonl(path: str) -> Iterator[tuple[str, dict | DataError]]:
    """Yield ``(source, object)`` per non-blank line, or ``(source, DataError)`` for a line that is bad."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            source = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield source, DataError(source, f"line is not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield source, DataError(source, f"bad JSON: {e.msg} (column {e.colno})")
                continue
            if not isinstance(obj, dict):
                yield source, DataError(source, f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield source, obj


def read_jsonl(path: str, parse: Parser, *, image_root: str | None = None, skip_bad: bool = False,
               lazy_images: bool = False, id_key: str = "id", limit: int | None = None,
               ) -> tuple[list[PairRecord], ReadReport]:
    """Parse every line of ``path`` into PairRecords. Raises the first DataError unless ``skip_bad``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    report = ReadReport(path)
    records: list[PairRecord] = []
    for source, obj in iter_jsonl(path):
        try:
            if isinstance(obj, DataError):
                raise obj
            record = parse(Fields(obj, source, root, lazy_images, id_key))
            if not record.id:
                record.id = source  # unnamed records are named by where they came from
            records.append(record)
        except DataError as err:
            if not skip_bad:
                raise
            report.add_error(err)
        if limit is not None and len(records) >= limit:
            break
    report.kept = len(records)
    return records, report
