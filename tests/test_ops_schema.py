"""Schemathesis against our own OpenAPI schema: generated requests for every operation, over real HTTP.

Checks on every response: no 5xx, the status code is documented, the body matches the documented
schema (the error shape included), the content type and headers are the documented ones.
Positive (schema-valid) and negative (schema-violating) cases alike, for every operation in
/openapi.json, so a new endpoint is fuzzed without a new test.

Default suite: ~200 cases, derandomized (the same cases every run) with the fake model. ``make
test-ops``: >= 1000 random cases against the tiny real model (real tokenizer and processor).

Client deadlines are not fuzzed below 60 s: a deadline that passes is a documented 504, not a fault.
"""

from __future__ import annotations

import collections
import os
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rmserve.config import ServerConfig
from rmserve.server import create_app
from tests.fakes import FakeRewardModel
from tests.serving import make_app, uvicorn_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
OPERATIONS = ("POST /v1/score", "POST /v1/compare", "POST /v1/rank", "POST /v1/critique", "POST /v1/safety",
              "POST /v1/images", "GET /v1/models", "POST /get_reward", "POST /classify", "POST /pooling")
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def _wait_ready(url: str) -> None:
    end = time.monotonic() + 60
    while httpx.get(url + "/readyz").status_code != 200:
        assert time.monotonic() < end, "server never became ready"
        time.sleep(0.05)


def _humane_deadline(case) -> None:
    value = (case.headers or {}).get("x-request-timeout-ms")
    try:
        if value is not None and 0 < float(value) < 60_000:
            case.headers["x-request-timeout-ms"] = "60000"
    except (TypeError, ValueError):
        pass  # not a number: the server must answer 422, keep it


def fuzz_schema(app, *, examples_per_mode: int, derandomize: bool) -> tuple[int, list[str]]:
    """Run every operation of the app's schema; returns (cases sent, failure descriptions).

    An operation for which no case was generated (or none reached the server) is a failure: the
    schema lists it, so it must be fuzzed.
    """
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    with uvicorn_server(app) as url:
        _wait_ready(url)
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        labels = []
        for result in schema.get_all_operations():
            operation = result.ok()
            labels.append(operation.label)
            for mode in MODES:
                _fuzz_operation(operation, mode, url, examples_per_mode, derandomize, counts, failures)
    failures += [f"{label}: no case was sent" for label in labels if not counts[label]]
    assert set(OPERATIONS) <= set(labels), labels  # the schema was read: every route, compat routes included
    return sum(counts.values()), failures


def _fuzz_operation(operation, mode, url, examples, derandomize, counts, failures) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        _humane_deadline(case)
        response = case.call(base_url=url, timeout=60)
        counts[operation.label] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # record, keep fuzzing: one report of everything at the end
            if len(failures) < 20:
                failures.append(f"{operation.label} -> {response.status_code}: {exc}"[:3000])

    try:
        run()
    except Unsatisfiable:  # no negative case exists (GET endpoints without parameters)
        pass


def test_schemathesis_200_cases_no_5xx_and_schema_conformant():
    app = make_app(FakeRewardModel(heads=("reward", "attributes", "safety")), max_items_per_request=8)
    sent, failures = fuzz_schema(app, examples_per_mode=12, derandomize=True)
    assert not failures, "\n\n".join(failures)
    assert sent >= 200, sent


def test_schemathesis_a_share_against_the_tiny_real_model(default_model_dir):
    """The real tokenizer, processor and forward on every operation (the fake model above cannot raise what
    they raise): a few derandomized cases per operation and mode."""
    app = create_app(
        ServerConfig(model=default_model_dir, max_items_per_request=4, max_image_pixels=50_000, max_wait_ms=2)
    )
    sent, failures = fuzz_schema(app, examples_per_mode=3, derandomize=True)
    assert not failures, "\n\n".join(failures)
    assert sent >= 40, sent


@pytest.mark.ops
@pytest.mark.slow
def test_schemathesis_1000_cases_against_the_tiny_real_model(default_model_dir):
    app = create_app(
        ServerConfig(model=default_model_dir, max_items_per_request=8, max_image_pixels=200_000, max_wait_ms=2)
    )
    examples = int(os.environ.get("RMSERVE_OPS_SCHEMA_EXAMPLES", "60"))  # 9 POST operations x 2 modes x 60
    sent, failures = fuzz_schema(app, examples_per_mode=examples, derandomize=False)
    print(f"schemathesis: {sent} cases")
    assert not failures, "\n\n".join(failures)
    assert sent >= (1000 if examples >= 60 else 17 * examples), sent  # >= 1000 at the default
