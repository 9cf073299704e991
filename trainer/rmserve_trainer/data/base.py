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

from ..hazards import HAZARDS
from ..records import PairRecord


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
        value = self.obj.get(key)
        if not isinstance(value, list) or not value:
            self.fail(f"field {key!r} must be a non-empty list of messages")
        out = []
        for i, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                self.fail(f"{key}[{i}] must be {{'role': system|user|assistant, 'content': str}}")
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "user":
            self.fail(f"the last message of {key!r} must be a user turn")
        return out

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
