"""docs/claims.md (README claim -> test) names only tests that exist: a renamed or deleted test breaks this."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = re.compile(r"`((?:[\w/]+\.py)?(?:::\w+)?)`")


def test_every_test_named_in_the_claims_table_exists():
    with open(os.path.join(ROOT, "docs", "claims.md")) as f:
        rows = [line for line in f if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) > 80, len(rows)
    named, missing = 0, []
    for row in rows:
        current = None  # `::name` refers to the last file named in the same row
        for token in TOKEN.findall(row):
            path, _, name = token.partition("::")
            if path:
                current = os.path.join(ROOT, "tests", path)
                if not os.path.isfile(current):
                    missing.append(path)
                    continue
            if name:
                assert current, f"{token!r} without a file before it: {row}"
                with open(current) as f:
                    if not re.search(rf"^(async )?def {name}\(", f.read(), re.MULTILINE):
                        missing.append(f"{os.path.relpath(current, ROOT)}::{name}")
                named += 1
    assert not missing, missing
    assert named > 100, named
